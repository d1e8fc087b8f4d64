//! The paper's claims as one typed, pre-specified family: four primary claims, each
//! computed as the paper computes it, and four secondary comparisons, exploratory.

use super::VerdictError;
use super::bootstrap::{
    BootstrapConfig, Margin, PairedScores, Side, bootstrap, percentile_interval,
};
use super::rule::{Direction, Verdict, bonferroni_level};

/// The names the family reads in [`PairedScores`]: the λ nets are `det/…`, the BNNs
/// (one draw) `bnn/…`, Table 3's ensembles `ensemble/N=…`, Table 4's pruned BNN
/// `pruned/rate=0.75`.
pub const ENSEMBLE_ONE: &str = "ensemble/N=1";
pub const ENSEMBLE_100: &str = "ensemble/N=100";
pub const PRUNED_75: &str = "pruned/rate=0.75";
pub const BNN_SAMPLING: &str = "bnn/rho=-3";
pub const BNN_NOT_SAMPLING: &str = "bnn/rho=-30";
/// The deterministic net trained from the BNN's μ initialisation (the strength study's).
pub const MATCHED_INIT: &str = "control/text/bnn-init";

/// The paper's four claims (§4.3–4.5), the primary family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrimaryClaim {
    /// Best BNN − best deterministic net, Table 2's 12-set averages (+15.4).
    BnnOverDeterministic,
    /// Table 3's 100-draw ensemble − its one draw (+5.0).
    EnsembleOverOneDraw,
    /// Table 3's 100-draw ensemble − the best deterministic net (+20.5).
    EnsembleOverBestDeterministic,
    /// Table 4's 75%-pruned BNN − the best deterministic net (+8.8).
    PrunedOverBestDeterministic,
}

impl PrimaryClaim {
    pub const ALL: [PrimaryClaim; 4] = [
        PrimaryClaim::BnnOverDeterministic,
        PrimaryClaim::EnsembleOverOneDraw,
        PrimaryClaim::EnsembleOverBestDeterministic,
        PrimaryClaim::PrunedOverBestDeterministic,
    ];

    pub fn text(self) -> &'static str {
        match self {
            PrimaryClaim::BnnOverDeterministic => "best BNN − best deterministic net (Table 2)",
            PrimaryClaim::EnsembleOverOneDraw => "100-draw ensemble − one draw (Table 3)",
            PrimaryClaim::EnsembleOverBestDeterministic => {
                "100-draw ensemble − best deterministic net (Tables 2–3)"
            }
            PrimaryClaim::PrunedOverBestDeterministic => {
                "75%-pruned BNN − best deterministic net (Tables 2, 4)"
            }
        }
    }

    /// Its key under `claims` in reports/paper_tables.json.
    pub fn paper_key(self) -> &'static str {
        match self {
            PrimaryClaim::BnnOverDeterministic => "bnn_over_deterministic_average_margin_points",
            PrimaryClaim::EnsembleOverOneDraw => "ensemble100_over_single_points",
            PrimaryClaim::EnsembleOverBestDeterministic => {
                "ensemble100_over_best_deterministic_points"
            }
            PrimaryClaim::PrunedOverBestDeterministic => "pruned75_over_best_deterministic_points",
        }
    }

    fn margin(self, s: &PairedScores) -> Result<Margin, VerdictError> {
        let best_det = Side::BestOf(group(s, "det/")?);
        Ok(match self {
            PrimaryClaim::BnnOverDeterministic => Margin {
                a: Side::BestOf(group(s, "bnn/")?),
                b: best_det,
            },
            PrimaryClaim::EnsembleOverOneDraw => Margin {
                a: Side::Model(s.index_of(ENSEMBLE_100)?),
                b: Side::Model(s.index_of(ENSEMBLE_ONE)?),
            },
            PrimaryClaim::EnsembleOverBestDeterministic => Margin {
                a: Side::Model(s.index_of(ENSEMBLE_100)?),
                b: best_det,
            },
            PrimaryClaim::PrunedOverBestDeterministic => Margin {
                a: Side::Model(s.index_of(PRUNED_75)?),
                b: best_det,
            },
        })
    }
}

/// The secondary comparisons: what the margin is made of. Exploratory: unadjusted CIs,
/// no verdict word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecondaryClaim {
    /// Best BNN − the deterministic net trained from the BNN's μ initialisation.
    BnnOverMatchedInit,
    /// One draw of ρ_init = −3 − ρ_init = −30 (which never samples): sampling itself.
    Sampling,
    /// The 100-draw ensemble − its BNN's posterior mean.
    EnsembleOverPosteriorMean,
    /// Best BNN − a deep ensemble of 5 λ = 0 nets.
    BnnOverDeepEnsemble,
}

impl SecondaryClaim {
    pub const ALL: [SecondaryClaim; 4] = [
        SecondaryClaim::BnnOverMatchedInit,
        SecondaryClaim::Sampling,
        SecondaryClaim::EnsembleOverPosteriorMean,
        SecondaryClaim::BnnOverDeepEnsemble,
    ];

    pub fn text(self) -> &'static str {
        match self {
            SecondaryClaim::BnnOverMatchedInit => "best BNN − matched-init deterministic net",
            SecondaryClaim::Sampling => "one draw, ρ_init = −3 − ρ_init = −30 (sampling)",
            SecondaryClaim::EnsembleOverPosteriorMean => "100-draw ensemble − its posterior mean",
            SecondaryClaim::BnnOverDeepEnsemble => "best BNN − deep ensemble of 5 nets",
        }
    }

    /// The margin, or why the per-example files cannot give it.
    fn margin(self, s: &PairedScores) -> Result<Margin, VerdictError> {
        match self {
            SecondaryClaim::Sampling => Ok(Margin {
                a: Side::Model(s.index_of(BNN_SAMPLING)?),
                b: Side::Model(s.index_of(BNN_NOT_SAMPLING)?),
            }),
            SecondaryClaim::BnnOverMatchedInit => Ok(Margin {
                a: Side::BestOf(group(s, "bnn/")?),
                b: Side::Model(s.index_of(MATCHED_INIT)?),
            }),
            SecondaryClaim::EnsembleOverPosteriorMean => Ok(Margin {
                a: Side::Model(s.index_of(ENSEMBLE_100)?),
                b: Side::Model(s.index_of("bnn/rho=-3/posterior-mean")?),
            }),
            SecondaryClaim::BnnOverDeepEnsemble => Ok(Margin {
                a: Side::BestOf(group(s, "bnn/")?),
                b: Side::Model(s.index_of("control/deep-ensemble")?),
            }),
        }
    }
}

/// The models whose names start with `prefix` (one per configuration: `bnn/rho=-3`,
/// not its `…/posterior-mean`).
fn group(s: &PairedScores, prefix: &str) -> Result<Vec<usize>, VerdictError> {
    let g: Vec<usize> = s
        .models()
        .iter()
        .enumerate()
        .filter(|(_, m)| m.starts_with(prefix) && m[prefix.len()..].matches('/').count() == 0)
        .map(|(i, _)| i)
        .collect();
    if g.is_empty() {
        return Err(VerdictError::MissingModel(format!("{prefix}*")));
    }
    Ok(g)
}

/// A primary claim's statistic at one reading: its estimate, its simultaneous CI over
/// seeds × images (the family's level), its ratio to the paper's size, and its verdict.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PrimaryResult {
    pub claim: PrimaryClaim,
    pub paper: f64,
    /// Training seeds the CI resamples (1: seed variance not covered).
    pub seeds: usize,
    pub estimate: f64,
    pub ci: [f64; 2],
    /// estimate / paper, with the CI's ends divided by it too.
    pub ratio: f64,
    pub ratio_ci: [f64; 2],
    pub verdict: Verdict,
}

/// A secondary comparison: estimate and unadjusted 95% CI, or why it is not available.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SecondaryResult {
    pub claim: SecondaryClaim,
    pub seeds: usize,
    pub estimate: Option<f64>,
    pub ci: Option<[f64; 2]>,
    pub direction: Option<Direction>,
    pub missing: Option<String>,
}

/// The whole family at one reading.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FamilyResult {
    /// Test images n the CIs resample.
    pub n: usize,
    pub bootstrap: BootstrapConfig,
    /// The inflation of the seed level where K > 1 seeds are resampled.
    pub inflation: f64,
    /// The comparisons the family-wise level is shared among.
    pub family_size: usize,
    /// Family-wise confidence (0.95) and each primary CI's Bonferroni level.
    pub family_level: f64,
    pub per_claim_level: f64,
    pub primary: Vec<PrimaryResult>,
    pub secondary: Vec<SecondaryResult>,
}

/// The family-wise confidence of the primary verdicts.
pub const FAMILY_LEVEL: f64 = 0.95;

/// The scores a family is computed on: one training seed's, with every model of the
/// tables, and where the per-example files have them, the λ nets' and BNNs' at K
/// seeds. A claim is computed on the K seeds where they hold its models.
#[derive(Debug, Clone, Copy)]
pub struct FamilyScores<'a> {
    pub one_seed: &'a PairedScores,
    pub across_seeds: Option<&'a PairedScores>,
    /// The strength study's models (the controls among them) at the same reading, at
    /// K seeds and the study's draws: used first where it holds a claim's models.
    pub study: Option<&'a PairedScores>,
}

/// A statistic's estimate and bootstrap replicates (sorted), and the seeds it covers.
struct Drawn {
    estimate: f64,
    replicates: Vec<f64>,
    seeds: usize,
}

/// Either kind of claim, for computing them together.
#[derive(Debug, Clone, Copy)]
enum AnyClaim {
    Primary(PrimaryClaim),
    Secondary(SecondaryClaim),
}

impl AnyClaim {
    fn margin(self, s: &PairedScores) -> Result<Margin, VerdictError> {
        match self {
            AnyClaim::Primary(c) => c.margin(s),
            AnyClaim::Secondary(c) => c.margin(s),
        }
    }
}

/// Bootstraps each claim on the scores that hold its models (the study's K seeds
/// first, then the seeds study's, then the one seed of the tables), one
/// bootstrap per scores for all its claims; the reason where neither holds them. Also
/// returns the largest seed inflation used.
fn draw_all(
    scores: FamilyScores,
    claims: &[AnyClaim],
    cfg: BootstrapConfig,
) -> Result<(Vec<Result<Drawn, String>>, f64), VerdictError> {
    let sources: Vec<&PairedScores> = scores
        .study
        .into_iter()
        .chain(scores.across_seeds)
        .chain(std::iter::once(scores.one_seed))
        .collect();
    // Per claim: the first source that holds its models, and its margin there.
    let placed: Vec<Result<(usize, Margin), String>> = claims
        .iter()
        .map(|c| {
            let mut why = String::new();
            for (si, s) in sources.iter().enumerate() {
                match c.margin(s) {
                    Ok(m) => return Ok((si, m)),
                    Err(e) => why = e.to_string(),
                }
            }
            Err(why)
        })
        .collect();
    let mut out: Vec<Result<Drawn, String>> = placed
        .iter()
        .map(|p| Err(p.as_ref().err().cloned().unwrap_or_default()))
        .collect();
    let mut inflation = 1.0;
    for (si, s) in sources.iter().enumerate() {
        let mine: Vec<(usize, Margin)> = placed
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match p {
                Ok((from, m)) if *from == si => Some((j, m.clone())),
                _ => None,
            })
            .collect();
        if mine.is_empty() {
            continue;
        }
        let margins: Vec<Margin> = mine.iter().map(|(_, m)| m.clone()).collect();
        let draws = bootstrap(s, &margins, cfg)?;
        inflation = f64::max(inflation, draws.inflation);
        for (((j, _), estimate), replicates) in
            mine.iter().zip(draws.estimates).zip(draws.replicates)
        {
            out[*j] = Ok(Drawn {
                estimate,
                replicates,
                seeds: s.seeds(),
            });
        }
    }
    Ok((out, inflation))
}

/// Evaluates the primary family and the secondary comparisons at one reading;
/// `paper(claim)` is the paper's size; `family_size` counts every (claim, reading)
/// pair of the pre-specified family (4 × the readings it is checked at).
pub fn evaluate(
    scores: FamilyScores,
    paper: impl Fn(PrimaryClaim) -> Result<f64, VerdictError>,
    family_size: usize,
    cfg: BootstrapConfig,
) -> Result<FamilyResult, VerdictError> {
    let claims: Vec<AnyClaim> = PrimaryClaim::ALL
        .iter()
        .map(|c| AnyClaim::Primary(*c))
        .chain(SecondaryClaim::ALL.iter().map(|c| AnyClaim::Secondary(*c)))
        .collect();
    let (drawn, inflation) = draw_all(scores, &claims, cfg)?;
    let level = bonferroni_level(1.0 - FAMILY_LEVEL, family_size);
    let mut primary = Vec::new();
    for (c, d) in PrimaryClaim::ALL.iter().zip(&drawn) {
        let d = d
            .as_ref()
            .map_err(|e| VerdictError::MissingModel(e.clone()))?;
        let p = paper(*c)?;
        let ci = percentile_interval(&d.replicates, level);
        primary.push(PrimaryResult {
            claim: *c,
            paper: p,
            seeds: d.seeds,
            estimate: d.estimate,
            ci,
            ratio: d.estimate / p,
            ratio_ci: [ci[0] / p, ci[1] / p],
            verdict: Verdict::of(ci, p),
        });
    }
    let secondary = SecondaryClaim::ALL
        .iter()
        .zip(&drawn[PrimaryClaim::ALL.len()..])
        .map(|(claim, d)| match d {
            Ok(d) => {
                let ci = percentile_interval(&d.replicates, 0.95);
                SecondaryResult {
                    claim: *claim,
                    seeds: d.seeds,
                    estimate: Some(d.estimate),
                    ci: Some(ci),
                    direction: Some(Direction::of(ci)),
                    missing: None,
                }
            }
            Err(why) => SecondaryResult {
                claim: *claim,
                seeds: 0,
                estimate: None,
                ci: None,
                direction: None,
                missing: Some(why.clone()),
            },
        })
        .collect();
    Ok(FamilyResult {
        n: scores.one_seed.n(),
        bootstrap: cfg,
        inflation,
        family_size,
        family_level: FAMILY_LEVEL,
        per_claim_level: level,
        primary,
        secondary,
    })
}

/// The exploratory comparisons along the strength study's points: best BNN − best
/// deterministic net, best BNN − matched-init net, and sampling, each with an
/// unadjusted 95% CI over the study's seeds × images (best chosen in every resample).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StudyResult {
    pub seeds: usize,
    pub best_bnn_over_best_det: Option<(f64, [f64; 2])>,
    pub best_bnn_over_matched_init: Option<(f64, [f64; 2])>,
    pub sampling: Option<(f64, [f64; 2])>,
}

/// [`StudyResult`] of `scores` (one study point).
pub fn evaluate_study_point(
    scores: &PairedScores,
    cfg: BootstrapConfig,
) -> Result<StudyResult, VerdictError> {
    let margins = [
        PrimaryClaim::BnnOverDeterministic.margin(scores),
        SecondaryClaim::BnnOverMatchedInit.margin(scores),
        SecondaryClaim::Sampling.margin(scores),
    ];
    let have: Vec<Margin> = margins
        .iter()
        .filter_map(|m| m.as_ref().ok().cloned())
        .collect();
    let draws = bootstrap(scores, &have, cfg)?;
    let mut j = 0;
    let mut next = |m: &Result<Margin, VerdictError>| {
        m.as_ref().ok().map(|_| {
            let out = (
                draws.estimates[j],
                percentile_interval(&draws.replicates[j], 0.95),
            );
            j += 1;
            out
        })
    };
    Ok(StudyResult {
        seeds: scores.seeds(),
        best_bnn_over_best_det: next(&margins[0]),
        best_bnn_over_matched_init: next(&margins[1]),
        sampling: next(&margins[2]),
    })
}
