//! `bayes-robust reproduce`: trains the paper's model grid, makes the 12 perturbation
//! sets, runs every evaluation of Tables 1–4, and writes `results.json`, reusing every
//! artifact that an earlier run with the same configuration finished.

mod per_example;
mod plan_text;
mod strength_stage;
mod whitebox_stage;

pub use plan_text::{JobRun, run_job, text_plan};

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::cache::{self, ArtifactDir, CacheError};
use super::keys::{self, Key};
use super::{LAMBDAS, Profile, RHO_INITS, SOURCE_ARCHS, TABLE3_RHO, TABLE4_RHO, source_label};
use crate::attack::{BudgetReading, MinNormAttack, clip_to_box};
use crate::data::{self, ChecksumPolicy, Dataset, RawDataset, Split, SplitSpec, Splits};
use crate::eval::{self, EvalChunks};
use crate::model::bayes::{BayesConfig, BayesMlp, PruneMode};
use crate::model::checkpoint::{CheckpointError, CheckpointPaths, ModelSpec, write_atomic};
use crate::model::mlp::{MlpConfig, MlpInit};
use crate::model::{Arch, ModelError, WeightMode};
use crate::seed::SeedTree;
use crate::stats::MeanCi;
use crate::train::{self, Recipe, TrainError, TrainOptions, TrainedModel};

/// The libtorch version tch 0.26 is built against (its build script enforces it).
pub const LIBTORCH_VERSION: &str = "2.13.0";
pub const TCH_VERSION: &str = "0.26";

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
    /// Stop after this stage without writing results (a helper process that shares
    /// the work of another run on the same runs folder); `None` runs everything.
    pub stop_after: Option<Stage>,
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

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Train,
    Whitebox,
    Attack,
}

/// What one stage did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StageReport {
    pub stage: String,
    /// Wall time of this run of the stage (small when artifacts were reused).
    pub seconds: f64,
    /// Wall time recorded by the artifacts when they were made.
    pub artifact_seconds: f64,
    pub computed: usize,
    pub reused: usize,
    /// Counted matrix-product FLOPs of the stage's work (made or reused).
    #[serde(default)]
    pub flops: f64,
}

/// A model of the grid: a stable name (seeds and cache keys derive from it), its
/// table label and its spec.
pub(super) struct GridModel {
    pub(super) name: String,
    pub(super) label: String,
    pub(super) spec: ModelSpec,
}

fn mlp_model(name: String, label: String, arch: Arch, lambda: f64) -> GridModel {
    GridModel {
        name,
        label,
        spec: ModelSpec::Mlp {
            config: MlpConfig {
                arch,
                init: MlpInit::GlorotUniform,
            },
            lambda,
        },
    }
}

fn source_models() -> Vec<GridModel> {
    SOURCE_ARCHS
        .iter()
        .flat_map(|hidden| {
            LAMBDAS.iter().map(move |(lambda, l)| {
                let arch = Arch::new(hidden);
                let label = source_label(&arch, l);
                mlp_model(format!("source/{arch}/lambda={l}"), label, arch, *lambda)
            })
        })
        .collect()
}

fn deterministic_models() -> Vec<GridModel> {
    LAMBDAS
        .iter()
        .map(|(lambda, l)| {
            mlp_model(
                format!("det/lambda={l}"),
                format!("lambda={l}"),
                Arch::new(&[100, 100]),
                *lambda,
            )
        })
        .collect()
}

fn bayesian_models() -> Vec<GridModel> {
    RHO_INITS
        .iter()
        .map(|rho| GridModel {
            name: format!("bnn/rho={rho}"),
            label: format!("rho_init={rho}"),
            spec: ModelSpec::Bnn {
                config: BayesConfig::with_rho_init(*rho),
            },
        })
        .collect()
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

/// A perturbation set: the perturbed test images, their labels, and how the attack did
/// against its source.
struct PerturbationSet {
    label: String,
    key: String,
    images: Tensor,
    labels: Tensor,
    mean_distortion: f64,
    success_rate: f64,
    seconds: f64,
    /// The attack's own figures, before the distortion budget.
    uncapped_distortion: f64,
    uncapped_success_rate: f64,
    /// Fraction of examples scaled back to the budget.
    capped_fraction: f64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AttackRecord {
    source: String,
    source_key: String,
    n: usize,
    mean_distortion: f64,
    success_rate: f64,
    seconds: f64,
    attack: crate::attack::MinNormAttack,
}

/// A min-norm attack's perturbations of the test images before any budget.
struct RawAttack {
    key: String,
    delta: Tensor,
    record: AttackRecord,
    reused: bool,
}

/// Accuracies (fractions) of one model: per run for BNNs, one value for deterministic
/// nets. `sets[i]` are the runs on perturbation set i.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct ModelEval {
    validation: Vec<f64>,
    test: Vec<f64>,
    sets: Vec<Vec<f64>>,
}

/// A cached evaluation and the wall time it took when it was made.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Timed<T> {
    pub(super) seconds: f64,
    #[serde(flatten)]
    pub(super) value: T,
}

/// Table 3's runs: `rows[set][n_index]` are the run accuracies of an N-draw ensemble.
#[derive(serde::Serialize, serde::Deserialize)]
struct EnsembleEval {
    n_samples: Vec<usize>,
    rows: Vec<Vec<Vec<f64>>>,
}

/// Table 4's runs: per rate, the run accuracies on validation, test and every set.
#[derive(serde::Serialize, serde::Deserialize)]
struct PruneEval {
    rates: Vec<f64>,
    pruned_weights: Vec<usize>,
    per_rate: Vec<ModelEval>,
}

/// One white-box target's cached curves.
#[derive(serde::Serialize, serde::Deserialize)]
struct WhiteboxCurve {
    curve: Value,
}

struct Pipeline<'a> {
    cfg: &'a ReproduceConfig,
    seeds: SeedTree,
    recipe: Recipe,
    splits: Splits,
    validation: Split,
    test: Split,
    models_dir: ArtifactDir,
    attacks_dir: ArtifactDir,
    evals_dir: ArtifactDir,
    chunks: EvalChunks,
}

impl Pipeline<'_> {
    fn model_seeds(&self, gm: &GridModel) -> SeedTree {
        self.seeds.child(&format!("train/{}", gm.name))
    }

    fn model_key_of(&self, gm: &GridModel) -> Key {
        keys::model(
            &gm.name,
            &gm.spec,
            &self.recipe,
            self.seeds.master(),
            self.model_seeds(gm).prefix(),
            self.cfg.dataset,
        )
    }

    fn model_key(&self, gm: &GridModel) -> String {
        self.model_key_of(gm).id
    }

    fn ensure_model(&self, gm: &GridModel) -> Result<(Ready, bool), ReproduceError> {
        let seeds = self.model_seeds(gm);
        let full_key = self.model_key_of(gm);
        full_key.write_beside(&self.models_dir)?;
        let key = full_key.id;
        let stem = self.models_dir.stem(&key);
        if CheckpointPaths::new(&stem).exists() {
            let (model, meta) = TrainedModel::load(&gm.spec, self.cfg.device, &stem)?;
            return Ok((Ready { key, model, meta }, true));
        }
        let options = TrainOptions {
            verbose: self.cfg.verbose,
            label: gm.name.clone(),
        };
        let (model, meta) = train::train_and_save(
            &gm.spec,
            &self.splits,
            &self.recipe,
            &seeds,
            self.cfg.device,
            &stem,
            &options,
        )?;
        Ok((Ready { key, model, meta }, false))
    }

    fn attack_key(&self, label: &str, source_key: &str) -> String {
        self.attack_key_with(label, source_key, &self.cfg.profile.attack)
    }

    /// The key of `attack` on the source `source_key` (the profile's attack: the 12 sets'
    /// keys since the first report).
    fn attack_key_with(&self, label: &str, source_key: &str, attack: &MinNormAttack) -> String {
        self.attack_key_of(label, source_key, attack).id
    }

    fn attack_key_of(&self, label: &str, source_key: &str, attack: &MinNormAttack) -> Key {
        let p = &self.cfg.profile;
        keys::min_norm_attack(label, source_key, attack, self.test.len(), p.attack_chunk)
    }

    /// The perturbation set of an attack's `delta` under the profile's distortion
    /// budget: each r with √(‖r‖²/784) above the budget is scaled back onto it (x + s·r
    /// stays in the box for s ≤ 1), so the set's mean distortion stays below it as the
    /// paper reports (§4.2). Distortion and success are measured on the capped set.
    fn capped_set(
        &self,
        label: &str,
        key: String,
        delta: &Tensor,
        record: &AttackRecord,
        source: &crate::model::mlp::Mlp,
    ) -> PerturbationSet {
        let delta = delta.to_device(self.cfg.device);
        let x = &self.test.images;
        let (delta, capped_fraction) = match self.cfg.profile.max_rms_distortion {
            Some(budget) => BudgetReading::PerExampleCap.apply(&delta, budget),
            None => (delta, 0.0),
        };
        let outcome = crate::attack::AttackOutcome::evaluate(
            source,
            x,
            &self.test.labels,
            clip_to_box(&(x + &delta)),
        );
        PerturbationSet {
            label: label.to_owned(),
            key: cache::key(
                label,
                &json!({"attack": key, "max_rms_distortion": self.cfg.profile.max_rms_distortion}),
            ),
            mean_distortion: outcome.mean_distortion(),
            success_rate: outcome.success_rate(),
            images: outcome.perturbed,
            labels: self.test.labels.shallow_clone(),
            seconds: record.seconds,
            uncapped_distortion: record.mean_distortion,
            uncapped_success_rate: record.success_rate,
            capped_fraction,
        }
    }

    fn ensure_attack(
        &self,
        label: &str,
        source: &Ready,
    ) -> Result<(PerturbationSet, bool), ReproduceError> {
        let raw = self.ensure_raw_attack(label, source, &self.cfg.profile.attack)?;
        let set = self.capped_set(
            label,
            raw.key,
            &raw.delta,
            &raw.record,
            mlp_of(&source.model),
        );
        Ok((set, raw.reused))
    }

    /// `attack`'s perturbations r = x' − x of the test images against `source`, cached
    /// (tensor `delta`, before any distortion budget).
    fn ensure_raw_attack(
        &self,
        label: &str,
        source: &Ready,
        attack: &MinNormAttack,
    ) -> Result<RawAttack, ReproduceError> {
        let mlp = mlp_of(&source.model);
        let n = self.test.len();
        let full_key = self.attack_key_of(label, &source.key, attack);
        full_key.write_beside(&self.attacks_dir)?;
        let key = full_key.id;
        if let Some(record) = self.attacks_dir.read_json::<AttackRecord>(&key)? {
            let tensors = self.attacks_dir.read_tensors(&key)?;
            let delta = tensors
                .into_iter()
                .find(|(name, _)| name == "delta")
                .map(|(_, t)| t.to_device(self.cfg.device))
                .ok_or(ReproduceError::MissingTensor {
                    key: key.clone(),
                    name: "delta",
                })?;
            return Ok(RawAttack {
                key,
                delta,
                record,
                reused: true,
            });
        }
        let t0 = Instant::now();
        let mut deltas = Vec::new();
        let (mut successes, mut norms) = (Vec::new(), Vec::new());
        for batch in self.test.batches(self.cfg.profile.attack_chunk) {
            let out = attack.run(mlp, &batch.images, &batch.labels);
            deltas.push(&out.perturbed - &batch.images);
            successes.push(out.success);
            norms.push(out.norms);
        }
        let delta = Tensor::cat(&deltas, 0);
        let success = Tensor::cat(&successes, 0);
        let norms = Tensor::cat(&norms, 0);
        let outcome = crate::attack::AttackOutcome {
            perturbed: clip_to_box(&(&self.test.images + &delta)),
            success,
            norms,
        };
        let record = AttackRecord {
            source: label.to_owned(),
            source_key: source.key.clone(),
            n,
            mean_distortion: outcome.mean_distortion(),
            success_rate: outcome.success_rate(),
            seconds: t0.elapsed().as_secs_f64(),
            attack: attack.clone(),
        };
        self.attacks_dir.write_tensors(
            &key,
            &[
                ("delta", &delta.to_device(Device::Cpu)),
                ("norms", &outcome.norms.to_device(Device::Cpu)),
            ],
        )?;
        self.attacks_dir.write_json(&key, &record)?;
        Ok(RawAttack {
            key,
            delta,
            record,
            reused: false,
        })
    }

    fn eval_key(&self, what: &str, model_key: &str, sets: &[PerturbationSet]) -> String {
        let p = &self.cfg.profile;
        cache::key(
            what,
            &json!({
                "model": model_key, "sets": sets.iter().map(|s| &s.key).collect::<Vec<_>>(),
                "n_eval": self.test.len(), "runs": p.single_draw_runs, "ensemble_ns": p.ensemble_ns,
                "ensemble_runs": p.ensemble_runs, "prune_rates": p.prune_rates,
                "prune_ensemble": p.prune_ensemble, "prune_runs": p.prune_runs, "master_seed": self.seeds.master(),
            }),
        )
    }

    fn splits_of<'s>(&'s self, sets: &'s [PerturbationSet]) -> Vec<(String, Split)> {
        let mut out = vec![
            (
                "validation".to_owned(),
                Split {
                    images: self.validation.images.shallow_clone(),
                    labels: self.validation.labels.shallow_clone(),
                },
            ),
            (
                "test".to_owned(),
                Split {
                    images: self.test.images.shallow_clone(),
                    labels: self.test.labels.shallow_clone(),
                },
            ),
        ];
        out.extend(sets.iter().map(|s| {
            (
                s.label.clone(),
                Split {
                    images: s.images.shallow_clone(),
                    labels: s.labels.shallow_clone(),
                },
            )
        }));
        out
    }

    /// Evaluates `f` on validation, test and every set, in that order.
    fn eval_all(
        &self,
        sets: &[PerturbationSet],
        mut f: impl FnMut(&str, &Split) -> Vec<f64>,
    ) -> ModelEval {
        let mut results: Vec<Vec<f64>> = self
            .splits_of(sets)
            .iter()
            .map(|(name, split)| f(name, split))
            .collect();
        let sets_results = results.split_off(2);
        let test = results.pop().unwrap_or_default();
        let validation = results.pop().unwrap_or_default();
        ModelEval {
            validation,
            test,
            sets: sets_results,
        }
    }

    /// The evaluation cached under `key`, or else computed, timed and cached; and
    /// whether it was reused.
    fn cached<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        key: &str,
        compute: impl FnOnce() -> Result<T, ReproduceError>,
    ) -> Result<(Timed<T>, bool), ReproduceError> {
        cached_eval(&self.evals_dir, key, compute)
    }

    fn eval_deterministic(
        &self,
        name: &str,
        ready: &Ready,
        sets: &[PerturbationSet],
    ) -> Result<(Timed<ModelEval>, bool), ReproduceError> {
        let TrainedModel::Mlp { mlp, .. } = &ready.model else {
            unreachable!("a deterministic model")
        };
        self.cached(&self.eval_key(name, &ready.key, sets), || {
            Ok(self.eval_all(sets, |_, split| {
                vec![eval::accuracy(mlp, split, self.chunks)]
            }))
        })
    }

    fn eval_single_draws(
        &self,
        name: &str,
        ready: &Ready,
        sets: &[PerturbationSet],
    ) -> Result<(Timed<ModelEval>, bool), ReproduceError> {
        let bnn = bnn_of(&ready.model);
        let runs = self.cfg.profile.single_draw_runs;
        self.cached(&self.eval_key(name, &ready.key, sets), || {
            Ok(self.eval_all(sets, |split_name, split| {
                self.seeds.seed_torch(&format!("eval/{name}/{split_name}"));
                eval::single_draw_accuracies(bnn, split, runs, self.chunks)
            }))
        })
    }

    /// Runs of Table 3 for N draws: the paper's 100/N, or `ensemble_runs` if more.
    fn ensemble_runs_for(&self, n: usize) -> usize {
        (100 / n.max(1)).max(self.cfg.profile.ensemble_runs).max(1)
    }

    fn eval_ensembles(
        &self,
        ready: &Ready,
        sets: &[PerturbationSet],
    ) -> Result<(Timed<EnsembleEval>, bool), ReproduceError> {
        let bnn = bnn_of(&ready.model);
        let ns = self.cfg.profile.ensemble_ns.clone();
        self.cached(&self.eval_key("table3", &ready.key, sets), || {
            let rows = sets
                .iter()
                .map(|set| {
                    let split = Split {
                        images: set.images.shallow_clone(),
                        labels: set.labels.shallow_clone(),
                    };
                    ns.iter()
                        .map(|&n| {
                            self.seeds
                                .seed_torch(&format!("table3/N={n}/{}", set.label));
                            eval::ensemble_accuracies(
                                bnn,
                                &split,
                                n,
                                self.ensemble_runs_for(n),
                                self.chunks,
                            )
                        })
                        .collect()
                })
                .collect();
            Ok(EnsembleEval {
                n_samples: ns.clone(),
                rows,
            })
        })
    }

    fn eval_pruning(
        &self,
        ready: &mut Ready,
        sets: &[PerturbationSet],
    ) -> Result<(Timed<PruneEval>, bool), ReproduceError> {
        let mode = self.cfg.prune_mode_or(PruneMode::Global);
        let key = match mode {
            PruneMode::Global => self.eval_key("table4", &ready.key, sets),
            PruneMode::PerTensor => self.eval_key("table4-per-tensor", &ready.key, sets),
        };
        let p = self.cfg.profile.clone();
        self.cached(&key, || {
            let (mut per_rate, mut pruned_weights) = (Vec::new(), Vec::new());
            for &rate in &p.prune_rates {
                let TrainedModel::Bnn { bnn, .. } = &mut ready.model else {
                    unreachable!("a BNN")
                };
                pruned_weights.push(bnn.prune_with(mode, rate)?);
                let bnn = bnn_of(&ready.model);
                per_rate.push(self.eval_all(sets, |split_name, split| {
                    self.seeds
                        .seed_torch(&format!("table4/rate={rate}/{split_name}"));
                    eval::ensemble_accuracies(
                        bnn,
                        split,
                        p.prune_ensemble,
                        p.prune_runs,
                        self.chunks,
                    )
                }));
            }
            if let TrainedModel::Bnn { bnn, .. } = &mut ready.model {
                bnn.unprune();
            }
            Ok(PruneEval {
                rates: p.prune_rates.clone(),
                pruned_weights,
                per_rate,
            })
        })
    }
}

/// Calibration and detection of one model: ECE (15 bins) and NLL on the clean test set
/// and on every perturbation set, and the AUROC of uncertainty scores separating each
/// set's perturbed images (positives) from the clean test images (negatives). Each
/// `*_ci` is a 95% percentile bootstrap interval over the test images
/// ([`CALIBRATION_RESAMPLES`] resamples; a perturbed image is resampled with its clean
/// original, so the set averages are paired); `None` in artifacts made before them.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct CalibrationRow {
    model: String,
    clean_ece: f64,
    clean_nll: f64,
    sets_ece: Vec<f64>,
    sets_nll: Vec<f64>,
    /// Predictive entropy as the score.
    sets_auroc_entropy: Vec<f64>,
    /// Mutual information as the score (sampled models only).
    sets_auroc_mi: Option<Vec<f64>>,
    #[serde(default)]
    clean_ece_ci: Option<[f64; 2]>,
    #[serde(default)]
    clean_nll_ci: Option<[f64; 2]>,
    /// Intervals of the averages over the sets.
    #[serde(default)]
    sets_ece_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    sets_nll_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    sets_auroc_entropy_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    sets_auroc_mi_mean_ci: Option<[f64; 2]>,
}

/// Bootstrap resamples of the test images behind every calibration interval.
pub const CALIBRATION_RESAMPLES: usize = 300;

#[derive(serde::Serialize, serde::Deserialize)]
struct CalibrationEval {
    rows: Vec<CalibrationRow>,
}

/// Probabilities of a model on `x`: `[n, B, 10]` per draw (n = 1 for a deterministic net).
fn draw_probs(model: &TrainedModel, x: &Tensor, draws: usize, chunk: usize) -> Tensor {
    tch::no_grad(|| match model {
        TrainedModel::Mlp { mlp, .. } => mlp.forward(x).softmax(-1, None::<Kind>).unsqueeze(0),
        TrainedModel::Bnn { bnn, .. } => {
            let parts: Vec<Tensor> = (0..draws.div_ceil(chunk.max(1)))
                .map(|i| {
                    let k = chunk.min(draws - i * chunk);
                    bnn.forward(x, k, WeightMode::Sample, false)
                        .logits
                        .softmax(-1, None::<Kind>)
                })
                .collect();
            Tensor::cat(&parts, 0)
        }
    })
}

/// What calibration needs of one model on one image set: the predictive
/// probabilities `[B, 10]` (the ensemble's mean for a BNN), the labels, and the
/// detection scores per image.
struct Predictive {
    probs: Tensor,
    labels: Tensor,
    entropy: Vec<f64>,
    /// Mutual information (sampled models only).
    mi: Option<Vec<f64>>,
}

impl Predictive {
    fn of(draws: &Tensor, labels: &Tensor, sampled: bool) -> Predictive {
        use crate::calibration::{mutual_information, predictive_entropy};
        let probs = draws.mean_dim([0].as_slice(), false, None::<Kind>);
        let entropy = Vec::<f64>::try_from(predictive_entropy(&probs)).unwrap_or_default();
        let mi = sampled.then(|| {
            Vec::<f64>::try_from(mutual_information(draws).to_kind(Kind::Double))
                .unwrap_or_default()
        });
        Predictive {
            probs,
            labels: labels.shallow_clone(),
            entropy,
            mi,
        }
    }

    /// Probabilities and labels of the images at `index` (`None`: all of them).
    fn rows(&self, index: Option<&Tensor>) -> (Tensor, Tensor) {
        match index {
            None => (self.probs.shallow_clone(), self.labels.shallow_clone()),
            Some(i) => (
                self.probs.index_select(0, i),
                self.labels.index_select(0, i),
            ),
        }
    }

    fn ece(&self, index: Option<&Tensor>) -> f64 {
        let (p, y) = self.rows(index);
        crate::calibration::expected_calibration_error(&p, &y, ECE_BINS)
    }

    fn nll(&self, index: Option<&Tensor>) -> f64 {
        let (p, y) = self.rows(index);
        crate::calibration::negative_log_likelihood(&p, &y)
    }

    /// AUROC of this perturbed set's score against the `clean` images' on the images
    /// at `index` (`None`: all): the predictive entropy, or (`mi`) the mutual
    /// information, NaN for a model without it.
    fn detection_auroc(&self, clean: &Predictive, mi: bool, index: Option<&[usize]>) -> f64 {
        let score = |p: &Predictive| -> Option<Vec<f64>> {
            let all = if mi { p.mi.as_deref()? } else { &p.entropy[..] };
            Some(match index {
                None => all.to_vec(),
                Some(i) => i.iter().map(|&k| all[k]).collect(),
            })
        };
        match (score(clean), score(self)) {
            (Some(c), Some(s)) => crate::calibration::auroc(&c, &s).unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }
}

/// Bins of the expected calibration error.
const ECE_BINS: usize = 15;

/// One model's calibration row; a BNN is judged as its `draws`-draw ensemble.
fn calibration_row(
    name: &str,
    model: &TrainedModel,
    test: &Split,
    sets: &[PerturbationSet],
    draws: usize,
    chunk: usize,
    seeds: &SeedTree,
) -> CalibrationRow {
    use crate::stats::bootstrap_ci;
    let sampled = matches!(model, TrainedModel::Bnn { .. });
    seeds.seed_torch(&format!("calibration/{name}/test"));
    let clean = Predictive::of(
        &draw_probs(model, &test.images, draws, chunk),
        &test.labels,
        sampled,
    );
    let perturbed: Vec<Predictive> = sets
        .iter()
        .map(|set| {
            seeds.seed_torch(&format!("calibration/{name}/{}", set.label));
            Predictive::of(
                &draw_probs(model, &set.images, draws, chunk),
                &set.labels,
                sampled,
            )
        })
        .collect();
    let mean = |f: &dyn Fn(&Predictive) -> f64| {
        perturbed.iter().map(f).sum::<f64>() / perturbed.len().max(1) as f64
    };
    let tensor_index = |index: &[usize]| {
        let i: Vec<i64> = index.iter().map(|&i| i as i64).collect();
        Tensor::from_slice(&i).to_device(clean.probs.device())
    };
    let ci = |what: &str, stat: &mut dyn FnMut(&[usize]) -> f64| {
        let mut rng = seeds.rng(&format!("calibration/{name}/bootstrap/{what}"));
        bootstrap_ci(test.len(), CALIBRATION_RESAMPLES, &mut rng, stat)
    };
    // Intervals of averages over the sets: none without sets.
    let sets_ci = |what: &str, stat: &mut dyn FnMut(&[usize]) -> f64| {
        (!perturbed.is_empty()).then(|| ci(what, stat)).flatten()
    };
    let aurocs = |mi: bool| -> Vec<f64> {
        perturbed
            .iter()
            .map(|p| p.detection_auroc(&clean, mi, None))
            .collect()
    };
    CalibrationRow {
        model: name.to_owned(),
        clean_ece: clean.ece(None),
        clean_nll: clean.nll(None),
        sets_ece: perturbed.iter().map(|p| p.ece(None)).collect(),
        sets_nll: perturbed.iter().map(|p| p.nll(None)).collect(),
        sets_auroc_entropy: aurocs(false),
        sets_auroc_mi: sampled.then(|| aurocs(true)),
        clean_ece_ci: ci("clean_ece", &mut |i| clean.ece(Some(&tensor_index(i)))),
        clean_nll_ci: ci("clean_nll", &mut |i| clean.nll(Some(&tensor_index(i)))),
        sets_ece_mean_ci: sets_ci("sets_ece", &mut |i| {
            let t = tensor_index(i);
            mean(&|p| p.ece(Some(&t)))
        }),
        sets_nll_mean_ci: sets_ci("sets_nll", &mut |i| {
            let t = tensor_index(i);
            mean(&|p| p.nll(Some(&t)))
        }),
        sets_auroc_entropy_mean_ci: sets_ci("auroc_entropy", &mut |i| {
            mean(&|p| p.detection_auroc(&clean, false, Some(i)))
        }),
        sets_auroc_mi_mean_ci: sampled
            .then(|| {
                sets_ci("auroc_mi", &mut |i| {
                    mean(&|p| p.detection_auroc(&clean, true, Some(i)))
                })
            })
            .flatten(),
    }
}

/// The result of a run told to stop after `stage`: what it did, no tables.
fn stopped(stage: Stage, stages: &[StageReport], cfg: &ReproduceConfig) -> Value {
    if cfg.verbose {
        for s in stages {
            eprintln!(
                "{:>8}: {:>8.1}s now; {} computed here, {} reused",
                s.stage, s.seconds, s.computed, s.reused
            );
        }
        eprintln!("stopped after {stage:?} as asked; no results.json written");
    }
    json!({ "stopped_after": format!("{stage:?}"), "stages": stages })
}

pub(super) fn mlp_of(model: &TrainedModel) -> &crate::model::mlp::Mlp {
    match model {
        TrainedModel::Mlp { mlp, .. } => mlp,
        TrainedModel::Bnn { .. } => unreachable!("a deterministic net"),
    }
}

pub(super) fn bnn_of(model: &TrainedModel) -> &BayesMlp {
    match model {
        TrainedModel::Bnn { bnn, .. } => bnn,
        TrainedModel::Mlp { .. } => unreachable!("a BNN"),
    }
}

/// A 40-bin histogram of log10 SNR of every weight of `bnn`, and the log10 SNR below
/// which each pruning rate prunes.
fn snr_histogram(bnn: &BayesMlp, rates: &[f64]) -> Value {
    let snr = tch::no_grad(|| {
        bnn.snr_flat()
            .clamp_min(1e-30)
            .log10()
            .to_kind(tch::Kind::Double)
    });
    let (sorted, _) = snr.sort(0, false);
    let values: Vec<f64> = Vec::try_from(&sorted).unwrap_or_default();
    let (Some(&lo), Some(&hi)) = (values.first(), values.last()) else {
        return Value::Null;
    };
    let bins = 40;
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0u64; bins];
    for v in &values {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
    let thresholds: Vec<f64> = rates
        .iter()
        .map(|r| values[((r * values.len() as f64).floor() as usize).min(values.len() - 1)])
        .collect();
    json!({ "log10_edges": edges, "counts": counts, "log10_thresholds": thresholds })
}

pub(super) fn pct(values: &[f64]) -> Value {
    json!(MeanCi::from_values(values).map(|m| m.scaled(100.0)))
}

/// Per-run average over the perturbation sets (runs aligned by index), as a percent CI.
pub(super) fn average_over_sets(sets: &[Vec<f64>]) -> Value {
    pct(&per_run_set_average(sets))
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

/// Rows (one per set) of columns (one per model) of percent CIs, and the average row.
fn table_rows(columns: &[ModelEval]) -> (Value, Value) {
    let n_sets = columns.first().map_or(0, |c| c.sets.len());
    let rows: Vec<Value> = (0..n_sets)
        .map(|i| Value::Array(columns.iter().map(|c| pct(&c.sets[i])).collect()))
        .collect();
    let average: Vec<Value> = columns.iter().map(|c| average_over_sets(&c.sets)).collect();
    (Value::Array(rows), Value::Array(average))
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

/// results.json's `models`: each trained model of every group, with its validation
/// accuracy after every epoch (the training-curve figure's data).
fn model_rows(groups: &[(super::ModelGroup, &[Ready])]) -> Value {
    let rows: Vec<Value> = groups
        .iter()
        .flat_map(|&(group, rs)| {
            rs.iter().map(move |r| {
                json!({
                    "model": r.meta.model.describe(), "key": r.key, "epochs_run": r.meta.epochs_run,
                    "best_epoch": r.meta.best_epoch, "best_validation_accuracy": r.meta.best_validation_accuracy,
                    "train_seconds": r.meta.wall_seconds, "group": group, "spec": r.meta.model,
                    "validation_curve": train::validation_curve(&r.meta),
                })
            })
        })
        .collect();
    Value::Array(rows)
}

/// The perturbation grid's examples: the first test images of each source family's
/// λ = 0 set.
fn text_examples(
    pipeline: &Pipeline,
    sources: &[GridModel],
    source_ready: &[Ready],
    sets: &[PerturbationSet],
) -> super::examples::PerturbationExamples {
    use super::examples::{PerturbationExamples, SourceSet};
    PerturbationExamples::of_lambda_zero_sets(
        "text",
        "x' is the set as evaluated: the min-norm perturbation under the profile's distortion budget, clipped to [0, 1]",
        sources
            .iter()
            .zip(source_ready)
            .zip(sets)
            .map(|((gm, ready), set)| SourceSet {
                spec: &gm.spec,
                label: &set.label,
                source: mlp_of(&ready.model),
                clean: pipeline.test.images.shallow_clone(),
                perturbed: set.images.shallow_clone(),
                labels: &set.labels,
            }),
    )
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

impl<'a> Pipeline<'a> {
    /// The pipeline of `cfg` on the dataset `raw`.
    fn new(cfg: &'a ReproduceConfig, raw: &RawDataset) -> Result<Self, ReproduceError> {
        let p = &cfg.profile;
        let splits = Splits::from_raw(raw, SplitSpec::PAPER)?.to_device(cfg.device);
        let n_eval = p.eval_examples.unwrap_or(usize::MAX);
        let [models_dir, attacks_dir, evals_dir] = cache::run_folders(&cfg.runs_dir);
        Ok(Pipeline {
            cfg,
            seeds: SeedTree::new(cfg.master_seed),
            recipe: Recipe::paper(p.max_epochs),
            validation: splits.validation.head(n_eval),
            test: splits.test.head(n_eval),
            splits,
            models_dir,
            attacks_dir,
            evals_dir,
            chunks: EvalChunks {
                examples: 10_000,
                draws: p.draw_chunk,
            },
        })
    }
}

fn load_raw(cfg: &ReproduceConfig) -> Result<RawDataset, ReproduceError> {
    Ok(RawDataset::load(
        &cfg.data_dir,
        ChecksumPolicy::Require(cfg.dataset),
    )?)
}

/// Runs the whole reproduction and writes `<out_dir>/results.json`; returns its value.
pub fn reproduce(cfg: &ReproduceConfig) -> Result<Value, ReproduceError> {
    let started = Instant::now();
    let p = &cfg.profile;
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let mut stages = Vec::new();
    // The machine's matrix-product rate now, against which each stage's counted FLOPs
    // are set (CPU runs only).
    let sgemm = (cfg.device == Device::Cpu).then(super::flops::sgemm_gflops);

    // Stage 1: train (or load) every model.
    let t0 = Instant::now();
    let (sources, dets, bnns) = (source_models(), deterministic_models(), bayesian_models());
    let all: Vec<&GridModel> = sources.iter().chain(&dets).chain(&bnns).collect();
    let progress = bar(all.len(), "train", cfg.verbose);
    let keys: Vec<String> = all.iter().map(|gm| pipeline.model_key(gm)).collect();
    let (ready, reused) = cache::share_work(
        &pipeline.models_dir,
        &keys,
        cfg.stop_after != Some(Stage::Train),
        &progress,
        |i| {
            progress.set_message(all[i].name.clone());
            pipeline.ensure_model(all[i])
        },
    )?;
    progress.finish_and_clear();
    let computed_here = ready.iter().flatten().count() - reused;
    stages.push(StageReport {
        stage: "train".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: ready.iter().flatten().map(|r| r.meta.wall_seconds).sum(),
        computed: computed_here,
        reused,
        flops: ready
            .iter()
            .flatten()
            .map(|r| training_flops(r, &pipeline.recipe, &pipeline.splits))
            .sum(),
    });
    if cfg.stop_after == Some(Stage::Train) {
        return Ok(stopped(Stage::Train, &stages, cfg));
    }
    let mut ready: Vec<Ready> = ready.into_iter().flatten().collect();
    let mut bnn_ready = ready.split_off(sources.len() + dets.len());
    let det_ready = ready.split_off(sources.len());
    let source_ready = ready;

    let index_of = |rho: f64| RHO_INITS.iter().position(|r| *r == rho).unwrap_or(0);

    // Stage 2 (optional): white-box attacks on the evaluation models themselves. It
    // needs only the trained models, so it runs before the transfer attacks.
    let whitebox = if cfg.whitebox {
        let models = whitebox_stage::Models {
            dets: &dets,
            det_ready: &det_ready,
            bnn_ready: &bnn_ready,
        };
        let (section, report) = whitebox_stage::run(&pipeline, &models)?;
        stages.push(report);
        if cfg.stop_after == Some(Stage::Whitebox) {
            return Ok(stopped(Stage::Whitebox, &stages, cfg));
        }
        section
    } else {
        Value::Null
    };

    // Stage 3: the 12 perturbation sets.
    let t0 = Instant::now();
    let progress = bar(sources.len(), "attack", cfg.verbose);
    let keys: Vec<String> = sources
        .iter()
        .zip(&source_ready)
        .map(|(gm, r)| pipeline.attack_key(&gm.label, &r.key))
        .collect();
    let (sets, reused) = cache::share_work(
        &pipeline.attacks_dir,
        &keys,
        cfg.stop_after != Some(Stage::Attack),
        &progress,
        |i| {
            progress.set_message(sources[i].label.clone());
            pipeline.ensure_attack(&sources[i].label, &source_ready[i])
        },
    )?;
    progress.finish_and_clear();
    stages.push(StageReport {
        stage: "attack".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: sets.iter().flatten().map(|s| s.seconds).sum(),
        computed: sets.iter().flatten().count() - reused,
        reused,
        // Every step of every source's attack, and the passes that judge the set.
        flops: sources
            .iter()
            .map(|gm| {
                let arch = gm.spec.arch();
                let n = pipeline.test.len() as f64;
                super::flops::input_gradient_steps(arch, p.attack.steps as f64, n)
                    + super::flops::forward(arch, 3.0 * n)
            })
            .sum(),
    });
    if cfg.stop_after == Some(Stage::Attack) {
        return Ok(stopped(Stage::Attack, &stages, cfg));
    }
    let sets: Vec<PerturbationSet> = sets.into_iter().flatten().collect();
    text_examples(&pipeline, &sources, &source_ready, &sets).write(&cfg.out_dir)?;

    // Stage 4: evaluations.
    let t0 = Instant::now();
    let progress = bar(dets.len() + bnns.len() + 3, "eval", cfg.verbose);
    let (mut reused, mut eval_seconds) = (0, 0.0);
    let mut det_evals = Vec::new();
    for (gm, r) in dets.iter().zip(&det_ready) {
        progress.set_message(gm.name.clone());
        let (e, c) = pipeline.eval_deterministic(&gm.name, r, &sets)?;
        reused += c as usize;
        eval_seconds += e.seconds;
        det_evals.push(e.value);
        progress.inc(1);
    }
    let mut bnn_evals = Vec::new();
    for (gm, r) in bnns.iter().zip(&bnn_ready) {
        progress.set_message(gm.name.clone());
        let (e, c) = pipeline.eval_single_draws(&gm.name, r, &sets)?;
        reused += c as usize;
        eval_seconds += e.seconds;
        bnn_evals.push(e.value);
        progress.inc(1);
    }
    progress.set_message("table 3");
    let (ens, c) = pipeline.eval_ensembles(&bnn_ready[index_of(TABLE3_RHO)], &sets)?;
    reused += c as usize;
    eval_seconds += ens.seconds;
    let ens = ens.value;
    progress.inc(1);
    progress.set_message("table 4");
    let (prune, c) = pipeline.eval_pruning(&mut bnn_ready[index_of(TABLE4_RHO)], &sets)?;
    reused += c as usize;
    eval_seconds += prune.seconds;
    let prune = prune.value;
    progress.inc(1);
    progress.set_message("calibration");
    let calibration_key = pipeline.eval_key(
        &format!("calibration+bootstrap{CALIBRATION_RESAMPLES}"),
        &format!(
            "{}+{}",
            bnn_ready[index_of(TABLE3_RHO)].key,
            det_ready
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>()
                .join("+")
        ),
        &sets,
    );
    let (calibration, c) = pipeline.cached(&calibration_key, || {
        let mut rows: Vec<CalibrationRow> = dets
            .iter()
            .zip(&det_ready)
            .map(|(gm, r)| {
                calibration_row(
                    &format!("deterministic {}", gm.label),
                    &r.model,
                    &pipeline.test,
                    &sets,
                    1,
                    1,
                    &pipeline.seeds,
                )
            })
            .collect();
        let r = &bnn_ready[index_of(TABLE3_RHO)];
        rows.push(calibration_row(
            &format!(
                "BNN rho_init={TABLE3_RHO}, ensemble of {}",
                p.prune_ensemble
            ),
            &r.model,
            &pipeline.test,
            &sets,
            p.prune_ensemble,
            p.draw_chunk,
            &pipeline.seeds,
        ));
        Ok(CalibrationEval { rows })
    })?;
    reused += c as usize;
    eval_seconds += calibration.seconds;
    let calibration = calibration.value;
    progress.inc(1);
    progress.finish_and_clear();
    let n_evals = dets.len() + bnns.len() + 3;
    let eval_flops = {
        // Passes over validation, test and the sets (calibration: test and the sets).
        let arch = Arch::new(&[100, 100]);
        let n = pipeline.test.len() as f64;
        let splits = (2 + sets.len()) as f64;
        let table3: usize = p
            .ensemble_ns
            .iter()
            .map(|&k| k * pipeline.ensemble_runs_for(k))
            .sum();
        let passes = splits * (dets.len() + bnns.len() * p.single_draw_runs) as f64
            + (sets.len() * table3) as f64
            + splits * (p.prune_rates.len() * p.prune_runs * p.prune_ensemble) as f64
            + (1 + sets.len()) as f64 * (dets.len() + p.prune_ensemble) as f64;
        super::flops::forward(&arch, passes * n)
    };
    stages.push(StageReport {
        stage: "eval".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: eval_seconds,
        computed: n_evals - reused,
        reused,
        flops: eval_flops,
    });

    // Stage 4a (optional): the per-example results of Tables 1–2.
    let per_example_files = if cfg.per_example {
        let models: Vec<per_example::Evaluated> = dets
            .iter()
            .zip(&det_ready)
            .enumerate()
            .map(|(index, (gm, ready))| per_example::Evaluated {
                name: &gm.name,
                group: "deterministic",
                index,
                ready,
            })
            .chain(
                bnns.iter()
                    .zip(&bnn_ready)
                    .enumerate()
                    .map(|(index, (gm, ready))| per_example::Evaluated {
                        name: &gm.name,
                        group: "bnn",
                        index,
                        ready,
                    }),
            )
            .collect();
        std::fs::create_dir_all(&cfg.out_dir).map_err(|e| ReproduceError::Write {
            path: cfg.out_dir.clone(),
            reason: e.to_string(),
        })?;
        per_example::export(&pipeline, &models, &source_ready, &sets, &cfg.out_dir)?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
    } else {
        Vec::new()
    };

    // Stage 4b (optional): the strength axis.
    let strength = if cfg.strength {
        let inputs = strength_stage::StrengthInputs {
            sources: &sources,
            source_ready: &source_ready,
            dets: &dets,
            det_ready: &det_ready,
            bnns: &bnns,
            bnn_ready: &mut bnn_ready,
        };
        let (section, report) = strength_stage::run(&pipeline, inputs)?;
        stages.push(report);
        serde_json::to_value(section).map_err(|e| ReproduceError::Write {
            path: cfg.out_dir.join("results.json"),
            reason: e.to_string(),
        })?
    } else {
        Value::Null
    };

    // Stage 5 (with more than one training seed): the evaluation models retrained with
    // seeds 1..K as stacked grids, and evaluated on the same sets.
    let k = cfg.train_seeds();
    let seeds_section = if k > 1 {
        let stage = super::seeds::SeedsStage {
            seeds: &pipeline.seeds,
            recipe: &pipeline.recipe,
            splits: &pipeline.splits,
            eval_splits: pipeline.splits_of(&sets).into_iter().collect(),
            sets_key: sets
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            models_dir: &pipeline.models_dir,
            evals_dir: &pipeline.evals_dir,
            dataset: cfg.dataset,
            device: cfg.device,
            verbose: cfg.verbose,
            train_seeds: k,
            draws: p.seed_draws,
        };
        let (section, report) = super::seeds::run(&stage, &dets, &bnns, &det_ready, &bnn_ready)?;
        stages.push(report);
        section
    } else {
        Value::Null
    };

    // Assemble results.json in the shape of paper_tables.json.
    let (bnn_rows, bnn_avg) = table_rows(&bnn_evals);
    let (det_rows, det_avg) = table_rows(&det_evals);
    let n_idx: Vec<usize> = (0..ens.n_samples.len()).collect();
    let ens_rows: Vec<Value> = ens
        .rows
        .iter()
        .map(|row| Value::Array(row.iter().map(|runs| pct(runs)).collect()))
        .collect();
    let ens_avg: Vec<Value> = n_idx
        .iter()
        .map(|&j| {
            average_over_sets(
                &ens.rows
                    .iter()
                    .map(|row| row[j].clone())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let paper_runs: Vec<usize> = ens.n_samples.iter().map(|n| (100 / n).max(1)).collect();
    let paper_rows: Vec<Vec<f64>> = ens
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&paper_runs)
                .map(|(runs, k)| {
                    100.0 * runs.iter().take(*k).sum::<f64>() / (*k).min(runs.len()) as f64
                })
                .collect()
        })
        .collect();
    let paper_avg: Vec<f64> = n_idx
        .iter()
        .map(|&j| paper_rows.iter().map(|r| r[j]).sum::<f64>() / paper_rows.len() as f64)
        .collect();
    let snr_histogram = snr_histogram(
        bnn_of(&bnn_ready[index_of(TABLE4_RHO)].model),
        &p.prune_rates,
    );
    let prune_rows: Vec<Value> = (0..sets.len())
        .map(|i| Value::Array(prune.per_rate.iter().map(|e| pct(&e.sets[i])).collect()))
        .collect();
    let results = json!({
        "source": format!("bayes-robust {} reproduction, profile {}; all accuracies in percent as {{mean, ci95, runs}}", env!("CARGO_PKG_VERSION"), p.name),
        "attack_sources": sets.iter().map(|s| &s.label).collect::<Vec<_>>(),
        "table1_clean": {
            "bnn": {
                "rho_init": RHO_INITS,
                "validation": bnn_evals.iter().map(|e| pct(&e.validation)).collect::<Vec<_>>(),
                "test": bnn_evals.iter().map(|e| pct(&e.test)).collect::<Vec<_>>(),
            },
            "deterministic": {
                "lambda": LAMBDAS.iter().map(|l| l.0).collect::<Vec<_>>(),
                "validation": det_evals.iter().map(|e| pct(&e.validation)).collect::<Vec<_>>(),
                "test": det_evals.iter().map(|e| pct(&e.test)).collect::<Vec<_>>(),
            },
        },
        "table2_perturbed": {
            "bnn": { "rho_init": RHO_INITS, "rows": bnn_rows, "average": bnn_avg },
            "deterministic": { "lambda": LAMBDAS.iter().map(|l| l.0).collect::<Vec<_>>(), "rows": det_rows, "average": det_avg },
        },
        "table3_ensemble": {
            "note": format!("BNN rho_init={TABLE3_RHO}; each cell over max(100/N, {}) runs of an N-draw ensemble", p.ensemble_runs),
            "n_samples": ens.n_samples,
            "runs": ens.n_samples.iter().map(|n| pipeline.ensemble_runs_for(*n)).collect::<Vec<_>>(),
            "rows": ens_rows,
            "average": ens_avg,
            "paper_protocol": { "runs": paper_runs, "rows": paper_rows, "average": paper_avg },
        },
        "table4_pruning": {
            "note": format!("BNN rho_init={TABLE4_RHO}; SNR |mu|/sigma pruning {}, ensemble of {} draws, {} runs per cell", match cfg.prune_mode_or(PruneMode::Global) { PruneMode::Global => "ranked over all weight matrices together (biases kept)", PruneMode::PerTensor => "per tensor, weights and biases" }, p.prune_ensemble, p.prune_runs),
            "mode": cfg.prune_mode_or(PruneMode::Global),
            "rate_percent": prune.rates.iter().map(|r| r * 100.0).collect::<Vec<_>>(),
            "pruned_weights": prune.pruned_weights,
            "snr_histogram": snr_histogram,
            "clean_validation": prune.per_rate.iter().map(|e| pct(&e.validation)).collect::<Vec<_>>(),
            "clean_test": prune.per_rate.iter().map(|e| pct(&e.test)).collect::<Vec<_>>(),
            "rows": prune_rows,
            "average": prune.per_rate.iter().map(|e| average_over_sets(&e.sets)).collect::<Vec<_>>(),
        },
        "calibration": {
            "note": format!("ECE ({ECE_BINS} bins) and NLL of the clean test set and of each perturbation set; AUROC of predictive entropy (and, for the BNN, mutual information) separating each perturbation set from the clean test images. The BNN (rho_init={TABLE3_RHO}) is its {}-draw ensemble. Intervals: 95% percentile bootstrap over the {} test images ({CALIBRATION_RESAMPLES} resamples; each perturbed image is resampled with its clean original).", p.prune_ensemble, pipeline.test.len()),
            "rows": calibration.rows,
        },
        "whitebox": whitebox,
        "per_example_files": per_example_files,
        "seeds": seeds_section,
        "strength": strength,
        "sigma": {
            "quantiles": super::code_protocol::SIGMA_QUANTILES,
            "bnns": bnns.iter().zip(&bnn_ready).map(|(gm, r)| json!({
                "model": gm.label,
                "layers": bnn_of(&r.model).sigma_quantiles(&super::code_protocol::SIGMA_QUANTILES),
            })).collect::<Vec<_>>(),
        },
        "perturbation_sets": sets.iter().map(|s| json!({
            "source": s.label, "n": s.labels.size()[0], "mean_distortion": s.mean_distortion,
            "success_rate": s.success_rate, "attack_seconds": s.seconds,
            "uncapped_distortion": s.uncapped_distortion, "uncapped_success_rate": s.uncapped_success_rate,
            "capped_fraction": s.capped_fraction,
        })).collect::<Vec<_>>(),
        "perturbation_examples_file": super::examples::EXAMPLES_FILE,
        "models": model_rows(&[(super::ModelGroup::Source, &source_ready), (super::ModelGroup::Deterministic, &det_ready), (super::ModelGroup::Bnn, &bnn_ready)]),
        "meta": {
            "profile": p,
            "master_seed": cfg.master_seed,
            "dataset": cfg.dataset.name(),
            "versions": { "bayes_robust": env!("CARGO_PKG_VERSION"), "tch": TCH_VERSION, "libtorch": LIBTORCH_VERSION },
            "threads": cfg.threads,
            "device": format!("{:?}", cfg.device),
            "n_validation": pipeline.validation.len(),
            "n_test": pipeline.test.len(),
            "data_checksums": raw.files().iter().map(|f| f.checksum.to_string()).collect::<Vec<_>>(),
            "stages": stages,
            "sgemm_gflops": sgemm,
            "cpu": crate::runtime::cpu_description(),
            "wall_seconds": started.elapsed().as_secs_f64(),
            "command": format!("bayes-robust --seed {} --threads {}{} reproduce --profile {}{}{}{}{}{}", cfg.master_seed, cfg.threads, if cfg.dataset == Dataset::Mnist { String::new() } else { format!(" --dataset {}", cfg.dataset) }, p.name, if cfg.whitebox { " --whitebox" } else { "" }, if cfg.strength { " --strength" } else { "" }, if cfg.per_example { " --per-example" } else { "" }, if cfg.prune_mode_or(PruneMode::Global) == PruneMode::PerTensor { " --pruning per-tensor" } else { "" }, if k != p.train_seeds { format!(" --train-seeds {k}") } else { String::new() }),
        },
    });
    let path = write_results(cfg, &results)?;
    if cfg.verbose {
        for s in &stages {
            eprintln!(
                "{:>8}: {:>8.1}s now, {:>8.1}s when made; {} computed, {} reused; {:.0} GFLOP counted, {:.1} GFLOP/s when made{}",
                s.stage,
                s.seconds,
                s.artifact_seconds,
                s.computed,
                s.reused,
                s.flops / 1e9,
                s.flops / 1e9 / s.artifact_seconds.max(1e-9),
                sgemm.map_or(String::new(), |g| format!(" (sgemm now {g:.1})")),
            );
        }
        eprintln!("wrote {}", path.display());
    }
    Ok(results)
}
