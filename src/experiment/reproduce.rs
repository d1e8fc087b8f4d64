//! `bayes-robust reproduce`: trains the paper's model grid, makes the 12 perturbation
//! sets, runs every evaluation of Tables 1–4, and writes `results.json`, reusing every
//! artifact that an earlier run with the same configuration finished.

mod claim_points;
mod per_example;
mod plan_seeds;
mod plan_strength;
mod plan_text;
mod strength_counts;
mod strength_seeds;
mod strength_stage;
mod whitebox_stage;

pub use super::executor::{FAIL_JOB_ENV, JOBS_LOG, JobLogLine, JobRun, JobRunOptions};
use super::stage::{
    GridModel, Ready, Timed, average_cell, bar, bnn_of, cached_eval, cell, each_item, mlp_of,
    per_run_set_average, training_flops, write_results,
};
pub use super::stage::{
    LIBTORCH_VERSION, ReproduceConfig, ReproduceError, StageReport, TCH_VERSION,
};
pub use plan_text::{run_job, run_plan, text_plan};

use std::time::Instant;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::cache::{self, ArtifactDir};
use super::keys::{self, Key};
use super::{LAMBDAS, RHO_INITS, SOURCE_ARCHS, TABLE3_RHO, TABLE4_RHO, source_label};
use crate::attack::{BudgetReading, MinNormAttack, clip_to_box};
use crate::data::{ChecksumPolicy, Dataset, RawDataset, Split, SplitSpec, Splits};
use crate::eval::{self, EvalChunks};
use crate::model::bayes::{BayesConfig, BayesMlp, PruneMode};
use crate::model::checkpoint::{CheckpointPaths, ModelSpec};
use crate::model::mlp::{MlpConfig, MlpInit};
use crate::model::{Arch, WeightMode};
use crate::results::{
    BnnSigmas, CalibrationRow, Cell, Meta, ModelRow, PaperProtocol, SetRow, Sigmas, SnrHistogram,
    Table1, Table2, Table3, Table4, rows_by_set,
};
use crate::seed::SeedTree;
use crate::train::{self, Recipe, TrainOptions, TrainedModel};

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
            key: self.set_id(label, &key),
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
        let set = self.capped_set(label, raw.key, &raw.delta, &raw.record, mlp_of(source)?);
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
        let mlp = mlp_of(source)?;
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
        let (delta, outcome) = attack.run_split(mlp, &self.test, self.cfg.profile.attack_chunk);
        let record = AttackRecord {
            source: label.to_owned(),
            source_key: source.key.clone(),
            n,
            mean_distortion: outcome.mean_distortion(),
            success_rate: outcome.success_rate(),
            seconds: t0.elapsed().as_secs_f64(),
            attack: attack.clone(),
        };
        self.attacks_dir.write_with_tensors(
            &key,
            &[
                ("delta", &delta.to_device(Device::Cpu)),
                ("norms", &outcome.norms.to_device(Device::Cpu)),
            ],
            &record,
        )?;
        Ok(RawAttack {
            key,
            delta,
            record,
            reused: false,
        })
    }

    fn eval_key(&self, what: &str, model_key: &str, sets: &[PerturbationSet]) -> Key {
        let ids: Vec<String> = sets.iter().map(|s| s.key.clone()).collect();
        self.eval_key_of(what, model_key, &ids)
    }

    /// The key of the evaluation `what` of `model_key` on the sets with ids `set_ids`.
    fn eval_key_of(&self, what: &str, model_key: &str, set_ids: &[String]) -> Key {
        keys::evaluation(
            what,
            model_key,
            set_ids,
            self.test.len(),
            &self.cfg.profile,
            self.seeds.master(),
        )
    }

    /// The id of the set of the source `label` whose raw attack is `attack_key`.
    fn set_id(&self, label: &str, attack_key: &str) -> String {
        keys::perturbation_set_id(label, attack_key, self.cfg.profile.max_rms_distortion)
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

    /// [`Pipeline::cached`] under a planned key, its preimage stored beside it.
    fn cached_keyed<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        key: &Key,
        compute: impl FnOnce() -> Result<T, ReproduceError>,
    ) -> Result<(Timed<T>, bool), ReproduceError> {
        super::stage::cached_keyed_eval(&self.evals_dir, key, compute)
    }

    fn eval_deterministic(
        &self,
        name: &str,
        ready: &Ready,
        sets: &[PerturbationSet],
    ) -> Result<(Timed<ModelEval>, bool), ReproduceError> {
        let mlp = mlp_of(ready)?;
        self.cached_keyed(&self.eval_key(name, &ready.key, sets), || {
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
        let bnn = bnn_of(ready)?;
        let runs = self.cfg.profile.single_draw_runs;
        self.cached_keyed(&self.eval_key(name, &ready.key, sets), || {
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
        let bnn = bnn_of(ready)?;
        let ns = self.cfg.profile.ensemble_ns.clone();
        self.cached_keyed(&self.eval_key("table3", &ready.key, sets), || {
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
        let key = self.eval_key(per_example::table4_name(mode), &ready.key, sets);
        let p = self.cfg.profile.clone();
        self.cached_keyed(&key, || {
            let (mut per_rate, mut pruned_weights) = (Vec::new(), Vec::new());
            for &rate in &p.prune_rates {
                pruned_weights.push(prune_at(ready, mode, rate)?);
                let bnn = bnn_of(ready)?;
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

/// Prunes the BNN `ready` at `rate` (SNR |μ|/σ, `mode`); returns the weights pruned.
fn prune_at(ready: &mut Ready, mode: PruneMode, rate: f64) -> Result<usize, ReproduceError> {
    let key = ready.key.clone();
    let TrainedModel::Bnn { bnn, .. } = &mut ready.model else {
        return Err(ReproduceError::WrongModel {
            key,
            expected: "a BNN",
        });
    };
    Ok(bnn.prune_with(mode, rate)?)
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

/// A 40-bin histogram of log10 SNR of every weight of `bnn`, and the log10 SNR below
/// which each pruning rate prunes.
fn snr_histogram(bnn: &BayesMlp, rates: &[f64]) -> Option<SnrHistogram> {
    let snr = tch::no_grad(|| {
        bnn.snr_flat()
            .clamp_min(1e-30)
            .log10()
            .to_kind(tch::Kind::Double)
    });
    let (sorted, _) = snr.sort(0, false);
    let values: Vec<f64> = Vec::try_from(&sorted).unwrap_or_default();
    let (&lo, &hi) = (values.first()?, values.last()?);
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
    Some(SnrHistogram {
        log10_edges: edges,
        counts,
        log10_thresholds: thresholds,
    })
}

/// Rows (one per set) of columns (one per model) of percent CIs, and the average row.
fn table_rows(columns: &[ModelEval]) -> (Vec<Vec<Cell>>, Vec<Cell>) {
    let per_model: Vec<Vec<Cell>> = columns
        .iter()
        .map(|c| c.sets.iter().map(|s| cell(s)).collect())
        .collect();
    let average = columns.iter().map(|c| average_cell(&c.sets)).collect();
    (rows_by_set(&per_model), average)
}

/// results.json's `models`: each trained model of every group, with its validation
/// accuracy after every epoch (the training-curve figure's data).
fn model_rows(groups: &[(super::ModelGroup, &[Ready])]) -> Vec<ModelRow> {
    groups
        .iter()
        .flat_map(|&(group, rs)| {
            rs.iter().map(move |r| ModelRow {
                model: r.meta.model.describe(),
                key: r.key.clone(),
                epochs_run: r.meta.epochs_run,
                best_epoch: r.meta.best_epoch,
                best_validation_accuracy: r.meta.best_validation_accuracy,
                train_seconds: r.meta.wall_seconds,
                group: Some(group),
                spec: Some(r.meta.model.clone()),
                validation_curve: Some(train::validation_curve(&r.meta)),
            })
        })
        .collect()
}

/// The perturbation grid's examples: the first test images of each source family's
/// λ = 0 set.
fn text_examples(
    pipeline: &Pipeline,
    sources: &[GridModel],
    source_ready: &[Ready],
    sets: &[PerturbationSet],
) -> Result<super::examples::PerturbationExamples, ReproduceError> {
    use super::examples::{PerturbationExamples, SourceSet};
    Ok(PerturbationExamples::of_lambda_zero_sets(
        "text",
        "x' is the set as evaluated: the min-norm perturbation under the profile's distortion budget, clipped to [0, 1]",
        sources
            .iter()
            .zip(source_ready)
            .zip(sets)
            .map(|((gm, ready), set)| {
                Ok(SourceSet {
                    spec: &gm.spec,
                    label: &set.label,
                    source: mlp_of(ready)?,
                    clean: pipeline.test.images.shallow_clone(),
                    perturbed: set.images.shallow_clone(),
                    labels: &set.labels,
                })
            })
            .collect::<Result<Vec<_>, ReproduceError>>()?
            .into_iter(),
    ))
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
            chunks: p.eval_chunks(),
        })
    }
}

fn load_raw(cfg: &ReproduceConfig) -> Result<RawDataset, ReproduceError> {
    Ok(RawDataset::load(
        &cfg.data_dir,
        ChecksumPolicy::Require(cfg.dataset),
    )?)
}

/// The trained grid: each group's models (names, labels, specs) and their checkpoints.
struct TrainedGrid {
    sources: Vec<GridModel>,
    dets: Vec<GridModel>,
    bnns: Vec<GridModel>,
    source_ready: Vec<Ready>,
    det_ready: Vec<Ready>,
    bnn_ready: Vec<Ready>,
}

impl TrainedGrid {
    /// The BNN of the grid with this ρ_init (the first if none has it).
    fn bnn_index(rho: f64) -> usize {
        RHO_INITS.iter().position(|r| *r == rho).unwrap_or(0)
    }

    /// Table 3's BNN: its name and its trained model.
    fn table3(&self) -> (&str, &Ready) {
        let i = Self::bnn_index(TABLE3_RHO);
        (&self.bnns[i].name, &self.bnn_ready[i])
    }
}

/// What the evaluation stage made: Tables 1–4 and calibration.
struct Evaluations {
    det: Vec<ModelEval>,
    bnn: Vec<ModelEval>,
    ensembles: EnsembleEval,
    pruning: PruneEval,
    calibration: CalibrationEval,
}

/// Runs the whole reproduction and writes `<out_dir>/results.json`; returns its value.
/// The stages run in order: train, white-box (optional), attack, evaluate, per-example
/// (optional), strength (optional), training seeds (K > 1); each appends its report.
pub fn reproduce(cfg: &ReproduceConfig) -> Result<Value, ReproduceError> {
    let started = Instant::now();
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let mut stages = Vec::new();
    // The machine's matrix-product rate now, against which each stage's counted FLOPs
    // are set (CPU runs only).
    let sgemm = (cfg.device == Device::Cpu).then(super::flops::sgemm_gflops);

    let (mut grid, report) = train_stage(&pipeline)?;
    stages.push(report);
    // White-box attacks need only the trained models, so they run before the transfer
    // attacks.
    let whitebox = if cfg.whitebox {
        let models = whitebox_stage::Models {
            dets: &grid.dets,
            det_ready: &grid.det_ready,
            bnn_ready: &grid.bnn_ready,
        };
        let (section, report) = whitebox_stage::run(&pipeline, &models)?;
        stages.push(report);
        section
    } else {
        Value::Null
    };
    let (sets, report) = attack_stage(&pipeline, &grid)?;
    stages.push(report);
    text_examples(&pipeline, &grid.sources, &grid.source_ready, &sets)?.write(&cfg.out_dir)?;
    let (evals, report) = eval_stage(&pipeline, &mut grid, &sets)?;
    stages.push(report);
    let mut per_example_files = if cfg.per_example {
        per_example_stage(&pipeline, &mut grid, &sets)?
    } else {
        Vec::new()
    };
    let mut strength = if cfg.strength {
        let inputs = strength_stage::StrengthInputs {
            sources: &grid.sources,
            source_ready: &grid.source_ready,
            dets: &grid.dets,
            det_ready: &grid.det_ready,
            bnns: &grid.bnns,
            bnn_ready: &mut grid.bnn_ready,
        };
        let (section, report) = strength_stage::run(&pipeline, inputs)?;
        stages.push(report);
        Some(section)
    } else {
        None
    };
    let seeds_stage = (cfg.train_seeds() > 1).then(|| seeds_stage_of(&pipeline, &sets));
    let seeds_section = match &seeds_stage {
        Some(seeds_stage) => {
            let (section, report, extra) = super::seeds::run(
                seeds_stage,
                &grid.dets,
                &grid.bnns,
                &grid.det_ready,
                &grid.bnn_ready,
            )?;
            stages.push(report);
            if cfg.per_example {
                let written =
                    per_example::export_seeds(&extra.counts, pipeline.test.len(), &cfg.out_dir)?;
                per_example_files.extend(
                    written
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                );
            }
            if let Some(strength) = strength.as_mut() {
                let inputs = strength_seeds::SeedsInputs {
                    grid: &grid,
                    extra: &extra,
                    section: strength,
                };
                let (seeds, report, counts) = strength_seeds::run(&pipeline, seeds_stage, inputs)?;
                stages.push(report);
                if cfg.per_example {
                    per_example_files.extend(
                        counts.write(&cfg.out_dir)?.iter().filter_map(|p| {
                            p.file_name().map(|n| n.to_string_lossy().into_owned())
                        }),
                    );
                }
                strength.seeds = Some(seeds);
            }
            section_value(cfg, &section)?
        }
        None => Value::Null,
    };
    let strength = match strength {
        Some(section) => section_value(cfg, &section)?,
        None => Value::Null,
    };
    let mut results = results_json(&pipeline, &grid, &sets, &evals)?;
    results["whitebox"] = whitebox;
    results["per_example_files"] = json!(per_example_files);
    results["seeds"] = seeds_section;
    results["strength"] = strength;
    let meta = meta(&pipeline, &raw, stages, sgemm, started);
    results["meta"] = section_value(cfg, &meta)?;
    let path = write_results(cfg, &results)?;
    if cfg.verbose {
        print_stages(&meta.stages, sgemm);
        eprintln!("wrote {}", path.display());
    }
    Ok(results)
}

/// Stage 1: load (or train) every model of the grid.
fn train_stage(pipeline: &Pipeline) -> Result<(TrainedGrid, StageReport), ReproduceError> {
    let cfg = pipeline.cfg;
    let t0 = Instant::now();
    let (sources, dets, bnns) = (source_models(), deterministic_models(), bayesian_models());
    let all: Vec<&GridModel> = sources.iter().chain(&dets).chain(&bnns).collect();
    let progress = bar(all.len(), "train", cfg.verbose);
    let (mut ready, reused) = each_item(all.len(), &progress, |i| {
        progress.set_message(all[i].name.clone());
        pipeline.ensure_model(all[i])
    })?;
    let report = StageReport {
        stage: "train".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: ready.iter().map(|r| r.meta.wall_seconds).sum(),
        computed: ready.len() - reused,
        reused,
        flops: ready
            .iter()
            .map(|r| training_flops(r, &pipeline.recipe, &pipeline.splits))
            .sum::<f64>()
            .into(),
    };
    let bnn_ready = ready.split_off(sources.len() + dets.len());
    let det_ready = ready.split_off(sources.len());
    let grid = TrainedGrid {
        sources,
        dets,
        bnns,
        source_ready: ready,
        det_ready,
        bnn_ready,
    };
    Ok((grid, report))
}

/// Stage 3: load (or make) the 12 perturbation sets, one per source.
fn attack_stage(
    pipeline: &Pipeline,
    grid: &TrainedGrid,
) -> Result<(Vec<PerturbationSet>, StageReport), ReproduceError> {
    let cfg = pipeline.cfg;
    let p = &cfg.profile;
    let t0 = Instant::now();
    let progress = bar(grid.sources.len(), "attack", cfg.verbose);
    let (sets, reused) = each_item(grid.sources.len(), &progress, |i| {
        progress.set_message(grid.sources[i].label.clone());
        pipeline.ensure_attack(&grid.sources[i].label, &grid.source_ready[i])
    })?;
    let report = StageReport {
        stage: "attack".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: sets.iter().map(|s| s.seconds).sum(),
        computed: sets.len() - reused,
        reused,
        // Every step of every source's attack, and the passes that judge the set.
        flops: grid
            .sources
            .iter()
            .map(|gm| {
                let arch = gm.spec.arch();
                let n = pipeline.test.len() as f64;
                super::flops::input_gradient_steps(arch, p.attack.steps as f64, n)
                    + super::flops::forward(arch, 3.0 * n)
            })
            .sum::<f64>()
            .into(),
    };
    Ok((sets, report))
}

/// Stage 4: Tables 1–4 and calibration on the clean splits and every set.
fn eval_stage(
    pipeline: &Pipeline,
    grid: &mut TrainedGrid,
    sets: &[PerturbationSet],
) -> Result<(Evaluations, StageReport), ReproduceError> {
    let cfg = pipeline.cfg;
    let t0 = Instant::now();
    let n_evals = grid.dets.len() + grid.bnns.len() + 3;
    let progress = bar(n_evals, "eval", cfg.verbose);
    let (mut reused, mut eval_seconds) = (0, 0.0);
    let mut tally = |seconds: f64, was_cached: bool| {
        reused += was_cached as usize;
        eval_seconds += seconds;
        progress.inc(1);
    };
    let mut det = Vec::new();
    for (gm, r) in grid.dets.iter().zip(&grid.det_ready) {
        progress.set_message(gm.name.clone());
        let (e, c) = pipeline.eval_deterministic(&gm.name, r, sets)?;
        tally(e.seconds, c);
        det.push(e.value);
    }
    let mut bnn = Vec::new();
    for (gm, r) in grid.bnns.iter().zip(&grid.bnn_ready) {
        progress.set_message(gm.name.clone());
        let (e, c) = pipeline.eval_single_draws(&gm.name, r, sets)?;
        tally(e.seconds, c);
        bnn.push(e.value);
    }
    progress.set_message("table 3");
    let (ensembles, c) =
        pipeline.eval_ensembles(&grid.bnn_ready[TrainedGrid::bnn_index(TABLE3_RHO)], sets)?;
    tally(ensembles.seconds, c);
    progress.set_message("table 4");
    let (pruning, c) = pipeline.eval_pruning(
        &mut grid.bnn_ready[TrainedGrid::bnn_index(TABLE4_RHO)],
        sets,
    )?;
    tally(pruning.seconds, c);
    progress.set_message("calibration");
    let (calibration, c) = calibration_eval(pipeline, grid, sets)?;
    tally(calibration.seconds, c);
    progress.finish_and_clear();
    let report = StageReport {
        stage: "eval".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: eval_seconds,
        computed: n_evals - reused,
        reused,
        flops: Some(eval_flops(pipeline, grid, sets.len())),
    };
    let evals = Evaluations {
        det,
        bnn,
        ensembles: ensembles.value,
        pruning: pruning.value,
        calibration: calibration.value,
    };
    Ok((evals, report))
}

/// Counted FLOPs of the evaluation stage: passes over validation, test and the sets
/// (calibration: test and the sets).
fn eval_flops(pipeline: &Pipeline, grid: &TrainedGrid, n_sets: usize) -> f64 {
    let p = &pipeline.cfg.profile;
    let arch = Arch::new(&[100, 100]);
    let n = pipeline.test.len() as f64;
    let splits = (2 + n_sets) as f64;
    let table3: usize = p
        .ensemble_ns
        .iter()
        .map(|&k| k * pipeline.ensemble_runs_for(k))
        .sum();
    let (dets, bnns) = (grid.dets.len(), grid.bnns.len());
    let passes = splits * (dets + bnns * p.single_draw_runs) as f64
        + (n_sets * table3) as f64
        + splits * (p.prune_rates.len() * p.prune_runs * p.prune_ensemble) as f64
        + (1 + n_sets) as f64 * (dets + p.prune_ensemble) as f64;
    super::flops::forward(&arch, passes * n)
}

/// Calibration and detection of the λ nets and the Table 3 BNN's ensemble, cached.
fn calibration_eval(
    pipeline: &Pipeline,
    grid: &TrainedGrid,
    sets: &[PerturbationSet],
) -> Result<(Timed<CalibrationEval>, bool), ReproduceError> {
    let p = &pipeline.cfg.profile;
    let t3 = &grid.bnn_ready[TrainedGrid::bnn_index(TABLE3_RHO)];
    let key = pipeline.eval_key(
        &format!("calibration+bootstrap{CALIBRATION_RESAMPLES}"),
        &format!(
            "{}+{}",
            t3.key,
            grid.det_ready
                .iter()
                .map(|r| r.key.as_str())
                .collect::<Vec<_>>()
                .join("+")
        ),
        sets,
    );
    pipeline.cached_keyed(&key, || {
        let mut rows: Vec<CalibrationRow> = grid
            .dets
            .iter()
            .zip(&grid.det_ready)
            .map(|(gm, r)| {
                calibration_row(
                    &format!("deterministic {}", gm.label),
                    &r.model,
                    &pipeline.test,
                    sets,
                    1,
                    1,
                    &pipeline.seeds,
                )
            })
            .collect();
        rows.push(calibration_row(
            &format!(
                "BNN rho_init={TABLE3_RHO}, ensemble of {}",
                p.prune_ensemble
            ),
            &t3.model,
            &pipeline.test,
            sets,
            p.prune_ensemble,
            p.draw_chunk,
            &pipeline.seeds,
        ));
        Ok(CalibrationEval { rows })
    })
}

/// Stage 4a: the per-example results of Tables 1–2 (`per_example.npz` and `.json`);
/// the names of the files written.
fn per_example_stage(
    pipeline: &Pipeline,
    grid: &mut TrainedGrid,
    sets: &[PerturbationSet],
) -> Result<Vec<String>, ReproduceError> {
    let cfg = pipeline.cfg;
    let t4 = TrainedGrid::bnn_index(TABLE4_RHO);
    let pruning = pipeline.per_example_pruning(&mut grid.bnn_ready[t4], sets)?;
    let grid: &TrainedGrid = grid;
    let models = per_example::evaluated(grid);
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| ReproduceError::Write {
        path: cfg.out_dir.clone(),
        reason: e.to_string(),
    })?;
    Ok(per_example::export(
        pipeline,
        &models,
        &grid.source_ready,
        grid.table3(),
        (&grid.bnns[t4].name, pruning),
        sets,
        &cfg.out_dir,
    )?
    .iter()
    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    .collect())
}

/// A typed section of results.json as JSON.
fn section_value(
    cfg: &ReproduceConfig,
    section: &impl serde::Serialize,
) -> Result<Value, ReproduceError> {
    serde_json::to_value(section).map_err(|e| ReproduceError::Write {
        path: cfg.out_dir.join("results.json"),
        reason: e.to_string(),
    })
}

/// Stage 5 (with more than one training seed, [`super::seeds::run`]): what it works
/// with, the pipeline's data and folders and the sets.
fn seeds_stage_of<'p>(
    pipeline: &'p Pipeline,
    sets: &[PerturbationSet],
) -> super::seeds::SeedsStage<'p> {
    let ids: Vec<&str> = sets.iter().map(|s| s.key.as_str()).collect();
    seeds_stage_keyed(
        pipeline,
        &ids,
        pipeline.splits_of(sets).into_iter().collect(),
    )
}

/// The seeds stage on the sets `set_ids`, evaluating on `eval_splits` (validation,
/// test, then the sets; empty where only its keys are wanted).
fn seeds_stage_keyed<'p>(
    pipeline: &'p Pipeline,
    set_ids: &[&str],
    eval_splits: Vec<(String, Split)>,
) -> super::seeds::SeedsStage<'p> {
    let cfg = pipeline.cfg;
    super::seeds::SeedsStage {
        seeds: &pipeline.seeds,
        recipe: &pipeline.recipe,
        splits: &pipeline.splits,
        eval_splits,
        sets_key: set_ids.join("+"),
        models_dir: &pipeline.models_dir,
        evals_dir: &pipeline.evals_dir,
        dataset: cfg.dataset,
        device: cfg.device,
        verbose: cfg.verbose,
        train_seeds: cfg.train_seeds(),
        draws: cfg.profile.seed_draws,
    }
}

/// Table 3 in results.json: per set and N the ensemble's runs, their averages, and the
/// paper's protocol (max(100/N, 1) runs of each cell).
fn table3(pipeline: &Pipeline, ens: &EnsembleEval) -> Table3 {
    let p = &pipeline.cfg.profile;
    let n_idx: Vec<usize> = (0..ens.n_samples.len()).collect();
    let column =
        |j: usize| -> Vec<Vec<f64>> { ens.rows.iter().map(|row| row[j].clone()).collect() };
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
    Table3 {
        note: format!(
            "BNN rho_init={TABLE3_RHO}; each cell over max(100/N, {}) runs of an N-draw ensemble",
            p.ensemble_runs
        ),
        n_samples: ens.n_samples.clone(),
        runs: ens
            .n_samples
            .iter()
            .map(|n| pipeline.ensemble_runs_for(*n))
            .collect(),
        rows: ens
            .rows
            .iter()
            .map(|row| row.iter().map(|runs| cell(runs)).collect())
            .collect(),
        average: n_idx.iter().map(|&j| average_cell(&column(j))).collect(),
        paper_protocol: Some(PaperProtocol {
            runs: paper_runs,
            rows: paper_rows,
            average: paper_avg,
        }),
    }
}

/// Table 4 of the text protocol: the ρ_init = −2 BNN pruned at each rate, with the
/// SNR histogram of its weights.
fn table4(
    pipeline: &Pipeline,
    grid: &TrainedGrid,
    prune: &PruneEval,
    n_sets: usize,
) -> Result<Table4, ReproduceError> {
    let cfg = pipeline.cfg;
    let p = &cfg.profile;
    let mode = cfg.prune_mode_or(PruneMode::Global);
    let how = match mode {
        PruneMode::Global => "ranked over all weight matrices together (biases kept)",
        PruneMode::PerTensor => "per tensor, weights and biases",
    };
    Ok(Table4 {
        note: format!(
            "BNN rho_init={TABLE4_RHO}; SNR |mu|/sigma pruning {how}, ensemble of {} draws, {} runs per cell",
            p.prune_ensemble, p.prune_runs
        ),
        mode,
        rate_percent: prune.rates.iter().map(|r| r * 100.0).collect(),
        pruned_weights: Some(prune.pruned_weights.clone()),
        pruned_per_tensor: None,
        snr_histogram: snr_histogram(
            bnn_of(&grid.bnn_ready[TrainedGrid::bnn_index(TABLE4_RHO)])?,
            &p.prune_rates,
        ),
        clean_validation: prune.per_rate.iter().map(|e| cell(&e.validation)).collect(),
        clean_test: prune.per_rate.iter().map(|e| cell(&e.test)).collect(),
        rows: (0..n_sets)
            .map(|i| prune.per_rate.iter().map(|e| cell(&e.sets[i])).collect())
            .collect(),
        average: prune
            .per_rate
            .iter()
            .map(|e| average_cell(&e.sets))
            .collect(),
    })
}

/// results.json in the shape of paper_tables.json, without the optional stages'
/// sections and the metadata (the caller adds them).
fn results_json(
    pipeline: &Pipeline,
    grid: &TrainedGrid,
    sets: &[PerturbationSet],
    evals: &Evaluations,
) -> Result<Value, ReproduceError> {
    let p = &pipeline.cfg.profile;
    let (bnn_rows, bnn_avg) = table_rows(&evals.bnn);
    let (det_rows, det_avg) = table_rows(&evals.det);
    let lambdas: Vec<f64> = LAMBDAS.iter().map(|l| l.0).collect();
    let column = |evals: &[ModelEval], split: fn(&ModelEval) -> &[f64]| -> Vec<Cell> {
        evals.iter().map(|e| cell(split(e))).collect()
    };
    let table1 = Table1::new(
        &RHO_INITS,
        &lambdas,
        (
            column(&evals.bnn, |e| &e.validation),
            column(&evals.bnn, |e| &e.test),
        ),
        (
            column(&evals.det, |e| &e.validation),
            column(&evals.det, |e| &e.test),
        ),
    );
    let table2 = Table2::new(
        None,
        &RHO_INITS,
        &lambdas,
        (bnn_rows, bnn_avg),
        (det_rows, det_avg),
    );
    Ok(json!({
        "source": format!("bayes-robust {} reproduction, profile {}; all accuracies in percent as {{mean, ci95, runs}}", env!("CARGO_PKG_VERSION"), p.name),
        "attack_sources": sets.iter().map(|s| &s.label).collect::<Vec<_>>(),
        "table1_clean": table1,
        "table2_perturbed": table2,
        "table3_ensemble": table3(pipeline, &evals.ensembles),
        "table4_pruning": table4(pipeline, grid, &evals.pruning, sets.len())?,
        "calibration": crate::results::Calibration {
            note: format!("ECE ({ECE_BINS} bins) and NLL of the clean test set and of each perturbation set; AUROC of predictive entropy (and, for the BNN, mutual information) separating each perturbation set from the clean test images. The BNN (rho_init={TABLE3_RHO}) is its {}-draw ensemble. Intervals: 95% percentile bootstrap over the {} test images ({CALIBRATION_RESAMPLES} resamples; each perturbed image is resampled with its clean original).", p.prune_ensemble, pipeline.test.len()),
            rows: evals.calibration.rows.clone(),
        },
        "whitebox": Value::Null,
        "per_example_files": [],
        "seeds": Value::Null,
        "strength": Value::Null,
        "sigma": Sigmas {
            quantiles: super::code_protocol::SIGMA_QUANTILES.to_vec(),
            bnns: grid.bnns.iter().zip(&grid.bnn_ready).map(|(gm, r)| Ok(BnnSigmas {
                model: gm.label.clone(),
                layers: bnn_of(r)?.sigma_quantiles(&super::code_protocol::SIGMA_QUANTILES),
            })).collect::<Result<Vec<_>, ReproduceError>>()?,
            noise_sigmas: None,
            noise_note: None,
        },
        "perturbation_sets": sets.iter().map(|s| SetRow {
            source: s.label.clone(), n: s.labels.size()[0], mean_distortion: s.mean_distortion,
            success_rate: s.success_rate, attack_seconds: s.seconds,
            uncapped_distortion: s.uncapped_distortion, uncapped_success_rate: s.uncapped_success_rate,
            capped_fraction: s.capped_fraction,
        }).collect::<Vec<_>>(),
        "perturbation_examples_file": super::examples::EXAMPLES_FILE,
        "models": model_rows(&[(super::ModelGroup::Source, &grid.source_ready), (super::ModelGroup::Deterministic, &grid.det_ready), (super::ModelGroup::Bnn, &grid.bnn_ready)]),
        "meta": Value::Null,
    }))
}

/// results.json's `meta`: the profile, seeds, versions, machine, data checksums, each
/// stage's report and the command that reruns it.
fn meta(
    pipeline: &Pipeline,
    raw: &RawDataset,
    stages: Vec<StageReport>,
    sgemm: Option<f64>,
    started: Instant,
) -> Meta {
    let cfg = pipeline.cfg;
    let p = &cfg.profile;
    let dataset = match cfg.dataset {
        Dataset::Mnist => String::new(),
        other => format!(" --dataset {other}"),
    };
    let flags: String = cfg.plan_flags().iter().map(|f| format!(" {f}")).collect();
    Meta {
        profile: serde_json::to_value(p).unwrap_or(Value::Null),
        code_profile: None,
        protocol: None,
        master_seed: cfg.master_seed,
        dataset: Some(cfg.dataset.name().to_owned()),
        versions: super::stage::versions(),
        threads: cfg.threads,
        device: format!("{:?}", cfg.device),
        n_validation: pipeline.validation.len(),
        n_test: pipeline.test.len(),
        n_attacked: None,
        data_checksums: raw.files().iter().map(|f| f.checksum.to_string()).collect(),
        stages,
        sgemm_gflops: sgemm,
        cpu: crate::runtime::cpu_description(),
        wall_seconds: started.elapsed().as_secs_f64(),
        command: format!(
            "bayes-robust --seed {} --threads {}{dataset} reproduce --profile {}{flags}{}",
            cfg.master_seed,
            cfg.threads,
            p.name,
            cfg.folder_flags("")
        ),
    }
}

/// Each stage's wall time now and when its artifacts were made, and its counted work.
fn print_stages(stages: &[StageReport], sgemm: Option<f64>) {
    for s in stages {
        eprintln!(
            "{:>8}: {:>8.1}s now, {:>8.1}s when made; {} computed, {} reused; {:.0} GFLOP counted, {:.1} GFLOP/s when made{}",
            s.stage,
            s.seconds,
            s.artifact_seconds,
            s.computed,
            s.reused,
            s.flops.unwrap_or(0.0) / 1e9,
            s.flops.unwrap_or(0.0) / 1e9 / s.artifact_seconds.max(1e-9),
            sgemm.map_or(String::new(), |g| format!(" (sgemm now {g:.1})")),
        );
    }
}
