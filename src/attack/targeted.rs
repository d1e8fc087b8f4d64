//! The authors' own attack (their `perturbation.ipynb`; not in the paper's text): per
//! target class k a brighten-only perturbation r, optimised by RMSprop on
//! mean‖r‖₂ + (1/c)·CE(f(x + r), k) with c = 2(t + 1)/T annealed over the T steps, and
//! clipped after every step to [lo, hi − x]. Every (example, target) pair keeps the
//! smallest r that made the source predict the target at any step (the last iterate
//! alone is not enough: as 1/c decays the norm term pulls r back across the boundary);
//! per example the successful target with the smallest ‖r‖ is kept, and examples with
//! no success are dropped by the caller.

use tch::{Kind, Tensor};

use super::{Differentiable, input_gradient, row_norms};
use crate::data::NUM_CLASSES;

/// The notebook's targeted attack and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetedAttack {
    /// T (4,000 in the notebook).
    pub steps: usize,
    /// RMSprop learning rate (0.01).
    pub lr: f64,
    /// RMSprop's decay ρ and ε (Keras defaults 0.9 and 1e-7).
    pub rms_decay: f64,
    pub rms_eps: f64,
    /// Initial value of every entry of r (0.02).
    pub init: f64,
    /// r is clipped to [lo, hi − x] after every step (1e-6 and 2.03).
    pub lo: f64,
    pub hi: f64,
}

impl Default for TargetedAttack {
    /// The notebook's settings.
    fn default() -> Self {
        Self {
            steps: 4000,
            lr: 0.01,
            rms_decay: 0.9,
            rms_eps: 1e-7,
            init: 0.02,
            lo: 1e-6,
            hi: 2.03,
        }
    }
}

/// The attack's result on a batch: per example the chosen perturbation (the smallest
/// successful one; the last iterate of target 0 where none succeeded), whether any
/// target succeeded, which target, and ‖r‖₂.
#[derive(Debug)]
pub struct TargetedOutcome {
    /// `[B, 784]`
    pub delta: Tensor,
    /// `[B]` bool
    pub success: Tensor,
    /// `[B]` i64
    pub target: Tensor,
    /// `[B]`
    pub norms: Tensor,
}

/// The smallest successful r of each row so far and its norm (∞ where none yet).
struct BestSoFar {
    r: Tensor,
    norm: Tensor,
}

impl BestSoFar {
    fn update(&mut self, r: &Tensor, fooled: &Tensor) {
        let norms = row_norms(r);
        let better = fooled.logical_and(&norms.lt_tensor(&self.norm));
        self.norm = norms.where_self(&better, &self.norm);
        self.r = r.where_self(&better.unsqueeze(1), &self.r);
    }
}

impl TargetedAttack {
    /// Attacks `x` (`[B, 784]`, labels `y`) towards all 10 targets at once, as one
    /// batch of 10·B rows.
    pub fn run(&self, model: &impl Differentiable, x: &Tensor, y: &Tensor) -> TargetedOutcome {
        let b = x.size()[0];
        let k = NUM_CLASSES as i64;
        let device = x.device();
        let xs = x
            .detach()
            .unsqueeze(0)
            .expand([k, b, -1], false)
            .reshape([k * b, -1]);
        let targets =
            Tensor::arange(k, (Kind::Int64, device)).repeat_interleave_self_int(b, 0, None::<i64>);
        let upper = (-&xs + self.hi).clamp_min(self.lo);
        let labels = y.repeat([k]);
        let fooled_by = |logits: &Tensor| {
            logits
                .argmax(-1, false)
                .eq_tensor(&targets)
                .logical_and(&labels.ne_tensor(&targets))
        };
        let mut r = xs.full_like(self.init);
        let mut mean_sq = xs.zeros_like();
        let mut best = BestSoFar {
            r: xs.zeros_like(),
            norm: Tensor::full([k * b], f64::INFINITY, (Kind::Float, device)),
        };
        let steps = self.steps.max(1);
        for t in 0..steps {
            let c = 2.0 * (t + 1) as f64 / steps as f64;
            let r_var = r.detach().set_requires_grad(true);
            let logits = model.logits(&(&xs + &r_var));
            let ce = logits.cross_entropy_loss::<Tensor>(
                &targets,
                None,
                tch::Reduction::Mean,
                -100,
                0.0,
            );
            let loss = row_norms(&r_var).mean(Kind::Float) + ce / c;
            let g = input_gradient(&loss, &r_var);
            tch::no_grad(|| best.update(&r, &fooled_by(&logits)));
            r = tch::no_grad(|| {
                mean_sq = &mean_sq * self.rms_decay + g.square() * (1.0 - self.rms_decay);
                let step = &g / (mean_sq.sqrt() + self.rms_eps) * self.lr;
                (&r - step).clamp_min(self.lo).minimum(&upper)
            });
        }
        tch::no_grad(|| {
            best.update(&r, &fooled_by(&model.logits(&(&xs + &r))));
            let (best_norm, best_target) = best.norm.view([k, b]).min_dim(0, false);
            let success = best_norm.isfinite();
            let rows = &best_target * b + Tensor::arange(b, (Kind::Int64, device));
            // Where nothing succeeded, the last iterate of target 0 stands in.
            let fallback = r.index_select(0, &rows);
            let delta = best
                .r
                .index_select(0, &rows)
                .where_self(&success.unsqueeze(1), &fallback);
            TargetedOutcome {
                norms: row_norms(&delta),
                delta,
                success,
                target: best_target,
            }
        })
    }
}
