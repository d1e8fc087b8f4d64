//! Models: deterministic MLPs ([`mlp`]) and Bayes-by-Backprop MLPs ([`bayes`]), their
//! shared architecture spec, and checkpoints ([`checkpoint`]).

pub mod bayes;
pub mod checkpoint;
pub mod mlp;

use std::fmt;
use std::str::FromStr;

use crate::data::{IMAGE_DIM, NUM_CLASSES};

/// Errors of model construction and use, naming the offending value.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "bad hidden-layer spec {spec:?}: {reason} (expected e.g. \"\", \"100-100\", \"1200-1200\")"
    )]
    BadArch { spec: String, reason: String },
    #[error("pruning rate {0} is outside [0, 1]")]
    BadPruneRate(f64),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// A fully connected ReLU network 784 → hidden… → 10, named as in the paper
/// (`FC-10` has no hidden layer, `FC-100-100-10` has two of 100 units).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Arch {
    pub hidden: Vec<usize>,
}

impl Arch {
    pub fn new(hidden: &[usize]) -> Self {
        Self {
            hidden: hidden.to_vec(),
        }
    }

    /// The (in, out) sizes of every layer, input first.
    pub fn layer_dims(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![IMAGE_DIM];
        sizes.extend(&self.hidden);
        sizes.push(NUM_CLASSES);
        sizes.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// The hidden spec as written on the command line ("" or "100-100").
    pub fn spec(&self) -> String {
        self.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Weight-matrix entries (biases excluded).
    pub fn n_weights(&self) -> usize {
        self.layer_dims().iter().map(|(i, o)| i * o).sum()
    }

    /// Multiply-adds of one forward pass for one example.
    pub fn macs_per_example(&self) -> usize {
        self.n_weights()
    }
}

impl FromStr for Arch {
    type Err = ModelError;
    fn from_str(spec: &str) -> Result<Self, ModelError> {
        let trimmed = spec.trim();
        // Also accept the paper's names: "FC-10", "FC-100-100-10".
        let trimmed = match trimmed.strip_prefix("FC-") {
            Some("10") => "",
            Some(rest) => rest.strip_suffix("-10").unwrap_or(rest),
            None => trimmed,
        };
        if trimmed.is_empty() {
            return Ok(Arch::new(&[]));
        }
        let hidden = trimmed
            .split('-')
            .map(|p| match p.parse::<usize>() {
                Ok(0) => Err("a layer of 0 units".to_owned()),
                Ok(n) => Ok(n),
                Err(e) => Err(format!("{p:?} is not a unit count ({e})")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ModelError::BadArch {
                spec: spec.to_owned(),
                reason,
            })?;
        Ok(Arch { hidden })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FC-")?;
        for h in &self.hidden {
            write!(f, "{h}-")?;
        }
        write!(f, "{NUM_CLASSES}")
    }
}

/// Which weights a Bayesian forward pass uses. Randomness is an explicit argument,
/// never a hidden train/eval flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMode {
    /// A fresh draw w = μ + σ·ε from libtorch's (seeded) generator.
    Sample,
    /// The posterior mean, w = μ.
    Mean,
    /// A reproducible draw whose ε comes from ChaCha20 seeded by this id, independent
    /// of libtorch's generator: the same id always gives the same weights.
    Frozen(u64),
}

/// Anything that maps a batch of inputs `[B, 784]` to logits, possibly stochastically.
pub trait Classifier {
    /// Logits of `n` forward passes, each with its own weight draw: `[n, B, 10]`.
    /// For a deterministic model every pass is the same.
    fn sample_logits(&self, x: &tch::Tensor, n: usize) -> tch::Tensor;
}
