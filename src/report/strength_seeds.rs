//! The report's "Across training seeds" part of the strength section, from results.json's
//! typed `strength.seeds` ([`SeedsAtStrength`]): per point and headline comparison the
//! margin at each seed (CI over weight draws, paired bootstrap CI over test images) and
//! across the seeds, with one computed sentence per comparison.

use std::fmt::Write as _;

use super::strength::ci;
use crate::experiment::strength::{SeedComparison, SeedsAtStrength, Verdict};

fn word(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Holds) => "both CIs above 0 (exploratory)",
        Some(Verdict::Reversed) => "both CIs below 0 (exploratory)",
        Some(Verdict::Unresolved) => "a CI spans 0, or the two disagree (exploratory)",
        None => "one seed only",
    }
}

/// How many seeds' paired bootstrap CIs lie above 0 and below 0.
fn per_seed_signs(c: &SeedComparison) -> (usize, usize) {
    c.per_seed
        .iter()
        .filter_map(|m| m.paired_bootstrap.as_ref())
        .fold((0, 0), |(up, down), b| {
            (
                up + usize::from(b.ci95[0] > 0.0),
                down + usize::from(b.ci95[1] < 0.0),
            )
        })
}

/// One sentence per comparison at a point, from the CIs.
fn sentence(point: &str, c: &SeedComparison, seeds: usize) -> String {
    let (up, down) = per_seed_signs(c);
    let across = c.across_seeds.as_ref().map_or("no CI".to_owned(), ci);
    let both = c.seeds_and_images.as_ref().map_or("no CI".to_owned(), ci);
    format!(
        "At {point}, {}: {across} across {seeds} seeds, {both} with seeds and test images resampled together ({}); per seed, the paired bootstrap over test images puts {up} of {seeds} above 0 and {down} below 0.",
        c.name,
        word(c.verdict)
    )
}

/// Renders the part into `md`.
pub fn seeds_part(section: &SeedsAtStrength, md: &mut String) {
    let k = section.train_seeds;
    let _ = writeln!(
        md,
        "\n### Across training seeds (points)\n\n{}\n\nExploratory: the \"above/below 0\" readings here describe these two CIs, which leave out the choice of the best model; they are not verdicts (those are in \"The answer\").\n",
        section.note
    );
    let seed_cols: String = (0..k).map(|s| format!(" seed {s} |")).collect();
    let _ = writeln!(
        md,
        "| point | comparison | across seeds (Student t) | seeds and images (two-level bootstrap) | both CIs (exploratory) |{seed_cols}\n|---|---|---|---|---|{}",
        "---|".repeat(k)
    );
    for p in &section.points {
        for c in &p.comparisons {
            let cells: String = c
                .per_seed
                .iter()
                .map(|m| {
                    let boot = m.paired_bootstrap.as_ref().map_or("?".to_owned(), |b| {
                        format!("[{:+.2}, {:+.2}]", b.ci95[0], b.ci95[1])
                    });
                    format!(
                        " {:+.2} (draws ±{:.2}; images {boot}) |",
                        m.over_draws.mean,
                        m.over_draws.half_width()
                    )
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |{cells}",
                p.name,
                c.name,
                c.across_seeds.as_ref().map_or("?".to_owned(), ci),
                c.seeds_and_images.as_ref().map_or("?".to_owned(), ci),
                word(c.verdict)
            );
        }
    }
    let _ = writeln!(md);
    for p in &section.points {
        for c in &p.comparisons {
            let _ = writeln!(md, "- {}", sentence(&p.name, c, c.per_seed.len()));
        }
    }
    let _ = writeln!(
        md,
        "\nThe models compared at each seed (the best BNN and the best deterministic net are chosen per seed and point):\n"
    );
    for p in &section.points {
        for c in &p.comparisons {
            let pairs: Vec<String> = c
                .per_seed
                .iter()
                .map(|m| format!("seed {}: {} vs {}", m.seed, m.a, m.b))
                .collect();
            let _ = writeln!(md, "- {}, {}: {}", p.name, c.name, pairs.join("; "));
        }
    }
    let _ = writeln!(
        md,
        "\nEach model's set average across the seeds (percent, Student t over the seeds):\n"
    );
    let point_cols: String = section
        .points
        .iter()
        .map(|p| format!(" {} |", p.name))
        .collect();
    let _ = writeln!(
        md,
        "| model |{point_cols}\n|---|{}",
        "---|".repeat(section.points.len())
    );
    for m in &section.models {
        let cells: String = m
            .across_seeds
            .iter()
            .map(|c| {
                c.as_ref().map_or(" ? |".to_owned(), |c| {
                    format!(" {:.1} ± {:.1} |", c.mean, c.half_width())
                })
            })
            .collect();
        let _ = writeln!(md, "| {} |{cells}", m.label);
    }
}
