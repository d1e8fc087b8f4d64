//! Small multiples: several [`Figure`]s as panels of one SVG, under the module's rules,
//! with one legend below the panels in which every series name appears once and keeps
//! one colour in every panel, or each panel's own legend.

use std::path::Path;

use plotters::prelude::*;

use super::{
    Area, Family, Figure, LEGEND_ROW, LegendEntry, LegendLine, Origin, TextSizes, check_title,
    draw_legend_rows,
};

/// Panel size in pixels; the SVG is `columns` panels wide and is shown at the report's
/// width, so its text is set larger than a full-width figure's ([`TextSizes::PANEL`]).
const PANEL: (u32, u32) = (420, 330);
const TITLE_HEIGHT: u32 = 48;

/// Where the legend of small multiples goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelLegend {
    /// One legend below the panels: each series name once, one colour per name.
    Shared,
    /// Each panel draws its own (the panels show different series).
    PerPanel,
}

/// Panels of one quantity (for instance one model per panel) side by side.
pub struct SmallMultiples {
    pub title: String,
    pub panels: Vec<Figure>,
    pub columns: usize,
    pub legend: PanelLegend,
}

/// One entry of the shared legend.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: String,
    family: Family,
    origin: Origin,
    line: bool,
    marks: bool,
    shade: usize,
}

impl SmallMultiples {
    /// The longest title (it spans every column).
    pub const MAX_TITLE_CHARS: usize = 90;

    /// The shared legend's entries: every series name once, in order of appearance, each
    /// with the shade of its rank among the names of its family and origin.
    fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = Vec::new();
        for s in self.panels.iter().flat_map(|p| &p.series) {
            if out.iter().any(|e| e.name == s.name) {
                continue;
            }
            let shade = out
                .iter()
                .filter(|e| e.family == s.family && e.origin == s.origin)
                .count();
            out.push(Entry {
                name: s.name.clone(),
                family: s.family,
                origin: s.origin,
                line: s.line,
                marks: s.marks,
                shade,
            });
        }
        out
    }

    /// The panels as drawn: with a shared legend, every series gets its name's shade
    /// and no panel draws a legend of its own.
    fn drawn_panels(&self, entries: &[Entry]) -> Vec<Figure> {
        let mut panels: Vec<Figure> = self.panels.clone();
        if self.legend == PanelLegend::Shared {
            for p in &mut panels {
                p.show_legend = false;
                for s in &mut p.series {
                    s.shade = entries.iter().find(|e| e.name == s.name).map(|e| e.shade);
                }
            }
        }
        panels
    }

    /// Renders to an SVG file; a title of the figure or of a panel that is too long is
    /// an error.
    pub fn render(&self, path: &Path) -> Result<(), String> {
        check_title(&self.title, Self::MAX_TITLE_CHARS)?;
        for p in &self.panels {
            check_title(&p.title, Figure::MAX_TITLE_CHARS / 2)?;
        }
        let columns = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(columns).max(1);
        let entries = self.entries();
        let per_row = columns.max(2);
        let legend_rows = match self.legend {
            PanelLegend::Shared => entries.len().div_ceil(per_row) as u32,
            PanelLegend::PerPanel => 0,
        };
        let width = PANEL.0 * columns as u32;
        let height = TITLE_HEIGHT + PANEL.1 * rows as u32 + LEGEND_ROW * legend_rows + 10;
        let root = SVGBackend::new(path, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = root
            .titled(&self.title, ("sans-serif", 26))
            .map_err(|e| e.to_string())?;
        let (grid, legend) = body.split_vertically(PANEL.1 * rows as u32);
        let areas = grid.split_evenly((rows, columns));
        for (panel, area) in self.drawn_panels(&entries).iter().zip(&areas) {
            panel.draw_on(area, &TextSizes::PANEL)?;
        }
        if self.legend == PanelLegend::Shared {
            draw_shared_legend(&legend, &entries, per_row, width)?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// The shared legend: `per_row` entries a row, each its mark (a filled circle on a line
/// for ours, a hollow square for the paper's, as in the panels) and its name.
fn draw_shared_legend(
    area: &Area,
    entries: &[Entry],
    per_row: usize,
    width: u32,
) -> Result<(), String> {
    let rows: Vec<LegendEntry> = entries
        .iter()
        .map(|e| LegendEntry {
            name: e.name.clone(),
            color: e.family.color(e.shade),
            line: if e.line {
                LegendLine::Solid
            } else {
                LegendLine::None
            },
            mark: e.marks.then_some(e.origin),
        })
        .collect();
    draw_legend_rows(area, &rows, per_row, width, TextSizes::PANEL.legend)
}
