//! The artifact cache: every artifact (trained model, perturbation set, evaluation) is
//! stored under a key derived from its full configuration, so a rerun reuses exactly
//! what finished and a changed configuration never meets a stale artifact.
//!
//! The cache is safe with concurrent writers on several hosts sharing one filesystem
//! (docs/ARCHITECTURE.md, "The cache on a shared filesystem"):
//! - every file is written under a private temporary name ([`fsio::private_tmp`]:
//!   host, PID and a random part) and fsynced before it is published;
//! - an artifact's JSON record carries an integrity record ([`Integrity`]): the SHA-256
//!   of its content and of its tensors file, and who wrote it; readers verify both, so
//!   a truncated or corrupted artifact is an error that names its file, never data;
//! - the record is published with a link that fails if one exists, before the tensors
//!   are renamed into place, so when two writers finish one key the first wins and the
//!   second discards its copy;
//! - a [`Claim`] records host, PID and Slurm job id, and is judged live by its
//!   heartbeat (the file's mtime), on any host.

use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fsio::{self, Provenance};

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

    /// Reads a complete JSON artifact, or `None` if absent; one whose integrity record
    /// does not match its content is an error naming the file.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        let path = self.file(key, "json");
        let Some((value, _)) = read_verified_json(&path)? else {
            return Ok(None);
        };
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| CacheError::Io {
                path,
                reason: format!("corrupt ({e}); delete it to recompute"),
            })
    }

    /// Writes a JSON artifact (an object) with its integrity record; if another writer
    /// published the same key first, theirs stands and this copy is discarded.
    pub fn write_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), CacheError> {
        self.publish(key, value, None).map(|_| ())
    }

    /// Writes named tensors as `<key>.safetensors` with the record `<key>.json` that
    /// describes them and holds their SHA-256; if another writer published the key
    /// first, theirs stands and this copy is discarded.
    pub fn write_with_tensors<T: serde::Serialize>(
        &self,
        key: &str,
        tensors: &[(&str, &tch::Tensor)],
        record: &T,
    ) -> Result<(), CacheError> {
        let path = self.file(key, "safetensors");
        let err = |reason: String| CacheError::Io {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.root).map_err(|e| err(e.to_string()))?;
        let tmp = fsio::private_tmp(&path, &Provenance::here());
        let sha = fsio::stage(&tmp, |t| {
            tch::Tensor::write_safetensors(tensors, t).map_err(|e| e.to_string())
        })
        .map_err(err)?;
        let won = self.publish(key, record, Some(sha));
        if !matches!(won, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
            return won.map(|_| ());
        }
        std::fs::rename(&tmp, &path)
            .and_then(|()| fsio::sync_parent(&path))
            .map_err(|e| err(e.to_string()))
    }

    /// Publishes `<key>.json` with its integrity record, first writer wins; returns
    /// whether this writer's copy is the one published.
    fn publish<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        payload_sha256: Option<String>,
    ) -> Result<bool, CacheError> {
        let path = self.file(key, "json");
        let err = |reason: String| CacheError::Io {
            path: path.clone(),
            reason,
        };
        let Value::Object(mut map) = serde_json::to_value(value).map_err(|e| err(e.to_string()))?
        else {
            return Err(err("a cache record must be a JSON object".into()));
        };
        let made_by = Provenance::here();
        let integrity = Integrity {
            sha256: content_sha256(&map),
            payload_sha256,
            made_by: made_by.clone(),
        };
        map.insert(
            INTEGRITY.into(),
            serde_json::to_value(&integrity).map_err(|e| err(e.to_string()))?,
        );
        let bytes = serde_json::to_vec_pretty(&map).map_err(|e| err(e.to_string()))?;
        std::fs::create_dir_all(&self.root).map_err(|e| err(e.to_string()))?;
        let tmp = fsio::private_tmp(&path, &made_by);
        fsio::write_synced(&tmp, &bytes)
            .and_then(|()| fsio::publish_new(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                err(e.to_string())
            })
    }

    /// Reads named tensors written by [`ArtifactDir::write_with_tensors`], after checking
    /// them against the SHA-256 their record holds.
    pub fn read_tensors(&self, key: &str) -> Result<Vec<(String, tch::Tensor)>, CacheError> {
        let path = self.file(key, "safetensors");
        self.verify_payload(key)?;
        tch::Tensor::read_safetensors(&path).map_err(|e| CacheError::Io {
            path,
            reason: format!("unreadable ({e}); delete it and its .json to recompute"),
        })
    }

    /// Checks `<key>.safetensors` against the hash in `<key>.json`'s integrity record.
    fn verify_payload(&self, key: &str) -> Result<(), CacheError> {
        let json = self.file(key, "json");
        let Some((_, Some(integrity))) = read_verified_json(&json)? else {
            return Ok(());
        };
        let Some(expected) = integrity.payload_sha256 else {
            return Ok(());
        };
        let path = self.file(key, "safetensors");
        let found = fsio::sha256_file(&path).map_err(|e| CacheError::Io {
            path: path.clone(),
            reason: format!("{e} (its record {} exists)", json.display()),
        })?;
        if found != expected {
            return Err(CacheError::Io {
                path,
                reason: format!(
                    "corrupt or incomplete: SHA-256 {found}, its record holds {expected}; delete it and its .json to recompute"
                ),
            });
        }
        Ok(())
    }

    /// Whether the artifact `key` is absent, complete and verified, or corrupt.
    pub fn state(&self, key: &str) -> ArtifactState {
        match read_verified_json(&self.file(key, "json")) {
            Ok(None) => ArtifactState::Absent,
            Err(e) => ArtifactState::Corrupt(e.to_string()),
            Ok(Some(_)) => match self.verify_payload(key) {
                Ok(()) => ArtifactState::Complete,
                Err(e) => ArtifactState::Corrupt(e.to_string()),
            },
        }
    }

    /// Removes the artifact's record and tensors (not its key preimage), so that it is
    /// recomputed.
    pub fn discard(&self, key: &str) -> Result<(), CacheError> {
        for ext in ["json", "safetensors"] {
            let path = self.file(key, ext);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(CacheError::Io {
                        path,
                        reason: e.to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl ArtifactDir {
    /// Removes the temporary files of `key` that a killed writer left behind: those of
    /// a process of this host that has gone, and any older than ten claim expiries.
    /// Call it holding the key's claim. Returns how many were removed.
    pub fn sweep_temporaries(&self, key: &str, policy: &ClaimPolicy) -> usize {
        let here = Provenance::here();
        let prefix = format!(".{key}.");
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // `.<key>.<ext>.tmp.<host>.<pid>.<nonce>.<ext>`: the extension has no dot,
            // so `.<key>.` of a key that is a prefix of another key's does not match.
            let Some((ext, owner)) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once(".tmp."))
            else {
                continue;
            };
            if ext.contains('.') {
                continue;
            }
            let mut parts = owner.split('.');
            let (host, pid) = (
                parts.next(),
                parts.next().and_then(|p| p.parse::<u32>().ok()),
            );
            let dead_here = host == Some(here.host.as_str())
                && pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists());
            let old = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
                .is_some_and(|age| age > policy.expiry * 10);
            if (dead_here || old) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

/// What [`ArtifactDir::state`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ArtifactState {
    Absent,
    Complete,
    /// Present but not to be trusted, and why (naming the file).
    Corrupt(String),
}

/// The field of a cache record that holds its [`Integrity`].
pub const INTEGRITY: &str = "_integrity";

/// A cache record's integrity record: the SHA-256 of the record's content (the compact
/// JSON of the object without this field; keys sorted, floats round-tripped exactly),
/// the SHA-256 of its tensors file if it has one, and who wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Integrity {
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    pub made_by: Provenance,
}

fn content_sha256(map: &serde_json::Map<String, Value>) -> String {
    fsio::sha256_hex(&serde_json::to_vec(map).unwrap_or_default())
}

/// Reads a record and checks its integrity record: `None` if the file is absent; the
/// content (without the integrity field) and the integrity record, which a record
/// written before integrity records existed lacks (read unverified).
fn read_verified_json(
    path: &std::path::Path,
) -> Result<Option<(Value, Option<Integrity>)>, CacheError> {
    let corrupt = |reason: String| CacheError::Io {
        path: path.to_owned(),
        reason: format!("corrupt ({reason}); delete it to recompute"),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CacheError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    let Value::Object(mut map) = value else {
        return Ok(Some((value, None)));
    };
    let Some(raw) = map.remove(INTEGRITY) else {
        return Ok(Some((Value::Object(map), None)));
    };
    let integrity: Integrity =
        serde_json::from_value(raw).map_err(|e| corrupt(format!("integrity record: {e}")))?;
    let found = content_sha256(&map);
    if found != integrity.sha256 {
        return Err(corrupt(format!(
            "content SHA-256 {found}, its integrity record holds {}",
            integrity.sha256
        )));
    }
    Ok(Some((Value::Object(map), Some(integrity))))
}

/// How claims are kept alive and judged: the holder touches its claim file every
/// `heartbeat`; a claim whose file is older than `expiry` is stale, whichever host
/// holds it. On the holder's own host a claim whose process has gone is stale at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClaimPolicy {
    pub heartbeat: std::time::Duration,
    pub expiry: std::time::Duration,
}

impl Default for ClaimPolicy {
    fn default() -> Self {
        Self {
            heartbeat: std::time::Duration::from_secs(10),
            expiry: std::time::Duration::from_secs(60),
        }
    }
}

/// What a claim file holds: its owner and a nonce that tells two claims of one owner apart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClaimRecord {
    #[serde(flatten)]
    pub owner: Provenance,
    pub nonce: String,
}

/// A claim on an artifact while one process computes it, so that processes sharing one
/// runs folder (local workers, or Slurm jobs on several nodes) split the work instead of
/// repeating it. A thread touches the claim file every heartbeat; the claim is removed
/// when dropped.
#[derive(Debug)]
pub struct Claim {
    path: PathBuf,
    nonce: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Claim {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if claim_nonce(&self.path).as_deref() == Some(self.nonce.as_str()) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The nonce of the claim file at `path` (None if absent or unreadable).
fn claim_nonce(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str::<ClaimRecord>(&text)
        .ok()
        .map(|r| r.nonce)
}

/// Touches the claim file every `every` until told to stop, while it is still ours.
fn keep_alive(
    path: PathBuf,
    nonce: String,
    every: std::time::Duration,
    stop: std::sync::mpsc::Receiver<()>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if claim_nonce(&path).as_deref() != Some(nonce.as_str()) {
            return;
        }
        if let Ok(f) = std::fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
}

/// Whether the claim file at `path` is live for a process on `here` under `policy`:
/// its heartbeat is recent, and on its owner's own host its process still runs. A claim
/// holding only a process id (written by an older build) belongs to this host; an
/// unreadable claim is stale.
fn claim_is_live(path: &std::path::Path, here: &Provenance, policy: &ClaimPolicy) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let age = meta
        .modified()
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age > policy.expiry {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    let owner = match serde_json::from_str::<ClaimRecord>(&text) {
        Ok(r) => r.owner,
        Err(_) => match text.trim().parse::<u32>() {
            Ok(pid) => Provenance {
                host: here.host.clone(),
                pid,
                slurm_job_id: None,
            },
            Err(_) => return false,
        },
    };
    let proc_root = std::path::Path::new("/proc");
    owner.host != here.host || !proc_root.exists() || proc_root.join(owner.pid.to_string()).exists()
}

impl ArtifactDir {
    /// Claims `key` for this process, or returns `None` while another live process holds it.
    pub fn try_claim(&self, key: &str) -> Result<Option<Claim>, CacheError> {
        self.try_claim_as(key, &Provenance::here(), &ClaimPolicy::default())
    }

    /// [`ArtifactDir::try_claim`] as `owner` under `policy`. The claim appears complete
    /// or not at all (a private file, hard-linked into place, which fails if a claim
    /// exists). A stale claim is first renamed aside, and taken over only if the file
    /// renamed is the one judged stale (not a claim another process made meanwhile).
    pub fn try_claim_as(
        &self,
        key: &str,
        owner: &Provenance,
        policy: &ClaimPolicy,
    ) -> Result<Option<Claim>, CacheError> {
        let path = self.root.join(format!(".{key}.claim"));
        let err = |reason: String| CacheError::Io {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.root).map_err(|e| err(e.to_string()))?;
        let record = ClaimRecord {
            owner: owner.clone(),
            nonce: format!("{:016x}", rand::random::<u64>()),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| err(e.to_string()))?;
        for _ in 0..2 {
            let tmp = fsio::private_tmp(&path, owner);
            fsio::write_synced(&tmp, &bytes).map_err(|e| err(e.to_string()))?;
            if fsio::publish_new(&tmp, &path).map_err(|e| err(e.to_string()))? {
                let (stop, told) = std::sync::mpsc::channel();
                let (p, n, every) = (path.clone(), record.nonce.clone(), policy.heartbeat);
                let heartbeat = std::thread::spawn(move || keep_alive(p, n, every, told));
                return Ok(Some(Claim {
                    path,
                    nonce: record.nonce,
                    stop: Some(stop),
                    heartbeat: Some(heartbeat),
                }));
            }
            if claim_is_live(&path, owner, policy) {
                return Ok(None);
            }
            let judged = std::fs::read(&path).unwrap_or_default();
            let aside = fsio::private_tmp(&path, owner);
            if std::fs::rename(&path, &aside).is_err() {
                continue;
            }
            let moved = std::fs::read(&aside).unwrap_or_default();
            if moved != judged {
                // Another process claimed it between our look and the rename: put theirs back.
                let _ = std::fs::hard_link(&aside, &path);
                let _ = std::fs::remove_file(&aside);
                return Ok(None);
            }
            let _ = std::fs::remove_file(&aside);
        }
        Ok(None)
    }
}
