//! Deterministic MLPs with the L2 penalty of the paper's eq. 6.

use tch::{Kind, Tensor, nn};

use super::{Arch, Classifier};

/// How a deterministic MLP's weights are initialised.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MlpInit {
    /// Glorot (Xavier) uniform weights, zero biases: Keras' default, which the authors'
    /// notebooks use for their non-Bayesian nets.
    GlorotUniform,
    /// Weights and biases from a normal truncated at ±2 std (the BNN's μ initialisation,
    /// used by confound controls).
    TruncatedNormal { std: f64 },
}

/// An MLP's architecture and initialisation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpConfig {
    pub arch: Arch,
    pub init: MlpInit,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            arch: Arch::new(&[100, 100]),
            init: MlpInit::GlorotUniform,
        }
    }
}

/// Samples a normal truncated at ±2 standard deviations (TensorFlow's
/// `truncated_normal`): out-of-range entries are redrawn until none remain.
pub fn truncated_normal(shape: &[i64], std: f64) -> Tensor {
    let mut t = Tensor::randn(shape, (Kind::Float, tch::Device::Cpu));
    loop {
        let outside = t.abs().gt(2.0);
        if !bool::try_from(outside.any()).unwrap_or(false) {
            break;
        }
        let fresh = Tensor::randn(shape, (Kind::Float, tch::Device::Cpu));
        t = t.where_self(&outside.logical_not(), &fresh);
    }
    t * std
}

/// One dense layer y = x·W + b with W stored `[in, out]`.
#[derive(Debug)]
pub struct Dense {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Dense {
    /// 1/|l| of eq. 6, |l| being the number of units this layer feeds (its fan-out;
    /// docs/FIDELITY.md).
    pub fn penalty_scale(&self) -> f64 {
        1.0 / self.weight.size()[1] as f64
    }
}

/// A deterministic FC network with ReLU hidden layers and logit outputs.
#[derive(Debug)]
pub struct Mlp {
    pub config: MlpConfig,
    pub layers: Vec<Dense>,
}

impl Mlp {
    /// Registers the layers' variables under `path` (`l{i}.weight`, `l{i}.bias`).
    pub fn new(path: &nn::Path, config: &MlpConfig) -> Self {
        let layers = config
            .arch
            .layer_dims()
            .into_iter()
            .enumerate()
            .map(|(i, (fan_in, fan_out))| {
                let shape = [fan_in as i64, fan_out as i64];
                let (w, b) = match config.init {
                    MlpInit::GlorotUniform => {
                        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                        (
                            nn::Init::Uniform {
                                lo: -bound,
                                up: bound,
                            },
                            nn::Init::Const(0.0),
                        )
                    }
                    MlpInit::TruncatedNormal { .. } => (nn::Init::Const(0.0), nn::Init::Const(0.0)),
                };
                let layer = path / format!("l{i}");
                let weight = layer.var("weight", &shape, w);
                let bias = layer.var("bias", &[fan_out as i64], b);
                if let MlpInit::TruncatedNormal { std } = config.init {
                    tch::no_grad(|| {
                        weight.shallow_clone().copy_(&truncated_normal(&shape, std));
                        bias.shallow_clone()
                            .copy_(&truncated_normal(&[fan_out as i64], std));
                    });
                }
                Dense { weight, bias }
            })
            .collect();
        Self {
            config: config.clone(),
            layers,
        }
    }

    /// Logits `[B, 10]` (also accepts `[..., B, 784]`).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        self.layers
            .iter()
            .enumerate()
            .fold(x.shallow_clone(), |h, (i, l)| {
                let z = h.matmul(&l.weight) + &l.bias;
                if i < last { z.relu() } else { z }
            })
    }

    /// The penalty of eq. 6 without λ: Σ_l (1/|l|) Σ_{w∈l} w², where |l| is the number of
    /// units layer l feeds (its fan-out) and biases are not penalised (docs/FIDELITY.md).
    /// Each Σ w² is one dot product (a single pass over the weights).
    pub fn l2_penalty(&self) -> Tensor {
        self.layers
            .iter()
            .map(|l| {
                let flat = l.weight.view([-1]);
                flat.dot(&flat) * l.penalty_scale()
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, tch::Device::Cpu)))
    }
}

impl Classifier for Mlp {
    fn sample_logits(&self, x: &Tensor, n: usize) -> Tensor {
        self.forward(x)
            .unsqueeze(0)
            .expand([n as i64, -1, -1], false)
    }
}
