//! Files that are safe with concurrent writers on several hosts sharing one filesystem:
//! a temporary name carries the host, the process id and a random part (two nodes may
//! share a PID), every file is fsynced before it is renamed into place, a rename's
//! folder is fsynced after it, and [`publish_new`] lets the first of several writers of
//! one path win while the others discard their copies.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Who wrote a file or holds a claim: host, process and (under Slurm) the job id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Provenance {
    pub host: String,
    pub pid: u32,
    /// `$SLURM_JOB_ID` (with `_<task>` of an array job), when run by Slurm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job_id: Option<String>,
}

impl Provenance {
    /// This process.
    pub fn here() -> Self {
        let job = std::env::var("SLURM_JOB_ID").ok();
        let task = std::env::var("SLURM_ARRAY_TASK_ID").ok();
        Self {
            host: hostname(),
            pid: std::process::id(),
            slurm_job_id: match (job, task) {
                (Some(j), Some(t)) => Some(format!("{j}_{t}")),
                (j, _) => j,
            },
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `gethostname`).
pub fn hostname() -> String {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_owned();
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        return String::from_utf8_lossy(&buf[..end]).into_owned();
    }
    "unknown-host".to_owned()
}

/// A temporary name beside `path`, private to this writer:
/// `.<name>.tmp.<host>.<pid>.<16 random hex digits>.<extension>` (hidden, never a cache
/// artifact; it keeps the extension, by which libtorch picks the format it writes).
pub fn private_tmp(path: &Path, owner: &Provenance) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host: String = owner
        .host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let nonce: u64 = rand::random();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tmp.{host}.{}.{nonce:016x}{ext}",
        owner.pid
    ))
}

/// Writes `bytes` to `path` (created or truncated) and fsyncs it.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Fsyncs `path`'s folder, so that a rename or link into it survives a crash.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a private temporary file, fsynced, then renamed
/// (replacing what was there).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = private_tmp(path, &Provenance::here());
    let result = write_synced(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Moves the complete, fsynced file `tmp` to `path` unless `path` exists: a hard link,
/// which fails when the name is taken, so of several writers the first wins. `tmp` is
/// removed either way. Returns whether this writer's file is the one at `path`.
pub fn publish_new(tmp: &Path, path: &Path) -> std::io::Result<bool> {
    let linked = match std::fs::hard_link(tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
    };
    std::fs::remove_file(tmp)?;
    sync_parent(path)?;
    Ok(linked)
}

/// Writes a file with `write(tmp)`, fsyncs it and returns its SHA-256; on any failure
/// the temporary is removed and the reason returned.
pub fn stage(
    tmp: &Path,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<String, String> {
    let staged = write(tmp)
        .and_then(|()| {
            std::fs::File::open(tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| e.to_string())
        })
        .and_then(|()| sha256_file(tmp).map_err(|e| e.to_string()));
    if staged.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    staged
}

/// The SHA-256 of `bytes`, as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of a file's contents, read in blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
