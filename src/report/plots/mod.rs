//! SVG figures (plotters, SVG backend) under one set of rules, enforced here so that a
//! new figure follows them by default:
//!
//! 1. A categorical axis ([`XAxis::Categorical`]) carries its names as tick labels, one
//!    per category, never indices.
//! 2. ρ_init is categorical ([`rho_axis`]): −30 and −10 sit one step apart, as −3 and
//!    −2.5 do, so the region where the models differ is not squeezed into a corner.
//! 3. The paper's values are a series of their own ([`Series::paper`]): hollow squares
//!    in the family's colour joined by a dashed line, and their legend entry is the
//!    same mark.
//! 4. Every point carries its 95% CI, drawn as an error bar wherever it has width.
//! 5. The grid is light grey with no minor lines.
//! 6. Colour means model family ([`Family`]), the same in every figure of every report;
//!    several series of one family differ by shade and marker.
//! 7. The title says what is compared; the caption (written by the report beside the
//!    figure) says on which data and with what budget.
//! 8. Text is sized for the report's width: the SVG is 800 × 500 and shown full width.
//!    The legend never covers data: it goes in the corner the figure chooses, or, for a
//!    figure whose data fill every corner, below the chart in rows
//!    ([`Figure::legend_below`]; the SVG grows, the chart keeps its size).
//! 9. Many models of one kind go in small multiples ([`SmallMultiples`]), one panel
//!    each on shared axes, with one legend below in which a series keeps one colour in
//!    every panel.
//! 10. Images are drawn exactly ([`ImageGrid`]): lossless 8-bit PNGs, grey for inputs
//!     and a diverging red–white–blue scale for perturbations, each captioned with
//!     what a reader needs (label, prediction, norm).
//! 11. Numeric ticks are written as a reader writes them ([`tick_label`]): `10`, not
//!     `10.0`, and a narrow panel has fewer of them ([`TextSizes::x_ticks`]), so that
//!     ticks never run into each other.

mod images;
mod multiples;

use std::path::Path;

use plotters::prelude::*;

pub use images::{GrayImage, ImageCell, ImageGrid, ImageRow, PixelScale};
pub use multiples::{PanelLegend, SmallMultiples};

pub use plotters::chart::SeriesLabelPosition;

/// Which kind of model a series or line shows; it alone decides the colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Bayes-by-Backprop networks, any ρ_init, one draw or an ensemble of draws.
    Bnn,
    /// The deterministic λ nets (and the perturbation sources).
    Deterministic,
    /// Confound controls: matched-recipe or matched-init nets, posterior means, frozen
    /// draws, weight noise.
    Control,
    /// Deep ensembles of independently trained deterministic nets.
    DeepEnsemble,
    /// Not a model: a histogram, a difference of two models, a data summary.
    Other,
}

impl Family {
    fn base(self) -> RGBColor {
        match self {
            Family::Bnn => RGBColor(31, 119, 180),
            Family::Deterministic => RGBColor(214, 39, 40),
            Family::Control => RGBColor(44, 160, 44),
            Family::DeepEnsemble => RGBColor(148, 103, 189),
            Family::Other => RGBColor(90, 90, 90),
        }
    }

    /// The colour of the `k`-th series of this family in one figure: the base colour,
    /// then alternately darker and lighter shades of it.
    pub fn color(self, k: usize) -> RGBColor {
        let RGBColor(r, g, b) = self.base();
        let step = k.div_ceil(2) as f64;
        let f = |c: u8| -> u8 {
            let c = c as f64;
            let v = if k % 2 == 1 {
                c * 0.72f64.powf(step)
            } else {
                c + (255.0 - c) * (1.0 - 0.7f64.powf(step))
            };
            v.round().clamp(0.0, 255.0) as u8
        };
        RGBColor(f(r), f(g), f(b))
    }
}

/// Where a series' values come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Ours,
    /// The paper's own numbers (no CI).
    Paper,
}

/// One series of a figure: (x, mean, ci_low, ci_high) points. On a categorical axis x
/// is the category's position (0, 1, …).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64, f64)>,
    /// Draw a line through the points (else markers only).
    pub line: bool,
    pub family: Family,
    pub origin: Origin,
    /// The shade of the family's colour ([`Family::color`]); `None`: by rank in the
    /// figure. Small multiples set it so that one series keeps one colour in every panel.
    pub shade: Option<usize>,
    /// Draw a mark at every point (else the line alone: a curve of many points).
    pub marks: bool,
}

impl Series {
    /// Our estimates, markers joined by a line.
    pub fn ours(
        name: impl Into<String>,
        family: Family,
        points: Vec<(f64, f64, f64, f64)>,
    ) -> Self {
        Self {
            name: name.into(),
            points,
            line: true,
            family,
            origin: Origin::Ours,
            shade: None,
            marks: true,
        }
    }

    /// The paper's values (x, value), drawn as hollow squares on a dashed line.
    pub fn paper(name: impl Into<String>, family: Family, points: &[(f64, f64)]) -> Self {
        Self {
            name: name.into(),
            points: points.iter().map(|&(x, y)| (x, y, y, y)).collect(),
            line: true,
            family,
            origin: Origin::Paper,
            shade: None,
            marks: true,
        }
    }

    /// Markers only, no line.
    pub fn points_only(mut self) -> Self {
        self.line = false;
        self
    }

    /// The line alone, no markers (its legend entry is a line too).
    pub fn line_only(mut self) -> Self {
        self.line = true;
        self.marks = false;
        self
    }
}

/// A dashed horizontal or vertical line at `at` with its legend label.
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub at: f64,
    pub family: Family,
}

impl Line {
    pub fn new(label: impl Into<String>, at: f64, family: Family) -> Self {
        Self {
            label: label.into(),
            at,
            family,
        }
    }
}

/// The x axis: linear, logarithmic, or named categories at positions 0, 1, ….
#[derive(Debug, Clone, PartialEq)]
pub enum XAxis {
    Linear,
    Log,
    Categorical(Vec<String>),
}

/// ρ_init values as a categorical axis (rule 2), labelled as the tables write them.
pub fn rho_axis(rhos: &[f64]) -> XAxis {
    XAxis::Categorical(rhos.iter().map(|r| format!("{r}")).collect())
}

/// A dashed line's legend entry (rule 3: it looks like the line): two short dashes.
macro_rules! dashes {
    ($x:expr, $y:expr, $color:expr) => {
        EmptyElement::at(($x, $y))
            + PathElement::new(vec![(0, 0), (6, 0)], $color.stroke_width(2))
            + PathElement::new(vec![(10, 0), (16, 0)], $color.stroke_width(2))
    };
}

/// A figure with labelled axes, a legend, error bars, optional dashed reference lines
/// and an optional diagonal (for ours-vs-paper scatter plots).
#[derive(Clone)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_axis: XAxis,
    pub series: Vec<Series>,
    /// Dashed horizontal lines at y.
    pub references: Vec<Line>,
    /// Dashed vertical lines at x.
    pub verticals: Vec<Line>,
    pub diagonal: bool,
    /// Where the legend goes (chosen per figure to cover the least data).
    pub legend: SeriesLabelPosition,
    /// Draw the legend inside the plot (small multiples with a shared legend: no).
    pub show_legend: bool,
    /// Draw the legend below the plot, in rows, instead of inside it: for a figure
    /// whose data leave no corner free (the SVG grows by one row per two entries).
    pub legend_below: bool,
}

/// Font sizes of one chart: a full-width figure or a panel of small multiples.
#[derive(Debug, Clone, Copy)]
pub struct TextSizes {
    pub title: u32,
    pub label: u32,
    pub desc: u32,
    pub legend: u32,
    /// About how many ticks a numeric x axis carries (fewer where the chart is narrow
    /// and its text large, so that labels such as `100 120 140` do not run together).
    pub x_ticks: usize,
}

impl TextSizes {
    /// An 800 × 500 figure shown at full width (rule 8).
    pub const FULL: Self = Self {
        title: 24,
        label: 18,
        desc: 19,
        legend: 17,
        x_ticks: 10,
    };
    /// A panel of [`SmallMultiples`]: the SVG is wider than the page and shrinks with it.
    pub const PANEL: Self = Self {
        title: 21,
        label: 17,
        desc: 17,
        legend: 16,
        x_ticks: 6,
    };
}

impl Figure {
    /// A figure with a linear x axis, no reference lines and the legend lower left.
    pub fn new(title: &str, x_label: &str, y_label: &str, series: Vec<Series>) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x_axis: XAxis::Linear,
            series,
            references: vec![],
            verticals: vec![],
            diagonal: false,
            legend: SeriesLabelPosition::LowerLeft,
            show_legend: true,
            legend_below: false,
        }
    }

    /// The legend's entries in drawing order (reference lines, vertical lines, series),
    /// for a legend drawn outside the chart.
    fn legend_entries(&self) -> Vec<LegendEntry> {
        let dashed = |lines: &[Line]| -> Vec<LegendEntry> {
            lines
                .iter()
                .zip(Self::line_colors(lines))
                .map(|(l, color)| LegendEntry {
                    name: l.label.clone(),
                    color,
                    line: LegendLine::Dashed,
                    mark: None,
                })
                .collect()
        };
        let mut out = dashed(&self.references);
        out.extend(dashed(&self.verticals));
        out.extend(
            self.series
                .iter()
                .zip(self.series_colors())
                .map(|(s, color)| LegendEntry {
                    name: s.name.clone(),
                    color,
                    line: match (s.line, s.origin) {
                        (false, _) => LegendLine::None,
                        (true, Origin::Paper) => LegendLine::Dashed,
                        (true, Origin::Ours) => LegendLine::Solid,
                    },
                    mark: s.marks.then_some(s.origin),
                }),
        );
        out
    }

    /// The colour of each series: its family's, shaded by its rank within the family
    /// (the paper's series of a family share the shade of ours with the same rank).
    fn series_colors(&self) -> Vec<RGBColor> {
        let mut seen: Vec<(Family, Origin)> = Vec::new();
        self.series
            .iter()
            .map(|s| {
                let k = seen
                    .iter()
                    .filter(|(f, o)| *f == s.family && *o == s.origin)
                    .count();
                seen.push((s.family, s.origin));
                s.family.color(s.shade.unwrap_or(k))
            })
            .collect()
    }

    /// The colour of each line of `lines`, shaded by its rank within its family.
    fn line_colors(lines: &[Line]) -> Vec<RGBColor> {
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let k = lines[..i].iter().filter(|m| m.family == l.family).count();
                l.family.color(k)
            })
            .collect()
    }

    fn x_range(&self) -> (f64, f64) {
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.verticals.iter().map(|v| v.at));
        match &self.x_axis {
            XAxis::Categorical(names) => (-0.5, names.len().max(1) as f64 - 0.5),
            XAxis::Log => {
                let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
                (lo.max(1e-9) / 1.5, hi.max(1e-9) * 1.5)
            }
            XAxis::Linear => bounds(xs),
        }
    }

    /// A categorical figure whose names are too long to sit side by side under the x
    /// axis, drawn as a forest plot: one row per category (named on the left, first at
    /// the top), the values along x with horizontal error bars, the reference lines
    /// vertical.
    fn draw_forest(
        &self,
        root: &Area,
        names: &[String],
        (v_lo, v_hi): (f64, f64),
        sizes: &TextSizes,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let n = names.len() as f64;
        let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0) as u32;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", sizes.title))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(24 + 9 * longest)
            .build_cartesian_2d(v_lo..v_hi, -0.5..n - 0.5)
            .map_err(|e| err(&e))?;
        // Row r (from the top) is category r.
        let row = |i: f64| n - 1.0 - i;
        let category = |y: &f64| -> String {
            let i = (n - 1.0 - y).round();
            if (n - 1.0 - y - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(&self.y_label)
            .y_desc(&self.x_label)
            .label_style(("sans-serif", sizes.label))
            .axis_desc_style(("sans-serif", sizes.desc))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .y_labels(names.len())
            .y_label_formatter(&category)
            .draw()
            .map_err(|e| err(&e))?;
        draw_dashed(&mut chart, &self.references, |at| {
            [(at, -0.5), (at, n - 0.5)]
        })?;
        for (s, color) in self.series.iter().zip(self.series_colors()) {
            chart
                .draw_series(
                    s.points.iter().filter(|p| p.3 > p.2).map(|p| {
                        ErrorBar::new_horizontal(row(p.0), p.2, p.1, p.3, color.filled(), 6)
                    }),
                )
                .map_err(|e| err(&e))?;
            draw_marks(&mut chart, s, color, |p| (p.1, row(p.0)))?;
        }
        if self.show_legend {
            draw_legend(&mut chart, &self.legend, sizes)?;
        }
        Ok(())
    }

    /// The longest title that fits the figure's width at the title's size (rule 7).
    pub const MAX_TITLE_CHARS: usize = 70;

    /// Renders to an SVG file; a title longer than [`Self::MAX_TITLE_CHARS`] is an
    /// error (it would be cut off).
    pub fn render(&self, path: &Path) -> Result<(), String> {
        check_title(&self.title, Self::MAX_TITLE_CHARS)?;
        if !self.legend_below {
            let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            self.draw_on(&root, &TextSizes::FULL)?;
            return root.present().map_err(|e| e.to_string());
        }
        let entries = self.legend_entries();
        let rows = entries.len().div_ceil(2) as u32;
        let root = SVGBackend::new(path, (800, 500 + LEGEND_ROW * rows + 10)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (chart, legend) = root.split_vertically(500);
        let mut inside = self.clone();
        inside.show_legend = false;
        inside.draw_on(&chart, &TextSizes::FULL)?;
        draw_legend_rows(&legend, &entries, 2, 800, TextSizes::FULL.legend)?;
        root.present().map_err(|e| e.to_string())
    }

    /// Draws the figure onto `root` (the whole SVG, or one panel of small multiples).
    pub fn draw_on(&self, root: &Area, sizes: &TextSizes) -> Result<(), String> {
        let (x_lo, x_hi) = self.x_range();
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.2, p.3]))
            .chain(self.references.iter().map(|r| r.at));
        let (mut y_lo, mut y_hi) = bounds(ys);
        if self.diagonal {
            let (lo, hi) = (x_lo.min(y_lo), x_hi.max(y_hi));
            y_lo = lo;
            y_hi = hi;
        }
        let names: Vec<String> = match &self.x_axis {
            XAxis::Categorical(n) => n.clone(),
            _ => Vec::new(),
        };
        let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        if names.len() * longest > 80 {
            return self.draw_forest(root, &names, (y_lo, y_hi), sizes);
        }
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(&self.title, ("sans-serif", sizes.title))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(64);
        let colors = self.series_colors();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let category = |x: &f64| -> String {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                let mut mesh = chart.configure_mesh();
                mesh.x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .label_style(("sans-serif", sizes.label))
                    .axis_desc_style(("sans-serif", sizes.desc))
                    .bold_line_style(BLACK.mix(0.12))
                    .light_line_style(TRANSPARENT);
                mesh.y_label_formatter(&tick_label);
                if names.is_empty() {
                    mesh.x_labels(sizes.x_ticks).x_label_formatter(&tick_label);
                } else {
                    mesh.x_labels(names.len()).x_label_formatter(&category);
                }
                mesh.draw().map_err(|e| err(&e))?;
                draw_dashed(&mut chart, &self.references, |at| [(x_lo, at), (x_hi, at)])?;
                draw_dashed(&mut chart, &self.verticals, |at| [(at, y_lo), (at, y_hi)])?;
                if self.diagonal {
                    chart
                        .draw_series(LineSeries::new(
                            vec![(x_lo, x_lo), (x_hi, x_hi)],
                            BLACK.mix(0.4),
                        ))
                        .map_err(|e| err(&e))?
                        .label("ours = paper")
                        .legend(|(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.4))
                        });
                }
                for (s, &color) in self.series.iter().zip(&colors) {
                    let paper = s.origin == Origin::Paper;
                    if s.line && paper {
                        chart
                            .draw_series(DashedLineSeries::new(
                                s.points.iter().map(|p| (p.0, p.1)),
                                5,
                                3,
                                color.stroke_width(1),
                            ))
                            .map_err(|e| err(&e))?;
                    } else if s.line {
                        chart
                            .draw_series(LineSeries::new(
                                s.points.iter().map(|p| (p.0, p.1)),
                                color.stroke_width(2),
                            ))
                            .map_err(|e| err(&e))?;
                    }
                    chart
                        .draw_series(
                            s.points.iter().filter(|p| p.3 > p.2).map(|p| {
                                ErrorBar::new_vertical(p.0, p.2, p.1, p.3, color.filled(), 6)
                            }),
                        )
                        .map_err(|e| err(&e))?;
                    draw_marks(&mut chart, s, color, |p| (p.0, p.1))?;
                }
                if self.show_legend {
                    draw_legend(&mut chart, &self.legend, sizes)?;
                }
            }};
        }
        match &self.x_axis {
            XAxis::Log => draw!(
                builder
                    .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
                    .map_err(|e| err(&e))?
            ),
            XAxis::Categorical(_) | XAxis::Linear => draw!(
                builder
                    .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
                    .map_err(|e| err(&e))?
            ),
        }
        Ok(())
    }
}

/// Anything the report writes as an SVG file: a [`Figure`], [`SmallMultiples`] or an
/// [`ImageGrid`].
pub trait Drawable {
    fn render(&self, path: &Path) -> Result<(), String>;
}

impl Drawable for Figure {
    fn render(&self, path: &Path) -> Result<(), String> {
        Figure::render(self, path)
    }
}

impl Drawable for SmallMultiples {
    fn render(&self, path: &Path) -> Result<(), String> {
        SmallMultiples::render(self, path)
    }
}

impl Drawable for ImageGrid {
    fn render(&self, path: &Path) -> Result<(), String> {
        ImageGrid::render(self, path)
    }
}

/// The drawing area a figure or panel is drawn on.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// A title longer than `max` characters is an error (it would be cut off, rule 7).
fn check_title(title: &str, max: usize) -> Result<(), String> {
    if title.chars().count() > max {
        return Err(format!(
            "figure title {title:?} is longer than {max} characters"
        ));
    }
    Ok(())
}

/// A series' marks at `at(point)` with its legend entry: filled circles (ours) or
/// hollow squares (the paper's, rule 3), the legend mark the same as the plot's.
fn draw_marks<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    s: &Series,
    color: RGBColor,
    at: impl Fn(&(f64, f64, f64, f64)) -> (f64, f64),
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let err = |e: &dyn std::fmt::Display| e.to_string();
    if !s.marks {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        return Ok(());
    }
    if s.origin == Origin::Paper {
        let style = color.stroke_width(2);
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|p| EmptyElement::at(at(p)) + Rectangle::new([(-4, -4), (4, 4)], style)),
            )
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                EmptyElement::at((x + 8, y)) + Rectangle::new([(-4, -4), (4, 4)], style)
            });
    } else {
        let style = color.filled();
        chart
            .draw_series(s.points.iter().map(|p| Circle::new(at(p), 4, style)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, style));
    }
    Ok(())
}

/// Dashed lines (references or verticals) from `ends(line.at)`, each shaded by its
/// rank in its family, with a dashed legend entry.
fn draw_dashed<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    lines: &[Line],
    ends: impl Fn(f64) -> [(f64, f64); 2],
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (line, color) in lines.iter().zip(Figure::line_colors(lines)) {
        chart
            .draw_series(DashedLineSeries::new(
                ends(line.at),
                6,
                4,
                color.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(line.label.clone())
            .legend(move |(x, y)| dashes!(x, y, color));
    }
    Ok(())
}

/// Height of one row of a legend drawn outside a chart.
const LEGEND_ROW: u32 = 30;

/// The line of a legend entry drawn outside a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegendLine {
    None,
    Solid,
    /// A reference line (rule 3: its entry looks like it, two short dashes).
    Dashed,
}

/// One entry of a legend drawn outside a chart: its line, its mark (a filled circle for
/// ours, a hollow square for the paper's) and its name.
struct LegendEntry {
    name: String,
    color: RGBColor,
    line: LegendLine,
    mark: Option<Origin>,
}

/// A legend outside a chart: `per_row` entries a row across `width` pixels.
fn draw_legend_rows(
    area: &Area,
    entries: &[LegendEntry],
    per_row: usize,
    width: u32,
    font_size: u32,
) -> Result<(), String> {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let cell = (width as usize / per_row.max(1)) as i32;
    let font = TextStyle::from(("sans-serif", font_size).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        let x = 20 + cell * (i % per_row.max(1)) as i32;
        let y = LEGEND_ROW as i32 / 2 + LEGEND_ROW as i32 * (i / per_row.max(1)) as i32;
        let color = e.color;
        match e.line {
            LegendLine::None => {}
            LegendLine::Solid => area
                .draw(&PathElement::new(
                    vec![(x, y), (x + 22, y)],
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?,
            LegendLine::Dashed => area.draw(&dashes!(x + 3, y, color)).map_err(|e| err(&e))?,
        }
        match e.mark {
            None => {}
            Some(Origin::Paper) => area
                .draw(&Rectangle::new(
                    [(x + 7, y - 4), (x + 15, y + 4)],
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?,
            Some(Origin::Ours) => area
                .draw(&Circle::new((x + 11, y), 4, color.filled()))
                .map_err(|e| err(&e))?,
        }
        area.draw(&Text::new(e.name.clone(), (x + 30, y), font.clone()))
            .map_err(|e| err(&e))?;
    }
    Ok(())
}

/// The legend box at `position`.
fn draw_legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: &SeriesLabelPosition,
    sizes: &TextSizes,
) -> Result<(), String>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(position.clone())
        .label_font(("sans-serif", sizes.legend))
        .draw()
        .map_err(|e| e.to_string())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // 8% of the range each side (0.5 for a single value, whatever the axis's units).
    let pad = if hi > lo { (hi - lo) * 0.08 } else { 0.5 };
    (lo - pad, hi + pad)
}

/// A numeric tick as a reader writes it: `10` not `10.0`, `0.05` not `0.05000000001`,
/// and scientific notation only for magnitudes below 1e-4 (plotters' default prints
/// every tick with a decimal, which crowds an epoch axis into `5.010.015.0`).
pub fn tick_label(v: &f64) -> String {
    if *v == 0.0 {
        return "0".into();
    }
    if v.abs() < 1e-4 {
        return format!("{v:e}");
    }
    let fixed = format!("{v:.6}");
    fixed.trim_end_matches('0').trim_end_matches('.').into()
}
