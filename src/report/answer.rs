//! "The answer": the report's opening section. The paper's four claims as the
//! pre-specified primary family, at the primary reading, with CIs over test images (and
//! training seeds where the per-example files hold several), their ratio to the paper's
//! sizes, and the verdict [`crate::verdicts::rule::Verdict::of`] computes; the
//! exploratory comparisons; and the paper's distortion bound along the strength axis.
//! Every number is recomputed from the report folder's committed files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{ReportError, Result};
use crate::experiment::strength::StrengthSection;
use crate::verdicts::bootstrap::BootstrapConfig;
use crate::verdicts::bound::{BoundLabel, BoundPoint, Frontier, frontiers};
use crate::verdicts::claims::{FamilyResult, FamilyScores, PrimaryClaim, evaluate};
use crate::verdicts::claims::{StudyResult, evaluate_study_point};
use crate::verdicts::per_example_file::{
    StudyScores, has_per_example, read_reading_scores, read_seed_scores, read_study_scores,
};

/// The strength study's point that is the primary reading (Table 2's sets, m = 1).
const PRIMARY_STUDY_POINT: &str = "m=1";
use crate::verdicts::{PRIMARY_READING, PRIMARY_READINGS, VerdictError};

fn verdict_error(e: VerdictError) -> ReportError {
    ReportError::Section {
        section: "per_example",
        reason: e.to_string(),
    }
}

/// The family computed from `dir`'s per-example files, or `None` where the folder has
/// none (the section then says so).
pub fn family_of(
    dir: &Path,
    paper_tables: &Value,
    bound: f64,
    study: Option<&[StudyScores]>,
) -> Result<Option<(FamilyResult, BoundLabel)>> {
    if !has_per_example(dir) {
        return Ok(None);
    }
    let reading = read_reading_scores(dir, bound).map_err(verdict_error)?;
    let across_seeds = read_seed_scores(dir).map_err(verdict_error)?;
    let scores = FamilyScores {
        one_seed: &reading.scores,
        across_seeds: across_seeds.as_ref(),
        study: study
            .and_then(|s| s.iter().find(|p| p.name == PRIMARY_STUDY_POINT))
            .map(|p| &p.scores),
    };
    let paper = |c: PrimaryClaim| {
        paper_tables
            .pointer(&format!("/claims/{}", c.paper_key()))
            .and_then(Value::as_f64)
            .ok_or_else(|| VerdictError::MissingPaperValue(c.paper_key().to_owned()))
    };
    let family = evaluate(
        scores,
        paper,
        PrimaryClaim::ALL.len() * PRIMARY_READINGS,
        BootstrapConfig::default(),
    )
    .map_err(verdict_error)?;
    Ok(Some((family, reading.bound)))
}

fn pct(level: f64) -> String {
    let s = format!("{:.3}", 100.0 * level);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// What a CI resamples, in words.
fn covers(seeds: usize, n: usize) -> String {
    if seeds > 1 {
        format!("{seeds} training seeds × {n} test images")
    } else {
        format!("{n} test images (1 training seed)")
    }
}

/// The primary family's table and what its CIs cover.
fn family_table(f: &FamilyResult, bound: &BoundLabel, bound_value: f64, md: &mut String) {
    let _ = writeln!(
        md,
        "At the primary reading ({PRIMARY_READING}; {}):\n\n| primary claim | paper | ours | {} simultaneous CI | the CI resamples | ours ÷ paper [CI] | verdict |\n|---|---|---|---|---|---|---|",
        bound.describe(bound_value),
        pct(f.per_claim_level)
    );
    for r in &f.primary {
        let _ = writeln!(
            md,
            "| {} | {:+.1} | {:+.2} | [{:+.2}, {:+.2}] | {} | {:.2} [{:.2}, {:.2}] | **{}** |",
            r.claim.text(),
            r.paper,
            r.estimate,
            r.ci[0],
            r.ci[1],
            covers(r.seeds, f.n),
            r.ratio,
            r.ratio_ci[0],
            r.ratio_ci[1],
            r.verdict.word()
        );
    }
    let max_seeds = f.primary.iter().map(|r| r.seeds).max().unwrap_or(1);
    let _ = writeln!(
        md,
        "\nMargins in percentage points of accuracy, averaged over the 12 perturbation sets, and with K training seeds over the seeds too. **CIs**: a hierarchical paired percentile bootstrap ({} resamples, generator seed {}): {}test images resampled with the same indices for every model and set, each \"best\" model chosen again inside every resample, weight draws entering through each image's fraction of correct draws. **Multiplicity**: Bonferroni simultaneous CIs, family-wise {} over {} comparisons (the 4 claims × {} pre-specified reading), so each CI is at {}. **Verdict rule** (one rule for every verdict): reproduced = the CI contains the paper's value or lies above it; smaller = above 0, below the paper's value; not settled = contains 0 (even if it also contains the paper's value); reversed = below 0.",
        f.bootstrap.resamples,
        f.bootstrap.seed,
        if max_seeds > 1 {
            format!(
                "where a claim's models were trained at K > 1 seeds, the seeds resampled first (each resample's deviation widened ×{:.2} for K − 1 degrees of freedom), then ",
                f.inflation
            )
        } else {
            String::new()
        },
        pct(f.family_level),
        f.family_size,
        PRIMARY_READINGS,
        pct(f.per_claim_level),
    );
    let short: Vec<&str> = f
        .primary
        .iter()
        .filter(|r| r.seeds < 3)
        .map(|r| r.claim.text())
        .collect();
    if !short.is_empty() {
        let _ = writeln!(
            md,
            "\n**Seed variance is not covered** for {}: the per-example files hold fewer than 3 training seeds of {}, so {} CIs leave out how much a model moves when retrained.",
            if short.len() == f.primary.len() {
                "every claim".to_owned()
            } else {
                short.join("; ")
            },
            if short.len() == 1 {
                "its models"
            } else {
                "their models"
            },
            if short.len() == 1 { "its" } else { "their" },
        );
    }
}

fn secondary_table(f: &FamilyResult, md: &mut String) {
    let _ = writeln!(
        md,
        "\n**Exploratory** (secondary comparisons; unadjusted 95% CIs over the same resamples; no verdict word):\n\n| comparison | ours | 95% CI | the CI resamples | |\n|---|---|---|---|---|"
    );
    for s in &f.secondary {
        match (s.estimate, s.ci, s.direction) {
            (Some(e), Some(ci), Some(d)) => {
                let _ = writeln!(
                    md,
                    "| {} | {e:+.2} | [{:+.2}, {:+.2}] | {} | {} |",
                    s.claim.text(),
                    ci[0],
                    ci[1],
                    covers(s.seeds, f.n),
                    d.word()
                );
            }
            _ => {
                let _ = writeln!(
                    md,
                    "| {} | – | – | – | not in this report's per-example files |",
                    s.claim.text()
                );
            }
        }
    }
}

fn cell(c: Option<(f64, [f64; 2])>) -> String {
    c.map_or("–".to_owned(), |(e, ci)| {
        format!("{e:+.2} [{:+.2}, {:+.2}]", ci[0], ci[1])
    })
}

/// The strength study's points (but the primary reading's): each comparison with an
/// unadjusted 95% CI over seeds × images, and each point's bound label.
fn study_table(points: &[StudyScores], bound: f64, md: &mut String) -> Result<Vec<StudyRow>> {
    let mut rows = Vec::new();
    for p in points.iter().filter(|p| p.name != PRIMARY_STUDY_POINT) {
        let result =
            evaluate_study_point(&p.scores, BootstrapConfig::default()).map_err(verdict_error)?;
        rows.push(StudyRow {
            point: p.name.clone(),
            bound: p.bound,
            result,
        });
    }
    let Some(first) = points.first() else {
        return Ok(rows);
    };
    let _ = writeln!(
        md,
        "\n**Along the attack's strength** (exploratory: unadjusted 95% CIs over {} training seeds × {} test images, best models chosen again in every resample, no verdict word; per-example cap, κ = 0; m = 1 is the primary reading above):\n\n| point | the paper's bound | best BNN − best deterministic | best BNN − matched-init net | ρ_init = −3 − ρ_init = −30 |\n|---|---|---|---|---|",
        first.scores.seeds(),
        first.scores.n()
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            r.point,
            r.bound.describe(bound),
            cell(r.result.best_bnn_over_best_det),
            cell(r.result.best_bnn_over_matched_init),
            cell(r.result.sampling)
        );
    }
    Ok(rows)
}

/// Every strength point's bound label and the within-bound frontier per reading and κ
/// (returned).
fn bound_part(section: &StrengthSection, md: &mut String) -> Vec<Frontier> {
    let points: Vec<BoundPoint> = section
        .points
        .iter()
        .map(|p| {
            let s = p.strengths[0];
            let means: Vec<f64> = p.sets.iter().map(|s| s.mean_distortion).collect();
            BoundPoint {
                reading: s.reading.label().to_owned(),
                kappa: s.kappa,
                m: s.m,
                label: BoundLabel::of(&means, section.bound),
            }
        })
        .collect();
    let _ = writeln!(
        md,
        "\n**The paper's bound, per set.** §4.2 bounds the average distortion of each of the 12 sets by {:.2}; a set counts as above it beyond a tolerance of 10⁻⁶ (float rounding at the cap). The within-bound frontier, the largest measured m at which every set is within the bound:\n\n| reading | κ | measured m | largest m within the bound |\n|---|---|---|---|",
        section.bound
    );
    let all = frontiers(&points);
    for f in &all {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            f.reading,
            f.kappa,
            f.measured
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            f.largest_m.map_or("none".to_owned(), |m| m.to_string())
        );
    }
    let outside: Vec<String> = section
        .claim_points
        .iter()
        .filter_map(|cp| {
            let means: Vec<f64> = cp.point.sets.iter().map(|s| s.mean_distortion).collect();
            let l = BoundLabel::of(&means, section.bound);
            (!l.within()).then(|| format!("\"{}\" ({})", cp.name, l.describe(section.bound)))
        })
        .collect();
    if !outside.is_empty() {
        let _ = writeln!(
            md,
            "\nOutside the paper's bound, so what it takes to reach the paper's numbers and no headline: {}. Their tables below keep them, labelled.",
            outside.join("; ")
        );
    }
    all
}

/// What `verdicts.json` holds: the family at the primary reading, and the bound's
/// frontier along the strength axis.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VerdictsFile {
    pub note: String,
    pub reading: String,
    pub reading_bound: Option<BoundLabel>,
    pub family: Option<FamilyResult>,
    pub frontiers: Vec<Frontier>,
    /// The strength study's points (exploratory), where the report has its files.
    pub strength_study: Vec<StudyRow>,
}

/// One point of the strength study: its bound label and the exploratory comparisons.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StudyRow {
    pub point: String,
    pub bound: BoundLabel,
    pub result: StudyResult,
}

/// Writes "The answer" into `md` and `verdicts.json` (the same numbers, typed) into
/// `dir`; returns the file written.
pub fn answer_section(
    results: &Value,
    paper_tables: &Value,
    dir: &Path,
    md: &mut String,
) -> Result<PathBuf> {
    let bound = paper_tables
        .pointer("/claims/mean_distortion_upper_bound")
        .and_then(Value::as_f64)
        .ok_or_else(|| ReportError::MissingPaper("/claims/mean_distortion_upper_bound".into()))?;
    let command = super::meta_of(results)?.command;
    let _ = writeln!(
        md,
        "## The answer\n\nMade by `{command}`; every number of this section is recomputed from the committed files of this folder (per_example.npz, results.json) by `bayes-robust report --dir <this folder>`, and written typed to [verdicts.json](verdicts.json).\n"
    );
    let mut file = VerdictsFile {
        note: "The paper's claims as one pre-specified family, recomputed by `bayes-robust report` from per_example.npz (and per_example_seeds.npz where present) with the procedure of src/verdicts/: a hierarchical paired percentile bootstrap over training seeds and test images with the best model chosen again in every resample, Bonferroni simultaneous CIs over the primary family, verdicts by one rule; and the paper's per-set distortion bound along the strength axis.".into(),
        reading: PRIMARY_READING.into(),
        reading_bound: None,
        family: None,
        frontiers: Vec::new(),
        strength_study: Vec::new(),
    };
    let study = read_study_scores(dir, bound).map_err(verdict_error)?;
    match family_of(dir, paper_tables, bound, study.as_deref())? {
        Some((family, label)) => {
            family_table(&family, &label, bound, md);
            secondary_table(&family, md);
            file.family = Some(family);
            file.reading_bound = Some(label);
        }
        None => {
            let _ = writeln!(
                md,
                "This report has no per-example files (`per_example.npz`), so its claims carry no CI over test images and no verdict: rerun with `--per-example`."
            );
        }
    }
    if let Some(points) = &study {
        file.strength_study = study_table(points, bound, md)?;
    }
    if !results["strength"].is_null() {
        let section: StrengthSection = serde_json::from_value(results["strength"].clone())
            .map_err(|e| ReportError::MissingCell(format!("/strength ({e})")))?;
        file.frontiers = bound_part(&section, md);
        let _ = writeln!(
            md,
            "\n![The margins along the attack strength](strength_margin.svg)\n\n*The margins along the attack's strength (from the section \"Attack strength\" below), with the paper's +{:.1} dashed. Their error bars are 95% CIs over weight draws only: descriptive, no verdict. Points whose 12-set average distortion is above {bound:.2} are outside the paper's bound; so are some below it, where one set is above it (the frontier table).*",
            paper_tables
                .pointer("/claims/bnn_over_deterministic_average_margin_points")
                .and_then(Value::as_f64)
                .unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(md);
    let path = dir.join("verdicts.json");
    let text = serde_json::to_string_pretty(&file).map_err(|e| ReportError::Write {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    crate::fsio::write_atomic(&path, format!("{text}\n").as_bytes()).map_err(|e| {
        ReportError::Write {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    Ok(path)
}
