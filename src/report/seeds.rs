//! The report's training-seeds section: each model's Table 2 set average per seed (CI
//! over weight draws) and across seeds (CI over seeds), the margin per seed with its
//! paired bootstrap, and whether the paper's margin survives.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::plots::{self, Family, Series};
use super::{ReportError, Result, figure, paper};
use crate::experiment::seeds::SeedsSection;
use crate::stats::MeanCi;

fn fmt_ci(c: &Option<MeanCi>, signed: bool) -> String {
    match c {
        Some(c) if signed => format!("{:+.2} [{:+.2}, {:+.2}]", c.mean, c.ci95[0], c.ci95[1]),
        Some(c) => format!("{:.2} [{:.2}, {:.2}]", c.mean, c.ci95[0], c.ci95[1]),
        None => "–".into(),
    }
}

/// Renders the section into `md` and its figure into `out_dir`.
pub fn seeds_section(
    r: &Value,
    paper_tables: &Value,
    md: &mut String,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let s: SeedsSection = serde_json::from_value(r["seeds"].clone())
        .map_err(|e| ReportError::MissingCell(format!("/seeds ({e})")))?;
    let k = s.train_seeds;
    let meta = super::meta_of(r)?;
    let command = &meta.command;
    let _ = writeln!(
        md,
        "## Beyond the paper: several training seeds\n\n{}\n\nMade by `{command}`: {k} training seeds (the profile's default is {}; `--train-seeds K` sets it).\n",
        s.note,
        meta.profile_field("/train_seeds").unwrap_or(&Value::Null)
    );
    let _ = writeln!(
        md,
        "### Table 2 set average per seed\n\n| model | {} | across seeds (95% CI over seeds) | sd over seeds | CI half-width over draws, seed 0 |\n|---|{}---|---|---|",
        (0..k)
            .map(|i| format!("seed {i}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(k as usize)
    );
    let mut per_seed_series = Vec::new();
    let mut mean_points = Vec::new();
    let mut names = Vec::new();
    for (i, m) in s.models.iter().enumerate() {
        let seeds: Vec<Option<MeanCi>> = m.per_seed.iter().map(|x| x.sets_average).collect();
        let across = m.across_seeds;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {} |",
            m.model,
            seeds
                .iter()
                .map(|c| c.map_or("–".into(), |c| format!("{:.2}", c.mean)))
                .collect::<Vec<_>>()
                .join(" | "),
            fmt_ci(&across, false),
            m.seed_sd,
            seeds
                .first()
                .copied()
                .flatten()
                .map_or("–".into(), |c| format!("{:.2}", c.half_width())),
        );
        // One series for every seed's point (offset by seed): the legend stays short
        // enough to leave the data alone.
        for (j, c) in seeds.iter().enumerate() {
            if let Some(c) = c {
                if per_seed_series.is_empty() {
                    per_seed_series.push(
                        Series::ours(
                            "one training seed each, 95% CI over weight draws",
                            Family::Other,
                            Vec::new(),
                        )
                        .points_only(),
                    );
                }
                per_seed_series[0].points.push((
                    i as f64 + 0.06 * j as f64 - 0.12,
                    c.mean,
                    c.ci95[0],
                    c.ci95[1],
                ));
            }
        }
        names.push(m.model.clone());
        if let Some(a) = across {
            mean_points.push((
                if m.bayesian {
                    Family::Bnn
                } else {
                    Family::Deterministic
                },
                (i as f64, a.mean, a.ci95[0], a.ci95[1]),
            ));
        }
    }
    let mut series: Vec<Series> = [
        (Family::Bnn, "BNNs"),
        (Family::Deterministic, "deterministic nets"),
        (Family::Control, "controls"),
    ]
    .into_iter()
    .filter_map(|(family, label)| {
        let points: Vec<_> = mean_points
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, p)| *p)
            .collect();
        (!points.is_empty()).then(|| {
            Series::ours(
                format!("{label}: mean over seeds, 95% CI over seeds"),
                family,
                points,
            )
            .points_only()
        })
    })
    .collect();
    // The per-seed points first, so that the means are drawn over them.
    per_seed_series.append(&mut series);
    let series = per_seed_series;
    let mut f = figure(
        "Table 2 set average of every model across training seeds",
        "model",
        "accuracy on the 12 sets (%)",
        series,
    );
    f.x_axis = plots::XAxis::Categorical(names);
    f.legend = plots::SeriesLabelPosition::UpperLeft;
    let caption = "Each model's Table 2 set average per training seed (CI over weight draws) and over seeds (CI over seeds); models in the order of the table";
    let path = super::embed_figure(&f, out_dir, "seeds.svg", caption, md)?;

    let paper_margin = paper(
        paper_tables,
        "/claims/bnn_over_deterministic_average_margin_points",
    )?;
    let _ = writeln!(
        md,
        "### The margin per seed, paired on the same test images\n\n| seed | best BNN | best deterministic | margin (points) | paired bootstrap 95% CI |\n|---|---|---|---|---|"
    );
    let per_seed = &s.margin.per_seed;
    let mut positive = 0;
    let mut negative = 0;
    for m in per_seed {
        let boot = m.paired_bootstrap;
        if let Some(b) = boot {
            positive += (b.ci95[0] > 0.0) as usize;
            negative += (b.ci95[1] < 0.0) as usize;
        }
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:+.2} | {} |",
            m.seed,
            m.best_bnn,
            m.best_deterministic,
            m.margin,
            boot.map_or("–".into(), |b| format!(
                "[{:+.2}, {:+.2}]",
                b.ci95[0], b.ci95[1]
            ))
        );
    }
    let across = s.margin.across_seeds;
    let verdict = match across {
        Some(a) if a.ci95[0] > 0.0 && a.ci95[0] <= paper_margin && paper_margin <= a.ci95[1] => {
            "has a Student-t CI across seeds above 0 that contains the paper's size (exploratory: no image resampling, no selection)"
        }
        Some(a) if a.ci95[0] > 0.0 => {
            "has a Student-t CI across seeds above 0 that excludes the paper's size (exploratory: no image resampling, no selection)"
        }
        Some(a) if a.ci95[1] < 0.0 => {
            "has a Student-t CI across seeds below 0 (exploratory: no image resampling, no selection)"
        }
        Some(_) => {
            "has a Student-t CI across seeds that spans 0 (exploratory: no image resampling, no selection)"
        }
        None => "has no CI across seeds: too few seeds",
    };
    let _ = writeln!(
        md,
        "\nAcross the {k} seeds the margin is {} points (Student t over seeds); the paper reports {paper_margin:+.1}. {positive} of {} seeds have a paired CI above 0, {negative} below 0. The margin {verdict}; its verdict is in \"The answer\".\n",
        fmt_ci(&across, true),
        per_seed.len(),
    );
    Ok(vec![path])
}
