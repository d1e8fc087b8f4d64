//! Checkpoints: a model's variables as safetensors plus a JSON sidecar that says what
//! the model is, how it was trained, who wrote it and the SHA-256 of the weights file.
//! Both are fsynced private temporary files until published; the sidecar is published
//! first with a link that fails if one exists (so of two writers the first wins), then
//! the weights are renamed into place. A reader checks the weights against the recorded
//! hash, so a truncated, corrupt or half-published checkpoint is an error that names
//! its file, never a model.

use std::path::{Path, PathBuf};

use tch::nn;

use super::bayes::BayesConfig;
use super::mlp::MlpConfig;
use crate::fsio::{self, Provenance};

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
    /// The SHA-256 of the weights file, recorded by [`save`] (optional for a checkpoint
    /// written elsewhere; checked on every load when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
    /// Who wrote it (recorded by [`save`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_by: Option<Provenance>,
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
    #[error(
        "checkpoint weights {path} are corrupt or incomplete: SHA-256 {found}, its sidecar records {expected}; delete it and its .json to recompute"
    )]
    Corrupt {
        path: PathBuf,
        expected: String,
        found: String,
    },
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

    /// Whether a complete checkpoint exists: sidecar and weights present and, where the
    /// sidecar records the weights' hash, the weights match it.
    pub fn exists(&self) -> bool {
        self.sidecar.is_file() && self.weights.is_file() && self.verify().is_ok()
    }

    /// Checks the weights against the sidecar's recorded SHA-256 (a checkpoint without
    /// one, written elsewhere, passes).
    pub fn verify(&self) -> Result<(), CheckpointError> {
        let meta = read_sidecar(&self.sidecar)?;
        let Some(expected) = &meta.weights_sha256 else {
            return Ok(());
        };
        let found = fsio::sha256_file(&self.weights).map_err(|_| CheckpointError::Missing {
            path: self.weights.clone(),
            what: "weights .safetensors",
        })?;
        if &found != expected {
            return Err(CheckpointError::Corrupt {
                path: self.weights.clone(),
                expected: expected.clone(),
                found,
            });
        }
        Ok(())
    }

    /// Removes both files (a corrupt checkpoint, before it is recomputed).
    pub fn remove(&self) -> std::io::Result<()> {
        for p in [&self.sidecar, &self.weights] {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Saves `vs` and `meta` under `stem`, recording the weights' SHA-256 and this process
/// as the writer. A complete checkpoint already there (another writer finished first)
/// stands and this copy is discarded; an incomplete or corrupt one is replaced.
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
    if paths.sidecar.exists() && paths.verify().is_err() {
        paths
            .remove()
            .map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    }
    let me = Provenance::here();
    let weights_tmp = fsio::private_tmp(&paths.weights, &me);
    let sha = fsio::stage(&weights_tmp, |t| vs.save(t).map_err(|e| e.to_string()))
        .map_err(|reason| werr(&weights_tmp, reason))?;
    let meta = CheckpointMeta {
        weights_sha256: Some(sha),
        made_by: Some(me.clone()),
        ..meta.clone()
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    let sidecar_tmp = fsio::private_tmp(&paths.sidecar, &me);
    let published = fsio::write_synced(&sidecar_tmp, &json)
        .and_then(|()| fsio::publish_new(&sidecar_tmp, &paths.sidecar))
        .map_err(|e| werr(&paths.sidecar, e.to_string()))?;
    if !published {
        let _ = std::fs::remove_file(&weights_tmp);
        return Ok(paths);
    }
    std::fs::rename(&weights_tmp, &paths.weights)
        .and_then(|()| fsio::sync_parent(&paths.weights))
        .map_err(|e| werr(&paths.weights, e.to_string()))?;
    Ok(paths)
}

/// Reads a checkpoint's sidecar.
pub fn read_meta(stem: &Path) -> Result<CheckpointMeta, CheckpointError> {
    read_sidecar(&CheckpointPaths::new(stem).sidecar)
}

fn read_sidecar(sidecar: &Path) -> Result<CheckpointMeta, CheckpointError> {
    let text = std::fs::read_to_string(sidecar).map_err(|_| CheckpointError::Missing {
        path: sidecar.to_owned(),
        what: "sidecar .json",
    })?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| CheckpointError::BadSidecar {
            path: sidecar.to_owned(),
            reason: e.to_string(),
        })?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(CheckpointError::BadSidecar {
            path: sidecar.to_owned(),
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
    paths.verify()?;
    vs.load(&paths.weights)
        .map_err(|source| CheckpointError::BadWeights {
            path: paths.weights.clone(),
            source,
        })?;
    Ok(meta)
}
