//! The report's "Attack strength" section, from results.json's typed `strength`
//! ([`StrengthSection`]): the sets along each knob, every model at every strength, the
//! three margins with their verdicts, and the paper's claims at each claim point.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::plots::{Family, Figure, Line, Series};
use super::{Claim, ReportError, Result, embed_figure};
use crate::attack::BudgetReading;
use crate::experiment::strength::{
    ClaimPoint, Comparison, Family as StrengthFamily, HEADLINES, StrengthPoint, StrengthSection,
    Verdict,
};
use crate::results::{Cell as Estimate, CodeSweep, TargetedSetRow};
use crate::stats::MeanCi;
use crate::verdicts::bound::BoundLabel;

pub(super) fn ci(c: &MeanCi) -> String {
    format!("{:+.2} [{:+.2}, {:+.2}]", c.mean, c.ci95[0], c.ci95[1])
}

fn acc(c: &MeanCi) -> String {
    if c.runs > 1 {
        format!("{:.1} ± {:.1}", c.mean, c.half_width())
    } else {
        format!("{:.1}", c.mean)
    }
}

/// A margin's verdict in words.
fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Holds => "draws-only CI above 0",
        Verdict::Reversed => "draws-only CI below 0",
        Verdict::Unresolved => "draws-only CI spans 0",
    }
}

/// A claim's verdict in words.
fn claim_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Holds => "(draws-only CI above 0)",
        Verdict::Reversed => "(draws-only CI below 0)",
        Verdict::Unresolved => "(draws-only CI spans 0)",
    }
}

/// The points of one reading along one knob: m (κ = 0) or κ (m = 1, with κ = 0).
fn along(section: &StrengthSection, reading: BudgetReading, knob_m: bool) -> Vec<usize> {
    section
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let s = p.strengths[0];
            s.reading == reading && if knob_m { s.kappa == 0.0 } else { s.m == 1.0 }
        })
        .map(|(i, _)| i)
        .collect()
}

fn point_name(p: &StrengthPoint) -> String {
    let s = p.strengths[0];
    if s.kappa == 0.0 {
        format!("m={}", s.m)
    } else {
        format!("κ={}", s.kappa)
    }
}

/// A point's sets against the paper's per-set bound, in words.
fn bound_of(section: &StrengthSection, p: &StrengthPoint) -> String {
    let means: Vec<f64> = p.sets.iter().map(|s| s.mean_distortion).collect();
    BoundLabel::of(&means, section.bound).describe(section.bound)
}

fn sets_table(section: &StrengthSection, md: &mut String) {
    let _ = writeln!(
        md,
        "| reading | strength | mean distortion (12-set average) | the paper's bound (per set) | success on the source | scaled by the budget |\n|---|---|---|---|---|---|"
    );
    for p in &section.points {
        let n = p.sets.len().max(1) as f64;
        let success = p.sets.iter().map(|s| s.success_rate).sum::<f64>() / n;
        let scaled = p.sets.iter().map(|s| s.scaled_fraction).sum::<f64>() / n;
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {} | {:.1}% | {:.1}% |",
            p.strengths[0].reading.label(),
            point_name(p),
            p.mean_distortion,
            bound_of(section, p),
            100.0 * success,
            100.0 * scaled
        );
    }
}

fn models_table(section: &StrengthSection, idx: &[usize], md: &mut String) {
    let head: Vec<String> = idx
        .iter()
        .map(|&i| point_name(&section.points[i]))
        .collect();
    let _ = writeln!(
        md,
        "| model | {} |\n|---|{}",
        head.join(" | "),
        "---|".repeat(head.len())
    );
    for row in &section.models {
        let cells: Vec<String> = idx.iter().map(|&i| acc(&row.average[i])).collect();
        let _ = writeln!(md, "| {} | {} |", row.label, cells.join(" | "));
    }
}

fn comparisons_table(section: &StrengthSection, idx: &[usize], md: &mut String) {
    let _ = writeln!(
        md,
        "| strength | mean distortion | the paper's bound (per set) | {} |\n|---|---|---|{}",
        section
            .comparisons
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(section.comparisons.len())
    );
    for &i in idx {
        let cells: Vec<String> = section
            .comparisons
            .iter()
            .map(|c| {
                format!(
                    "{} ({}; {})",
                    ci(&c.margin[i]),
                    verdict(Verdict::of(&c.margin[i])),
                    c.a[i]
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {:.4} | {} | {} |",
            point_name(&section.points[i]),
            section.points[i].mean_distortion,
            bound_of(section, &section.points[i]),
            cells.join(" | ")
        );
    }
}

/// Where a comparison is positive, negative and unresolved along `idx`, in words.
fn verdict_line(c: &Comparison, section: &StrengthSection, idx: &[usize]) -> String {
    let by = |v: Verdict| -> Vec<String> {
        idx.iter()
            .filter(|&&i| Verdict::of(&c.margin[i]) == v)
            .map(|&i| point_name(&section.points[i]))
            .collect()
    };
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    format!(
        "**{}** (CIs over weight draws only; exploratory, no verdict): above 0 at {}; below 0 at {}; spans 0 at {}.",
        c.name,
        list(by(Verdict::Holds)),
        list(by(Verdict::Reversed)),
        list(by(Verdict::Unresolved))
    )
}

fn claim_point(cp: &ClaimPoint, md: &mut String) {
    let _ = writeln!(
        md,
        "\n#### {}\n\n12-set average mean distortion {:.4}; success on the sources {:.1}%.\n",
        cp.name,
        cp.point.mean_distortion,
        100.0 * cp.point.sets.iter().map(|s| s.success_rate).sum::<f64>()
            / cp.point.sets.len().max(1) as f64
    );
    if !cp.matched.is_empty() {
        let _ = writeln!(
            md,
            "| set | paper's λ = 0 accuracy | matched {} | bracketing points ({}, our λ = 0 accuracy) |\n|---|---|---|---|",
            cp.axis, cp.axis
        );
        for m in &cp.matched {
            let bracket = match (&m.bracket, &m.why_not) {
                (Some(b), _) => format!(
                    "({}, {:.1}%) – ({}, {:.1}%)",
                    b.below[0],
                    100.0 * b.below[1],
                    b.above[0],
                    100.0 * b.above[1]
                ),
                (None, Some(why)) => format!("not reached ({why}); evaluated at the nearest end"),
                (None, None) => "not reached".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.2} | {:.3} | {bracket} |",
                m.source, m.paper_accuracy, m.strength
            );
        }
        let missed = cp.matched.iter().filter(|m| !m.reached).count();
        if missed > 0 {
            let _ = writeln!(
                md,
                "\n{missed} of {} sets never met the paper's accuracy within the measured range and are evaluated at the nearest end of it (the strongest point where our λ = 0 net stays more accurate than the paper's, so those cells remain easier than the paper's; the weakest where it is never as accurate).",
                cp.matched.len()
            );
        }
    }
    let _ = writeln!(
        md,
        "\n| the paper's claim | paper | ours (95% CI) | verdict |\n|---|---|---|---|"
    );
    for c in &cp.claims {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            c.claim,
            c.paper.map_or("–".to_owned(), |p| format!("{p:+.1}")),
            ci(&c.ours),
            claim_word(c.verdict)
        );
    }
    let _ = writeln!(md, "\n| model | 12-set average |\n|---|---|");
    for row in &cp.models {
        let _ = writeln!(md, "| {} | {} |", row.label, acc(&row.average[0]));
    }
    for c in &cp.comparisons {
        let _ = writeln!(
            md,
            "\n{}: {} ({}).",
            c.name,
            ci(&c.margin[0]),
            verdict(Verdict::of(&c.margin[0]))
        );
    }
}

/// A comparison's name for a legend: "best BNN − best det.", "best BNN − BNN-init det.",
/// "ρ −3 − ρ −30".
fn short_name(name: &str) -> String {
    name.replace("best deterministic", "best det.")
        .replace("matched-init control", "BNN-init det.")
        .replace("rho_init=", "ρ ")
        .replace(" - ", " − ")
}

/// The code protocol's best BNN − best deterministic net along its multiplier sweep
/// (both groups at the same m), against its kept sets' mean distortion × m (the
/// notebooks do not clip, so distortion scales with m).
fn code_curve(code: &Value) -> Option<Series> {
    let sweep: CodeSweep = super::typed(&code["sweep"], "/sweep").ok()?;
    let sets: Vec<TargetedSetRow> =
        super::typed(&code["perturbation_sets"], "/perturbation_sets").ok()?;
    let ms = &sweep.multipliers;
    let d = sets.iter().map(|s| s.mean_distortion).sum::<f64>() / sets.len().max(1) as f64;
    let group = |g: &str| -> Vec<&[Estimate]> {
        sweep
            .models
            .iter()
            .filter(|m| m.group == g)
            .map(|m| m.average.as_slice())
            .collect()
    };
    let (bnn, det) = (group("bnn"), group("det"));
    let best = |rows: &[&[Estimate]], i: usize| {
        rows.iter()
            .filter_map(|r| *r.get(i)?)
            .max_by(|a, b| a.mean.total_cmp(&b.mean))
    };
    let points = (0..ms.len())
        .filter_map(|i| {
            let c = best(&bnn, i)?.minus_independent(&best(&det, i)?);
            Some((ms[i] * d, c.mean, c.ci95[0], c.ci95[1]))
        })
        .collect();
    Some(Series::ours(
        "best BNN − best det., authors' code (both × m)",
        Family::Other,
        points,
    ))
}

/// Best BNN − best deterministic net across the training seeds (Student-t CI over the
/// seeds) at each point of the seeds study.
fn across_seeds_series(seeds: &crate::experiment::strength::SeedsAtStrength) -> Option<Series> {
    let points: Vec<(f64, f64, f64, f64)> = seeds
        .points
        .iter()
        .filter_map(|p| {
            let c = p.comparisons.iter().find(|c| c.name == HEADLINES[0])?;
            let a = c.across_seeds.as_ref()?;
            Some((p.mean_distortion, a.mean, a.ci95[0], a.ci95[1]))
        })
        .collect();
    (!points.is_empty()).then(|| {
        Series::ours(
            format!(
                "{}, across {} training seeds",
                short_name(HEADLINES[0]),
                seeds.train_seeds
            ),
            Family::Deterministic,
            points,
        )
        .points_only()
    })
}

fn margin_figure(
    section: &StrengthSection,
    paper_margin: Option<f64>,
    code: Option<&Value>,
) -> Figure {
    let cap_m = along(section, BudgetReading::PerExampleCap, true);
    let cap_k = along(section, BudgetReading::PerExampleCap, false);
    // The margins are differences, coloured by what the BNN is compared with.
    let family_of = |c: &Comparison| match c.against {
        Some(StrengthFamily::Deterministic) => Family::Deterministic,
        Some(StrengthFamily::BnnDraw) => Family::Bnn,
        Some(StrengthFamily::DeepEnsemble) => Family::DeepEnsemble,
        Some(_) => Family::Control,
        None => Family::Other,
    };
    let series_of = |c: &Comparison, idx: &[usize], name: String, line: bool| {
        let s = Series::ours(
            name,
            family_of(c),
            idx.iter()
                .map(|&i| {
                    let m = &c.margin[i];
                    (
                        section.points[i].mean_distortion,
                        m.mean,
                        m.ci95[0],
                        m.ci95[1],
                    )
                })
                .collect(),
        );
        if line { s } else { s.points_only() }
    };
    let mut series: Vec<Series> = section
        .comparisons
        .iter()
        .map(|c| series_of(c, &cap_m, format!("{} (m)", short_name(&c.name)), true))
        .collect();
    if let Some(c) = section.comparisons.first() {
        series.push(series_of(
            c,
            &cap_k,
            format!("{} (κ, m = 1)", short_name(&c.name)),
            false,
        ));
    }
    for cp in section
        .claim_points
        .iter()
        .filter(|cp| !cp.matched.is_empty())
    {
        if let Some((c0, m)) = cp
            .comparisons
            .first()
            .and_then(|c| Some((c, c.margin.first()?)))
        {
            series.push(
                Series::ours(
                    format!("{}, paper-matched {}", short_name(&c0.name), cp.axis),
                    family_of(c0),
                    vec![(cp.point.mean_distortion, m.mean, m.ci95[0], m.ci95[1])],
                )
                .points_only(),
            );
        }
    }
    series.extend(section.seeds.as_ref().and_then(across_seeds_series));
    series.extend(code.and_then(code_curve));
    let mut f = Figure::new(
        "Best-BNN margins vs attack strength (text protocol, per-example cap)",
        "12-set average mean distortion (RMS per pixel)",
        "margin of set averages (points)",
        series,
    );
    f.references = vec![Line::new("no margin", 0.0, Family::Other)];
    // The paper's bound holds per set; on this axis (the 12-set average) a point left
    // of the line can still have one set above it (the bound labels say which).
    f.verticals = vec![Line::new(
        format!("the paper's bound ({:.2}, per set)", section.bound),
        section.bound,
        Family::Other,
    )];
    if let Some(p) = paper_margin {
        f.references.push(Line::new(
            format!("paper's margin ({p:+.1})"),
            p,
            Family::Deterministic,
        ));
    }
    // Its curves rise and fall across the whole plot: no corner is free for the legend.
    f.legend_below = true;
    f
}

/// The paper's four claims, one row per reading of its difficulty: Table 2's sets as
/// made (the main claims table), then each claim point.
fn summary_table(main: &[Claim], section: &StrengthSection, md: &mut String) -> Result<()> {
    let head: Vec<String> = main
        .iter()
        .map(|c| match c.paper {
            Some(p) => format!("{} (paper {p:+.1})", c.text),
            None => c.text.to_owned(),
        })
        .collect();
    let _ = writeln!(
        md,
        "### The paper's claims at each reading of its difficulty (points, 95% CI over weight draws only)\n\nDescriptive: these CIs leave out test images and training seeds, so they carry no verdict (the verdicts are in \"The answer\", from one rule). A reading with any set above the paper's bound is labelled so; it feeds no headline.\n\n| reading | sets' mean distortion | the paper's bound | {} |\n|---|---|---|{}",
        head.join(" | "),
        "---|".repeat(head.len())
    );
    let cell = |c: &MeanCi| format!("{} {}", ci(c), claim_word(Verdict::of(c)));
    let table2 = section.points.iter().find(|p| {
        p.strengths
            .iter()
            .all(|s| *s == crate::experiment::strength::Strength::TABLE2)
    });
    let bound = |p: &StrengthPoint| bound_of(section, p);
    let _ = writeln!(
        md,
        "| min-norm sets as made (per-example cap, m = 1) | {} | {} | {} |",
        table2.map_or("?".to_owned(), |p| format!("{:.4}", p.mean_distortion)),
        table2.map_or("?".to_owned(), bound),
        main.iter()
            .map(|c| cell(&c.ours))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for cp in &section.claim_points {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {} | {} |",
            cp.name,
            cp.point.mean_distortion,
            bound(&cp.point),
            cp.claims
                .iter()
                .map(|c| cell(&c.ours))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let _ = writeln!(md);
    Ok(())
}

/// Renders the section into `md` (and its figure into `out_dir`); nothing when the run
/// had no strength stage.
pub(super) fn strength_section(
    results: &Value,
    paper_tables: &Value,
    main_claims: &[Claim],
    code: Option<&Value>,
    md: &mut String,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    if results["strength"].is_null() {
        return Ok(Vec::new());
    }
    let section: StrengthSection = serde_json::from_value(results["strength"].clone())
        .map_err(|e| ReportError::MissingCell(format!("/strength ({e})")))?;
    let _ = writeln!(
        md,
        "## Attack strength: the paper's question along the knobs it depends on\n\n{}\n\nMade by `{}`.\n",
        section.note,
        super::meta_of(results)?.command
    );
    summary_table(main_claims, &section, md)?;
    let _ = writeln!(md, "### The sets at every strength\n");
    sets_table(&section, md);
    let mut written = Vec::new();
    let paper_margin = paper_tables
        .pointer("/claims/bnn_over_deterministic_average_margin_points")
        .and_then(Value::as_f64)
        .filter(|_| super::compares_with_paper(results));
    written.push(embed_figure(
        &margin_figure(&section, paper_margin, code),
        out_dir,
        "strength_margin.svg",
        "The three margins (set averages, points, 95% CI) against the sets' average mean distortion, under the per-example cap: along the evaluation multiplier m (lines) and along the attack confidence κ at m = 1 (markers); the paper-matched points where measured; where this profile's code-protocol run exists, its best BNN − best deterministic net with both at the same multiplier; the paper's Table 2 margin as a dashed line.",
        md,
    )?);
    for reading in [BudgetReading::PerExampleCap, BudgetReading::SetMean] {
        let idx: Vec<usize> = along(&section, reading, true)
            .into_iter()
            .chain(
                along(&section, reading, false)
                    .into_iter()
                    .filter(|&i| section.points[i].strengths[0].kappa != 0.0),
            )
            .collect();
        if idx.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "\n### Every model at every strength ({}; set averages, percent)\n",
            reading.label()
        );
        models_table(&section, &idx, md);
        let _ = writeln!(
            md,
            "\n### The margins ({}; points, 95% CI; the BNN named is the best one at that strength)\n",
            reading.label()
        );
        comparisons_table(&section, &idx, md);
        let _ = writeln!(md);
        for c in &section.comparisons {
            let _ = writeln!(md, "- {}", verdict_line(c, &section, &idx));
        }
    }
    if let Some(seeds) = &section.seeds {
        super::strength_seeds::seeds_part(seeds, md);
    }
    let _ = writeln!(md, "\n### The claim points in full");
    for cp in &section.claim_points {
        claim_point(cp, md);
    }
    Ok(written)
}
