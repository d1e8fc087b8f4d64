//! The Bayes-by-Backprop training step differentiated by hand (issue 6, item 4): one
//! weight draw per member, the minibatch loss of eq. 3 (cross-entropy plus the Monte
//! Carlo KL log q(w|θ) − log P(w), weighted by [`LossScale::kl_weight`]), its gradient
//! with respect to μ and ρ, and the SGD-with-momentum update, on G stacked members
//! (weights `[G, in, out]`, biases `[G, 1, out]`; G = 1 for a model trained alone).
//!
//! Autograd records about forty small kernels per layer for this loss and replays them
//! backwards; here every gradient is one or two fused tensor expressions, with no graph,
//! no host sync and no Rust loop over elements. The gradients are those autograd gives
//! for the same ε (`tests/bnn_step.rs` compares them), and the ε are drawn in the same
//! order as [`BayesMlp::forward`](crate::model::bayes::BayesMlp::forward) draws them, so
//! a seeded run follows the autograd path up to float rounding.
//!
//! With w = μ + σ·ε, σ = softplus(ρ) (eq. 1), s the KL weight and g = ∂CE/∂w:
//! - log q(w|μ,σ) = −log σ − ε²/2 − ½ log 2π (written in ε, its total derivative in μ
//!   is 0 and in σ is −1/σ);
//! - log P(w) = k1·w² + c1 + softplus(d), d = max(dk·w² + dc, −80) (eq. 2, as
//!   [`MixturePrior::log_prob`]), so ∂ log P/∂w = 2w·(k1 + dk·sigmoid(d)) (the clamp's
//!   own gradient, below 1e-34, is dropped);
//! - ∂L/∂μ = g − s·∂ log P/∂w, and ∂L/∂ρ = (∂L/∂μ·ε − s/σ)·sigmoid(ρ).

use tch::{Device, Kind, Tensor};

use super::{LossScale, Reduction};
use crate::model::bayes::{BayesMlp, LN_2PI, MixturePrior, MixtureTerms};

/// One draw of a stacked weight (or bias) tensor.
struct Draw {
    eps: Tensor,
    sigma: Tensor,
    w: Tensor,
}

impl Draw {
    fn new(mu: &Tensor, rho: &Tensor, eps: &Tensor) -> Self {
        let sigma = rho.softplus();
        let w = mu.addcmul(&sigma, eps);
        Self {
            eps: eps.shallow_clone(),
            sigma,
            w,
        }
    }
}

/// A BNN's own variables in the stacked layout (G = 1; per layer μ_w, ρ_w, μ_b, ρ_b),
/// sharing their storage: the hand step updates the model in place.
pub fn stack_of_one(bnn: &BayesMlp) -> Vec<Tensor> {
    bnn.layers
        .iter()
        .flat_map(|l| {
            [
                l.mu_w.detach().unsqueeze(0),
                l.rho_w.detach().unsqueeze(0),
                l.mu_b.detach().view([1, 1, -1]),
                l.rho_b.detach().view([1, 1, -1]),
            ]
        })
        .collect()
}

/// The ε of one training draw for every tensor of `params`, in their order (per layer
/// μ_w's then μ_b's shape), from libtorch's generator: the same calls, in the same
/// order, as [`BayesMlp::forward`](crate::model::bayes::BayesMlp::forward) makes.
pub fn draw_noise(params: &[Tensor]) -> Vec<Tensor> {
    tch::no_grad(|| params.iter().step_by(2).map(|mu| mu.randn_like()).collect())
}

/// Each member's minibatch loss and its KL part, `[G]` each, detached.
pub struct StepLosses {
    pub loss: Tensor,
    pub kl_part: Tensor,
}

/// The hand-differentiated ELBO of G stacked BNN members (eq. 3 with one draw), for one
/// loss convention; its constants are made once, not at every step.
#[derive(Debug)]
pub struct BnnElbo {
    terms: MixtureTerms,
    reduction: Reduction,
    /// The KL weight s.
    kl_weight: f64,
    /// 0-dimensional: dc, dk, −2s·k1, −2s·dk, −s, −1.
    dc: Tensor,
    dk: Tensor,
    slope_at_0: Tensor,
    slope_per_sigmoid: Tensor,
    minus_kl_weight: Tensor,
    minus_one: Tensor,
}

impl BnnElbo {
    pub fn new(prior: &MixturePrior, scale: &LossScale, device: Device) -> Self {
        let terms = prior.terms();
        let s = scale.kl_weight();
        let constant = |v: f64| Tensor::from(v as f32).to_device(device);
        Self {
            reduction: scale.reduction,
            kl_weight: s,
            dc: constant(terms.dc),
            dk: constant(terms.dk),
            slope_at_0: constant(-2.0 * s * terms.k1),
            slope_per_sigmoid: constant(-2.0 * s * terms.dk),
            minus_kl_weight: constant(-s),
            minus_one: constant(-1.0),
            terms,
        }
    }

    /// The losses of one draw per member and the gradient of their sum with respect to
    /// every tensor of `params` (per layer μ_w, ρ_w, μ_b, ρ_b; weights `[G, in, out]`,
    /// biases `[G, 1, out]`), in the same order; `noise` is the draw's ε from
    /// [`draw_noise`]. `x` is `[G, B, in]` or `[B, in]` (shared), `y` `[G, B]` or `[B]`.
    pub fn loss_and_gradients(
        &self,
        params: &[Tensor],
        noise: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> (StepLosses, Vec<Tensor>) {
        tch::no_grad(|| {
            let g = params[0].size()[0];
            let draws: Vec<(Draw, Draw)> = params
                .chunks(4)
                .zip(noise.chunks(2))
                .map(|(p, e)| {
                    (
                        Draw::new(&p[0], &p[1], &e[0]),
                        Draw::new(&p[2], &p[3], &e[1]),
                    )
                })
                .collect();
            let x = match x.dim() {
                2 => x.unsqueeze(0).expand([g, -1, -1], false),
                _ => x.shallow_clone(),
            };
            let batch = x.size()[1];
            let y = y.reshape([g, batch, 1]);
            let last = draws.len() - 1;
            // inputs[l] is layer l's input: x, then the ReLU outputs.
            let mut inputs = vec![x];
            for (l, (w, b)) in draws.iter().enumerate() {
                let mut z = b.w.baddbmm(&inputs[l], &w.w, 1.0, 1.0);
                if l < last {
                    let _ = z.relu_();
                }
                inputs.push(z);
            }
            let logits = inputs
                .pop()
                .unwrap_or_else(|| unreachable!("at least one layer"));
            let log_p = logits.log_softmax(-1, Kind::Float);
            let ce_weight = match self.reduction {
                Reduction::Mean => 1.0 / batch as f64,
                Reduction::Sum => 1.0,
            };
            let ce =
                log_p
                    .gather(2, &y, false)
                    .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
                    * -ce_weight;
            // ∂CE/∂logits = (softmax − one-hot(y)) · ce_weight
            let mut dz = log_p.exp();
            let _ = dz.scatter_add_(2, &y, &self.minus_one.expand([g, batch, 1], false));
            let _ = dz.g_mul_scalar_(ce_weight);
            let mut kl: Option<Tensor> = None;
            let mut grads: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
            for l in (0..draws.len()).rev() {
                let (w, b) = &draws[l];
                let h = &inputs[l];
                let grad_w = h.transpose(1, 2).matmul(&dz);
                let grad_b = dz.sum_dim_intlist([1].as_slice(), true, Kind::Float);
                if l > 0 {
                    let dh = dz.matmul(&w.w.transpose(1, 2));
                    dz = h.threshold_backward(&dh, 0.0);
                }
                for (k, (draw, grad_ce)) in [(w, grad_w), (b, grad_b)].into_iter().enumerate() {
                    let rho = &params[4 * l + 2 * k + 1];
                    let (kl_part, grad_mu, grad_rho) = self.kl_terms(draw, rho, grad_ce);
                    kl = Some(match kl {
                        Some(sum) => sum + kl_part,
                        None => kl_part,
                    });
                    grads[4 * l + 2 * k] = Some(grad_mu);
                    grads[4 * l + 2 * k + 1] = Some(grad_rho);
                }
            }
            let kl_part = kl.unwrap_or_else(|| unreachable!("at least one layer")) * self.kl_weight;
            let losses = StepLosses {
                loss: ce + &kl_part,
                kl_part,
            };
            let grads = grads
                .into_iter()
                .map(|t| t.unwrap_or_else(|| unreachable!("every parameter has a gradient")))
                .collect();
            (losses, grads)
        })
    }

    /// One tensor's Σ (log q − log P) per member `[G]`, and the gradients of
    /// CE + s·KL with respect to its μ and ρ, given the cross-entropy's gradient in w.
    /// Written as few passes over the weights as libtorch's kernels allow (fused
    /// multiply-adds with 0-dimensional constants, in place where a tensor is done
    /// with): the element-wise work, not the products, bounds this step.
    fn kl_terms(&self, draw: &Draw, rho: &Tensor, grad_ce: Tensor) -> (Tensor, Tensor, Tensor) {
        let MixtureTerms { k1, c1, .. } = self.terms;
        let Draw { eps, sigma, w } = draw;
        let dims = [1i64, 2].as_slice();
        let n = (w.numel() as i64 / w.size()[0]) as f64;
        let sum = |t: &Tensor| t.sum_dim_intlist(dims, false, Kind::Float);
        let sq = w.square();
        let mut d = self.dc.addcmul(&sq, &self.dk).clamp_min_(-80.0);
        // Σ log q − Σ log P
        let kl = -sum(&sigma.log())
            - sum(&eps.square()) * 0.5
            - sum(&sq) * k1
            - sum(&d.softplus())
            - n * (0.5 * LN_2PI + c1);
        // ∂L/∂μ = g + w·(−2s·k1 − 2s·dk·sigmoid(d))
        let slope = self
            .slope_at_0
            .addcmul(&d.sigmoid_(), &self.slope_per_sigmoid);
        let mut grad_mu = grad_ce;
        let _ = grad_mu.addcmul_(w, &slope);
        // ∂L/∂ρ = (∂L/∂μ·ε − s/σ)·sigmoid(ρ)
        let mut grad_rho = self.minus_kl_weight.g_div(sigma);
        let _ = grad_rho.addcmul_(&grad_mu, eps).g_mul_(&rho.sigmoid());
        (kl, grad_mu, grad_rho)
    }
}

/// SGD with momentum as torch.optim.SGD (dampening 0, no Nesterov):
/// buf ← m·buf + g (buf = g at the first step), p ← p − lr·buf, with its two constants
/// made once.
#[derive(Debug)]
pub struct MomentumSgd {
    momentum: Tensor,
    minus_lr: Tensor,
}

impl MomentumSgd {
    pub fn new(lr: f64, momentum: f64, device: Device) -> Self {
        Self {
            momentum: Tensor::from(momentum as f32).to_device(device),
            minus_lr: Tensor::from(-lr as f32).to_device(device),
        }
    }

    /// Updates `param` in place; `grad` becomes its new buffer.
    pub fn update(&self, param: &Tensor, buf: &mut Option<Tensor>, mut grad: Tensor) {
        tch::no_grad(|| {
            if let Some(b) = buf.take() {
                let _ = grad.addcmul_(&b, &self.momentum);
            }
            let _ = param.shallow_clone().addcmul_(&grad, &self.minus_lr);
            *buf = Some(grad);
        });
    }

    /// [`Self::update`] for every tensor of `params` with its buffer and gradient (same
    /// order); a tensor whose gradient is undefined (the loss does not reach it) keeps
    /// its value and buffer, as in torch's SGD.
    pub fn update_all(
        &self,
        params: &[Tensor],
        buffers: &mut [Option<Tensor>],
        grads: impl IntoIterator<Item = Tensor>,
    ) {
        for ((p, buf), grad) in params.iter().zip(buffers.iter_mut()).zip(grads) {
            if grad.defined() {
                self.update(p, buf, grad);
            }
        }
    }
}

/// SGD with momentum on G stacked BNN members, each step differentiated by [`BnnElbo`].
#[derive(Debug)]
pub struct BnnSgd {
    pub elbo: BnnElbo,
    pub sgd: MomentumSgd,
}

impl BnnSgd {
    /// One step on a minibatch with the draw's ε `noise` ([`draw_noise`]): every tensor
    /// of `params` is updated in place, with its momentum buffer in `buffers` (same
    /// order).
    pub fn step(
        &self,
        params: &[Tensor],
        buffers: &mut [Option<Tensor>],
        noise: &[Tensor],
        x: &Tensor,
        y: &Tensor,
    ) -> StepLosses {
        let (losses, grads) = self.elbo.loss_and_gradients(params, noise, x, y);
        self.sgd.update_all(params, buffers, grads);
        losses
    }
}
