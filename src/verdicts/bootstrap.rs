//! The one uncertainty procedure behind every verdict: a hierarchical, paired,
//! selection-aware percentile bootstrap over training seeds and test images.
//!
//! Each model's score on test image i at training seed k is its fraction of correct runs
//! (single draws, or ensemble runs) averaged over the 12 perturbation sets, so weight
//! draws enter through that fraction. A resample draws K training seeds with
//! replacement (when K > 1), then n test images with replacement, the same images for
//! every model, seed and set (the 12 sets are made on the same test images). Every
//! statistic is recomputed on each resample, choosing its "best" model again there, so
//! its interval includes the selection (Davison & Hinkley 1997, §3.8 for the two
//! levels; Efron & Tibshirani 1993, §13.3 for the percentile interval).

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::VerdictError;

/// Per-example scores `[seed][model][image]`, each in [0, 1]: model m's fraction of
/// correct runs on test image i at training seed k, averaged over the sets.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedScores {
    models: Vec<String>,
    seeds: usize,
    n: usize,
    data: Vec<f64>,
}

impl PairedScores {
    /// Scores from `per_seed[k][m][i]`; every seed must have the same models and every
    /// model the same n images.
    pub fn new(models: Vec<String>, per_seed: Vec<Vec<Vec<f64>>>) -> Result<Self, VerdictError> {
        let seeds = per_seed.len();
        let n = per_seed.first().and_then(|s| s.first()).map_or(0, Vec::len);
        if seeds == 0 || n == 0 || models.is_empty() {
            return Err(VerdictError::Shape(format!(
                "{seeds} seeds, {} models, {n} images: none may be empty",
                models.len()
            )));
        }
        let mut data = Vec::with_capacity(seeds * models.len() * n);
        for (k, seed) in per_seed.into_iter().enumerate() {
            if seed.len() != models.len() {
                return Err(VerdictError::Shape(format!(
                    "seed {k} has {} models, expected {}",
                    seed.len(),
                    models.len()
                )));
            }
            for (m, scores) in seed.into_iter().enumerate() {
                if scores.len() != n || scores.iter().any(|v| !v.is_finite()) {
                    return Err(VerdictError::Shape(format!(
                        "seed {k}, model {}: {} scores (expected {n}, all finite)",
                        models[m],
                        scores.len()
                    )));
                }
                data.extend(scores);
            }
        }
        Ok(Self {
            models,
            seeds,
            n,
            data,
        })
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    /// The number of training seeds K.
    pub fn seeds(&self) -> usize {
        self.seeds
    }

    /// The number of test images n.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The index of the model named `name`.
    pub fn index_of(&self, name: &str) -> Result<usize, VerdictError> {
        self.models
            .iter()
            .position(|m| m == name)
            .ok_or_else(|| VerdictError::MissingModel(name.to_owned()))
    }

    fn row(&self, k: usize, m: usize) -> &[f64] {
        let at = (k * self.models.len() + m) * self.n;
        &self.data[at..at + self.n]
    }

    /// `dots[k][m]`: Σᵢ wᵢ · score(k, m, i) for image multiplicities `w`.
    fn weighted_sums(&self, image_counts: &[u32]) -> Vec<Vec<f64>> {
        (0..self.seeds)
            .map(|k| {
                (0..self.models.len())
                    .map(|m| {
                        self.row(k, m)
                            .iter()
                            .zip(image_counts)
                            .map(|(s, &w)| s * f64::from(w))
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }

    /// Each model's accuracy in percent from [`Self::weighted_sums`], with seed k
    /// counted `seed_counts[k]` times, over `images` drawn images.
    fn combine(&self, dots: &[Vec<f64>], seed_counts: &[u32], images: u32) -> Vec<f64> {
        let drawn: u32 = seed_counts.iter().sum();
        let scale = 100.0 / (f64::from(drawn) * f64::from(images));
        (0..self.models.len())
            .map(|m| {
                dots.iter()
                    .zip(seed_counts)
                    .map(|(d, &c)| f64::from(c) * d[m])
                    .sum::<f64>()
                    * scale
            })
            .collect()
    }

    /// Each model's accuracy (percent) on the data as measured.
    pub fn point_accuracies(&self) -> Vec<f64> {
        let dots = self.weighted_sums(&vec![1; self.n]);
        self.combine(&dots, &vec![1; self.seeds], self.n as u32)
    }
}

/// One side of a margin: a named model, or the best of a group chosen on the data
/// (again in every resample).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Model(usize),
    BestOf(Vec<usize>),
}

impl Side {
    /// The side's accuracy given every model's.
    fn value(&self, acc: &[f64]) -> f64 {
        match self {
            Side::Model(m) => acc[*m],
            Side::BestOf(group) => group
                .iter()
                .map(|&m| acc[m])
                .fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// A margin in percentage points: side a − side b.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Margin {
    pub a: Side,
    pub b: Side,
}

impl Margin {
    pub fn value(&self, acc: &[f64]) -> f64 {
        self.a.value(acc) - self.b.value(acc)
    }
}

/// The settings of the bootstrap: resamples and the seed of its generator (recorded in
/// the report, so it re-renders byte for byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapConfig {
    pub resamples: usize,
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 4000,
            seed: 20201218,
        }
    }
}

/// The bootstrap distributions of several margins on the same resamples.
#[derive(Debug, Clone)]
pub struct BootstrapDraws {
    /// The margins on the data as measured.
    pub estimates: Vec<f64>,
    /// `replicates[j]`: margin j on every resample, sorted.
    pub replicates: Vec<Vec<f64>>,
    /// The factor applied to the seed level of each replicate (its value minus its value
    /// with the same images and every seed once): √(K/(K−1)) · t(K−1)/z for K > 1
    /// training seeds (see [`seed_inflation`]), 1 for K = 1.
    pub inflation: f64,
}

/// How much a resample's seed level is widened when K > 1 training seeds are
/// resampled: the bootstrap's variance of a mean of K is (K−1)/K of the unbiased one,
/// and its normal tails are too short for K − 1 degrees of freedom, so the seed level
/// of each replicate is scaled by √(K/(K−1)) · t₀.₉₇₅(K−1) / z₀.₉₇₅ (the image level is
/// left as drawn; the coverage tests measure the result).
pub fn seed_inflation(k: usize) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal, StudentsT};
    if k < 2 {
        return 1.0;
    }
    let df = (k - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| d.inverse_cdf(0.975));
    let z = Normal::new(0.0, 1.0).map_or(f64::NAN, |d| d.inverse_cdf(0.975));
    (k as f64 / df).sqrt() * t / z
}

/// Draws `cfg.resamples` hierarchical paired resamples of `scores` and evaluates every
/// margin on each, choosing each best model again inside the resample.
pub fn bootstrap(
    scores: &PairedScores,
    margins: &[Margin],
    cfg: BootstrapConfig,
) -> Result<BootstrapDraws, VerdictError> {
    if cfg.resamples < 100 {
        return Err(VerdictError::Shape(format!(
            "{} bootstrap resamples: at least 100 are needed",
            cfg.resamples
        )));
    }
    let point = scores.point_accuracies();
    let estimates: Vec<f64> = margins.iter().map(|m| m.value(&point)).collect();
    let inflation = seed_inflation(scores.seeds);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut replicates = vec![Vec::with_capacity(cfg.resamples); margins.len()];
    let mut seed_counts = vec![0u32; scores.seeds];
    let all_seeds = vec![1u32; scores.seeds];
    let mut image_counts = vec![0u32; scores.n];
    for _ in 0..cfg.resamples {
        seed_counts.fill(0);
        if scores.seeds == 1 {
            seed_counts[0] = 1;
        } else {
            for _ in 0..scores.seeds {
                seed_counts[rng.random_range(0..scores.seeds)] += 1;
            }
        }
        image_counts.fill(0);
        for _ in 0..scores.n {
            image_counts[rng.random_range(0..scores.n)] += 1;
        }
        let dots = scores.weighted_sums(&image_counts);
        let n = scores.n as u32;
        let both = scores.combine(&dots, &seed_counts, n);
        let images_only = scores.combine(&dots, &all_seeds, n);
        for (margin, out) in margins.iter().zip(replicates.iter_mut()) {
            // The images' deviation as drawn, the seeds' widened for K − 1 df.
            let at_images = margin.value(&images_only);
            out.push(at_images + inflation * (margin.value(&both) - at_images));
        }
    }
    for r in &mut replicates {
        r.sort_by(f64::total_cmp);
    }
    Ok(BootstrapDraws {
        estimates,
        replicates,
        inflation,
    })
}

/// The two-sided percentile interval at `level` (e.g. 0.95) of sorted replicates: the
/// order statistics at ⌊α/2 · B⌋ and ⌈(1 − α/2) · B⌉ − 1 (0-based; a 10⁻⁹ guard keeps a
/// product that should be whole from rounding the wrong way).
pub fn percentile_interval(sorted: &[f64], level: f64) -> [f64; 2] {
    let n = sorted.len();
    if n == 0 {
        return [f64::NAN, f64::NAN];
    }
    let tail = (1.0 - level) / 2.0;
    let lo = ((tail * n as f64 + 1e-9).floor() as usize).min(n - 1);
    let hi = (((1.0 - tail) * n as f64 - 1e-9).ceil() as usize)
        .saturating_sub(1)
        .min(n - 1);
    [sorted[lo], sorted[hi]]
}
