//! SPSA (Spall 1992; as an attack, Uesato et al. 2018, "Adversarial Risk and the
//! Dangers of Evaluating Against Weak Attacks"): a gradient-free L∞ attack that
//! estimates the loss gradient from finite differences along random ±1 directions. It
//! never differentiates the model, so a model that masks its gradients falls to it
//! further than to PGD; the white-box stage uses it as that check.

use tch::{Kind, Tensor};

use super::{AttackOutcome, Differentiable, clip_to_box, margin};

/// SPSA under an L∞ budget, with Adam on the estimated gradient of the margin loss
/// max_{j≠y} z_j − z_y. Budgets and step sizes are in input units (the (0, 2) scale).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spsa {
    pub eps: f64,
    pub steps: usize,
    /// Random directions per step (each costs two model queries per example).
    pub samples: usize,
    /// Finite-difference step along each direction.
    pub delta: f64,
    pub lr: f64,
}

impl Spsa {
    /// Attacks `x` with labels `y` from a uniform random start in the ball; per example
    /// the first iterate the model misclassifies is kept, else the last. Randomness
    /// comes from libtorch's generator.
    pub fn run(&self, model: &impl Differentiable, x: &Tensor, y: &Tensor) -> AttackOutcome {
        let (beta1, beta2, adam_eps) = (0.9, 0.999, 1e-8);
        let b = x.size()[0];
        let s = self.samples.max(1) as i64;
        tch::no_grad(|| {
            let start = (x.rand_like() * 2.0 - 1.0) * self.eps;
            let mut delta = clip_to_box(&(x + start)) - x;
            let (mut m, mut v) = (x.zeros_like(), x.zeros_like());
            let mut kept = delta.copy();
            let mut done = Tensor::zeros([b], (Kind::Bool, x.device()));
            let ys = y.repeat([2 * s]);
            for t in 1..=self.steps.max(1) {
                let dirs = Tensor::rand([s, b, x.size()[1]], (Kind::Float, x.device()))
                    .lt(0.5)
                    .to_kind(Kind::Float)
                    * 2.0
                    - 1.0;
                let here = (x + &delta).unsqueeze(0);
                let probes = Tensor::cat(
                    &[
                        clip_to_box(&(&here + &dirs * self.delta)),
                        clip_to_box(&(&here - &dirs * self.delta)),
                    ],
                    0,
                )
                .view([2 * s * b, -1]);
                let loss = -margin(&model.logits(&probes), &ys);
                let halves = loss.view([2, s, b]);
                let slope = (halves.get(0) - halves.get(1)) / (2.0 * self.delta);
                let g = (slope.unsqueeze(2) * &dirs).mean_dim([0].as_slice(), false, Kind::Float);
                m = &m * beta1 + &g * (1.0 - beta1);
                v = &v * beta2 + g.square() * (1.0 - beta2);
                let m_hat = &m / (1.0 - beta1.powi(t as i32));
                let v_hat = &v / (1.0 - beta2.powi(t as i32));
                let moved = (&delta + m_hat / (v_hat.sqrt() + adam_eps) * self.lr)
                    .clamp(-self.eps, self.eps);
                delta = clip_to_box(&(x + moved)) - x;
                let fooled = margin(&model.logits(&(x + &delta)), y).lt(0.0);
                let first = fooled.logical_and(&done.logical_not());
                kept = delta.where_self(&first.unsqueeze(1), &kept);
                done = done.logical_or(&fooled);
            }
            let kept = delta.where_self(&done.logical_not().unsqueeze(1), &kept);
            AttackOutcome::evaluate(model, x, y, x + kept)
        })
    }
}
