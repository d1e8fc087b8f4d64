//! Adversarial attacks: the paper's minimum-norm attack (§2.2, eq. 5) and the standard
//! FGSM / PGD attacks under L∞ and L2 budgets.
//!
//! Attacks take any [`Differentiable`] model (inputs to logits), work on whole batches
//! at once, keep every perturbed input inside the input box [0, 255/126], and take
//! gradients with respect to the input only: model parameters never accumulate
//! gradients.

pub mod budget;
pub mod eot;
pub mod min_norm;
pub mod pgd;
pub mod spsa;
pub mod targeted;

use tch::{Kind, Tensor};

use crate::data::INPUT_MAX;
use crate::model::WeightMode;
use crate::model::bayes::BayesMlp;
use crate::model::mlp::Mlp;

pub use budget::BudgetReading;
pub use eot::Eot;
pub use min_norm::MinNormAttack;
pub use pgd::{AttackLoss, Norm, Pgd, PgdBudgets};
pub use spsa::Spsa;
pub use targeted::{TargetedAttack, TargetedOutcome};

/// A model whose logits `[B, 10]` can be differentiated with respect to its input.
pub trait Differentiable {
    fn logits(&self, x: &Tensor) -> Tensor;
}

impl Differentiable for Mlp {
    fn logits(&self, x: &Tensor) -> Tensor {
        self.forward(x)
    }
}

/// A BNN under one weight mode: each call of [`Differentiable::logits`] makes one
/// draw (a fresh one for [`WeightMode::Sample`]).
pub struct BnnPass<'a> {
    pub bnn: &'a BayesMlp,
    pub mode: WeightMode,
}

impl Differentiable for BnnPass<'_> {
    fn logits(&self, x: &Tensor) -> Tensor {
        self.bnn.logits(x, self.mode)
    }
}

/// What an attack returns for one budget: the perturbed inputs, which of them the
/// source model misclassifies, and each perturbation's L2 norm.
#[derive(Debug)]
pub struct AttackOutcome {
    /// `[B, 784]`, inside [0, 255/126].
    pub perturbed: Tensor,
    /// `[B]` bool: the attacked model misclassifies the perturbed input.
    pub success: Tensor,
    /// `[B]` L2 norm of perturbed − original.
    pub norms: Tensor,
}

impl AttackOutcome {
    /// The outcome of `perturbed` against `model`: each example's perturbation norm and
    /// whether the model now misclassifies it.
    pub fn evaluate(
        model: &impl Differentiable,
        x: &Tensor,
        y: &Tensor,
        perturbed: Tensor,
    ) -> Self {
        tch::no_grad(|| {
            let norms = row_norms(&(&perturbed - x));
            let success = margin(&model.logits(&perturbed), y).lt(0.0);
            Self {
                perturbed,
                success,
                norms,
            }
        })
    }

    /// The paper's mean distortion (1/n) Σ √(‖r_i‖² / 784) (§4.2).
    pub fn mean_distortion(&self) -> f64 {
        budget::rms_distortion(&self.norms)
            .mean(Kind::Double)
            .double_value(&[])
    }

    pub fn success_rate(&self) -> f64 {
        self.success
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
    }
}

/// z_y − max_{j≠y} z_j per example: negative exactly when the prediction is wrong.
pub fn margin(logits: &Tensor, y: &Tensor) -> Tensor {
    let y = y.unsqueeze(1);
    let z_y = logits.gather(1, &y, false).squeeze_dim(1);
    let others = logits.scatter_value(1, &y, f64::NEG_INFINITY);
    z_y - others.amax([1].as_slice(), false)
}

/// The L2 norm of every row of `[B, d]`: `[B]`.
pub fn row_norms(t: &Tensor) -> Tensor {
    t.square()
        .sum_dim_intlist([1].as_slice(), false, None::<Kind>)
        .sqrt()
}

/// Clips to the input box [0, 255/126].
pub fn clip_to_box(x: &Tensor) -> Tensor {
    x.clamp(0.0, INPUT_MAX)
}

/// The gradient of `loss` with respect to `input` alone (no parameter accumulates one).
pub fn input_gradient(loss: &Tensor, input: &Tensor) -> Tensor {
    Tensor::run_backward(&[loss], &[input], false, false)
        .pop()
        .unwrap_or_else(|| input.zeros_like())
}
