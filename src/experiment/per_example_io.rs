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
    write_named(out_dir, "per_example", arrays, index)
}

/// Writes `<stem>.npz` (the arrays) and `<stem>.json` (the index) into `out_dir`, each
/// atomically; returns both paths.
pub(crate) fn write_named(
    out_dir: &Path,
    stem: &str,
    arrays: &[(&str, Tensor)],
    index: &impl serde::Serialize,
) -> Result<Vec<PathBuf>, ReproduceError> {
    let err = |path: &Path, e: String| ReproduceError::Write {
        path: path.to_owned(),
        reason: e,
    };
    std::fs::create_dir_all(out_dir).map_err(|e| err(out_dir, e.to_string()))?;
    let npz = out_dir.join(format!("{stem}.npz"));
    let tmp = out_dir.join(format!(".{stem}.npz.tmp{}", std::process::id()));
    let cpu: Vec<(&str, Tensor)> = arrays
        .iter()
        .map(|(n, t)| (*n, t.to_device(tch::Device::Cpu)))
        .collect();
    Tensor::write_npz(&cpu, &tmp).map_err(|e| err(&npz, e.to_string()))?;
    let deflated = out_dir.join(format!(".{stem}.npz.deflate{}", std::process::id()));
    deflate_zip(&tmp, &deflated).map_err(|e| err(&npz, e))?;
    let _ = std::fs::remove_file(&tmp);
    std::fs::rename(&deflated, &npz).map_err(|e| err(&npz, e.to_string()))?;
    let json_path = out_dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(index).map_err(|e| err(&json_path, e.to_string()))?;
    crate::fsio::write_atomic(&json_path, text.as_bytes())
        .map_err(|e| err(&json_path, e.to_string()))?;
    Ok(vec![npz, json_path])
}

/// The smallest integer kind that holds counts up to `max`: u8 (12 sets × 20 draws is
/// 240), else i16.
pub(crate) fn count_kind(max: usize) -> tch::Kind {
    if max <= 255 {
        tch::Kind::Uint8
    } else {
        tch::Kind::Int16
    }
}

/// Copies the zip archive `from` (tch's uncompressed npz) to `to` with every member
/// deflated and a fixed timestamp (1980-01-01), so the same arrays give the same bytes.
/// numpy reads it as it reads `np.savez_compressed`'s files.
pub(crate) fn deflate_zip(from: &Path, to: &Path) -> Result<(), String> {
    use std::io::{Read, Write};
    let what = |p: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", p.display());
    let input = std::fs::File::open(from).map_err(|e| what(from, &e))?;
    let mut archive = zip::ZipArchive::new(input).map_err(|e| what(from, &e))?;
    let output = std::fs::File::create(to).map_err(|e| what(to, &e))?;
    let mut writer = zip::ZipWriter::new(output);
    let options = zip::write::FileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(|e| what(from, &e))?;
        let name = member.name().to_owned();
        let mut bytes = Vec::with_capacity(member.size() as usize);
        member.read_to_end(&mut bytes).map_err(|e| what(from, &e))?;
        writer.start_file(name, options).map_err(|e| what(to, &e))?;
        writer.write_all(&bytes).map_err(|e| what(to, &e))?;
    }
    let file = writer.finish().map_err(|e| what(to, &e))?;
    file.sync_all().map_err(|e| what(to, &e))
}
