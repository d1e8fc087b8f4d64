//! FGSM and projected gradient descent (Madry et al. 2018) under L∞ or L2 budgets.

use tch::Tensor;

use super::{AttackOutcome, Differentiable, clip_to_box, input_gradient, margin, row_norms};

/// The norm of a perturbation budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    Linf,
    L2,
}

/// The loss an attack ascends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackLoss {
    /// Cross-entropy of the model's output (for [`super::Eot`], of the log of the
    /// averaged probabilities).
    #[default]
    CrossEntropy,
    /// The Carlini–Wagner margin: −(z_y − max_{j≠y} z_j), summed over the batch.
    Margin,
}

impl AttackLoss {
    /// The summed loss of `logits` `[B, 10]` against `y`, to be increased.
    pub fn of(self, logits: &Tensor, y: &Tensor) -> Tensor {
        match self {
            AttackLoss::CrossEntropy => {
                logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Sum, -100, 0.0)
            }
            AttackLoss::Margin => -margin(logits, y).sum(tch::Kind::Float),
        }
    }
}

/// PGD on `loss`: `steps` signed (L∞) or normalised (L2) gradient steps of
/// size `step`, each followed by projection onto the ε-ball and the input box.
/// `steps = 1`, `step = eps`, no random start is FGSM.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pgd {
    pub norm: Norm,
    /// Budget in input units (the (0, 2) scale: ε in [0, 1] pixel units times 255/126).
    pub eps: f64,
    pub step: f64,
    pub steps: usize,
    pub random_start: bool,
    #[serde(default)]
    pub loss: AttackLoss,
}

impl Pgd {
    pub fn fgsm(eps: f64) -> Self {
        Self {
            norm: Norm::Linf,
            eps,
            step: eps,
            steps: 1,
            random_start: false,
            loss: AttackLoss::CrossEntropy,
        }
    }

    /// Projects `delta` onto the ε-ball of this norm.
    pub fn project(&self, delta: &Tensor) -> Tensor {
        match self.norm {
            Norm::Linf => delta.clamp(-self.eps, self.eps),
            Norm::L2 => {
                let scale = (row_norms(delta).clamp_min(1e-12).reciprocal() * self.eps)
                    .clamp_max(1.0)
                    .unsqueeze(1);
                delta * scale
            }
        }
    }

    /// Attacks `x` with labels `y`; the random start (if any) comes from libtorch's
    /// generator.
    pub fn run(&self, model: &impl Differentiable, x: &Tensor, y: &Tensor) -> AttackOutcome {
        let mut delta = if self.random_start {
            let noise = match self.norm {
                Norm::Linf => (x.rand_like() * 2.0 - 1.0) * self.eps,
                Norm::L2 => x.randn_like() * (self.eps / (x.size()[1] as f64).sqrt()),
            };
            clip_to_box(&(x + self.project(&noise))) - x
        } else {
            x.zeros_like()
        };
        for _ in 0..self.steps {
            let d = delta.detach().set_requires_grad(true);
            let adv = x + &d;
            let loss = self.loss.of(&model.logits(&adv), y);
            let g = input_gradient(&loss, &d);
            delta = tch::no_grad(|| {
                let step = match self.norm {
                    Norm::Linf => g.sign() * self.step,
                    Norm::L2 => &g / row_norms(&g).clamp_min(1e-12).unsqueeze(1) * self.step,
                };
                let moved = self.project(&(d.detach() + step));
                clip_to_box(&(x + moved)) - x
            });
        }
        AttackOutcome::evaluate(model, x, y, x + &delta)
    }
}

/// One PGD attack run at many budgets, foolbox style: budgets in; per budget the
/// perturbed inputs, success mask and norms out. Each budget runs `restarts` times
/// (random starts when `restarts > 1`); per example the first successful restart is
/// kept, else the last. The step is `rel_step · ε`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PgdBudgets {
    pub norm: Norm,
    /// Budgets in input units (the (0, 2) scale).
    pub eps: Vec<f64>,
    pub rel_step: f64,
    pub steps: usize,
    pub restarts: usize,
    pub loss: AttackLoss,
}

impl PgdBudgets {
    /// The attack at one budget.
    pub fn at(&self, eps: f64) -> Pgd {
        Pgd {
            norm: self.norm,
            eps,
            step: self.rel_step * eps,
            steps: self.steps,
            random_start: self.restarts > 1,
            loss: self.loss,
        }
    }

    /// One outcome per budget, in the order of `eps`.
    pub fn run(&self, model: &impl Differentiable, x: &Tensor, y: &Tensor) -> Vec<AttackOutcome> {
        self.eps
            .iter()
            .map(|&eps| {
                let pgd = self.at(eps);
                let mut best = pgd.run(model, x, y);
                for _ in 1..self.restarts.max(1) {
                    let next = pgd.run(model, x, y);
                    let take = next.success.logical_and(&best.success.logical_not());
                    best = AttackOutcome {
                        perturbed: next
                            .perturbed
                            .where_self(&take.unsqueeze(1), &best.perturbed),
                        norms: next.norms.where_self(&take, &best.norms),
                        success: best.success.logical_or(&next.success),
                    };
                }
                best
            })
            .collect()
    }
}
