//! The paper's attack (§2.2, eq. 5), read as its stated goal: the smallest r with
//! f(x + r) ≠ y, found by gradient descent on c‖r‖₂ + max(z_y − max_{j≠y} z_j, −κ)
//! (the untargeted Carlini–Wagner margin; docs/FIDELITY.md says why not the literal
//! loss on the true label).

use tch::{Kind, Tensor};

use super::{AttackOutcome, Differentiable, clip_to_box, input_gradient, margin, row_norms};

/// Untargeted minimum-L2-norm attack, optimised by Adam on the whole batch at once.
/// Each example starts with trade-off `c`; with `search_rounds` = k > 0 the steps are cut
/// into k rounds and after each round an example not yet flipped quarters its own c (a
/// one-sided version of Carlini–Wagner's search: too large a c can make the norm term
/// win before the boundary is crossed). Per example it keeps the smallest perturbation
/// seen whose margin z_y − max z_j is below −κ (misclassified with confidence κ, as
/// Carlini–Wagner's high-confidence examples; κ = 0: simply misclassified); an example
/// that never gets there keeps its last perturbation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinNormAttack {
    /// Weight of ‖r‖₂ against the margin loss.
    pub c: f64,
    pub steps: usize,
    /// Adam's learning rate, in input units.
    pub lr: f64,
    /// Confidence: the margin loss stops rewarding once z_y − max z_j ≤ −κ.
    pub kappa: f64,
    /// Rounds of the per-example search on c (0: c stays fixed).
    #[serde(default)]
    pub search_rounds: usize,
}

impl Default for MinNormAttack {
    fn default() -> Self {
        Self {
            c: 0.5,
            steps: 300,
            lr: 0.01,
            kappa: 0.0,
            search_rounds: 0,
        }
    }
}

impl MinNormAttack {
    /// Attacks every example of `split` in chunks of `chunk` (a chunk is one Adam
    /// batch): the raw perturbations r = x' − x of a perturbation set (§4.2, before any
    /// distortion budget), and the outcome of x + r clipped to the input box.
    pub fn run_split(
        &self,
        model: &impl Differentiable,
        split: &crate::data::Split,
        chunk: usize,
    ) -> (Tensor, AttackOutcome) {
        let mut deltas = Vec::new();
        let (mut successes, mut norms) = (Vec::new(), Vec::new());
        for batch in split.batches(chunk) {
            let out = self.run(model, &batch.images, &batch.labels);
            deltas.push(&out.perturbed - &batch.images);
            successes.push(out.success);
            norms.push(out.norms);
        }
        let delta = Tensor::cat(&deltas, 0);
        let outcome = AttackOutcome {
            perturbed: clip_to_box(&(&split.images + &delta)),
            success: Tensor::cat(&successes, 0),
            norms: Tensor::cat(&norms, 0),
        };
        (delta, outcome)
    }

    /// Attacks `x` (`[B, 784]`) with labels `y` (`[B]`) against `model`.
    ///
    /// Only the margin is differentiated by autograd, with respect to the clipped input
    /// `a = clip(x + r)`; the rest of ∂loss/∂r is written out: `mask ⊙ (c·(a − x)/‖a − x‖
    /// + ∂margin/∂a)`, where `mask` is 1 where the clip let `x + r` through (inclusive at
    /// the box's edges, as torch's clamp backward). Adam's moments and step are updated in
    /// place, in torch's form `r −= (lr / (1 − β1ᵗ)) · m / (√(v / (1 − β2ᵗ)) + ε)`.
    pub fn run(&self, model: &impl Differentiable, x: &Tensor, y: &Tensor) -> AttackOutcome {
        let (beta1, beta2, adam_eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
        let mut r = x.zeros_like();
        let (mut m, mut v) = (x.zeros_like(), x.zeros_like());
        let mut best = x.zeros_like();
        let mut best_norm = Tensor::full([x.size()[0]], f64::INFINITY, (Kind::Float, x.device()));
        let mut last = x.zeros_like();
        let mut c = Tensor::full([x.size()[0]], self.c, (Kind::Float, x.device()));
        let steps = self.steps.max(1);
        let round = if self.search_rounds > 0 {
            steps.div_ceil(self.search_rounds)
        } else {
            usize::MAX
        };
        for t in 1..=steps {
            let shifted = x + &r;
            let adv = clip_to_box(&shifted).set_requires_grad(true);
            let mg = margin(&model.logits(&adv), y);
            let g_margin = input_gradient(&mg.clamp_min(-self.kappa).sum(Kind::Float), &adv);
            tch::no_grad(|| {
                let adv = adv.detach();
                let mg = mg.detach();
                let delta = &adv - x;
                // The smoothed norm has a gradient at r = 0.
                let norm = (delta
                    .square()
                    .sum_dim_intlist([1].as_slice(), false, None::<Kind>)
                    + 1e-12)
                    .sqrt();
                let mut g = g_margin.addcmul(&delta, &(&c / &norm).unsqueeze(1));
                let _ = g.masked_fill_(&shifted.ne_tensor(&adv), 0.0);
                let better = mg.lt(-self.kappa).logical_and(&norm.lt_tensor(&best_norm));
                best = delta.where_self(&better.unsqueeze(1), &best);
                best_norm = norm.where_self(&better, &best_norm);
                last = delta;
                let (bias1, bias2) = (1.0 - beta1.powi(t as i32), 1.0 - beta2.powi(t as i32));
                let _ = m.lerp_(&g, 1.0 - beta1);
                let _ = v.lerp_(&g.square(), 1.0 - beta2);
                // −(√v̂ + ε)·bias1/lr, so that one addcdiv takes the step.
                let denom = (&v / bias2)
                    .clamp_min_(1e-30)
                    .sqrt_()
                    .g_add_scalar_(adam_eps)
                    .g_mul_scalar_(-bias1 / self.lr);
                let _ = r.addcdiv_(&m, &denom);
                if t % round == 0 {
                    let never = best_norm.isinf();
                    c = (&c * 0.25).where_self(&never, &c);
                }
            });
        }
        let delta = tch::no_grad(|| {
            // The final point may be the best of all.
            let adv = clip_to_box(&(x + &r));
            let delta = &adv - x;
            let norm = row_norms(&delta);
            let mg = margin(&model.logits(&adv), y);
            let better = mg.lt(-self.kappa).logical_and(&norm.lt_tensor(&best_norm));
            best = delta.where_self(&better.unsqueeze(1), &best);
            best_norm = norm.where_self(&better, &best_norm);
            last = delta;
            let found = best_norm.isfinite();
            best.where_self(&found.unsqueeze(1), &last)
        });
        AttackOutcome::evaluate(model, x, y, clip_to_box(&(x + &delta)))
    }
}
