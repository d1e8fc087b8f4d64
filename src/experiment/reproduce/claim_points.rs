//! The strength axis's claim points (issue 19, item 3): the set-mean budget at m = 1
//! and, on MNIST, the paper-matched difficulty along m and along κ, matched per set on
//! the λ = 0 net's sweep row. They are found from strengths alone, so the plan (which
//! reads the λ = 0 net's cached sweep evaluation) and the strength stage (which holds
//! the sets) find the same points, and name the same keys.

use crate::attack::BudgetReading;
use crate::experiment::strength::{
    ClaimAxis, MatchedSet, Strength, StrengthError, StrengthProfile, matched_strength, sweep,
};

/// A claim point before any set is held: its name, the knob it was matched along (no
/// `matched` when it was not matched) and, per set, its strength.
#[derive(Debug, Clone)]
pub(super) struct ClaimDesc {
    pub name: String,
    pub axis: ClaimAxis,
    pub matched: Vec<MatchedSet>,
    pub per_set: Vec<Strength>,
}

/// The claim points of the profile `sp` on the sets `labels`: the set-mean budget at
/// m = 1 (when the profile has that reading), and where `paper` (the paper's λ = 0
/// column of Table 2, fractions) and `det0` (the λ = 0 net's accuracy, a fraction, per
/// point of [`sweep`], per set) are both known, the paper-matched m and κ.
pub(super) fn claim_descs(
    sp: &StrengthProfile,
    labels: &[String],
    det0: Option<&[Vec<f64>]>,
    paper: Option<&[f64]>,
) -> Vec<ClaimDesc> {
    let n = labels.len();
    let mut out = Vec::new();
    if sp.readings.contains(&BudgetReading::SetMean) {
        out.push(ClaimDesc {
            name: "set-mean budget, m=1".into(),
            axis: ClaimAxis::Reading,
            matched: Vec::new(),
            per_set: vec![
                Strength {
                    reading: BudgetReading::SetMean,
                    kappa: 0.0,
                    m: 1.0,
                };
                n
            ],
        });
    }
    let (Some(det0), Some(paper)) = (det0, paper) else {
        return out;
    };
    let points = sweep(sp);
    let matching = Matching {
        labels,
        det0,
        paper,
    };
    out.extend(matching.along_multiplier(&points));
    out.extend(matching.along_kappa(&points, &sp.kappas));
    out
}

/// What a matching reads: the sets' labels, the λ = 0 net's sweep row and the paper's
/// λ = 0 column.
struct Matching<'a> {
    labels: &'a [String],
    det0: &'a [Vec<f64>],
    paper: &'a [f64],
}

impl Matching<'_> {
    /// Per set, the multiplier at which the λ = 0 net's accuracy meets the paper's (the
    /// per-example cap reading, κ = 0).
    fn along_multiplier(&self, points: &[Strength]) -> Option<ClaimDesc> {
        let along: Vec<usize> = (0..points.len())
            .filter(|&i| {
                points[i].reading == BudgetReading::PerExampleCap && points[i].kappa == 0.0
            })
            .collect();
        if along.is_empty() {
            return None;
        }
        let ms: Vec<f64> = along.iter().map(|&i| points[i].m).collect();
        let (matched, per_set) = self.matched_sets("m", &along, &ms);
        Some(ClaimDesc {
            name: "paper-matched difficulty (multiplier m)".into(),
            axis: ClaimAxis::Multiplier,
            matched,
            per_set: per_set
                .into_iter()
                .map(|m| Strength {
                    reading: BudgetReading::PerExampleCap,
                    kappa: 0.0,
                    m,
                })
                .collect(),
        })
    }

    /// Per set, the confidence κ (rounded to 0.01) at which the λ = 0 net's accuracy
    /// (m = 1, per-example cap) meets the paper's.
    fn along_kappa(&self, points: &[Strength], kappas: &[f64]) -> Option<ClaimDesc> {
        let mut along = Vec::new();
        let mut xs = Vec::new();
        for k in std::iter::once(0.0).chain(kappas.iter().copied()) {
            let at = Strength {
                reading: BudgetReading::PerExampleCap,
                kappa: k,
                m: 1.0,
            };
            if let Some(i) = points.iter().position(|s| *s == at) {
                along.push(i);
                xs.push(k);
            }
        }
        if along.len() < 2 {
            return None;
        }
        let (mut matched, per_kappa) = self.matched_sets("kappa", &along, &xs);
        let per_set = per_kappa
            .iter()
            .zip(&mut matched)
            .map(|(k, set)| {
                let kappa = (k * 100.0).round() / 100.0;
                set.strength = kappa;
                Strength {
                    reading: BudgetReading::PerExampleCap,
                    kappa,
                    m: 1.0,
                }
            })
            .collect();
        Some(ClaimDesc {
            name: "paper-matched difficulty (confidence kappa)".into(),
            axis: ClaimAxis::Kappa,
            matched,
            per_set,
        })
    }

    /// Per set, where the λ = 0 net's accuracy along the points `along` (strength `xs`)
    /// meets the paper's, or the strongest point when it does not.
    fn matched_sets(
        &self,
        axis: &'static str,
        along: &[usize],
        xs: &[f64],
    ) -> (Vec<MatchedSet>, Vec<f64>) {
        let strongest = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut order: Vec<usize> = (0..xs.len()).collect();
        order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        self.paper
            .iter()
            .enumerate()
            .map(|(set, &target)| {
                let points: Vec<(f64, f64)> = order
                    .iter()
                    .map(|&j| (xs[j], self.det0[along[j]][set]))
                    .collect();
                let result = matched_strength(axis, &points, target);
                // Out of range: the strongest point when even it leaves our net more
                // accurate than the paper's, the weakest when our net is never as accurate.
                let fallback = match &result {
                    Err(StrengthError::OutOfRange { hi, .. }) if target > *hi => points
                        .iter()
                        .max_by(|a, b| a.1.total_cmp(&b.1))
                        .map_or(strongest, |p| p.0),
                    _ => strongest,
                };
                let strength = result.as_ref().map_or(fallback, |m| m.strength);
                (
                    MatchedSet {
                        source: self.labels.get(set).cloned().unwrap_or_default(),
                        paper_accuracy: target * 100.0,
                        strength,
                        bracket: result.as_ref().ok().copied(),
                        reached: result.is_ok(),
                        why_not: result.err().map(|e| e.to_string()),
                    },
                    strength,
                )
            })
            .unzip()
    }
}

/// A point of the study: its name and per set (12) its strength (per-example cap, κ = 0).
pub(super) type SeedPointSpec = (String, Vec<Strength>);

/// The points: the paper-matched multiplier's claim point (`matched`, where there is
/// one), then each of the profile's `seed_multipliers`.
pub(super) fn seed_points(
    matched: Option<SeedPointSpec>,
    seed_multipliers: &[f64],
    n_sets: usize,
) -> Vec<SeedPointSpec> {
    let cap = |m| Strength {
        reading: BudgetReading::PerExampleCap,
        kappa: 0.0,
        m,
    };
    matched
        .into_iter()
        .chain(
            seed_multipliers
                .iter()
                .map(|&m| (format!("m={m}"), vec![cap(m); n_sets])),
        )
        .collect()
}

/// The paper-matched multiplier's claim point among `claims`, as a point of the study.
pub(super) fn matched_of(claims: &[ClaimDesc]) -> Option<SeedPointSpec> {
    claims
        .iter()
        .find(|c| c.axis == ClaimAxis::Multiplier)
        .map(|c| (c.name.clone(), c.per_set.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("set {i}")).collect()
    }

    /// A λ = 0 net whose accuracy falls linearly with m (1 − m/4) and, at m = 1, with κ
    /// (0.75 − κ/50) on every set.
    fn det0(sp: &StrengthProfile, n: usize) -> Vec<Vec<f64>> {
        sweep(sp)
            .iter()
            .map(|s| {
                let a = if s.kappa == 0.0 {
                    1.0 - s.m / 4.0
                } else {
                    0.75 - s.kappa / 50.0
                };
                vec![a; n]
            })
            .collect()
    }

    #[test]
    fn without_the_sweep_only_the_set_mean_point_is_known() {
        let sp = StrengthProfile::paper();
        let descs = claim_descs(&sp, &labels(3), None, Some(&[0.5; 3]));
        assert_eq!(descs.len(), 1);
        assert_eq!(descs[0].axis, ClaimAxis::Reading);
        assert!(
            descs[0]
                .per_set
                .iter()
                .all(|s| s.reading == BudgetReading::SetMean)
        );
    }

    #[test]
    fn the_matched_points_interpolate_the_sweep_row_and_round_kappa() {
        let sp = StrengthProfile::paper();
        let row = det0(&sp, 2);
        // 1 − m/4 = 0.5 at m = 2 and 0.6 at m = 1.6; along κ: 0.75, 0.65, 0.55, 0.35 at
        // κ = 0, 5, 10, 20, so 0.5 at κ = 12.5 and 0.6 at κ = 7.5.
        let descs = claim_descs(&sp, &labels(2), Some(&row), Some(&[0.5, 0.6]));
        let along_m = descs
            .iter()
            .find(|d| d.axis == ClaimAxis::Multiplier)
            .unwrap();
        assert!((along_m.per_set[0].m - 2.0).abs() < 1e-9);
        assert!((along_m.per_set[1].m - 1.6).abs() < 1e-9);
        let along_k = descs.iter().find(|d| d.axis == ClaimAxis::Kappa).unwrap();
        for (set, s) in along_k.per_set.iter().enumerate() {
            assert_eq!(s.kappa, (s.kappa * 100.0).round() / 100.0);
            assert_eq!(along_k.matched[set].strength, s.kappa);
            assert_eq!((s.reading, s.m), (BudgetReading::PerExampleCap, 1.0));
        }
        assert!((along_k.per_set[0].kappa - 12.5).abs() < 1e-9);
        assert!((along_k.per_set[1].kappa - 7.5).abs() < 1e-9);
        assert!(along_k.matched.iter().all(|m| m.reached));
    }
}
