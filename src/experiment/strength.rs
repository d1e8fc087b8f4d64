//! The text protocol along the attack-strength axis (`reproduce --strength`): every one
//! of the 12 perturbation sets under each budget reading, at evaluation multipliers m
//! (x + m·r) and at Carlini–Wagner confidences κ of the min-norm attack, the
//! paper-matched difficulty (the strength at which our λ = 0 net scores the paper's
//! Table 2 cell), and the controls that say where a margin comes from.
//!
//! This module holds the budget, the interpolation and the typed results; the stage
//! that computes them is `reproduce::strength_stage`.

use crate::attack::BudgetReading;
use crate::stats::MeanCi;

/// The strength axis's budget.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StrengthProfile {
    /// Evaluation multipliers m of x + m·r (κ = 0 sets).
    pub multipliers: Vec<f64>,
    /// Confidences κ > 0 of extra min-norm attacks (κ = 0 is the profile's attack),
    /// evaluated at m = 1.
    pub kappas: Vec<f64>,
    /// Budget readings every strength is evaluated under.
    pub readings: Vec<BudgetReading>,
    /// Single-draw runs per BNN and sweep cell.
    pub runs: usize,
    /// Single-draw runs per BNN at the claim points (set-mean budget at m = 1 and the
    /// two paper-matched difficulties).
    pub matched_runs: usize,
    /// Runs of the Table 3 (100-draw) and Table 4 (75% pruned) ensembles at the claim
    /// points.
    pub ensemble_runs: usize,
    /// Members of the deep ensemble of default-init deterministic nets (the first is the
    /// λ = 0 net of the grid).
    pub ensemble_members: usize,
    /// Multipliers m (per-example cap, κ = 0) at which the headline comparisons are
    /// measured across training seeds, beside the paper-matched m.
    #[serde(default = "seed_multipliers")]
    pub seed_multipliers: Vec<f64>,
}

fn seed_multipliers() -> Vec<f64> {
    vec![1.0, 1.5, 2.0]
}

impl StrengthProfile {
    pub fn paper() -> Self {
        Self {
            multipliers: vec![0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
            kappas: vec![5.0, 10.0, 20.0],
            readings: vec![BudgetReading::PerExampleCap, BudgetReading::SetMean],
            runs: 20,
            matched_runs: 100,
            ensemble_runs: 5,
            ensemble_members: 5,
            seed_multipliers: seed_multipliers(),
        }
    }

    pub fn quick() -> Self {
        Self {
            multipliers: vec![0.0, 1.0, 2.0, 4.0, 8.0],
            kappas: vec![5.0],
            readings: vec![BudgetReading::PerExampleCap, BudgetReading::SetMean],
            runs: 10,
            matched_runs: 4,
            ensemble_runs: 2,
            ensemble_members: 2,
            seed_multipliers: vec![1.0, 2.0],
        }
    }
}

/// The strength of one evaluation of a set: its budget reading, the confidence κ of
/// the attack that made it and the multiplier m.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Strength {
    pub reading: BudgetReading,
    pub kappa: f64,
    pub m: f64,
}

impl Strength {
    /// The 12 sets of Table 2 (per-example cap, κ = 0, m = 1).
    pub const TABLE2: Strength = Strength {
        reading: BudgetReading::PerExampleCap,
        kappa: 0.0,
        m: 1.0,
    };

    pub fn label(&self) -> String {
        format!(
            "{}, kappa={}, m={}",
            self.reading.label(),
            self.kappa,
            self.m
        )
    }
}

/// The strengths of the sweep: every reading at every multiplier (κ = 0), and every
/// reading at every κ > 0 (m = 1).
pub fn sweep(p: &StrengthProfile) -> Vec<Strength> {
    p.readings
        .iter()
        .flat_map(|&reading| {
            let along_m = p.multipliers.iter().map(move |&m| Strength {
                reading,
                kappa: 0.0,
                m,
            });
            let along_kappa = p.kappas.iter().map(move |&kappa| Strength {
                reading,
                kappa,
                m: 1.0,
            });
            along_m.chain(along_kappa)
        })
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StrengthError {
    #[error(
        "the paper's accuracy {target:.4} is outside the measured range [{lo:.4}, {hi:.4}] of {axis} in [{first}, {last}]"
    )]
    OutOfRange {
        axis: &'static str,
        target: f64,
        lo: f64,
        hi: f64,
        first: f64,
        last: f64,
    },
    #[error("need at least two measured strengths of {axis}, got {n}")]
    TooFew { axis: &'static str, n: usize },
}

/// A strength at which an accuracy curve meets a target, with the measured points that
/// bracket it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Matched {
    pub strength: f64,
    /// (strength, accuracy) just below and above.
    pub below: [f64; 2],
    pub above: [f64; 2],
}

/// The strength s at which the piecewise-linear curve through `points` (strength,
/// accuracy; sorted by strength) first reaches `target`: linear between the first
/// bracketing pair. Fails when `target` lies outside the accuracies measured.
pub fn matched_strength(
    axis: &'static str,
    points: &[(f64, f64)],
    target: f64,
) -> Result<Matched, StrengthError> {
    if points.len() < 2 {
        return Err(StrengthError::TooFew {
            axis,
            n: points.len(),
        });
    }
    for pair in points.windows(2) {
        let ((s0, a0), (s1, a1)) = (pair[0], pair[1]);
        if (a0 - target) * (a1 - target) <= 0.0 {
            let t = if a1 == a0 {
                0.0
            } else {
                (target - a0) / (a1 - a0)
            };
            return Ok(Matched {
                strength: s0 + t * (s1 - s0),
                below: [s0, a0],
                above: [s1, a1],
            });
        }
    }
    let accs = points.iter().map(|p| p.1);
    Err(StrengthError::OutOfRange {
        axis,
        target,
        lo: accs.clone().fold(f64::INFINITY, f64::min),
        hi: accs.fold(f64::NEG_INFINITY, f64::max),
        first: points[0].0,
        last: points[points.len() - 1].0,
    })
}

/// Which kind of evaluation model a row is (the report colours by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Deterministic,
    BnnDraw,
    BnnMean,
    BnnFrozen,
    MatchedInit,
    DeepEnsemble,
    BnnEnsemble,
    PrunedEnsemble,
}

/// One perturbation set at one strength: its mean distortion, success on its source
/// and the fraction of its perturbations the reading scaled down.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SetAtStrength {
    pub source: String,
    pub mean_distortion: f64,
    pub success_rate: f64,
    pub scaled_fraction: f64,
}

/// A point of the strength axis and its 12 sets (one strength per set: the same for
/// the sweep, each set's own at a paper-matched point).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StrengthPoint {
    pub name: String,
    pub strengths: Vec<Strength>,
    pub sets: Vec<SetAtStrength>,
    /// Mean of the sets' mean distortions.
    pub mean_distortion: f64,
}

/// One model's accuracies at every point: `cells[point][set]` (percent, over runs) and
/// the average over the sets (`average[point]`, over the runs' set averages).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModelRow {
    pub name: String,
    pub label: String,
    pub family: Family,
    /// ρ_init of a BNN row.
    pub rho_init: Option<f64>,
    /// λ of a deterministic grid row.
    pub lambda: Option<f64>,
    pub cells: Vec<Vec<MeanCi>>,
    pub average: Vec<MeanCi>,
}

/// A − B at every point (set averages, points; CIs combined in quadrature as the main
/// claims table does), with the rows chosen at each point.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    pub name: String,
    pub a: Vec<String>,
    pub b: Vec<String>,
    /// The family of the B side (what the BNN is compared with); absent in results
    /// written before it was recorded.
    #[serde(default)]
    pub against: Option<Family>,
    pub margin: Vec<MeanCi>,
}

/// What a CI says of a margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The CI lies above 0.
    Holds,
    /// The CI lies below 0.
    Reversed,
    /// The CI spans 0.
    Unresolved,
}

impl Verdict {
    pub fn of(ci: &MeanCi) -> Self {
        if ci.ci95[0] > 0.0 {
            Self::Holds
        } else if ci.ci95[1] < 0.0 {
            Self::Reversed
        } else {
            Self::Unresolved
        }
    }
}

/// One of the paper's four claims at one claim point.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClaimAt {
    pub claim: String,
    pub paper: Option<f64>,
    pub ours: MeanCi,
    pub verdict: Verdict,
}

/// Where each set's λ = 0 accuracy meets the paper's: per set `Ok` with its bracket,
/// or the reason it could not (then the set is evaluated at the strongest measured
/// point, `reached = false`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MatchedSet {
    pub source: String,
    pub paper_accuracy: f64,
    pub strength: f64,
    pub bracket: Option<Matched>,
    pub reached: bool,
    pub why_not: Option<String>,
}

/// What a claim point varies: the budget reading (m = 1), or the knob along which it
/// matches the paper's difficulty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClaimAxis {
    #[serde(rename = "reading")]
    Reading,
    #[serde(rename = "m")]
    Multiplier,
    #[serde(rename = "kappa")]
    Kappa,
}

impl std::fmt::Display for ClaimAxis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClaimAxis::Reading => "reading",
            ClaimAxis::Multiplier => "m",
            ClaimAxis::Kappa => "kappa",
        })
    }
}

/// A claim point: the 12 sets at one reading of difficulty, every model at
/// `matched_runs`, and the four claims on it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClaimPoint {
    pub name: String,
    pub axis: ClaimAxis,
    pub matched: Vec<MatchedSet>,
    pub point: StrengthPoint,
    pub models: Vec<ModelRow>,
    pub comparisons: Vec<Comparison>,
    pub claims: Vec<ClaimAt>,
}

/// The strength section of results.json.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StrengthSection {
    pub note: String,
    pub profile: StrengthProfile,
    pub bound: f64,
    pub points: Vec<StrengthPoint>,
    pub models: Vec<ModelRow>,
    pub comparisons: Vec<Comparison>,
    pub claim_points: Vec<ClaimPoint>,
    /// The headline comparisons across training seeds (with `--train-seeds` K > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<SeedsAtStrength>,
}

/// One headline comparison at one training seed: the margin in points with its CI over
/// weight draws (independent runs, combined in quadrature), and with a paired bootstrap
/// CI over the test images (the same images under both models).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedMargin {
    pub seed: usize,
    pub a: String,
    pub b: String,
    pub over_draws: MeanCi,
    pub paired_bootstrap: Option<MeanCi>,
}

/// One headline comparison at one point: per training seed, and across the seeds
/// (Student t over the per-seed margins) with the verdict that CI gives.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedComparison {
    pub name: String,
    pub per_seed: Vec<SeedMargin>,
    pub across_seeds: Option<MeanCi>,
    /// The mean margin with a two-level bootstrap CI: seeds and test images resampled
    /// together ([`crate::stats::two_level_bootstrap`]).
    pub seeds_and_images: Option<MeanCi>,
    /// Holds or reversed only where both CIs (across seeds, and seeds with images)
    /// exclude 0 on the same side; `None` with one seed.
    pub verdict: Option<Verdict>,
}

impl SeedComparison {
    /// The verdict both CIs agree on (unresolved where they do not).
    pub fn verdict_of(across: &MeanCi, both: Option<&MeanCi>) -> Verdict {
        let a = Verdict::of(across);
        match both.map(Verdict::of) {
            Some(b) if b != a => Verdict::Unresolved,
            _ => a,
        }
    }
}

/// A point of the seeds study: the 12 sets at their strengths and the comparisons there.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedPoint {
    pub name: String,
    pub strengths: Vec<Strength>,
    /// Mean of the sets' mean distortions.
    pub mean_distortion: f64,
    pub comparisons: Vec<SeedComparison>,
}

/// One model of the seeds study: its set average (percent, CI over weight draws) per
/// point and seed, `average[point][seed]`, and across the seeds per point.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedModelRow {
    pub name: String,
    pub label: String,
    pub family: Family,
    pub rho_init: Option<f64>,
    pub lambda: Option<f64>,
    pub average: Vec<Vec<MeanCi>>,
    pub across_seeds: Vec<Option<MeanCi>>,
}

/// Issue 19's item 5: the headline comparisons at the paper-matched multiplier and at
/// fixed multipliers, across the training seeds of every evaluation model and of the
/// matched-init control.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedsAtStrength {
    pub note: String,
    pub train_seeds: usize,
    /// Single-draw runs per BNN and set.
    pub runs: usize,
    pub bootstrap_resamples: usize,
    pub points: Vec<SeedPoint>,
    pub models: Vec<SeedModelRow>,
}

/// The row among `rows` with the highest mean at point `i`.
pub fn best_at<'a>(rows: &[&'a ModelRow], i: usize) -> Option<&'a ModelRow> {
    rows.iter()
        .copied()
        .max_by(|a, b| a.average[i].mean.total_cmp(&b.average[i].mean))
}

/// The three headline comparisons of the strength axis (issue 19): best BNN (one draw)
/// − best deterministic λ net; best BNN − the matched-init control; ρ_init = −3 −
/// ρ_init = −30 (sampling at the paper's Table 3 width against a BNN that never
/// samples).
pub const HEADLINES: [&str; 3] = [
    "best BNN - best deterministic",
    "best BNN - matched-init control",
    "rho_init=-3 - rho_init=-30",
];

/// The (name, A, B) indices into `rows` of the headline comparisons, given each row's
/// family and ρ_init and the score that ranks rows ("best" is the highest; on a tie the
/// later row, as [`best_at`]). A comparison whose rows are missing is left out.
pub fn headline_pairs(
    rows: &[(Family, Option<f64>)],
    score: impl Fn(usize) -> f64,
) -> Vec<(&'static str, usize, usize)> {
    let best = |f: Family| {
        (0..rows.len())
            .filter(|&j| rows[j].0 == f)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
    };
    let rho =
        |r: f64| (0..rows.len()).find(|&j| rows[j].0 == Family::BnnDraw && rows[j].1 == Some(r));
    let bnn = best(Family::BnnDraw);
    [
        (HEADLINES[0], bnn, best(Family::Deterministic)),
        (HEADLINES[1], bnn, best(Family::MatchedInit)),
        (HEADLINES[2], rho(-3.0), rho(-30.0)),
    ]
    .into_iter()
    .filter_map(|(name, a, b)| Some((name, a?, b?)))
    .collect()
}

/// The three headline comparisons ([`HEADLINES`]) at every point.
pub fn comparisons(models: &[ModelRow], points: usize) -> Vec<Comparison> {
    let kinds: Vec<(Family, Option<f64>)> = models.iter().map(|m| (m.family, m.rho_init)).collect();
    let per_point: Vec<Vec<(&'static str, usize, usize)>> = (0..points)
        .map(|i| headline_pairs(&kinds, |j| models[j].average[i].mean))
        .collect();
    HEADLINES
        .iter()
        .filter_map(|&name| {
            let pairs: Option<Vec<(&ModelRow, &ModelRow)>> = per_point
                .iter()
                .map(|p| {
                    p.iter()
                        .find(|(n, _, _)| *n == name)
                        .map(|&(_, a, b)| (&models[a], &models[b]))
                })
                .collect();
            Some(comparison(name, &pairs?))
        })
        .collect()
}

/// A − B at point i for each (A, B) = `pairs[i]`.
fn comparison(name: &str, pairs: &[(&ModelRow, &ModelRow)]) -> Comparison {
    Comparison {
        name: name.to_owned(),
        a: pairs.iter().map(|(a, _)| a.label.clone()).collect(),
        b: pairs.iter().map(|(_, b)| b.label.clone()).collect(),
        against: pairs.first().map(|(_, b)| b.family),
        margin: pairs
            .iter()
            .enumerate()
            .map(|(i, (a, b))| a.average[i].minus_independent(&b.average[i]))
            .collect(),
    }
}
