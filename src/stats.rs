//! Means and confidence intervals over repeated runs.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean over `runs` repeated measurements with its two-sided 95% confidence interval
/// (Student t with runs − 1 degrees of freedom). With one run the interval is the point.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanCi {
    pub mean: f64,
    pub ci95: [f64; 2],
    pub runs: usize,
}

impl MeanCi {
    /// Half the width of the interval.
    pub fn half_width(&self) -> f64 {
        (self.ci95[1] - self.ci95[0]) / 2.0
    }

    /// The mean and CI of `values`; `None` if there are none or any is not finite.
    pub fn from_values(values: &[f64]) -> Option<MeanCi> {
        let n = values.len();
        if n == 0 || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        if n == 1 {
            return Some(MeanCi {
                mean,
                ci95: [mean, mean],
                runs: 1,
            });
        }
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .map(|d| d.inverse_cdf(0.975))
            .unwrap_or(f64::NAN);
        let h = t * se;
        Some(MeanCi {
            mean,
            ci95: [mean - h, mean + h],
            runs: n,
        })
    }

    /// self − other for independent estimates: the means' difference with the two
    /// half-widths combined in quadrature.
    pub fn minus_independent(&self, other: &MeanCi) -> MeanCi {
        let mean = self.mean - other.mean;
        let h = (self.half_width().powi(2) + other.half_width().powi(2)).sqrt();
        MeanCi {
            mean,
            ci95: [mean - h, mean + h],
            runs: self.runs.min(other.runs),
        }
    }

    /// Every value multiplied by `k` (e.g. fractions to percent).
    pub fn scaled(&self, k: f64) -> MeanCi {
        MeanCi {
            mean: self.mean * k,
            ci95: [self.ci95[0] * k, self.ci95[1] * k],
            runs: self.runs,
        }
    }
}

/// The 95% percentile bootstrap interval of a statistic of n examples: `stat` is
/// evaluated on `resamples` resamples of the example indices `0..n` (with
/// replacement), drawn from `rng` (Efron & Tibshirani 1993, §13.3). `None` when n = 0
/// or a resampled statistic is not finite.
pub fn bootstrap_ci(
    n: usize,
    resamples: usize,
    rng: &mut impl rand::RngExt,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> Option<[f64; 2]> {
    if n == 0 {
        return None;
    }
    let mut index = vec![0usize; n];
    let mut values = Vec::with_capacity(resamples.max(1));
    for _ in 0..resamples.max(1) {
        for i in index.iter_mut() {
            *i = rng.random_range(0..n);
        }
        let v = stat(&index);
        if !v.is_finite() {
            return None;
        }
        values.push(v);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64) as usize).min(values.len() - 1)];
    Some([at(0.025), at(0.975)])
}

/// The mean of `diffs` (paired per-example differences) with a 95% percentile
/// bootstrap interval over `resamples` resamples of the examples ([`bootstrap_ci`]).
/// `runs` is the number of examples.
pub fn paired_bootstrap(
    diffs: &[f64],
    resamples: usize,
    rng: &mut impl rand::RngExt,
) -> Option<MeanCi> {
    let n = diffs.len();
    if n == 0 || diffs.iter().any(|d| !d.is_finite()) {
        return None;
    }
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let ci95 = bootstrap_ci(n, resamples, rng, |index| {
        index.iter().map(|&i| diffs[i]).sum::<f64>() / n as f64
    })?;
    Some(MeanCi {
        mean,
        ci95,
        runs: n,
    })
}

/// The mean over groups of each group's mean of `diffs[g]` (paired per-example
/// differences; every group has the same examples) with a 95% percentile interval from
/// a two-level bootstrap: each resample draws the groups with replacement and, shared
/// by all of them, the examples with replacement. With training seeds as groups and
/// test images as examples it counts both sources of variation (Davison & Hinkley 1997,
/// §3.8). `runs` is the number of groups; `None` when there is none, the groups differ
/// in length, or a value is not finite.
pub fn two_level_bootstrap(
    diffs: &[Vec<f64>],
    resamples: usize,
    rng: &mut impl rand::RngExt,
) -> Option<MeanCi> {
    let k = diffs.len();
    let n = diffs.first()?.len();
    if n == 0
        || diffs
            .iter()
            .any(|d| d.len() != n || d.iter().any(|v| !v.is_finite()))
    {
        return None;
    }
    let mean = diffs
        .iter()
        .map(|d| d.iter().sum::<f64>() / n as f64)
        .sum::<f64>()
        / k as f64;
    let mut groups = vec![0usize; k];
    let mut values = Vec::with_capacity(resamples.max(1));
    let mut counts = vec![0u32; n];
    for _ in 0..resamples.max(1) {
        for g in groups.iter_mut() {
            *g = rng.random_range(0..k);
        }
        counts.iter_mut().for_each(|c| *c = 0);
        for _ in 0..n {
            counts[rng.random_range(0..n)] += 1;
        }
        let total: f64 = groups
            .iter()
            .map(|&g| {
                diffs[g]
                    .iter()
                    .zip(&counts)
                    .map(|(d, &c)| d * f64::from(c))
                    .sum::<f64>()
            })
            .sum();
        values.push(total / (k * n) as f64);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * values.len() as f64) as usize).min(values.len() - 1)];
    Some(MeanCi {
        mean,
        ci95: [at(0.025), at(0.975)],
        runs: k,
    })
}
