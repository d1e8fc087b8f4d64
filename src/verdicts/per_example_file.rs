//! Reads a report's committed per-example files (`per_example.npz` and
//! `per_example.json`, docs/PER_EXAMPLE.md) into the scores the family is computed on,
//! so every verdict is recomputed from committed files alone, never from `runs/`.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::VerdictError;
use super::bootstrap::PairedScores;
use super::bound::BoundLabel;
use super::claims::{ENSEMBLE_100, ENSEMBLE_ONE, PRUNED_75};

/// What the family reads from `per_example.json`.
#[derive(Debug, serde::Deserialize)]
struct Index {
    models: Vec<IndexModel>,
    splits: Vec<String>,
    #[serde(default)]
    ensemble: Option<IndexEnsemble>,
    #[serde(default)]
    pruning: Option<IndexPruning>,
}

#[derive(Debug, serde::Deserialize)]
struct IndexModel {
    name: String,
    runs: usize,
}

#[derive(Debug, serde::Deserialize)]
struct IndexEnsemble {
    n_samples: Vec<usize>,
}

#[derive(Debug, serde::Deserialize)]
struct IndexPruning {
    rates: Vec<f64>,
    runs: usize,
}

/// The scores of one report's text-protocol per-example files at the reading they were
/// made at (the sets as made: m = 1, κ = 0, per-example cap), and the sets' bound label.
#[derive(Debug)]
pub struct ReadingScores {
    pub scores: PairedScores,
    pub bound: BoundLabel,
    /// Each set's mean distortion.
    pub set_means: Vec<f64>,
}

fn npz_path(dir: &Path) -> PathBuf {
    dir.join("per_example.npz")
}

/// Whether `dir` holds the text protocol's per-example files.
pub fn has_per_example(dir: &Path) -> bool {
    npz_path(dir).is_file() && dir.join("per_example.json").is_file()
}

/// Reads `dir`'s per-example files: each λ net's and BNN's Table 2 score per test image
/// (its correct single-draw runs over the 12 sets, as a fraction), Table 3's one-draw
/// and 100-draw ensembles' and Table 4's 75%-pruned BNN's likewise.
pub fn read_reading_scores(dir: &Path, bound: f64) -> Result<ReadingScores, VerdictError> {
    let index: Index = read_index(&dir.join("per_example.json"))?;
    let path = npz_path(dir);
    let arrays = read_arrays(&path)?;
    let get = |name: &str| array(&arrays, name, &path);
    let sets: Vec<i64> = index
        .splits
        .iter()
        .enumerate()
        .filter(|(_, s)| *s != "validation" && *s != "test")
        .map(|(i, _)| i as i64)
        .collect();
    let set_index = Tensor::from_slice(&sets);
    let correct = get("correct")?;
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for (m, model) in index.models.iter().enumerate() {
        let counts = correct.get(m as i64).index_select(0, &set_index);
        rows.push(set_mean(&counts, model.runs, &path)?);
        names.push(model.name.clone());
    }
    if let Some(ens) = &index.ensemble {
        let ec = get("ensemble_correct")?;
        let runs = get("ensemble_runs")?;
        for (n_draws, name) in [(1, ENSEMBLE_ONE), (100, ENSEMBLE_100)] {
            if let Some(j) = ens.n_samples.iter().position(|n| *n == n_draws) {
                let r = runs.int64_value(&[j as i64]).max(1) as usize;
                rows.push(set_mean(&ec.get(j as i64), r, &path)?);
                names.push(name.to_owned());
            }
        }
    }
    if let Some(pr) = &index.pruning
        && let Some(r) = pr.rates.iter().position(|x| (x - 0.75).abs() < 1e-9)
    {
        let pc = get("pruning_correct")?;
        let counts = pc.get(r as i64).index_select(0, &set_index);
        rows.push(set_mean(&counts, pr.runs, &path)?);
        names.push(PRUNED_75.to_owned());
    }
    let rms = get("set_rms")?
        .to_kind(Kind::Double)
        .mean_dim(1, false, Kind::Double);
    let set_means = Vec::<f64>::try_from(&rms).map_err(|e| VerdictError::Format {
        path: path.clone(),
        why: format!("set_rms: {e}"),
    })?;
    Ok(ReadingScores {
        scores: PairedScores::new(names, vec![rows])?,
        bound: BoundLabel::of(&set_means, bound),
        set_means,
    })
}

/// `counts [sets, n]` of correct runs out of `runs`, as each image's fraction averaged
/// over the sets.
fn set_mean(counts: &Tensor, runs: usize, path: &Path) -> Result<Vec<f64>, VerdictError> {
    let frac = counts.mean_dim(0, false, Kind::Double) / runs.max(1) as f64;
    Vec::<f64>::try_from(&frac).map_err(|e| VerdictError::Format {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// What the family reads from `per_example_seeds.json`.
#[derive(Debug, serde::Deserialize)]
struct SeedsIndex {
    models: Vec<String>,
    draws: Vec<usize>,
    sets: usize,
}

/// Reads `dir`'s per-seed counts (`per_example_seeds.npz`, written with
/// `--per-example` and K > 1 training seeds): each λ net's and BNN's score per test
/// image at every seed; `None` where the folder has none.
pub fn read_seed_scores(dir: &Path) -> Result<Option<PairedScores>, VerdictError> {
    let json_path = dir.join("per_example_seeds.json");
    let path = dir.join("per_example_seeds.npz");
    if !json_path.is_file() || !path.is_file() {
        return Ok(None);
    }
    let index: SeedsIndex = read_index(&json_path)?;
    let correct = array(&read_arrays(&path)?, "correct", &path)?;
    let size = correct.size();
    if size.len() != 3
        || size[1] as usize != index.models.len()
        || index.draws.len() != index.models.len()
    {
        return Err(VerdictError::Format {
            path: path.clone(),
            why: format!(
                "`correct` has shape {size:?}; expected [K, {}, n]",
                index.models.len()
            ),
        });
    }
    let fractions = correct * per_run(&index.draws, index.sets, 1, 3);
    Ok(Some(PairedScores::new(
        index.models,
        nested(&fractions, &path)?,
    )?))
}

/// What the family reads from `per_example_strength.json`.
#[derive(Debug, serde::Deserialize)]
struct StrengthIndex {
    models: Vec<String>,
    draws: Vec<usize>,
    sets: usize,
    points: Vec<StrengthIndexPoint>,
}

#[derive(Debug, serde::Deserialize)]
struct StrengthIndexPoint {
    name: String,
    set_distortions: Vec<f64>,
}

/// One point of the strength study, read back: its name, the sets' bound label and
/// every model's scores at every seed.
#[derive(Debug)]
pub struct StudyScores {
    pub name: String,
    pub bound: BoundLabel,
    pub scores: PairedScores,
}

/// Reads `dir`'s strength-study counts (`per_example_strength.npz`, written with
/// `--per-example --strength` and K > 1 training seeds); `None` where there are none.
pub fn read_study_scores(dir: &Path, bound: f64) -> Result<Option<Vec<StudyScores>>, VerdictError> {
    let json_path = dir.join("per_example_strength.json");
    let path = dir.join("per_example_strength.npz");
    if !json_path.is_file() || !path.is_file() {
        return Ok(None);
    }
    let index: StrengthIndex = read_index(&json_path)?;
    let format = |why: String| VerdictError::Format {
        path: path.clone(),
        why,
    };
    let correct = array(&read_arrays(&path)?, "correct", &path)?;
    let size = correct.size();
    let models = index.models.len() as i64;
    if size.len() != 4
        || size[0] as usize != index.points.len()
        || size[2] != models
        || index.draws.len() != index.models.len()
    {
        return Err(format(format!(
            "`correct` has shape {size:?}; expected [{}, K, {models}, n]",
            index.points.len()
        )));
    }
    let fractions = correct * per_run(&index.draws, index.sets, 2, 4);
    let mut out = Vec::new();
    for (p, point) in index.points.into_iter().enumerate() {
        let per_seed = nested(&fractions.get(p as i64), &path)?;
        out.push(StudyScores {
            bound: BoundLabel::of(&point.set_distortions, bound),
            name: point.name,
            scores: PairedScores::new(index.models.clone(), per_seed)?,
        });
    }
    Ok(Some(out))
}

/// `path` as the JSON index `T`.
fn read_index<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, VerdictError> {
    let text = std::fs::read_to_string(path).map_err(|e| VerdictError::Io {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| VerdictError::Format {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Every array of the npz file `path`.
fn read_arrays(path: &Path) -> Result<Vec<(String, Tensor)>, VerdictError> {
    Tensor::read_npz(path).map_err(|e| VerdictError::Io {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The array `name` of `arrays` (read from `path`), as f64.
fn array(arrays: &[(String, Tensor)], name: &str, path: &Path) -> Result<Tensor, VerdictError> {
    arrays
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.to_kind(Kind::Double))
        .ok_or_else(|| VerdictError::Format {
            path: path.to_owned(),
            why: format!("no array `{name}`"),
        })
}

/// Each model's fraction per correct run: 1 / (sets · draws), shaped to broadcast
/// over the models axis `axis` of an array with `dims` dimensions.
fn per_run(draws: &[usize], sets: usize, axis: usize, dims: usize) -> Tensor {
    let v: Vec<f64> = draws
        .iter()
        .map(|d| 1.0 / (sets.max(1) * (*d).max(1)) as f64)
        .collect();
    let mut shape = vec![1i64; dims];
    shape[axis] = -1;
    Tensor::from_slice(&v).view(shape.as_slice())
}

/// Per seed and model, each image's score: `fractions [K, models, n]` as nested vectors.
fn nested(fractions: &Tensor, path: &Path) -> Result<Vec<Vec<Vec<f64>>>, VerdictError> {
    let size = fractions.size();
    (0..size[0])
        .map(|k| {
            (0..size[1])
                .map(|m| Vec::<f64>::try_from(&fractions.get(k).get(m)))
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<_, _>>()
        .map_err(|e| VerdictError::Format {
            path: path.to_owned(),
            why: e.to_string(),
        })
}
