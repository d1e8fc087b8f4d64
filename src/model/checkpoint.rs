//! Checkpoints: a model's variables as safetensors plus a JSON sidecar that says what
//! the model is and how it was trained. Both are written atomically (temp file, then
//! rename), the sidecar last, so a checkpoint whose sidecar exists is complete.

use std::path::{Path, PathBuf};

use tch::nn;

use super::bayes::BayesConfig;
use super::mlp::MlpConfig;

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    Mlp { config: MlpConfig, lambda: f64 },
    Bnn { config: BayesConfig },
}

impl ModelSpec {
    pub fn arch(&self) -> &super::Arch {
        match self {
            ModelSpec::Mlp { config, .. } => &config.arch,
            ModelSpec::Bnn { config } => &config.arch,
        }
    }

    /// λ of a deterministic net (eq. 6).
    pub fn lambda(&self) -> Option<f64> {
        match self {
            ModelSpec::Mlp { lambda, .. } => Some(*lambda),
            ModelSpec::Bnn { .. } => None,
        }
    }

    /// ρ_init of a BNN.
    pub fn rho_init(&self) -> Option<f64> {
        match self {
            ModelSpec::Mlp { .. } => None,
            ModelSpec::Bnn { config } => Some(config.rho_init),
        }
    }

    /// A short name such as `mlp FC-100-100-10 lambda=0.01` or `bnn FC-100-100-10 rho_init=-3`.
    pub fn describe(&self) -> String {
        match self {
            ModelSpec::Mlp { config, lambda } => format!("mlp {} lambda={lambda}", config.arch),
            ModelSpec::Bnn { config } => {
                format!("bnn {} rho_init={}", config.arch, config.rho_init)
            }
        }
    }
}

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
///
/// Only `format` and `model` are required (docs/CHECKPOINT.md): a model trained
/// elsewhere may leave the training record out, and it reads as empty.
pub struct CheckpointMeta {
    pub format: u32,
    #[serde(default)]
    pub crate_version: String,
    pub model: ModelSpec,
    #[serde(default)]
    pub master_seed: u64,
    #[serde(default)]
    pub seed_name: String,
    #[serde(default)]
    pub epochs_run: usize,
    #[serde(default)]
    pub best_epoch: usize,
    #[serde(default)]
    pub best_validation_accuracy: f64,
    #[serde(default)]
    pub wall_seconds: f64,
    /// The training recipe, as recorded by the trainer.
    #[serde(default)]
    pub recipe: serde_json::Value,
    /// One entry per epoch, as recorded by the trainer.
    #[serde(default)]
    pub history: serde_json::Value,
}

pub const CHECKPOINT_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path} is missing (no {what}); train the model first")]
    Missing { path: PathBuf, what: &'static str },
    #[error("checkpoint sidecar {path} is unreadable or corrupt: {reason}")]
    BadSidecar { path: PathBuf, reason: String },
    #[error("checkpoint {path} holds `{found}` but `{expected}` was asked for")]
    Mismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("checkpoint weights {path} are truncated, corrupt or do not fit the model: {source}")]
    BadWeights {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("cannot write checkpoint {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// A checkpoint's two files: `<stem>.safetensors` and `<stem>.json`.
#[derive(Debug, Clone)]
pub struct CheckpointPaths {
    pub weights: PathBuf,
    pub sidecar: PathBuf,
}

impl CheckpointPaths {
    pub fn new(stem: &Path) -> Self {
        let s = stem.to_string_lossy();
        Self {
            weights: PathBuf::from(format!("{s}.safetensors")),
            sidecar: PathBuf::from(format!("{s}.json")),
        }
    }

    /// Whether a complete checkpoint (sidecar present) exists.
    pub fn exists(&self) -> bool {
        self.sidecar.is_file() && self.weights.is_file()
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Saves `vs` and `meta` under `stem`.
pub fn save(
    vs: &nn::VarStore,
    meta: &CheckpointMeta,
    stem: &Path,
) -> Result<CheckpointPaths, CheckpointError> {
    let paths = CheckpointPaths::new(stem);
    let werr = |path: &Path, reason: String| CheckpointError::Write {
        path: path.to_owned(),
        reason,
    };
    if let Some(dir) = paths.weights.parent() {
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
    }
    // An old sidecar must not vouch for new, half-written weights.
    if paths.sidecar.exists() {
        std::fs::remove_file(&paths.sidecar).map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    }
    let tmp = PathBuf::from(format!(
        "{}.tmp{}.safetensors",
        stem.to_string_lossy(),
        std::process::id()
    ));
    vs.save(&tmp).map_err(|e| werr(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, &paths.weights).map_err(|e| werr(&paths.weights, e.to_string()))?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    write_atomic(&paths.sidecar, &json).map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    Ok(paths)
}

/// Reads a checkpoint's sidecar.
pub fn read_meta(stem: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let paths = CheckpointPaths::new(stem);
    let text = std::fs::read_to_string(&paths.sidecar).map_err(|_| CheckpointError::Missing {
        path: paths.sidecar.clone(),
        what: "sidecar .json",
    })?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| CheckpointError::BadSidecar {
            path: paths.sidecar.clone(),
            reason: e.to_string(),
        })?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(CheckpointError::BadSidecar {
            path: paths.sidecar,
            reason: format!(
                "format {} (this build reads {CHECKPOINT_FORMAT})",
                meta.format
            ),
        });
    }
    Ok(meta)
}

/// Loads the weights under `stem` into `vs`, after checking that the sidecar describes
/// `expected`. Every variable of `vs` must be present with its shape.
pub fn load_into(
    vs: &mut nn::VarStore,
    expected: &ModelSpec,
    stem: &Path,
) -> Result<CheckpointMeta, CheckpointError> {
    let paths = CheckpointPaths::new(stem);
    let meta = read_meta(stem)?;
    if &meta.model != expected {
        return Err(CheckpointError::Mismatch {
            path: paths.sidecar,
            expected: expected.describe(),
            found: meta.model.describe(),
        });
    }
    if !paths.weights.is_file() {
        return Err(CheckpointError::Missing {
            path: paths.weights,
            what: "weights .safetensors",
        });
    }
    vs.load(&paths.weights)
        .map_err(|source| CheckpointError::BadWeights {
            path: paths.weights.clone(),
            source,
        })?;
    Ok(meta)
}
