//! The paper's distortion bound and how a perturbation set is read against it, and the
//! evaluation strength x + m·r of a set.
//!
//! §4.2 of the paper reports that every perturbation set's *mean* distortion
//! (1/n) Σ √(‖r_i‖²/784) stays below 0.10; it does not say whether single examples may
//! exceed it. [`BudgetReading`] names the three readings.

use tch::{Kind, Tensor};

use super::{clip_to_box, row_norms};
use crate::data::IMAGE_DIM;

/// How a set of perturbations `r` ([N, 784], each x + r inside the input box) is held
/// to a distortion bound b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetReading {
    /// Each r with √(‖r‖²/784) > b is scaled back onto b (the harness's reading since
    /// its first report).
    PerExampleCap,
    /// The whole set is scaled by one factor s = min(1, b / d̄) so that its mean
    /// distortion d̄ is at most b (the paper's wording).
    SetMean,
    /// The attack's perturbations as they are.
    None,
}

impl BudgetReading {
    /// The per-example factors `[N]` that put `delta` under bound `bound` (in RMS pixel
    /// units, e.g. 0.10), r_i ← s_i·r_i, and the fraction of examples scaled down. For
    /// s ≤ 1, x + s·r stays in the box (it lies between x and x + r), so distortion
    /// scales exactly with s.
    pub fn scales(self, delta: &Tensor, bound: f64) -> (Tensor, f64) {
        tch::no_grad(|| {
            let norms = row_norms(delta);
            let share = |over: Tensor| {
                over.to_kind(Kind::Double)
                    .mean(Kind::Double)
                    .double_value(&[])
            };
            match self {
                Self::PerExampleCap => {
                    let cap = bound * (IMAGE_DIM as f64).sqrt();
                    let fraction = share(norms.gt(cap));
                    let scale = (norms.clamp_min(1e-12).reciprocal() * cap).clamp_max(1.0);
                    (scale, fraction)
                }
                Self::SetMean => {
                    let mean = rms_distortion(&norms).mean(Kind::Double).double_value(&[]);
                    if mean > bound {
                        // A relative margin of 1e-6 keeps the float mean under the bound.
                        (norms.ones_like() * (bound / mean * (1.0 - 1e-6)), 1.0)
                    } else {
                        (norms.ones_like(), 0.0)
                    }
                }
                Self::None => (norms.ones_like(), 0.0),
            }
        })
    }

    /// `delta` held to `bound`, and the fraction of examples it scaled down. An example
    /// the reading leaves alone is unchanged bit for bit (r·1 is exact).
    pub fn apply(self, delta: &Tensor, bound: f64) -> (Tensor, f64) {
        let (scales, fraction) = self.scales(delta, bound);
        (tch::no_grad(|| delta * scales.unsqueeze(1)), fraction)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::PerExampleCap => "per-example cap",
            Self::SetMean => "set-mean budget",
            Self::None => "no budget",
        }
    }
}

/// √(‖r‖²/784) of each norm ‖r‖.
pub fn rms_distortion(norms: &Tensor) -> Tensor {
    norms / (IMAGE_DIM as f64).sqrt()
}

/// The evaluation input x + m·r at strength m, clipped to the input box. m = 1 gives
/// the set itself bit for bit (r·1 is exact); m = 0 gives x.
pub fn at_strength(x: &Tensor, r: &Tensor, m: f64) -> Tensor {
    tch::no_grad(|| clip_to_box(&(x + r * m)))
}

/// The paper's mean distortion of `perturbed` against `x` (§4.2).
pub fn mean_distortion(x: &Tensor, perturbed: &Tensor) -> f64 {
    tch::no_grad(|| {
        rms_distortion(&row_norms(&(perturbed - x)))
            .mean(Kind::Double)
            .double_value(&[])
    })
}
