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

    /// Every value multiplied by `k` (e.g. fractions to percent).
    pub fn scaled(&self, k: f64) -> MeanCi {
        MeanCi {
            mean: self.mean * k,
            ci95: [self.ci95[0] * k, self.ci95[1] * k],
            runs: self.runs,
        }
    }
}

/// The mean of `diffs` (paired per-example differences) with a 95% percentile
/// bootstrap interval over `resamples` resamples of the examples, drawn from `rng`
/// (Efron & Tibshirani 1993, §13.3). `runs` is the number of examples.
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
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| diffs[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * means.len() as f64) as usize).min(means.len() - 1)];
    Some(MeanCi {
        mean,
        ci95: [at(0.025), at(0.975)],
        runs: n,
    })
}
