//! Bayes-by-Backprop MLPs (Blundell et al. 2015; the paper's §2.1 and §3.2).
//!
//! Every weight and bias has a Gaussian posterior N(μ, σ²) with σ = softplus(ρ)
//! (eq. 1) and the scale-mixture prior π N(0, σ1²) + (1 − π) N(0, σ2²) (eq. 2).

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use tch::{Device, Kind, Tensor, nn};

use super::mlp::truncated_normal;
use super::{Arch, Classifier, ModelError, WeightMode};

/// ln 2π.
pub(crate) const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// softplus(ρ) = ln(1 + e^ρ), the posterior scale of eq. 1, computed without overflow.
pub fn softplus(rho: f64) -> f64 {
    if rho > 0.0 {
        rho + (-rho).exp().ln_1p()
    } else {
        rho.exp().ln_1p()
    }
}

/// The inverse of [`softplus`]: ρ = ln(e^σ − 1), for σ > 0.
pub fn softplus_inv(sigma: f64) -> f64 {
    if sigma > 30.0 {
        sigma + (-(-sigma).exp()).ln_1p()
    } else {
        sigma.exp_m1().ln()
    }
}

/// The scale-mixture prior of eq. 2.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixturePrior {
    pub pi: f64,
    pub sigma1: f64,
    pub sigma2: f64,
}

/// log P(w) = a + softplus(max(b − a, −80)) with a = k1·w² + c1 and
/// b − a = dk·w² + dc (eq. 2 as a log-sum-exp of its two weighted components).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixtureTerms {
    pub k1: f64,
    pub dk: f64,
    pub c1: f64,
    pub dc: f64,
}

impl Default for MixturePrior {
    /// The paper's π = 0.5, σ1 = e^-1, σ2 = e^-7.
    fn default() -> Self {
        Self {
            pi: 0.5,
            sigma1: (-1.0f64).exp(),
            sigma2: (-7.0f64).exp(),
        }
    }
}

impl MixturePrior {
    /// The prior's standard deviation √(π σ1² + (1 − π) σ2²) ≈ 0.2601.
    pub fn std(&self) -> f64 {
        (self.pi * self.sigma1.powi(2) + (1.0 - self.pi) * self.sigma2.powi(2)).sqrt()
    }

    /// Elementwise log P(w), by log-sum-exp of the two weighted component log densities
    /// (σ2 is so small that exp of its log density underflows for any sizeable w):
    /// log P = a + softplus(b − a) with a, b the log terms of the σ1 and σ2 components.
    /// b − a is clamped at −80 first: softplus(−80) ≈ 2e-35 is 0 to float precision,
    /// and libtorch's exp is about 15 times slower on the far-underflow inputs that
    /// every weight beyond ~0.01 gives (b − a ≈ −6·10⁵ w²).
    pub fn log_prob(&self, w: &Tensor) -> Tensor {
        let MixtureTerms { k1, dk, c1, dc } = self.terms();
        let sq = w.square();
        let a = &sq * k1 + c1;
        let b_minus_a = &sq * dk + dc;
        a + b_minus_a.clamp_min(-80.0).softplus()
    }

    /// The constants of [`Self::log_prob`]'s log-sum-exp.
    pub fn terms(&self) -> MixtureTerms {
        let c1 = self.pi.ln() - self.sigma1.ln() - 0.5 * LN_2PI;
        let c2 = (1.0 - self.pi).ln() - self.sigma2.ln() - 0.5 * LN_2PI;
        let (k1, k2) = (-0.5 / self.sigma1.powi(2), -0.5 / self.sigma2.powi(2));
        MixtureTerms {
            k1,
            dk: k2 - k1,
            c1,
            dc: c2 - c1,
        }
    }

    /// Scalar log P(w), for tests and checks.
    pub fn log_prob_scalar(&self, w: f64) -> f64 {
        let c = |weight: f64, sigma: f64| {
            weight.ln() - sigma.ln() - 0.5 * LN_2PI - 0.5 * (w / sigma).powi(2)
        };
        let (a, b) = (c(self.pi, self.sigma1), c(1.0 - self.pi, self.sigma2));
        let m = a.max(b);
        m + ((a - m).exp() + (b - m).exp()).ln()
    }
}

/// Elementwise log N(w; μ, σ²) at w = μ + σ·ε, written in ε so that it stays exact when
/// σ is far below μ's float resolution (ρ_init = −30 gives σ ≈ 1e-13).
pub fn log_q_at(eps: &Tensor, sigma: &Tensor) -> Tensor {
    -(sigma.log() + eps.square() * 0.5 + 0.5 * LN_2PI)
}

/// Configuration of a Bayes-by-Backprop MLP.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BayesConfig {
    pub arch: Arch,
    pub prior: MixturePrior,
    /// Constant initial ρ of every weight and bias.
    pub rho_init: f64,
    /// Standard deviation of μ's truncated-normal initialisation (the prior's std).
    pub mu_init_std: f64,
}

impl Default for BayesConfig {
    /// The paper's FC-100-100-10 with ρ_init = −3.
    fn default() -> Self {
        let prior = MixturePrior::default();
        Self {
            arch: Arch::new(&[100, 100]),
            prior,
            rho_init: -3.0,
            mu_init_std: prior.std(),
        }
    }
}

impl BayesConfig {
    pub fn with_rho_init(rho_init: f64) -> Self {
        Self {
            rho_init,
            ..Self::default()
        }
    }
}

/// A dense layer with a Gaussian posterior per weight and bias; weights are `[in, out]`.
#[derive(Debug)]
pub struct BayesLinear {
    pub mu_w: Tensor,
    pub rho_w: Tensor,
    pub mu_b: Tensor,
    pub rho_b: Tensor,
    /// 1 for kept weights, 0 for pruned ones (SNR pruning); `None` when nothing is pruned.
    pub mask_w: Option<Tensor>,
    /// The same for biases (only per-tensor pruning prunes them).
    pub mask_b: Option<Tensor>,
}

/// One draw of a layer's weights and what the KL term needs of it.
struct LayerDraw {
    /// `[n, in, out]`
    w: Tensor,
    /// `[n, 1, out]`
    b: Tensor,
    /// Σ (log q − log P) over this draw's weights and biases, per draw: `[n]`.
    kl: Option<Tensor>,
}

/// `n` drawn weight sets of a whole net, laid out for products: every layer
/// `[n, in, out]` with biases `[n, 1, out]`, and the first layer also as one
/// `[in, n·out]` matrix with biases `[n·out]`, made once for every image chunk, so that
/// an input shared by all draws takes one product.
struct DrawnNet {
    n: i64,
    layers: Vec<(Tensor, Tensor)>,
    first_flat: Option<(Tensor, Tensor)>,
}

impl DrawnNet {
    fn new(draws: Vec<LayerDraw>, n: usize) -> Self {
        let n = n as i64;
        let first_flat = draws.first().map(|d| {
            let (fan_in, fan_out) = (d.w.size()[1], d.w.size()[2]);
            (
                d.w.permute([1, 0, 2]).reshape([fan_in, n * fan_out]),
                d.b.reshape([n * fan_out]),
            )
        });
        Self {
            n,
            layers: draws.into_iter().map(|d| (d.w, d.b)).collect(),
            first_flat,
        }
    }
}

impl BayesLinear {
    /// Registers μ and ρ of a `fan_in × fan_out` layer under `path`: μ from a normal
    /// truncated at ±2·`mu_std`, ρ the constant `rho_init`.
    pub fn new(path: &nn::Path, fan_in: usize, fan_out: usize, config: &BayesConfig) -> Self {
        let (i, o) = (fan_in as i64, fan_out as i64);
        let zeros = nn::Init::Const(0.0);
        let rho = nn::Init::Const(config.rho_init);
        let layer = Self {
            mu_w: path.var("mu_w", &[i, o], zeros),
            rho_w: path.var("rho_w", &[i, o], rho),
            mu_b: path.var("mu_b", &[o], zeros),
            rho_b: path.var("rho_b", &[o], rho),
            mask_w: None,
            mask_b: None,
        };
        tch::no_grad(|| {
            layer
                .mu_w
                .shallow_clone()
                .copy_(&truncated_normal(&[i, o], config.mu_init_std));
            layer
                .mu_b
                .shallow_clone()
                .copy_(&truncated_normal(&[o], config.mu_init_std));
        });
        layer
    }

    pub fn sigma_w(&self) -> Tensor {
        self.rho_w.softplus()
    }

    pub fn sigma_b(&self) -> Tensor {
        self.rho_b.softplus()
    }

    /// Signal-to-noise ratio |μ|/σ of every weight (biases excluded).
    pub fn snr(&self) -> Tensor {
        self.mu_w.abs() / self.sigma_w()
    }

    fn masked(&self, w: Tensor) -> Tensor {
        match &self.mask_w {
            Some(m) => w * m,
            None => w,
        }
    }

    /// `n` weight draws at once. `with_kl` also returns the Monte Carlo KL of each draw.
    fn draw(
        &self,
        n: usize,
        mode: WeightMode,
        prior: &MixturePrior,
        with_kl: bool,
        layer_index: u64,
    ) -> LayerDraw {
        let n64 = n as i64;
        let (shape_w, shape_b) = (self.mu_w.size(), self.mu_b.size());
        let eps = |shape: &[i64], stream: u64| -> Option<Tensor> {
            let mut full = vec![n64];
            full.extend_from_slice(shape);
            match mode {
                WeightMode::Mean => None,
                WeightMode::Sample => {
                    Some(Tensor::randn(&full, (self.mu_w.kind(), self.mu_w.device())))
                }
                WeightMode::Frozen(id) => {
                    Some(frozen_normal(&full, id, stream).to_device(self.mu_w.device()))
                }
            }
        };
        let (eps_w, eps_b) = (
            eps(&shape_w, 2 * layer_index),
            eps(&shape_b, 2 * layer_index + 1),
        );
        let (sigma_w, sigma_b) = (self.sigma_w(), self.sigma_b());
        let w = match &eps_w {
            Some(e) => &self.mu_w + &sigma_w * e,
            None => self
                .mu_w
                .unsqueeze(0)
                .expand([n64, shape_w[0], shape_w[1]], false),
        };
        let b = match &eps_b {
            Some(e) => &self.mu_b + &sigma_b * e,
            None => self.mu_b.unsqueeze(0).expand([n64, shape_b[0]], false),
        };
        let kl = match (with_kl, &eps_w, &eps_b) {
            (true, Some(ew), Some(eb)) => {
                let per_weight = log_q_at(ew, &sigma_w) - prior.log_prob(&w);
                // Pruned weights are no longer random: they leave the KL.
                let per_weight = match &self.mask_w {
                    Some(m) => per_weight * m,
                    None => per_weight,
                };
                let kl_w = per_weight.sum_dim_intlist([1, 2].as_slice(), false, None::<Kind>);
                let per_bias = log_q_at(eb, &sigma_b) - prior.log_prob(&b);
                let per_bias = match &self.mask_b {
                    Some(m) => per_bias * m,
                    None => per_bias,
                };
                let kl_b = per_bias.sum_dim_intlist([1].as_slice(), false, None::<Kind>);
                Some(kl_w + kl_b)
            }
            _ => None,
        };
        let b = match &self.mask_b {
            Some(m) => b * m,
            None => b,
        };
        LayerDraw {
            w: self.masked(w),
            b: b.unsqueeze(1),
            kl,
        }
    }
}

/// Standard normal noise of `shape` from ChaCha20 seeded by (`id`, `stream`), independent
/// of libtorch's generator (the ε of [`WeightMode::Frozen`]).
pub fn frozen_normal(shape: &[i64], id: u64, stream: u64) -> Tensor {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&id.to_le_bytes());
    seed[8..16].copy_from_slice(&stream.to_le_bytes());
    seed[16..].copy_from_slice(b"frozen-weights\0\0");
    let mut rng = ChaCha20Rng::from_seed(seed);
    let n: i64 = shape.iter().product();
    let mut values = Vec::with_capacity(n as usize);
    // Box–Muller on pairs of uniforms in (0, 1].
    while values.len() < n as usize {
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        values.push((r * t.cos()) as f32);
        values.push((r * t.sin()) as f32);
    }
    values.truncate(n as usize);
    Tensor::from_slice(&values).view(shape)
}

/// How SNR pruning ranks weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PruneMode {
    /// All weight matrices ranked together, biases kept (the paper's §6).
    Global,
    /// Each weight matrix and bias vector on its own (the authors' notebook).
    PerTensor,
}

/// Images per product at test time ([`BayesMlp::forward_chunked`]): 1,000 keeps an
/// FC-100 layer's activations for 10 draws in cache (PyTorch's fastest anchor variant).
pub const IMAGE_CHUNK: usize = 1000;

/// Logits of `n` weight draws and their Monte Carlo KL terms.
pub struct BayesOutput {
    /// `[n, B, 10]`
    pub logits: Tensor,
    /// Σ over all weights and biases of log q(w|μ,σ) − log P(w), per draw: `[n]`
    /// (`None` for the posterior mean, which is no draw).
    pub kl: Option<Tensor>,
}

/// A Bayes-by-Backprop MLP.
#[derive(Debug)]
pub struct BayesMlp {
    pub config: BayesConfig,
    pub layers: Vec<BayesLinear>,
}

impl BayesMlp {
    /// Registers every layer under `path` (`l{i}.mu_w`, `l{i}.rho_w`, …).
    pub fn new(path: &nn::Path, config: &BayesConfig) -> Self {
        let layers = config
            .arch
            .layer_dims()
            .into_iter()
            .enumerate()
            .map(|(i, (fan_in, fan_out))| {
                BayesLinear::new(&(path / format!("l{i}")), fan_in, fan_out, config)
            })
            .collect();
        Self {
            config: config.clone(),
            layers,
        }
    }

    pub fn device(&self) -> Device {
        self.layers[0].mu_w.device()
    }

    /// `n` weight draws of every layer at once, and (if asked) their summed per-draw KL.
    fn draw_all(
        &self,
        n: usize,
        mode: WeightMode,
        with_kl: bool,
    ) -> (Vec<LayerDraw>, Option<Tensor>) {
        let mut kl: Option<Tensor> = None;
        let draws = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let mut draw = layer.draw(n, mode, &self.config.prior, with_kl, i as u64);
                kl = match (kl.take(), draw.kl.take()) {
                    (Some(a), Some(b)) => Some(a + b),
                    (None, b) => b,
                    (a, None) => a,
                };
                draw
            })
            .collect();
        (draws, kl)
    }

    /// Logits `[n, B, 10]` of `x` (`[B, 784]`, or `[n, B, 784]` one input per draw)
    /// under `n` drawn weight sets laid out by [`DrawnNet::new`].
    fn apply(net: &DrawnNet, x: &Tensor) -> Tensor {
        let last = net.layers.len() - 1;
        let mut h = x.shallow_clone();
        for (i, (w, b)) in net.layers.iter().enumerate() {
            let mut z = match (i, h.dim(), &net.first_flat) {
                // The input is shared by all n draws: one [B, in] × [in, n·out] product
                // with the biases added by the same call, viewed as [n, B, out].
                (0, 2, Some((w_flat, b_flat))) => {
                    let fan_out = w.size()[2];
                    b_flat
                        .addmm(&h, w_flat)
                        .view([-1, net.n, fan_out])
                        .transpose(0, 1)
                }
                _ => b.baddbmm(&h.expand([net.n, -1, -1], false), w, 1.0, 1.0),
            };
            if i < last {
                let _ = z.relu_();
            }
            h = z;
        }
        h
    }

    /// `n` forward passes of `x` (`[B, 784]`), each with its own weight draw, all as one
    /// batched matrix product per layer. Returns logits `[n, B, 10]` and, if asked, the
    /// per-draw KL.
    pub fn forward(&self, x: &Tensor, n: usize, mode: WeightMode, with_kl: bool) -> BayesOutput {
        let (draws, kl) = self.draw_all(n, mode, with_kl);
        BayesOutput {
            logits: Self::apply(&DrawnNet::new(draws, n), x),
            kl,
        }
    }

    /// [`Self::forward`] without KL, the images taken `image_chunk` at a time through
    /// the same `n` draws (the same generator calls as one pass over all of them, so the
    /// same numbers for the same seed); smaller products keep the activations in cache.
    pub fn forward_chunked(
        &self,
        x: &Tensor,
        n: usize,
        mode: WeightMode,
        image_chunk: usize,
    ) -> Tensor {
        let (draws, _) = self.draw_all(n, mode, false);
        let net = DrawnNet::new(draws, n);
        let b = x.size()[0];
        let chunk = image_chunk.max(1) as i64;
        if b <= chunk {
            return Self::apply(&net, x);
        }
        let parts: Vec<Tensor> = (0..b)
            .step_by(chunk as usize)
            .map(|start| Self::apply(&net, &x.narrow(0, start, chunk.min(b - start))))
            .collect();
        Tensor::cat(&parts, 1)
    }

    /// Logits `[B, 10]` of a single pass with weights chosen by `mode`.
    pub fn logits(&self, x: &Tensor, mode: WeightMode) -> Tensor {
        self.forward(x, 1, mode, false).logits.squeeze_dim(0)
    }

    /// Eq. 7: the softmax averaged over `n` fresh weight draws, `[B, 10]`, drawn in
    /// chunks of at most `chunk` draws to bound memory.
    pub fn ensemble_probs(&self, x: &Tensor, n: usize, chunk: usize) -> Tensor {
        let chunk = chunk.max(1);
        let mut acc: Option<Tensor> = None;
        let mut done = 0;
        while done < n {
            let k = chunk.min(n - done);
            let p = self
                .forward_chunked(x, k, WeightMode::Sample, IMAGE_CHUNK)
                .softmax(-1, None::<Kind>)
                .sum_dim_intlist([0].as_slice(), false, None::<Kind>);
            acc = Some(match acc {
                Some(a) => a + p,
                None => p,
            });
            done += k;
        }
        acc.map(|a| a / n as f64)
            .unwrap_or_else(|| Tensor::zeros([x.size()[0], 10], (x.kind(), x.device())))
    }

    /// The SNR |μ|/σ of every weight of every layer, flattened and concatenated.
    pub fn snr_flat(&self) -> Tensor {
        Tensor::cat(
            &self
                .layers
                .iter()
                .map(|l| l.snr().flatten(0, -1))
                .collect::<Vec<_>>(),
            0,
        )
    }

    /// Prunes the ⌊rate·n⌋ weights of lowest SNR, ranked over all layers together (the
    /// paper's §6); ties go to the lower flat index. Pruned weights are exactly 0 in
    /// every draw. Biases are never pruned. Replaces any earlier pruning.
    pub fn prune(&mut self, rate: f64) -> Result<usize, ModelError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ModelError::BadPruneRate(rate));
        }
        let masks = tch::no_grad(|| {
            let snr = self.snr_flat();
            let n = snr.size()[0];
            let k = ((rate * n as f64).floor() as i64).min(n);
            let (_, order) = snr.sort_stable(true, 0, false);
            let mut mask = Tensor::ones([n], (Kind::Float, snr.device()));
            let _ = mask.index_fill_(0, &order.narrow(0, 0, k), 0.0);
            let mut offset = 0;
            self.layers
                .iter()
                .map(|l| {
                    let size = l.mu_w.size();
                    let len = size[0] * size[1];
                    let m = mask.narrow(0, offset, len).view([size[0], size[1]]);
                    offset += len;
                    m
                })
                .collect::<Vec<_>>()
        });
        let mut pruned = 0;
        for (layer, mask) in self.layers.iter_mut().zip(masks) {
            pruned += (mask.numel() as i64 - mask.sum(Kind::Int64).int64_value(&[])) as usize;
            layer.mask_w = Some(mask);
        }
        Ok(pruned)
    }

    /// The authors' pruning (their notebook, not the paper's text): each weight matrix
    /// and each bias vector separately loses its ⌊rate·n_t⌋ entries of lowest SNR |μ|/σ,
    /// at most n_t − 1 of them; ties go to the lower flat index. A pruned entry is exactly
    /// 0 in every draw (the notebook sets μ = 0, ρ = −100, i.e. σ ≈ 4e-44). Returns the
    /// pruned count per tensor, in the order w0, b0, w1, b1, …. Replaces earlier pruning.
    pub fn prune_per_tensor(&mut self, rate: f64) -> Result<Vec<usize>, ModelError> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(ModelError::BadPruneRate(rate));
        }
        let mask_of = |mu: &Tensor, sigma: &Tensor| {
            tch::no_grad(|| {
                let snr = (mu.abs() / sigma).flatten(0, -1);
                let n = snr.size()[0];
                let k = ((rate * n as f64).floor() as i64).min(n - 1).max(0);
                let (_, order) = snr.sort_stable(true, 0, false);
                let mut mask = Tensor::ones([n], (Kind::Float, snr.device()));
                let _ = mask.index_fill_(0, &order.narrow(0, 0, k), 0.0);
                (mask.view(mu.size().as_slice()), k as usize)
            })
        };
        let mut counts = Vec::new();
        for layer in &mut self.layers {
            let (mw, kw) = mask_of(&layer.mu_w, &layer.sigma_w());
            let (mb, kb) = mask_of(&layer.mu_b, &layer.sigma_b());
            layer.mask_w = Some(mw);
            layer.mask_b = Some(mb);
            counts.extend([kw, kb]);
        }
        Ok(counts)
    }

    /// Prunes at `rate` in `mode`; returns the number of entries pruned.
    pub fn prune_with(&mut self, mode: PruneMode, rate: f64) -> Result<usize, ModelError> {
        match mode {
            PruneMode::Global => self.prune(rate),
            PruneMode::PerTensor => Ok(self.prune_per_tensor(rate)?.iter().sum()),
        }
    }

    /// Removes any pruning.
    pub fn unprune(&mut self) {
        for l in &mut self.layers {
            l.mask_w = None;
            l.mask_b = None;
        }
    }

    /// A BNN whose posterior mean is `mlp`'s weights and biases and whose σ is the
    /// constant `sigmas[l]` in layer l (σ = 0 gives ρ = −∞: every draw is `mlp`).
    /// Sampling it is test-time Gaussian weight noise on a deterministic net.
    pub fn from_mlp(mlp: &super::mlp::Mlp, sigmas: &[f64]) -> Self {
        let prior = MixturePrior::default();
        let layers = mlp
            .layers
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let sigma = sigmas.get(i).copied().unwrap_or(0.0);
                let rho = if sigma > 0.0 {
                    softplus_inv(sigma)
                } else {
                    f64::NEG_INFINITY
                };
                let detached = |t: &Tensor| t.detach().copy();
                BayesLinear {
                    mu_w: detached(&d.weight),
                    rho_w: d.weight.detach().full_like(rho),
                    mu_b: detached(&d.bias),
                    rho_b: d.bias.detach().full_like(rho),
                    mask_w: None,
                    mask_b: None,
                }
            })
            .collect();
        Self {
            config: BayesConfig {
                arch: mlp.config.arch.clone(),
                prior,
                rho_init: f64::NAN,
                mu_init_std: f64::NAN,
            },
            layers,
        }
    }

    /// Quantiles `qs` (in [0, 1]) of the learned weight σ of every layer: `[layer][q]`.
    pub fn sigma_quantiles(&self, qs: &[f64]) -> Vec<Vec<f64>> {
        tch::no_grad(|| {
            self.layers
                .iter()
                .map(|l| {
                    let (sorted, _) = l
                        .sigma_w()
                        .flatten(0, -1)
                        .to_kind(Kind::Double)
                        .sort(0, false);
                    let v: Vec<f64> = Vec::try_from(&sorted).unwrap_or_default();
                    qs.iter()
                        .map(|q| {
                            let pos = (q.clamp(0.0, 1.0) * (v.len().max(1) - 1) as f64).round();
                            v.get(pos as usize).copied().unwrap_or(f64::NAN)
                        })
                        .collect()
                })
                .collect()
        })
    }
}

impl Classifier for BayesMlp {
    fn sample_logits(&self, x: &Tensor, n: usize) -> Tensor {
        self.forward_chunked(x, n, WeightMode::Sample, IMAGE_CHUNK)
    }
}
