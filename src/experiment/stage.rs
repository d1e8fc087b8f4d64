//! What every protocol's pipeline shares, below the protocols themselves (so that
//! `reproduce`, `seeds` and `code_protocol` import it and not each other): the run's
//! configuration and error, a stage's report, the grid's model records, cached timed
//! evaluations, percent CIs over runs, and writing results.json.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::Value;
use tch::Device;

use super::Profile;
use super::cache::{ArtifactDir, CacheError};
use crate::data::{self, Dataset, Splits};
use crate::fsio::write_atomic;
use crate::model::ModelError;
use crate::model::bayes::{BayesMlp, PruneMode};
use crate::model::checkpoint::{CheckpointError, ModelSpec};
use crate::stats::MeanCi;
use crate::train::{Recipe, TrainError, TrainedModel};

/// The libtorch version tch 0.26 is built against (its build script enforces it).
pub const LIBTORCH_VERSION: &str = "2.13.0";
pub const TCH_VERSION: &str = "0.26";

/// This build's versions, as results.json's `meta` records them.
pub fn versions() -> crate::results::Versions {
    crate::results::Versions {
        bayes_robust: env!("CARGO_PKG_VERSION").to_owned(),
        tch: TCH_VERSION.to_owned(),
        libtorch: LIBTORCH_VERSION.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReproduceError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Examples(#[from] super::examples::ExamplesError),
    #[error(transparent)]
    Plan(#[from] super::plan::PlanError),
    #[error("job {job} cannot run: its input(s) {} are not in the runs folder; run their jobs first (`bayes-robust plan` lists them)", missing.join(", "))]
    MissingInput { job: String, missing: Vec<String> },
    #[error("job {key} failed on purpose ($BAYES_ROBUST_FAIL_JOB names it)")]
    InjectedFailure { key: String },
    #[error("the train stage made {made} of the {planned} models of the grid")]
    IncompleteTraining { made: usize, planned: usize },
    #[error("model {key} is not {expected}")]
    WrongModel { key: String, expected: &'static str },
    #[error("cached artifact {key} lacks tensor {name:?}; delete it to recompute")]
    MissingTensor { key: String, name: &'static str },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Everything a reproduction needs.
#[derive(Debug, Clone)]
pub struct ReproduceConfig {
    pub profile: Profile,
    pub master_seed: u64,
    pub device: Device,
    pub threads: usize,
    /// Which dataset the models learn and are judged on (the paper: MNIST).
    pub dataset: Dataset,
    pub data_dir: PathBuf,
    /// Artifacts: `<runs_dir>/{models,attacks,evals}/`.
    pub runs_dir: PathBuf,
    /// `results.json` goes here.
    pub out_dir: PathBuf,
    pub verbose: bool,
    /// Also attack the evaluation models white-box (the profile's `whitebox` budget)
    /// and add the curves and sanity checks to the results.
    pub whitebox: bool,
    /// Table 4's pruning; `None` is the protocol's own (global for the text, per tensor
    /// for the code protocol).
    pub prune_mode: Option<PruneMode>,
    /// Training seeds of every evaluation model; `None` is the profile's
    /// (`train_seeds`). More than 1 adds the seeds stage.
    pub train_seeds: Option<usize>,
    /// Also evaluate along the attack-strength axis (the profile's `strength` budget:
    /// budget readings, multipliers, confidences κ, the paper-matched difficulty and the
    /// controls).
    pub strength: bool,
    /// Also write each evaluation model's per-example results of Tables 1–2 and each
    /// set's per-example distortion and success (`per_example.npz` beside results.json).
    pub per_example: bool,
}

impl ReproduceConfig {
    /// How many training seeds of the evaluation models this run makes.
    pub fn train_seeds(&self) -> usize {
        self.train_seeds.unwrap_or(self.profile.train_seeds).max(1)
    }

    /// The pruning of Table 4 under a protocol whose own mode is `default`.
    pub fn prune_mode_or(&self, default: PruneMode) -> PruneMode {
        self.prune_mode.unwrap_or(default)
    }
}

/// A default folder's name for `profile` on `dataset`: a non-MNIST dataset's carries
/// the dataset's name (`fashion-mnist-short`).
pub fn dataset_folder(dataset: Dataset, profile: &str) -> String {
    match dataset {
        Dataset::Mnist => profile.to_owned(),
        d => format!("{d}-{profile}"),
    }
}

/// The default runs folder and report folder of `profile` on `dataset`, with `suffix`
/// after the profile's name (the code protocol's `-code`, `-code-trained`):
/// `runs/<folder><suffix>` (the seeds profile shares the paper's) and
/// `reports/<folder><suffix>`.
pub fn default_folders(profile: &Profile, dataset: Dataset, suffix: &str) -> [PathBuf; 2] {
    let runs = dataset_folder(dataset, profile.runs_folder());
    let report = dataset_folder(dataset, &profile.name);
    [
        PathBuf::from("runs").join(format!("{runs}{suffix}")),
        PathBuf::from("reports").join(format!("{report}{suffix}")),
    ]
}

impl ReproduceConfig {
    /// The `--runs-dir` and `--out-dir` flags of the recorded command, for whichever
    /// folder is not the default of this run's protocol (`suffix` as in
    /// [`default_folders`]); empty when both are.
    pub fn folder_flags(&self, suffix: &str) -> String {
        let [runs, out] = default_folders(&self.profile, self.dataset, suffix);
        let mut flags = String::new();
        if self.runs_dir != runs {
            flags += &format!(" --runs-dir {}", self.runs_dir.display());
        }
        if self.out_dir != out {
            flags += &format!(" --out-dir {}", self.out_dir.display());
        }
        flags
    }

    /// The text protocol's run flags that are not its defaults, as `run` and `job run`
    /// take them: the recorded command's, and each local worker's (so that a worker's
    /// plan is its parent's: these flags add jobs or change keys).
    pub fn plan_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = [
            (self.whitebox, "--whitebox"),
            (self.strength, "--strength"),
            (self.per_example, "--per-example"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| f.to_owned())
        .collect();
        if self.prune_mode_or(PruneMode::Global) == PruneMode::PerTensor {
            flags.extend(["--pruning".to_owned(), "per-tensor".to_owned()]);
        }
        let k = self.train_seeds();
        if k != self.profile.train_seeds {
            flags.extend(["--train-seeds".to_owned(), k.to_string()]);
        }
        flags
    }
}

pub use crate::results::StageReport;

/// A model of the grid: a stable name (seeds and cache keys derive from it), its
/// table label and its spec.
pub(super) struct GridModel {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) spec: ModelSpec,
}

pub(super) fn bar(len: usize, label: &str, verbose: bool) -> indicatif::ProgressBar {
    crate::progress::bar(len, &format!("{label:>8}"), "", verbose)
}

/// A trained grid model with its cache key.
pub(super) struct Ready {
    pub(super) key: String,
    pub(super) model: TrainedModel,
    pub(super) meta: crate::model::checkpoint::CheckpointMeta,
}

/// A cached evaluation and the wall time it took when it was made.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Timed<T> {
    pub(super) seconds: f64,
    #[serde(flatten)]
    pub(super) value: T,
}

/// The deterministic net of `ready`, or an error naming its key if it is a BNN.
pub(super) fn mlp_of(ready: &Ready) -> Result<&crate::model::mlp::Mlp, ReproduceError> {
    match &ready.model {
        TrainedModel::Mlp { mlp, .. } => Ok(mlp),
        TrainedModel::Bnn { .. } => Err(ReproduceError::WrongModel {
            key: ready.key.clone(),
            expected: "a deterministic net",
        }),
    }
}

/// The BNN of `ready`, or an error naming its key if it is a deterministic net.
pub(super) fn bnn_of(ready: &Ready) -> Result<&BayesMlp, ReproduceError> {
    match &ready.model {
        TrainedModel::Bnn { bnn, .. } => Ok(bnn),
        TrainedModel::Mlp { .. } => Err(ReproduceError::WrongModel {
            key: ready.key.clone(),
            expected: "a BNN",
        }),
    }
}

/// The runs' mean accuracy with its CI, in percent (a table's cell).
pub(super) fn cell(values: &[f64]) -> crate::results::Cell {
    MeanCi::from_values(values).map(|m| m.scaled(100.0))
}

/// Per-run average over the perturbation sets (runs aligned by index), as a percent CI.
pub(super) fn average_cell(sets: &[Vec<f64>]) -> crate::results::Cell {
    cell(&per_run_set_average(sets))
}

/// Each run's average over the perturbation sets (runs aligned by index).
pub(super) fn per_run_set_average(sets: &[Vec<f64>]) -> Vec<f64> {
    let runs = sets.iter().map(Vec::len).min().unwrap_or(0);
    (0..runs)
        .map(|r| sets.iter().map(|s| s[r]).sum::<f64>() / sets.len() as f64)
        .collect()
}

/// Counted FLOPs of training `ready` (the epochs it recorded) with `recipe` on `splits`.
pub(super) fn training_flops(ready: &Ready, recipe: &Recipe, splits: &Splits) -> f64 {
    let draws = match ready.model {
        TrainedModel::Bnn { .. } => recipe.val_draws,
        TrainedModel::Mlp { .. } => 1,
    };
    super::flops::training(
        ready.meta.model.arch(),
        ready.meta.epochs_run,
        splits.train.len(),
        splits.validation.len(),
        draws,
    )
}

/// The evaluation cached under `key` in `dir`, or else computed, timed and cached; and
/// whether it was reused.
pub(super) fn cached_eval<T: serde::Serialize + serde::de::DeserializeOwned>(
    dir: &ArtifactDir,
    key: &str,
    compute: impl FnOnce() -> Result<T, ReproduceError>,
) -> Result<(Timed<T>, bool), ReproduceError> {
    if let Some(e) = dir.read_json(key)? {
        return Ok((e, true));
    }
    let t0 = Instant::now();
    let value = compute()?;
    let e = Timed {
        seconds: t0.elapsed().as_secs_f64(),
        value,
    };
    dir.write_json(key, &e)?;
    Ok((e, false))
}

/// [`cached_eval`] under a planned key, its preimage stored beside it.
pub(super) fn cached_keyed_eval<T: serde::Serialize + serde::de::DeserializeOwned>(
    dir: &ArtifactDir,
    key: &crate::experiment::keys::Key,
    compute: impl FnOnce() -> Result<T, ReproduceError>,
) -> Result<(Timed<T>, bool), ReproduceError> {
    key.write_beside(dir)?;
    cached_eval(dir, &key.id, compute)
}

/// Writes `results` to `<out_dir>/results.json` atomically; returns the path.
pub(super) fn write_results(
    cfg: &ReproduceConfig,
    results: &Value,
) -> Result<PathBuf, ReproduceError> {
    let path = cfg.out_dir.join("results.json");
    let write_err = |reason: String| ReproduceError::Write {
        path: path.clone(),
        reason,
    };
    let bytes = serde_json::to_vec_pretty(results).map_err(|e| write_err(e.to_string()))?;
    write_atomic(&path, &bytes).map_err(|e| write_err(e.to_string()))?;
    Ok(path)
}

/// Computes or loads each item in order with `job(i)`, which says whether it was
/// reused; returns the items and how many were reused.
pub fn each_item<T>(
    n: usize,
    progress: &indicatif::ProgressBar,
    mut job: impl FnMut(usize) -> Result<(T, bool), ReproduceError>,
) -> Result<(Vec<T>, usize), ReproduceError> {
    let mut reused = 0;
    let items = (0..n)
        .map(|i| {
            let (item, was_cached) = job(i)?;
            reused += was_cached as usize;
            progress.inc(1);
            Ok(item)
        })
        .collect::<Result<Vec<T>, ReproduceError>>()?;
    progress.finish_and_clear();
    Ok((items, reused))
}
