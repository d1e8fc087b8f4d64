//! SVG figures (plotters, SVG backend): lines or points with 95% CI error bars.

use std::path::Path;

use plotters::prelude::*;

pub use plotters::chart::SeriesLabelPosition;

/// One series of a figure: (x, mean, ci_low, ci_high) points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, f64, f64)>,
    /// Draw a line through the points (else markers only).
    pub line: bool,
}

/// A figure with labelled axes, a legend, error bars, optional horizontal reference
/// lines and an optional diagonal (for ours-vs-paper scatter plots).
pub struct Figure {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// (label, y) dashed horizontal lines.
    pub references: Vec<(String, f64)>,
    /// (label, x) dashed vertical lines.
    pub verticals: Vec<(String, f64)>,
    pub log_x: bool,
    pub diagonal: bool,
    /// Where the legend goes (chosen per figure to cover the least data).
    pub legend: SeriesLabelPosition,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

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

impl Figure {
    /// Renders to an SVG file.
    pub fn render(&self, path: &Path) -> Result<(), String> {
        let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(self.verticals.iter().map(|v| v.1));
        let (x_lo, x_hi) = if self.log_x {
            let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(v), b.max(v)));
            (lo.max(1e-9) / 1.5, hi * 1.5)
        } else {
            bounds(xs)
        };
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|p| [p.2, p.3]))
            .chain(self.references.iter().map(|r| r.1));
        let (mut y_lo, mut y_hi) = bounds(ys);
        if self.diagonal {
            let (lo, hi) = (x_lo.min(y_lo), x_hi.max(y_hi));
            y_lo = lo;
            y_hi = hi;
        }
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60);
        let err = |e: &dyn std::fmt::Display| e.to_string();
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(&self.x_label)
                    .y_desc(&self.y_label)
                    .label_style(("sans-serif", 14))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (i, (label, y)) in self.references.iter().enumerate() {
                    let color = COLORS[(i + 4) % COLORS.len()];
                    chart
                        .draw_series(DashedLineSeries::new(
                            vec![(x_lo, *y), (x_hi, *y)],
                            6,
                            4,
                            color.stroke_width(1),
                        ))
                        .map_err(|e| err(&e))?
                        .label(label.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                }
                for (i, (label, x)) in self.verticals.iter().enumerate() {
                    let color = COLORS[(i + 1) % COLORS.len()];
                    chart
                        .draw_series(DashedLineSeries::new(
                            vec![(*x, y_lo), (*x, y_hi)],
                            5,
                            4,
                            color.stroke_width(1),
                        ))
                        .map_err(|e| err(&e))?
                        .label(label.clone())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
                }
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
                for (i, s) in self.series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    if s.line {
                        chart
                            .draw_series(LineSeries::new(
                                s.points.iter().map(|p| (p.0, p.1)),
                                color.stroke_width(2),
                            ))
                            .map_err(|e| err(&e))?;
                    }
                    chart
                        .draw_series(
                            s.points.iter().map(|p| {
                                ErrorBar::new_vertical(p.0, p.2, p.1, p.3, color.filled(), 6)
                            }),
                        )
                        .map_err(|e| err(&e))?;
                    chart
                        .draw_series(
                            s.points
                                .iter()
                                .map(|p| Circle::new((p.0, p.1), 3, color.filled())),
                        )
                        .map_err(|e| err(&e))?
                        .label(s.name.clone())
                        .legend(move |(x, y)| Circle::new((x + 8, y), 4, color.filled()));
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .position(self.legend.clone())
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(|e| err(&e))?;
            }};
        }
        if self.log_x {
            draw!(
                builder
                    .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
                    .map_err(|e| err(&e))?
            );
        } else {
            draw!(
                builder
                    .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
                    .map_err(|e| err(&e))?
            );
        }
        root.present().map_err(|e| e.to_string())
    }
}
