//! The report: `results.json` and the paper's `paper_tables.json` in, a Markdown
//! README with Tables 1–4 (ours ± CI beside the paper's value and the difference), the
//! paper's claims checked, run metadata, and SVG figures out.

pub mod answer;
mod curve_id;
mod gallery;
pub mod margin;
pub mod plots;
pub mod seeds;
pub mod strength;
mod strength_seeds;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::Dataset;
use crate::fsio::write_atomic;
use crate::results::{Calibration, Cell as Estimate, Meta, StageReport, Tables};
use crate::stats::MeanCi;
use curve_id::{CurveId, CurveModel};
use plots::{Family, Figure, Line, Series};

use crate::experiment::whitebox::TargetKind;

use crate::experiment::code_protocol::CodeBudget;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("results file lacks the cell {0} (or it is not a {{mean, ci95, runs}} cell)")]
    MissingCell(String),
    #[error("paper tables lack {0}")]
    MissingPaper(String),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("results file's section {section} is malformed: {reason}")]
    Section {
        section: &'static str,
        reason: String,
    },
}

/// The section `section` of results.json as its type, None where it is absent or null.
fn section<T: serde::de::DeserializeOwned>(
    results: &Value,
    section: &'static str,
) -> Result<Option<T>> {
    match &results[section] {
        Value::Null => Ok(None),
        v => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| ReportError::Section {
                section,
                reason: e.to_string(),
            }),
    }
}

type Result<T> = std::result::Result<T, ReportError>;

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    v.pointer(path)
}

fn paper(tables: &Value, path: &str) -> Result<f64> {
    at(tables, path)
        .and_then(Value::as_f64)
        .ok_or_else(|| ReportError::MissingPaper(path.to_owned()))
}

/// Tables 1–4 of results.json as their types.
pub(super) fn tables_of(results: &Value) -> Result<Tables> {
    typed(results, "")
}

/// The part of results.json at the pointer `base` as its type. One that is not names
/// where: the JSON pointer of its first part that is not (a cell that is not `{mean,
/// ci95, runs}`, a missing field).
pub(super) fn typed<T: serde::de::DeserializeOwned>(v: &Value, base: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let pointer: String = e
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                serde_path_to_error::Segment::Map { key } => format!("/{key}"),
                other => format!("/{other}"),
            })
            .collect();
        ReportError::MissingCell(format!("{base}{pointer} ({})", e.inner()))
    })
}

/// results.json's `meta` as its type.
pub(super) fn meta_of(results: &Value) -> Result<Meta> {
    section(results, "meta")?.ok_or_else(|| ReportError::Section {
        section: "meta",
        reason: "absent".into(),
    })
}

/// Our estimates of a row of `n` cells; `path` (the cells' JSON pointer, also the
/// paper's) names a missing one.
fn estimates(cells: &[Estimate], n: usize, path: &str) -> Result<Vec<MeanCi>> {
    (0..n)
        .map(|j| {
            cells
                .get(j)
                .copied()
                .flatten()
                .ok_or_else(|| ReportError::MissingCell(format!("{path}/{j}")))
        })
        .collect()
}

/// One cell: ours, and the paper's value when the paper has one (MNIST only).
#[derive(Debug, Clone)]
struct Cell {
    name: String,
    ours: MeanCi,
    paper: Option<f64>,
}

impl Cell {
    fn diff(&self) -> f64 {
        self.ours.mean - self.paper.unwrap_or(f64::NAN)
    }

    fn paper_inside_ci(&self) -> bool {
        self.paper
            .is_some_and(|p| self.ours.ci95[0] - 0.005 <= p && p <= self.ours.ci95[1] + 0.005)
    }

    fn markdown(&self) -> String {
        match self.paper {
            Some(p) => format!(
                "{:.2} ± {:.2} / {:.2} ({:+.2})",
                self.ours.mean,
                self.ours.half_width(),
                p,
                self.diff()
            ),
            None => format!("{:.2} ± {:.2}", self.ours.mean, self.ours.half_width()),
        }
    }
}

/// Whether the paper's numbers apply to these results: it reports MNIST only.
pub(super) fn compares_with_paper(results: &Value) -> bool {
    meta_of(results)
        .ok()
        .is_none_or(|m| m.dataset_name() == Dataset::Mnist.name())
}

/// A table: a header row and rows of (label, cells).
struct Table {
    title: String,
    corner: String,
    columns: Vec<String>,
    rows: Vec<(String, Vec<Cell>)>,
}

impl Table {
    fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.rows.iter().flat_map(|(_, c)| c)
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\n| {} | {} |\n|---|{}\n",
            self.title,
            self.corner,
            self.columns.join(" | "),
            "---|".repeat(self.columns.len())
        );
        for (label, cells) in &self.rows {
            let _ = writeln!(
                s,
                "| {label} | {} |",
                cells
                    .iter()
                    .map(Cell::markdown)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        let summary = summary(&self.cells().collect::<Vec<_>>());
        if summary.is_empty() {
            s.push('\n');
        } else {
            let _ = writeln!(s, "\n{summary}\n");
        }
        s
    }
}

/// A line computed from the numbers: mean gap, direction, CI coverage, largest gap.
fn summary(cells: &[&Cell]) -> String {
    if cells.is_empty() || cells.iter().any(|c| c.paper.is_none()) {
        return String::new();
    }
    let n = cells.len();
    let mean_diff = cells.iter().map(|c| c.diff()).sum::<f64>() / n as f64;
    let mean_abs = cells.iter().map(|c| c.diff().abs()).sum::<f64>() / n as f64;
    let above = cells.iter().filter(|c| c.diff() > 0.0).count();
    let inside = cells.iter().filter(|c| c.paper_inside_ci()).count();
    let worst = cells
        .iter()
        .max_by(|a, b| a.diff().abs().total_cmp(&b.diff().abs()))
        .map(|c| format!("{} ({:+.2})", c.name, c.diff()))
        .unwrap_or_default();
    let verdict = if mean_abs < 1.0 {
        "we agree with the paper to within a point on average"
    } else if mean_diff < 0.0 {
        "our numbers are lower than the paper's"
    } else {
        "our numbers are higher than the paper's"
    };
    format!(
        "*{verdict}: mean difference {mean_diff:+.2} points (mean |difference| {mean_abs:.2}) over {n} cells; ours is higher in {above} of {n}; the paper's value lies inside our 95% CI over weight draws (none for a deterministic net) in {inside} of {n}; largest gap: {worst}.*"
    )
}

fn fmt_param(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() < 1e-3 || x.abs() >= 1e3 || (x.abs() < 1.0 && x.log10().fract() == 0.0) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// A table row: its label, our cells and their JSON pointer (the paper's too).
type Row<'a> = (String, &'a [Estimate], String);

fn row<'a>(label: &str, cells: &'a [Estimate], base: &str) -> Row<'a> {
    (label.to_owned(), cells, base.to_owned())
}

/// A row per perturbation set, then the average: `<prefix>/rows/<i>` and
/// `<prefix>/average`.
fn set_rows<'a>(
    sources: &[String],
    prefix: &str,
    rows: &'a [Vec<Estimate>],
    average: &'a [Estimate],
) -> Vec<Row<'a>> {
    sources
        .iter()
        .zip(rows)
        .enumerate()
        .map(|(i, (s, cells))| (s.clone(), cells.as_slice(), format!("{prefix}/rows/{i}")))
        .chain([(
            "**average**".to_owned(),
            average,
            format!("{prefix}/average"),
        )])
        .collect()
}

/// Builds the tables from results and the paper's numbers (`compare`: beside each cell).
fn tables(t: &Tables, p: &Value, compare: bool) -> Result<Vec<Table>> {
    let sources: Vec<String> = at(p, "/attack_sources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .ok_or_else(|| ReportError::MissingPaper("/attack_sources".into()))?;
    let (t1, t2, t3, t4) = t.parts();
    let (rhos, lambdas) = (&t1.bnn.rho_init, &t1.deterministic.lambda);
    let mut out = Vec::new();

    let grid = |title: &str, corner: &str, columns: Vec<String>, rows: Vec<Row>| -> Result<Table> {
        let rows = rows
            .into_iter()
            .map(|(label, cells, base)| {
                let cells = estimates(cells, columns.len(), &base)?
                    .into_iter()
                    .zip(&columns)
                    .enumerate()
                    .map(|(j, (ours, column))| {
                        Ok(Cell {
                            name: format!("{label} × {column}"),
                            ours,
                            paper: if compare {
                                Some(paper(p, &format!("{base}/{j}"))?)
                            } else {
                                None
                            },
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((label, cells))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Table {
            title: title.to_owned(),
            corner: corner.to_owned(),
            columns,
            rows,
        })
    };

    let rho_cols: Vec<String> = rhos.iter().map(|x| format!("ρ_init = {x}")).collect();
    let lambda_cols: Vec<String> = lambdas
        .iter()
        .map(|x| format!("λ = {}", fmt_param(*x)))
        .collect();
    out.push(grid(
        "Table 1 — clean accuracy, BNNs (single weight draw)",
        "split",
        rho_cols.clone(),
        vec![
            row(
                "validation",
                &t1.bnn.validation,
                "/table1_clean/bnn/validation",
            ),
            row("test", &t1.bnn.test, "/table1_clean/bnn/test"),
        ],
    )?);
    out.push(grid(
        "Table 1 — clean accuracy, deterministic nets",
        "split",
        lambda_cols.clone(),
        vec![
            row(
                "validation",
                &t1.deterministic.validation,
                "/table1_clean/deterministic/validation",
            ),
            row(
                "test",
                &t1.deterministic.test,
                "/table1_clean/deterministic/test",
            ),
        ],
    )?);
    let set_rows = |prefix: &str, rows, average| set_rows(&sources, prefix, rows, average);
    out.push(grid(
        "Table 2 — perturbed test accuracy, BNNs (single weight draw)",
        "perturbation source",
        rho_cols,
        set_rows("/table2_perturbed/bnn", &t2.bnn.rows, &t2.bnn.average),
    )?);
    out.push(grid(
        "Table 2 — perturbed test accuracy, deterministic nets",
        "perturbation source",
        lambda_cols,
        set_rows(
            "/table2_perturbed/deterministic",
            &t2.deterministic.rows,
            &t2.deterministic.average,
        ),
    )?);
    let n_cols: Vec<String> = t3.n_samples.iter().map(|n| format!("N = {n}")).collect();
    out.push(grid(
        "Table 3 — ensembles of N weight draws (eq. 7)",
        "perturbation source",
        n_cols,
        set_rows("/table3_ensemble", &t3.rows, &t3.average),
    )?);
    let rate_cols: Vec<String> = t4.rate_percent.iter().map(|x| format!("{x}%")).collect();
    let mut t4_rows = vec![
        row(
            "clean validation",
            &t4.clean_validation,
            "/table4_pruning/clean_validation",
        ),
        row("clean test", &t4.clean_test, "/table4_pruning/clean_test"),
    ];
    t4_rows.extend(set_rows("/table4_pruning", &t4.rows, &t4.average));
    out.push(grid(
        "Table 4 — SNR pruning, ensemble of 100 draws",
        "data",
        rate_cols,
        t4_rows,
    )?);
    Ok(out)
}

/// A claim of the paper, recomputed (`paper`: its size, on MNIST only).
pub(super) struct Claim {
    pub(super) text: &'static str,
    pub(super) paper: Option<f64>,
    pub(super) ours: MeanCi,
}

/// The index and estimate of the best (highest-mean) cell of a row (`path` names it).
fn best_of(cells: &[Estimate], path: &str) -> Result<(usize, MeanCi)> {
    estimates(cells, cells.len(), path)?
        .into_iter()
        .enumerate()
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
        .ok_or_else(|| ReportError::MissingCell(path.to_owned()))
}

/// The best BNN's Table 2 average minus the best deterministic net's.
pub(super) fn best_margin(t: &crate::results::Table2) -> Result<MeanCi> {
    let (_, bnn) = best_of(&t.bnn.average, "/table2_perturbed/bnn/average")?;
    let (_, det) = best_of(
        &t.deterministic.average,
        "/table2_perturbed/deterministic/average",
    )?;
    Ok(bnn.minus_independent(&det))
}

/// The paper's four claims recomputed from our tables (`compare`: with its sizes).
fn claims_of(t: &Tables, p: &Value, compare: bool) -> Result<Vec<Claim>> {
    let (_, best_det) = best_of(
        &t.table2_perturbed.deterministic.average,
        "/table2_perturbed/deterministic/average",
    )?;
    let t3 = &t.table3_ensemble;
    let ens = estimates(&t3.average, t3.n_samples.len(), "/table3_ensemble/average")?;
    let (ens1, ens100) = match (ens.first(), ens.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Err(ReportError::MissingCell("/table3_ensemble/average".into())),
    };
    let t4 = &t.table4_pruning;
    let i75 = t4
        .rate_percent
        .iter()
        .position(|x| (*x - 75.0).abs() < 1e-9)
        .ok_or_else(|| ReportError::MissingCell("/table4_pruning/rate_percent (75)".into()))?;
    let pruned = t4
        .average
        .get(i75)
        .copied()
        .flatten()
        .ok_or_else(|| ReportError::MissingCell(format!("/table4_pruning/average/{i75}")))?;
    let c = |k: &str| -> Result<Option<f64>> {
        if compare {
            paper(p, &format!("/claims/{k}")).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(vec![
        Claim {
            text: "best BNN beats the best deterministic net on the 12 sets (Table 2 averages)",
            paper: c("bnn_over_deterministic_average_margin_points")?,
            ours: best_margin(&t.table2_perturbed)?,
        },
        Claim {
            text: "the 100-draw ensemble beats one draw (Table 3 averages)",
            paper: c("ensemble100_over_single_points")?,
            ours: ens100.minus_independent(&ens1),
        },
        Claim {
            text: "the 100-draw ensemble beats the best deterministic net",
            paper: c("ensemble100_over_best_deterministic_points")?,
            ours: ens100.minus_independent(&best_det),
        },
        Claim {
            text: "a 75%-pruned BNN beats the best deterministic net",
            paper: c("pruned75_over_best_deterministic_points")?,
            ours: pruned.minus_independent(&best_det),
        },
    ])
}

/// Our estimates of a row of cells (`path` names it) at `xs`, as a series of `family`.
fn series_from(
    cells: &[Estimate],
    path: &str,
    name: &str,
    family: Family,
    xs: &[f64],
) -> Result<Series> {
    let points = xs
        .iter()
        .zip(estimates(cells, xs.len(), path)?)
        .map(|(x, m)| (*x, m.mean, m.ci95[0], m.ci95[1]))
        .collect();
    Ok(Series::ours(name, family, points))
}

/// The paper's values at `path` as a series; `None` when not comparing.
fn paper_series(
    p: Option<&Value>,
    name: &str,
    family: Family,
    xs: &[f64],
    path: &str,
) -> Result<Option<Series>> {
    let Some(p) = p else {
        return Ok(None);
    };
    let points = xs
        .iter()
        .enumerate()
        .map(|(j, x)| paper(p, &format!("{path}/{j}")).map(|v| (*x, v)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Series::paper(name, family, &points)))
}

/// Positions 0, 1, … of `n` categories.
fn positions(n: usize) -> Vec<f64> {
    (0..n).map(|i| i as f64).collect()
}

fn figure(title: &str, x: &str, y: &str, series: Vec<Series>) -> Figure {
    Figure::new(title, x, y, series)
}

fn figures(
    t: &Tables,
    p: Option<&Value>,
    tables: &[Table],
) -> Result<Vec<(&'static str, String, Figure)>> {
    let (t1, t2, t3, t4) = t.parts();
    let (rhos, lambdas) = (&t1.bnn.rho_init, &t1.deterministic.lambda);
    let ns: Vec<f64> = t3.n_samples.iter().map(|n| *n as f64).collect();
    let rates = &t4.rate_percent;
    let at_rho = positions(rhos.len());
    let caption = |what: &str, rest: &str| match p {
        Some(_) => format!("{what}, with the paper's values (hollow squares){rest}"),
        None => format!("{what}{rest}"),
    };
    let mut out = Vec::new();

    let mut f = figure(
        "BNN accuracy by rho_init, clean and perturbed (one weight draw)",
        "rho_init (categorical)",
        "accuracy (%)",
        [
            Some(series_from(
                &t1.bnn.test,
                "/table1_clean/bnn/test",
                "BNN clean test",
                Family::Bnn,
                &at_rho,
            )?),
            Some(series_from(
                &t2.bnn.average,
                "/table2_perturbed/bnn/average",
                "BNN perturbed, average of 12 sets",
                Family::Bnn,
                &at_rho,
            )?),
            paper_series(
                p,
                "paper: clean test",
                Family::Bnn,
                &at_rho,
                "/table1_clean/bnn/test",
            )?,
            paper_series(
                p,
                "paper: perturbed average",
                Family::Bnn,
                &at_rho,
                "/table2_perturbed/bnn/average",
            )?,
        ]
        .into_iter()
        .flatten()
        .collect(),
    );
    f.x_axis = plots::rho_axis(rhos);
    let (jd, best_det) = best_of(
        &t2.deterministic.average,
        "/table2_perturbed/deterministic/average",
    )?;
    {
        let (j, m) = (jd, best_det);
        f.references.push(Line::new(
            format!(
                "best deterministic (lambda={}), perturbed average",
                fmt_param(lambdas[j])
            ),
            m.mean,
            Family::Deterministic,
        ));
    }
    out.push(("accuracy_vs_rho.svg", caption("Each BNN's clean test accuracy and perturbed accuracy averaged over the 12 sets (one weight draw per run, 95% CI over runs) by ρ_init", "; dashed: the best deterministic net's perturbed average."), f));

    let (jb, _) = best_of(&t2.bnn.average, "/table2_perturbed/bnn/average")?;
    let sources = &t.attack_sources;
    let column = |rows: &[Vec<Estimate>],
                  base: &str,
                  j: usize,
                  name: String,
                  family: Family|
     -> Result<Series> {
        let points = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                estimates(row, j + 1, &format!("{base}/rows/{i}"))
                    .map(|m| (i as f64, m[j].mean, m[j].ci95[0], m[j].ci95[1]))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Series::ours(name, family, points).points_only())
    };
    let paper_column = |base: &str, j: usize, name: String, family: Family| -> Option<Series> {
        let p = p?;
        let points = (0..sources.len())
            .map(|i| {
                paper(p, &format!("{base}/rows/{i}/{j}"))
                    .ok()
                    .map(|v| (i as f64, v))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Series::paper(name, family, &points).points_only())
    };
    let (bnn_name, det_name) = (
        format!("BNN rho_init={}", rhos[jb]),
        format!("deterministic lambda={}", fmt_param(lambdas[jd])),
    );
    let mut f = figure(
        "Accuracy per perturbation set: best BNN vs best deterministic net",
        "perturbation source (the net that made the set)",
        "accuracy (%)",
        [
            Some(column(
                &t2.bnn.rows,
                "/table2_perturbed/bnn",
                jb,
                bnn_name.clone(),
                Family::Bnn,
            )?),
            Some(column(
                &t2.deterministic.rows,
                "/table2_perturbed/deterministic",
                jd,
                det_name.clone(),
                Family::Deterministic,
            )?),
            paper_column(
                "/table2_perturbed/bnn",
                jb,
                format!("paper: {bnn_name}"),
                Family::Bnn,
            ),
            paper_column(
                "/table2_perturbed/deterministic",
                jd,
                format!("paper: {det_name}"),
                Family::Deterministic,
            ),
        ]
        .into_iter()
        .flatten()
        .collect(),
    );
    f.x_axis = plots::XAxis::Categorical(sources.clone());
    f.legend = plots::SeriesLabelPosition::UpperLeft;
    out.push(("per_source.svg", caption("Perturbed accuracy on each of the 12 sets for the best BNN (one draw, 95% CI over runs) and the best deterministic net by set average", "."), f));

    let mut f = figure(
        "BNN ensembles: perturbed accuracy vs number of weight draws N",
        "N, draws averaged (log scale)",
        "perturbed accuracy, average of 12 sets (%)",
        [
            Some(series_from(
                &t3.average,
                "/table3_ensemble/average",
                "ours",
                Family::Bnn,
                &ns,
            )?),
            paper_series(p, "paper", Family::Bnn, &ns, "/table3_ensemble/average")?,
        ]
        .into_iter()
        .flatten()
        .collect(),
    );
    f.x_axis = plots::XAxis::Log;
    f.legend = plots::SeriesLabelPosition::LowerRight;
    out.push((
        "ensemble.svg",
        caption("Table 3: the Table 3 BNN's N-draw ensemble (eq. 7), perturbed accuracy averaged over the 12 sets, 95% CI over runs", "."),
        f,
    ));

    let mut pruning = figure(
        "SNR pruning of the Table 4 BNN: accuracy vs pruning rate",
        "pruning rate (%)",
        "accuracy (%)",
        [
            Some(series_from(
                &t4.clean_test,
                "/table4_pruning/clean_test",
                "clean test",
                Family::Bnn,
                rates,
            )?),
            Some(series_from(
                &t4.average,
                "/table4_pruning/average",
                "perturbed, average of 12 sets",
                Family::Bnn,
                rates,
            )?),
            paper_series(
                p,
                "paper: clean test",
                Family::Bnn,
                rates,
                "/table4_pruning/clean_test",
            )?,
            paper_series(
                p,
                "paper: perturbed average",
                Family::Bnn,
                rates,
                "/table4_pruning/average",
            )?,
        ]
        .into_iter()
        .flatten()
        .collect(),
    );
    pruning.legend = plots::SeriesLabelPosition::LowerLeft;
    out.push((
        "pruning.svg",
        caption("Table 4: accuracy of the pruned BNN's 100-draw ensemble vs SNR pruning rate, clean test and perturbed average over the 12 sets, 95% CI over runs", "."),
        pruning,
    ));

    if let Some(h) = &t4.snr_histogram {
        let edges = &h.log10_edges;
        let points = h
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let (a, b) = (edges.get(i)?, edges.get(i + 1)?);
                let c = *c as f64;
                Some(((a + b) / 2.0, c, c, c))
            })
            .collect();
        let mut f = figure(
            "SNR |mu|/sigma of the Table 4 BNN's weights",
            "log10 SNR",
            "weights per bin",
            vec![Series::ours("weights", Family::Other, points)],
        );
        f.verticals = rates
            .iter()
            .zip(&h.log10_thresholds)
            .map(|(rate, t)| Line::new(format!("{rate}% pruned below"), *t, Family::Other))
            .collect();
        f.legend = plots::SeriesLabelPosition::UpperLeft;
        out.push(("snr_histogram.svg", "Histogram of log10 SNR of the pruned BNN's weights, with each pruning rate's threshold (dashed).".to_owned(), f));
    }

    if p.is_none() {
        return Ok(out);
    }
    let points: Vec<(f64, f64, f64, f64)> = tables
        .iter()
        .flat_map(|t| t.cells())
        .filter_map(|c| Some((c.paper?, c.ours.mean, c.ours.ci95[0], c.ours.ci95[1])))
        .collect();
    let mut f = figure(
        "Ours vs paper, every cell of Tables 1-4",
        "paper (%)",
        "ours (%)",
        vec![Series::ours("table cells", Family::Other, points).points_only()],
    );
    f.diagonal = true;
    f.legend = plots::SeriesLabelPosition::UpperLeft;
    out.push((
        "ours_vs_paper.svg",
        "Every cell of Tables 1–4: ours (with 95% CI) against the paper; the line is ours = paper."
            .to_owned(),
        f,
    ));
    Ok(out)
}

/// Renders `README.md` and the SVG figures into `out_dir`; returns the files written.
pub fn render(results: &Value, paper_tables: &Value, out_dir: &Path) -> Result<Vec<PathBuf>> {
    render_with(results, paper_tables, None, out_dir)
}

/// [`render`], adding the section "Where does the margin come from?" when the code
/// protocol's results of the same profile are given.
pub fn render_with(
    results: &Value,
    paper_tables: &Value,
    code: Option<&Value>,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let code: Vec<&Value> = code.into_iter().collect();
    render_with_variants(results, paper_tables, &code, out_dir)
}

/// [`render_with`] with every variant of the code protocol that sits beside the text
/// results (as written, trained to accuracy), each a column of the margin section.
pub fn render_with_variants(
    results: &Value,
    paper_tables: &Value,
    variants: &[&Value],
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let code = variants
        .iter()
        .copied()
        .find(|v| margin::budget_of(v) == CodeBudget::AsWritten);
    let is_code = results["protocol"] == "code";
    let compare = compares_with_paper(results);
    let typed = tables_of(results)?;
    let tables = tables(&typed, paper_tables, compare)?;
    let claims = claims_of(&typed, paper_tables, compare)?;
    let figures = figures(&typed, compare.then_some(paper_tables), &tables)?;
    let mut md = String::new();
    let meta = meta_of(results)?;
    let profile = meta
        .profile_field("/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let dataset = meta.dataset_name();
    if compare {
        let _ = writeln!(
            md,
            "# Reproduction of Zhang & Chen (2020), profile `{profile}`{}\n",
            if is_code {
                ", the authors' code protocol"
            } else {
                ""
            }
        );
    } else {
        let title = dataset.parse::<Dataset>().map_or(dataset, |d| d.title());
        let _ = writeln!(
            md,
            "# Zhang & Chen (2020)'s protocol on {title}, profile `{profile}`\n\nThe paper's experiment (its text's protocol: the same models, perturbation sets, Tables 1–4, calibration and detection) run on {title} instead of MNIST. The paper reports MNIST only, so no cell has a paper value beside it; the claims are checked for their direction.\n"
        );
    }
    if is_code {
        let _ = writeln!(
            md,
            "This run follows the authors' notebooks, not the paper's text (docs/FIDELITY.md). Tables 2–4 are measured on the validation examples where the targeted attack succeeded, at x + {}·r for BNNs and their controls and x + {}·r for the deterministic λ grid; the \"paper\" beside each cell is still the paper's number.\n",
            results["multipliers"]["bnn"], results["multipliers"]["det"]
        );
    }
    let _ = writeln!(
        md,
        "Each cell: **ours ± 95% CI half-width{}**, accuracies in percent. Generated by `bayes-robust report`; do not edit.\n",
        if compare {
            " / paper (ours − paper)"
        } else {
            ""
        }
    );
    let verdicts_file = if compare && !is_code {
        std::fs::create_dir_all(out_dir).map_err(|e| ReportError::Write {
            path: out_dir.to_owned(),
            reason: e.to_string(),
        })?;
        Some(answer::answer_section(
            results,
            paper_tables,
            out_dir,
            &mut md,
        )?)
    } else {
        None
    };
    let _ = writeln!(
        md,
        "## The claims on the tables' cells (descriptive)\n\nEach claim from Tables 2–4's cells, with each cell's 95% CI over weight draws only, combined in quadrature: it leaves out test images, training seeds and the choice of the best model, so it carries no verdict{}.\n\n| claim | paper | ours (95% CI over weight draws only) | that CI |\n|---|---|---|---|",
        if compare && !is_code {
            " (the verdicts are in \"The answer\" above)"
        } else {
            ""
        }
    );
    for c in &claims {
        let side = if c.ours.ci95[0] > 0.0 {
            "above 0"
        } else if c.ours.ci95[1] < 0.0 {
            "below 0"
        } else {
            "spans 0"
        };
        let paper = c
            .paper
            .map_or("– (MNIST only)".to_owned(), |p| format!("{p:+.1}"));
        let _ = writeln!(
            md,
            "| {} | {paper} | {:+.2} [{:+.2}, {:+.2}] | {side} |",
            c.text, c.ours.mean, c.ours.ci95[0], c.ours.ci95[1]
        );
    }
    let sets = at(results, "/perturbation_sets")
        .and_then(Value::as_array)
        .ok_or_else(|| ReportError::MissingCell("/perturbation_sets".into()))?;
    let distortions: Vec<f64> = sets
        .iter()
        .filter_map(|s| s["mean_distortion"].as_f64())
        .collect();
    let max_d = distortions.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "| mean distortion of every perturbation set below 0.10 | < 0.10 | max {max_d:.4} | {} |\n",
        if max_d < 0.10 && distortions.len() == sets.len() {
            "yes"
        } else {
            "no"
        }
    );
    if is_code {
        code_sets_table(results, &meta, sets, &mut md);
    } else {
        let _ = writeln!(
            md,
            "## Perturbation sets\n\nEvery perturbation is held to the distortion budget √(‖r‖²/784) ≤ {} (larger ones scaled back onto it; docs/FIDELITY.md). The last three columns are the min-norm attack's own figures before that.\n\n| source | n | mean distortion | success rate on source | scaled to the budget | attack's distortion | attack's success |\n|---|---|---|---|---|---|---|",
            meta.profile_field("/max_rms_distortion")
                .map_or("none".to_owned(), |v| v.to_string())
        );
        let pct_or_dash = |v: &Value| {
            v.as_f64()
                .map_or("–".to_owned(), |x| format!("{:.1}%", 100.0 * x))
        };
        for s in sets {
            let _ = writeln!(
                md,
                "| {} | {} | {:.4} | {:.1}% | {} | {} | {} |",
                s["source"].as_str().unwrap_or("?"),
                s["n"],
                s["mean_distortion"].as_f64().unwrap_or(f64::NAN),
                100.0 * s["success_rate"].as_f64().unwrap_or(f64::NAN),
                pct_or_dash(&s["capped_fraction"]),
                s["uncapped_distortion"]
                    .as_f64()
                    .map_or("–".to_owned(), |x| format!("{x:.4}")),
                pct_or_dash(&s["uncapped_success_rate"]),
            );
        }
    }
    let _ = writeln!(md, "\n## Tables\n");
    for t in &tables {
        md.push_str(&t.markdown());
    }
    let _ = writeln!(md, "## Figures\n");
    let mut written: Vec<PathBuf> = verdicts_file.into_iter().collect();
    std::fs::create_dir_all(out_dir).map_err(|e| ReportError::Write {
        path: out_dir.to_owned(),
        reason: e.to_string(),
    })?;
    for (file, caption, fig) in &figures {
        written.push(embed_figure(fig, out_dir, file, caption, &mut md)?);
    }
    written.extend(gallery::perturbation_section(out_dir, &mut md)?);
    written.extend(gallery::training_section(results, out_dir, &mut md)?);
    if let Some(c) = section::<Calibration>(results, "calibration")? {
        calibration_section(&c, &mut md);
    }
    if results["whitebox"].is_object() {
        written.extend(whitebox_section(results, &mut md, out_dir)?);
        written.extend(gallery::whitebox_multiples_section(
            results, out_dir, &mut md,
        )?);
    }
    if results["seeds"].is_object() {
        written.extend(seeds::seeds_section(
            results,
            paper_tables,
            &mut md,
            out_dir,
        )?);
    }
    written.extend(strength::strength_section(
        results,
        paper_tables,
        &claims,
        code,
        &mut md,
        out_dir,
    )?);
    if is_code {
        written.extend(margin::code_sections(
            results,
            paper_tables,
            &mut md,
            out_dir,
        )?);
    } else if !variants.is_empty() {
        margin::margin_section(results, variants, paper_tables, &mut md)?;
    }
    run_metadata(&meta, &mut md);
    if let Some(files) = results["per_example_files"]
        .as_array()
        .filter(|f| !f.is_empty())
    {
        let _ = writeln!(
            md,
            "\nPer-example results beside results.json: {} (what each array is, and a Python example that recomputes a Table 2 cell and a paired margin: docs/PER_EXAMPLE.md).",
            files
                .iter()
                .filter_map(Value::as_str)
                .map(|f| format!("[{f}]({f})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\nThe report itself (figures included, from results.json): `bayes-robust report --dir reports/{}`.",
        out_dir
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let readme = out_dir.join("README.md");
    write_atomic(&readme, md.as_bytes()).map_err(|e| ReportError::Write {
        path: readme.clone(),
        reason: e.to_string(),
    })?;
    written.push(readme);
    Ok(written)
}

/// The section "Run metadata": the command, seeds, machine, versions and each stage's
/// time and counted work.
fn run_metadata(meta: &Meta, md: &mut String) {
    let _ = writeln!(
        md,
        "## Run metadata\n\n- command: `{}`\n- master seed: {}; threads: {}; device: {}",
        meta.command, meta.master_seed, meta.threads, meta.device
    );
    if let Some(cpu) = &meta.cpu {
        let _ = writeln!(
            md,
            "- CPU: {cpu} (results are bitwise reproducible on one machine for a fixed thread count; another CPU may round differently, docs/FIDELITY.md)"
        );
    }
    let v = &meta.versions;
    let _ = writeln!(
        md,
        "- versions: bayes-robust {}, tch {}, libtorch {}\n- examples: {} validation, {} test; total wall time of this run {:.0} s",
        v.bayes_robust, v.tch, v.libtorch, meta.n_validation, meta.n_test, meta.wall_seconds
    );
    stage_table(&meta.stages, meta.sgemm_gflops, md);
}

/// Renders `fig` to `<out_dir>/<file>`; the path written.
pub(super) fn write_figure(
    fig: &dyn plots::Drawable,
    out_dir: &Path,
    file: &str,
) -> Result<PathBuf> {
    let path = out_dir.join(file);
    fig.render(&path).map_err(|reason| ReportError::Write {
        path: path.clone(),
        reason,
    })?;
    Ok(path)
}

/// [`write_figure`], shown in `md` with `caption` below it.
pub(super) fn embed_figure(
    fig: &dyn plots::Drawable,
    out_dir: &Path,
    file: &str,
    caption: &str,
    md: &mut String,
) -> Result<PathBuf> {
    let path = write_figure(fig, out_dir, file)?;
    let _ = writeln!(md, "\n![{caption}]({file})\n\n*{caption}*\n");
    Ok(path)
}

/// Per stage: wall time when made, counted matrix-product FLOPs, the rate they were
/// done at, and the wall time over the time the FLOPs take at the sgemm rate measured
/// at the start of the run (1 would be bound by matrix products).
fn stage_table(stages: &[StageReport], sgemm: Option<f64>, md: &mut String) {
    let _ = writeln!(
        md,
        "\n| stage | wall time when made (s) | computed | reused | counted GFLOP | GFLOP/s | wall ÷ sgemm-bound time |\n|---|---|---|---|---|---|---|"
    );
    let (mut wall, mut flops) = (0.0, 0.0);
    for s in stages {
        let t = s.artifact_seconds;
        let f = s.flops.unwrap_or(0.0);
        let ratio = match sgemm {
            Some(g) if f > 0.0 => format!("{:.1}", t / (f / 1e9 / g)),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {t:.1} | {} | {} | {:.0} | {:.1} | {ratio} |",
            s.stage,
            s.computed,
            s.reused,
            f / 1e9,
            f / 1e9 / t.max(1e-9),
        );
        wall += t;
        flops += f;
    }
    if let Some(g) = sgemm
        && flops > 0.0
    {
        let bound = flops / 1e9 / g;
        let _ = writeln!(
            md,
            "| **all** | {wall:.1} | | | {:.0} | {:.1} | {:.1} |\n\nCounted FLOPs are the matrix products only (2 per multiply-add; docs/PERFORMANCE.md). At the sgemm rate measured when this report's run started ({g:.1} GFLOP/s) they would take {bound:.0} s; the stages took {wall:.0} s when their artifacts were made, {:.1} times that.",
            flops / 1e9,
            flops / 1e9 / wall.max(1e-9),
            wall / bound,
            wall / bound
        );
    }
}

/// The kept-set sizes (of 10,000 validation images) and RMS distortions the authors'
/// notebook printed (4,000 steps), in the order of the 12 sources
/// (`../shared/reference/authors-code.md`).
const NOTEBOOK_SETS: [(u32, f64); 12] = [
    (8351, 0.059),
    (7710, 0.062),
    (772, 0.0013),
    (1117, 0.00038),
    (7315, 0.056),
    (7601, 0.056),
    (8721, 0.074),
    (669, 0.00065),
    (8248, 0.069),
    (8248, 0.071),
    (7867, 0.083),
    (339, 0.00085),
];

/// The code protocol's perturbation sets: attacked and kept examples and distortion,
/// beside the notebook's own figures.
fn code_sets_table(results: &Value, meta: &Meta, sets: &[Value], md: &mut String) {
    let _ = writeln!(
        md,
        "## Perturbation sets (targeted attack, failures dropped)\n\nThe targeted attack of the notebooks on the first {} validation images, {} RMSprop steps (the notebooks: all 10,000 images, 4,000 steps; their printed kept fractions and distortions are beside ours). Distortion √(‖r‖²/784) is that of r as made (×1), over the kept examples; at ×m it is m times that.\n\n| source | attacked | kept | kept % | notebook kept % | mean distortion | notebook distortion | attack time (s) |\n|---|---|---|---|---|---|---|---|",
        meta.n_attacked.map_or("?".to_owned(), |n| n.to_string()),
        meta.profile_field("/code/attack/steps")
            .unwrap_or(&Value::Null)
    );
    for (i, s) in sets.iter().enumerate() {
        let (nb_kept, nb_d) = NOTEBOOK_SETS
            .get(i)
            .map_or(("–".to_owned(), "–".to_owned()), |(k, d)| {
                (format!("{:.1}%", *k as f64 / 100.0), format!("{d}"))
            });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1}% | {nb_kept} | {:.4} | {nb_d} | {:.0} |",
            s["source"].as_str().unwrap_or("?"),
            s["n_attacked"],
            s["n"],
            100.0 * s["kept_fraction"].as_f64().unwrap_or(f64::NAN),
            s["mean_distortion"].as_f64().unwrap_or(f64::NAN),
            s["attack_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        md,
        "\n### Models as trained under the notebooks' recipes\n\n| model | epochs | batch | lr | loss | final validation accuracy | train time (s) |\n|---|---|---|---|---|---|---|"
    );
    for m in results["models"].as_array().into_iter().flatten() {
        let r = &m["recipe"];
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.2}% | {:.0} |",
            m["name"].as_str().or(m["model"].as_str()).unwrap_or("?"),
            m["epochs_run"],
            r["batch_size"],
            r["lr"],
            r["reduction"].as_str().unwrap_or("?"),
            100.0 * m["final_validation_accuracy"].as_f64().unwrap_or(f64::NAN),
            m["train_seconds"].as_f64().unwrap_or(f64::NAN)
        );
    }
}

/// Calibration (ECE, NLL) and detection (AUROC) of the evaluation models.
fn calibration_section(c: &Calibration, md: &mut String) {
    let _ = writeln!(
        md,
        "## Beyond the paper: calibration and detection\n\n{}\n\nClean columns: value [95% CI]. Perturbed columns: the mean over the 12 sets [its 95% CI], then (min–max) over the sets. ECE is biased upward on a finite sample and its bootstrap distribution more so, so an ECE interval can sit just above its point estimate (docs/FIDELITY.md).\n\n| model | ECE clean | ECE perturbed | NLL clean | NLL perturbed | AUROC entropy | AUROC mutual information |\n|---|---|---|---|---|---|---|",
        c.note
    );
    for row in &c.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.model,
            with_ci(row.clean_ece, row.clean_ece_ci, 4),
            spread_ci(&row.sets_ece, row.sets_ece_mean_ci, 4),
            with_ci(row.clean_nll, row.clean_nll_ci, 3),
            spread_ci(&row.sets_nll, row.sets_nll_mean_ci, 3),
            spread_ci(&row.sets_auroc_entropy, row.sets_auroc_entropy_mean_ci, 3),
            spread_ci(
                row.sets_auroc_mi.as_deref().unwrap_or_default(),
                row.sets_auroc_mi_mean_ci,
                3
            ),
        );
    }
    let _ = writeln!(md);
}

/// `value [lo, hi]`, or the value alone when there is no interval.
fn with_ci(v: f64, ci: Option<[f64; 2]>, digits: usize) -> String {
    match ci {
        Some([lo, hi]) => format!("{v:.digits$} [{lo:.digits$}, {hi:.digits$}]"),
        None => format!("{v:.digits$}"),
    }
}

/// The mean of `v` [its interval] (min–max); "–" when there are none.
fn spread_ci(v: &[f64], ci: Option<[f64; 2]>, digits: usize) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), x| {
            (l.min(*x), h.max(*x))
        });
    format!(
        "{} ({lo:.digits$}–{hi:.digits$})",
        with_ci(mean, ci, digits)
    )
}

/// The index of the L2 budget where the most robust deterministic net is nearest 50%
/// accuracy: the budget that separates models best.
fn separating_l2_budget(r: &Value, curves: &[Value]) -> Option<usize> {
    let dets: Vec<Vec<MeanCi>> = curves
        .iter()
        .filter(|c| CurveId::of(r, c).is_some_and(|id| id.is_deterministic() && !id.rerun))
        .filter_map(|c| serde_json::from_value(c["l2"]["accuracy"].clone()).ok())
        .collect();
    let n = dets.iter().map(Vec::len).min()?;
    (0..n).min_by(|&a, &b| {
        let best = |j: usize| dets.iter().map(|d| d[j].mean).fold(f64::MIN, f64::max);
        (best(a) - 50.0).abs().total_cmp(&(best(b) - 50.0).abs())
    })
}

/// "Every BNN of the ρ_init grid": each BNN's one draw and deployed ensemble under
/// white-box PGD (the ensemble through the every-BNN EOT k), per norm, and a figure of
/// the L2 accuracy against ρ_init at the budget where the most robust deterministic
/// net is nearest 50%.
fn every_bnn_section(
    r: &Value,
    curves: &[Value],
    md: &mut String,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let k = meta_of(r)?
        .profile_field("/whitebox_every_bnn_eot_k")
        .and_then(Value::as_u64);
    let ensemble_suffix = k.map(|k| format!("EOT k={k}"));
    // Per ρ_init: the one-draw curve and the ensemble curve with the every-BNN k.
    let mut rows: Vec<(f64, Option<&Value>, Option<&Value>)> = Vec::new();
    for c in curves {
        let Some(id) = CurveId::of(r, c).filter(|id| !id.rerun) else {
            continue;
        };
        let Some(rho) = id.rho_init() else {
            continue;
        };
        let ensemble = match id.kind {
            TargetKind::SingleDraw => false,
            TargetKind::Ensemble { k: ck } if Some(ck as u64) == k => true,
            _ => continue,
        };
        let i = match rows.iter().position(|(x, _, _)| *x == rho) {
            Some(i) => i,
            None => {
                rows.push((rho, None, None));
                rows.len() - 1
            }
        };
        if ensemble {
            rows[i].2 = Some(c);
        } else {
            rows[i].1 = Some(c);
        }
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let _ = writeln!(
        md,
        "### Every BNN of the ρ_init grid\n\nEach BNN attacked as one weight draw (PGD, {} restarts) and as its deployed {}-draw ensemble (PGD through EOT, {}). Each cell: one draw / ensemble, robust accuracy (%) ± 95% CI.\n",
        r["whitebox"]["profile"]["restarts"],
        r["whitebox"]["profile"]["deployed_draws"],
        ensemble_suffix.as_deref().unwrap_or("?"),
    );
    let acc = |c: Option<&Value>, norm: &str| -> Vec<MeanCi> {
        c.and_then(|c| serde_json::from_value(c[norm]["accuracy"].clone()).ok())
            .unwrap_or_default()
    };
    let cell = |v: &[MeanCi], j: usize| {
        v.get(j).map_or("–".to_owned(), |m| {
            format!("{:.1} ± {:.1}", m.mean, m.half_width())
        })
    };
    let mut figure_points = (Vec::new(), Vec::new(), f64::NAN);
    for (norm, title, key) in [
        ("linf", "L∞ (ε in [0, 1] pixel units)", "eps_pixels"),
        ("l2", "L2", "eps"),
    ] {
        let eps: Vec<f64> = curves
            .first()
            .and_then(|c| serde_json::from_value(c[norm][key].clone()).ok())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "{title}:\n\n| ρ_init | {} |\n|---|{}",
            eps.iter()
                .map(|e| format!("ε={}", fmt_param(*e)))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(eps.len())
        );
        let at_figure = separating_l2_budget(r, curves);
        for (i, (rho, one, ens)) in rows.iter().enumerate() {
            let (one, ens) = (acc(*one, norm), acc(*ens, norm));
            let _ = writeln!(
                md,
                "| {rho} | {} |",
                (0..eps.len())
                    .map(|j| format!("{} / {}", cell(&one, j), cell(&ens, j)))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            if norm == "l2"
                && let Some(j) = at_figure
            {
                figure_points.2 = eps[j];
                for (v, out) in [(&one, &mut figure_points.0), (&ens, &mut figure_points.1)] {
                    if let Some(m) = v.get(j) {
                        out.push((i as f64, m.mean, m.ci95[0], m.ci95[1]));
                    }
                }
            }
        }
        let _ = writeln!(md);
    }
    let (one, ens, eps) = figure_points;
    if one.is_empty() {
        return Ok(Vec::new());
    }
    // Every target of each BNN at that budget.
    let mut ks: Vec<usize> = curves
        .iter()
        .filter_map(|c| match CurveId::of(r, c)? {
            CurveId {
                kind: TargetKind::Ensemble { k },
                rerun: false,
                ..
            } => Some(k),
            _ => None,
        })
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let mut kinds = vec![("one draw".to_owned(), TargetKind::SingleDraw)];
    kinds.extend(
        ks.iter()
            .map(|&k| (format!("EOT k={k}"), TargetKind::Ensemble { k })),
    );
    kinds.extend([
        ("posterior mean".to_owned(), TargetKind::PosteriorMean),
        ("frozen sample".to_owned(), TargetKind::FrozenSample),
    ]);
    let _ = writeln!(
        md,
        "Every target of each BNN at L2 ε = {} (ensembles: the deployed {}-draw rule, attacked through EOT over k draws):\n\n| ρ_init | {} |\n|---|{}",
        fmt_param(eps),
        r["whitebox"]["profile"]["deployed_draws"],
        kinds
            .iter()
            .map(|(label, _)| label.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(kinds.len())
    );
    for (rho, _, _) in &rows {
        let want = |kind| CurveId {
            model: CurveModel::Bnn { rho_init: *rho },
            kind,
            rerun: false,
        };
        let cells: Vec<String> = kinds
            .iter()
            .map(|(_, kind)| {
                curves
                    .iter()
                    .find(|c| CurveId::of(r, c) == Some(want(*kind)))
                    .and_then(|c| {
                        let v: Vec<MeanCi> =
                            serde_json::from_value(c["l2"]["accuracy"].clone()).ok()?;
                        let j = serde_json::from_value::<Vec<f64>>(c["l2"]["eps"].clone())
                            .ok()?
                            .iter()
                            .position(|x| *x == eps)?;
                        v.get(j)
                            .map(|m| format!("{:.1} ± {:.1}", m.mean, m.half_width()))
                    })
                    .unwrap_or_else(|| "–".into())
            })
            .collect();
        let _ = writeln!(md, "| {rho} | {} |", cells.join(" | "));
    }
    let _ = writeln!(md);
    let mut f = figure(
        &format!(
            "White-box L2 accuracy at eps = {} vs rho_init",
            fmt_param(eps)
        ),
        "rho_init (categorical)",
        "robust accuracy (%)",
        vec![
            Series::ours("BNN, one draw", Family::Bnn, one),
            Series::ours(
                format!(
                    "BNN ensemble, {}",
                    ensemble_suffix.as_deref().unwrap_or("EOT")
                ),
                Family::Bnn,
                ens,
            ),
        ],
    );
    f.x_axis = plots::rho_axis(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
    for c in curves {
        let model = c["model"].as_str().unwrap_or("");
        if CurveId::of(r, c).is_some_and(|id| id.is_deterministic() && !id.rerun)
            && let Ok(v) = serde_json::from_value::<Vec<MeanCi>>(c["l2"]["accuracy"].clone())
            && let Some(j) = serde_json::from_value::<Vec<f64>>(c["l2"]["eps"].clone())
                .ok()
                .and_then(|e| e.iter().position(|x| *x == eps))
        {
            f.references
                .push(Line::new(model, v[j].mean, Family::Deterministic));
        }
    }
    f.legend = plots::SeriesLabelPosition::UpperRight;
    let caption = format!(
        "White-box L2 robust accuracy at ε = {} (the budget where the most robust deterministic net is nearest 50%) against ρ_init, one draw and the deployed ensemble, 95% CI over examples; dashed: the deterministic nets",
        fmt_param(eps)
    );
    Ok(vec![embed_figure(
        &f,
        out_dir,
        "whitebox_every_bnn.svg",
        &caption,
        md,
    )?])
}

/// The transfer accuracy (Table 2 or 3 average) a white-box curve is compared with:
/// the same model, attacked the same way, on the paper's perturbation sets; `None` for
/// the reruns of the masking checks and for targets no table has.
fn transfer_reference(r: &Value, t: Option<&Tables>, curve: &Value) -> Option<MeanCi> {
    let id = CurveId::of(r, curve).filter(|id| !id.rerun)?;
    let t = t?;
    let (t1, t2) = (&t.table1_clean, &t.table2_perturbed);
    match (id.model, id.kind) {
        (CurveModel::Deterministic { lambda }, _) => {
            let j = t1.deterministic.lambda.iter().position(|l| *l == lambda)?;
            *t2.deterministic.average.get(j)?
        }
        (CurveModel::Bnn { rho_init }, TargetKind::SingleDraw) => {
            let j = t1.bnn.rho_init.iter().position(|x| *x == rho_init)?;
            *t2.bnn.average.get(j)?
        }
        // Table 3 has the ensemble of its one BNN only.
        (CurveModel::Bnn { rho_init }, TargetKind::Ensemble { .. })
            if rho_init == crate::experiment::TABLE3_RHO =>
        {
            *t.table3_ensemble.average.last()?
        }
        _ => None,
    }
}

/// The white-box section: robust accuracy vs ε per norm (tables and figures), the
/// gradient agreement, the gradient-masking checks, and white-box against transfer.
fn whitebox_section(r: &Value, md: &mut String, out_dir: &Path) -> Result<Vec<PathBuf>> {
    let wb = &r["whitebox"];
    let curves = wb["curves"]
        .as_array()
        .ok_or_else(|| ReportError::MissingCell("/whitebox/curves".into()))?;
    let _ = writeln!(
        md,
        "## Beyond the paper: white-box attacks on each model itself\n\n{}. Attack: {} steps of PGD on the cross-entropy, {} restart(s) ({} for EOT with k > 1), step {}·ε; the BNN's ensemble is attacked through EOT (the gradient of the softmax averaged over k draws) and judged by its {}-draw ensemble.\n",
        wb["note"].as_str().unwrap_or(""),
        wb["profile"]["steps"],
        wb["profile"]["restarts"],
        wb["profile"]["eot_restarts"],
        wb["profile"]["rel_step"],
        wb["profile"]["deployed_draws"],
    );
    let mut written = Vec::new();
    let mut l2_transfer_rows = Vec::new();
    let tables = tables_of(r).ok();
    let max_transfer_norm = r["perturbation_sets"]
        .as_array()
        .map(|sets| {
            sets.iter()
                .filter_map(|s| s["mean_distortion"].as_f64())
                .fold(0.0, f64::max)
                * (crate::data::IMAGE_DIM as f64).sqrt()
        })
        .unwrap_or(f64::NAN);
    for (norm, unit, file) in [
        ("linf", "L∞ ε in [0, 1] pixel units", "whitebox_linf.svg"),
        ("l2", "L2 ε in input units", "whitebox_l2.svg"),
    ] {
        let eps: Vec<f64> = curves
            .first()
            .and_then(|c| {
                let key = if norm == "linf" { "eps_pixels" } else { "eps" };
                serde_json::from_value(c[norm][key].clone()).ok()
            })
            .ok_or_else(|| ReportError::MissingCell(format!("/whitebox/curves/0/{norm}/eps")))?;
        let _ = writeln!(
            md,
            "### {}\n\n| model | gradient agreement | {} |\n|---|---|{}",
            if norm == "linf" { "L∞" } else { "L2" },
            eps.iter()
                .map(|e| format!("ε={}", fmt_param(*e)))
                .collect::<Vec<_>>()
                .join(" | "),
            "---|".repeat(eps.len())
        );
        let mut series = Vec::new();
        for (i, c) in curves.iter().enumerate() {
            let model = c["model"].as_str().unwrap_or("?");
            if c["every_bnn"] == true {
                if norm == "l2"
                    && let Some(j) = eps.iter().position(|e| *e >= max_transfer_norm)
                    && let Ok(acc) =
                        serde_json::from_value::<Vec<MeanCi>>(c[norm]["accuracy"].clone())
                    && let Some(t) = transfer_reference(r, tables.as_ref(), c)
                {
                    l2_transfer_rows.push((model.to_owned(), eps[j], acc[j], t));
                }
                continue;
            }
            let acc: Vec<MeanCi> =
                serde_json::from_value(c[norm]["accuracy"].clone()).map_err(|_| {
                    ReportError::MissingCell(format!("/whitebox/curves/{i}/{norm}/accuracy"))
                })?;
            let agreement = c["gradient_agreement"]
                .as_f64()
                .map(|a| format!("{a:.3}"))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                md,
                "| {model} | {agreement} | {} |",
                acc.iter()
                    .map(|m| format!("{:.1} ± {:.1}", m.mean, m.half_width()))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            series.push(Series::ours(
                model,
                CurveId::of(r, c).map_or(Family::Control, |id| id.family()),
                eps.iter()
                    .zip(&acc)
                    .map(|(e, m)| (*e, m.mean, m.ci95[0], m.ci95[1]))
                    .collect(),
            ));
            if norm == "l2"
                && let Some(j) = eps.iter().position(|e| *e >= max_transfer_norm)
                && let Some(t) = transfer_reference(r, tables.as_ref(), c)
            {
                l2_transfer_rows.push((model.to_owned(), eps[j], acc[j], t));
            }
        }
        let mut f = figure(
            &format!(
                "White-box robust accuracy ({})",
                if norm == "linf" { "L-inf" } else { "L2" }
            ),
            unit,
            "robust accuracy (%)",
            series,
        );
        f.legend = plots::SeriesLabelPosition::UpperRight;
        let caption = format!("White-box robust accuracy vs {unit}, 95% CI over examples");
        let path = embed_figure(&f, out_dir, file, &caption, md)?;
        written.push(path);
    }
    if curves.iter().any(|c| c["every_bnn"] == true) {
        written.extend(every_bnn_section(r, curves, md, out_dir)?);
    }
    let _ = writeln!(
        md,
        "### White-box against transfer\n\nWhite-box L2 accuracy at the smallest ε at or above the largest mean transfer perturbation norm ({max_transfer_norm:.2}), against the same model's average over the 12 transfer sets.\n\n| model | ε | white-box | transfer | white-box at least as strong |\n|---|---|---|---|---|"
    );
    for (model, e, w, t) in &l2_transfer_rows {
        let _ = writeln!(
            md,
            "| {model} | {} | {:.1} ± {:.1} | {:.1} ± {:.1} | {} |",
            fmt_param(*e),
            w.mean,
            w.half_width(),
            t.mean,
            t.half_width(),
            if w.mean <= t.mean + t.half_width().max(w.half_width()) {
                "yes"
            } else {
                "no"
            }
        );
    }
    if let Some(spsa) = wb["spsa"].as_array().filter(|a| !a.is_empty()) {
        let c = &wb["check_runs"];
        let _ = writeln!(
            md,
            "### A gradient-free attack (SPSA)\n\nSPSA (Uesato et al. 2018) never differentiates the model: {} steps of Adam on a finite-difference estimate of the margin loss's gradient from {} random ±1 directions (δ = {} pixel units), from a random start; the BNN's ensemble is queried through EOT over {} draws and judged like the PGD curves. Stronger than PGD would mean PGD's gradients are masked.\n\n| model | L∞ ε | SPSA | PGD |\n|---|---|---|---|",
            c["spsa_steps"], c["spsa_samples"], c["spsa_delta_pixels"], c["spsa_eot_k"]
        );
        for s in spsa {
            let model = s["model"].as_str().unwrap_or("?");
            let gf: Option<MeanCi> = serde_json::from_value(s["accuracy"].clone()).ok();
            let eps = s["eps_pixels"].as_f64().unwrap_or(f64::NAN);
            let pgd: Option<MeanCi> = serde_json::from_value(s["pgd_accuracy"].clone()).ok();
            let f = |m: Option<MeanCi>| {
                m.map_or("–".into(), |m| {
                    format!("{:.1} ± {:.1}", m.mean, m.half_width())
                })
            };
            let _ = writeln!(
                md,
                "| {model} | {} | {} | {} |",
                fmt_param(eps),
                f(gf),
                f(pgd)
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "### Gradient-masking checks\n\n| model | check | passed | detail |\n|---|---|---|---|"
    );
    for c in wb["checks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            c["model"].as_str().unwrap_or("?"),
            c["check"].as_str().unwrap_or("?"),
            if c["passed"].as_bool() == Some(true) {
                "pass"
            } else {
                "**FAIL**"
            },
            c["detail"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(md);
    Ok(written)
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReportError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
