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
