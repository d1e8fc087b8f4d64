//! What both protocols' `--per-example` share: one evaluation's per-example counts
//! cached as a tensor under its planned key, and `per_example.npz` with its index
//! `per_example.json` written beside `results.json` (the npz through a temporary file
//! and a rename, so that a killed run leaves no half-written file).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tch::Tensor;

use super::cache::ArtifactDir;
use super::keys::Key;
use super::stage::ReproduceError;

/// The counts cached under `key` in `dir` (a `counts` tensor, `meta` beside it), or
/// those `compute` makes, stored first; the key's preimage is written beside them.
pub(crate) fn cached_counts(
    dir: &ArtifactDir,
    key: &Key,
    meta: &Value,
    compute: impl FnOnce() -> Result<Tensor, ReproduceError>,
) -> Result<Tensor, ReproduceError> {
    let [counts] = cached_tensors(dir, key, meta, ["counts"], || Ok([compute()?]))?;
    Ok(counts)
}

/// The tensors `names` cached under `key` in `dir` (`meta` beside them), or those
/// `compute` makes (on the CPU), stored first; the key's preimage is written beside them.
pub(crate) fn cached_tensors<const K: usize>(
    dir: &ArtifactDir,
    key: &Key,
    meta: &Value,
    names: [&'static str; K],
    compute: impl FnOnce() -> Result<[Tensor; K], ReproduceError>,
) -> Result<[Tensor; K], ReproduceError> {
    key.write_beside(dir)?;
    let id = &key.id;
    if dir.read_json::<Value>(id)?.is_some() {
        let stored = dir.read_tensors(id)?;
        let mut out = Vec::with_capacity(K);
        for name in names {
            let t = stored
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or(ReproduceError::MissingTensor {
                    key: id.clone(),
                    name,
                })?;
            out.push(t);
        }
        return out.try_into().map_err(|_| ReproduceError::MissingTensor {
            key: id.clone(),
            name: names.first().copied().unwrap_or("counts"),
        });
    }
    let made = compute()?.map(|t| t.to_device(tch::Device::Cpu));
    let named: Vec<(&str, &Tensor)> = names.iter().copied().zip(made.iter()).collect();
    dir.write_with_tensors(id, &named, meta)?;
    Ok(made)
}

/// Writes `arrays` as `<out_dir>/per_example.npz` and `index` as
/// `<out_dir>/per_example.json`; returns the two paths.
pub(crate) fn write_per_example(
    out_dir: &Path,
    arrays: &[(&str, Tensor)],
    index: &impl serde::Serialize,
) -> Result<Vec<PathBuf>, ReproduceError> {
    let err = |path: &Path, e: String| ReproduceError::Write {
        path: path.to_owned(),
        reason: e,
    };
    std::fs::create_dir_all(out_dir).map_err(|e| err(out_dir, e.to_string()))?;
    let npz = out_dir.join("per_example.npz");
    let tmp = out_dir.join(format!(".per_example.npz.tmp{}", std::process::id()));
    let cpu: Vec<(&str, Tensor)> = arrays
        .iter()
        .map(|(n, t)| (*n, t.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_npz(&cpu, &tmp).map_err(|e| err(&npz, e.to_string()))?;
    std::fs::rename(&tmp, &npz).map_err(|e| err(&npz, e.to_string()))?;
    let json_path = out_dir.join("per_example.json");
    let text = serde_json::to_string_pretty(index).map_err(|e| err(&json_path, e.to_string()))?;
    crate::fsio::write_atomic(&json_path, text.as_bytes())
        .map_err(|e| err(&json_path, e.to_string()))?;
    Ok(vec![npz, json_path])
}
