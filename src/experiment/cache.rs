//! The artifact cache: every artifact (trained model, perturbation set, evaluation) is
//! stored under a key derived from its full configuration, so a rerun reuses exactly
//! what finished and a changed configuration never meets a stale artifact.
//!
//! Files are written to a temporary name and renamed; a JSON sidecar written last marks
//! an artifact complete, so an interrupted run leaves nothing a rerun trusts.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::model::checkpoint::write_atomic;

/// Bumped whenever the meaning of a cached artifact changes.
pub const CACHE_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache artifact {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// A stable key: a readable name plus the first 16 hex digits of the SHA-256 of the
/// canonical JSON of the configuration (and the cache format).
pub fn key(name: &str, config: &serde_json::Value) -> String {
    let mut h = Sha256::new();
    h.update(CACHE_FORMAT.to_le_bytes());
    h.update(serde_json::to_vec(config).unwrap_or_default());
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}-{hex}")
}

/// The three artifact folders of a runs folder: `models/`, `attacks/`, `evals/`.
pub fn run_folders(runs: &std::path::Path) -> [ArtifactDir; 3] {
    ["models", "attacks", "evals"].map(|kind| ArtifactDir::new(runs.join(kind)))
}

/// One folder of artifacts of one kind (`runs/<profile>/<kind>/`).
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    pub root: PathBuf,
}

impl ArtifactDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The path stem of an artifact (its files add extensions).
    pub fn stem(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// The artifact's file with extension `ext` appended (a key may contain dots, as
    /// in `bnn_rho=-2.5-…`, so the extension is never substituted).
    fn file(&self, key: &str, ext: &str) -> PathBuf {
        self.root.join(format!("{key}.{ext}"))
    }

    /// Reads a complete JSON artifact, or `None` if absent.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        let path = self.file(key, "json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| CacheError::Io {
                    path,
                    reason: format!("corrupt ({e}); delete it to recompute"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CacheError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Writes a JSON artifact atomically.
    pub fn write_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), CacheError> {
        let path = self.file(key, "json");
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| CacheError::Io {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes).map_err(|e| CacheError::Io {
            path,
            reason: e.to_string(),
        })
    }

    /// Writes named tensors as safetensors atomically (call before the sidecar).
    pub fn write_tensors(
        &self,
        key: &str,
        tensors: &[(&str, &tch::Tensor)],
    ) -> Result<(), CacheError> {
        let path = self.file(key, "safetensors");
        let err = |reason: String| CacheError::Io {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.root).map_err(|e| err(e.to_string()))?;
        let tmp = self
            .root
            .join(format!(".{key}.tmp{}.safetensors", std::process::id()));
        tch::Tensor::write_safetensors(tensors, &tmp).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(e.to_string()))
    }

    /// Reads named tensors written by [`ArtifactDir::write_tensors`].
    pub fn read_tensors(&self, key: &str) -> Result<Vec<(String, tch::Tensor)>, CacheError> {
        let path = self.file(key, "safetensors");
        tch::Tensor::read_safetensors(&path).map_err(|e| CacheError::Io {
            path,
            reason: format!("unreadable ({e}); delete it and its .json to recompute"),
        })
    }
}

/// A claim on an artifact while one process computes it, so several `reproduce`
/// processes sharing one runs folder split the work instead of repeating it. The claim
/// file holds the owner's process id and is removed when the claim is dropped; a claim
/// whose process has gone (a killed run) is stale and is taken over.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the process named in a claim file still runs. Where `/proc` is missing the
/// claim is trusted; an unreadable claim is stale.
fn claim_is_live(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return false;
    };
    let proc_root = std::path::Path::new("/proc");
    !proc_root.exists() || proc_root.join(pid.to_string()).exists()
}

impl ArtifactDir {
    /// Claims `key` for this process, or returns `None` while another live process holds it.
    pub fn try_claim(&self, key: &str) -> Result<Option<Claim>, CacheError> {
        let path = self.root.join(format!(".{key}.claim"));
        let err = |reason: String| CacheError::Io {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.root).map_err(|e| err(e.to_string()))?;
        // The claim appears complete (pid written) or not at all: written to a
        // private file, then hard-linked, which fails if the claim exists.
        let tmp = self
            .root
            .join(format!(".{key}.claim.{}.tmp", std::process::id()));
        std::fs::write(&tmp, std::process::id().to_string()).map_err(|e| err(e.to_string()))?;
        let mut claimed = false;
        for _ in 0..2 {
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {
                    claimed = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if claim_is_live(&path) {
                        break;
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(err(e.to_string()));
                }
            }
        }
        let _ = std::fs::remove_file(&tmp);
        if claimed {
            return Ok(Some(Claim { path }));
        }
        Ok(None)
    }
}

/// Computes (or loads) every item, sharing the work with other processes that use the
/// same runs folder: an item another live process has claimed is put off and taken up
/// once that claim is released (its artifact is then cached) or goes stale. With
/// `wait == false` put-off items are left to their owners and come back as `None`.
/// `job(i)` computes or loads item i and says whether it was reused. Returns the items
/// and how many were reused.
pub fn share_work<T, E: From<CacheError>>(
    dir: &ArtifactDir,
    keys: &[String],
    wait: bool,
    progress: &indicatif::ProgressBar,
    mut job: impl FnMut(usize) -> Result<(T, bool), E>,
) -> Result<(Vec<Option<T>>, usize), E> {
    let mut out: Vec<Option<T>> = keys.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..keys.len()).collect();
    let mut reused = 0;
    loop {
        let mut put_off = Vec::new();
        for i in pending {
            if let Some(_claim) = dir.try_claim(&keys[i])? {
                let (value, was_cached) = job(i)?;
                reused += was_cached as usize;
                out[i] = Some(value);
                progress.inc(1);
            } else {
                put_off.push(i);
            }
        }
        if put_off.is_empty() || !wait {
            return Ok((out, reused));
        }
        progress.set_message(format!(
            "waiting for {} item(s) another process is computing",
            put_off.len()
        ));
        std::thread::sleep(std::time::Duration::from_secs(5));
        pending = put_off;
    }
}
