//! `run --per-example`: each evaluation model's per-example results on every split of
//! Tables 1–2, Tables 3's and 4's replayed per example, and each perturbation set's
//! per-example distortion and success, written
//! beside `results.json` as `per_example.npz` (numpy reads it directly) with
//! `per_example.json` saying what each axis is. docs/PER_EXAMPLE.md has a Python example
//! that recomputes a Table 2 cell and a paired margin from them.
//!
//! Each model's counts are a job of the plan (`keys::per_example_counts`, cached beside
//! its evaluation); the export stacks them and measures the sets, when `run` assembles
//! the report. The counts replay the Table 1–2 evaluations' own seeds and draws
//! ([`eval::single_draw_correct_counts`]), so a cell is exactly mean(counts) / runs.
//! Table 3's ensembles (eq. 7) are one more job: per N and set, the examples' counts of
//! correct ensemble runs, and the largest ensemble's first run's predictive
//! probabilities (f16); Table 4's pruned ensembles another, per rate and split.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Kind, Tensor};

use super::{
    GridModel, PerturbationSet, Pipeline, Ready, ReproduceError, TrainedGrid, bnn_of, mlp_of,
};
use crate::data::IMAGE_DIM;
use crate::data::Split;
use crate::eval;
use crate::experiment::keys;
use crate::experiment::per_example_io::{cached_counts, cached_tensors, write_per_example};
use crate::model::bayes::PruneMode;
use crate::model::checkpoint::ModelSpec;
use crate::train::TrainedModel;

/// An evaluation model of Tables 1–2 and where its cells sit in `results.json`.
pub(super) struct Evaluated<'a> {
    pub name: &'a str,
    /// `/table1_clean/<group>` and `/table2_perturbed/<group>`: `bnn` or `deterministic`.
    pub group: &'static str,
    pub index: usize,
    pub ready: &'a Ready,
}

impl Evaluated<'_> {
    /// The Table 1–2 runs of this model: 1 for a deterministic net.
    fn runs(&self, pipeline: &Pipeline) -> usize {
        match self.ready.meta.model {
            ModelSpec::Mlp { .. } => 1,
            ModelSpec::Bnn { .. } => pipeline.cfg.profile.single_draw_runs,
        }
    }
}

/// What `per_example.json` says of the arrays in `per_example.npz`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PerExampleIndex {
    pub note: String,
    /// Rows of `correct`: each model's name, its group and index in results.json.
    pub models: Vec<ModelEntry>,
    /// The second axis of `correct`: `validation`, `test`, then the 12 sets.
    pub splits: Vec<String>,
    /// Rows of `set_rms` and `set_fooled`: the sets' sources.
    pub sets: Vec<String>,
    /// Examples per split.
    pub n: usize,
    /// Table 3's arrays; absent from files older than them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleEntry>,
    /// Table 4's array; absent from files older than it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning: Option<PruningEntry>,
}

/// What `pruning_correct` is: Table 4's BNN, its pruning rates (the first axis), the
/// draws of each ensemble and its runs per cell.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PruningEntry {
    pub model: String,
    pub rates: Vec<f64>,
    pub ensemble: usize,
    pub runs: usize,
    pub mode: PruneMode,
}

/// What `ensemble_correct`, `ensemble_runs` and `ensemble_probs` are: Table 3's BNN and
/// its ensemble sizes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EnsembleEntry {
    /// The BNN (`bnn/rho=-3`).
    pub model: String,
    /// The ensemble sizes N: the first axis of `ensemble_correct`.
    pub n_samples: Vec<usize>,
    /// The N of `ensemble_probs` (the largest).
    pub probs_n: usize,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub group: String,
    pub index: usize,
    /// Single-draw runs counted (1 for a deterministic net).
    pub runs: usize,
}

/// The evaluation models of Tables 1–2 in `per_example.npz`'s order: the λ nets, then
/// the BNNs.
pub(super) fn evaluated(grid: &TrainedGrid) -> Vec<Evaluated<'_>> {
    fn of<'g>(
        group: &'static str,
        gms: &'g [GridModel],
        ready: &'g [Ready],
    ) -> impl Iterator<Item = Evaluated<'g>> {
        gms.iter()
            .zip(ready)
            .enumerate()
            .map(move |(index, (gm, ready))| Evaluated {
                name: &gm.name,
                group,
                index,
                ready,
            })
    }
    of("deterministic", &grid.dets, &grid.det_ready)
        .chain(of("bnn", &grid.bnns, &grid.bnn_ready))
        .collect()
}

impl Pipeline<'_> {
    /// Per split (validation, test, each set), per example, the number of the model's
    /// Table 1–2 runs that classify it correctly: `[splits, n]` i64, cached.
    pub(super) fn per_example_counts(
        &self,
        e: &Evaluated,
        sets: &[PerturbationSet],
    ) -> Result<Tensor, ReproduceError> {
        let key = keys::per_example_counts(e.name, &self.eval_key(e.name, &e.ready.key, sets));
        let runs = e.runs(self);
        let meta = json!({ "model": e.ready.key, "runs": runs });
        cached_counts(&self.evals_dir, &key, &meta, || {
            let counts: Vec<Tensor> = self
                .splits_of(sets)
                .iter()
                .map(|(split_name, split)| match &e.ready.model {
                    TrainedModel::Mlp { mlp, .. } => eval::correct_flags(mlp, split, self.chunks),
                    TrainedModel::Bnn { bnn, .. } => {
                        // The seed of the same cell's evaluation (`eval_single_draws`).
                        self.seeds
                            .seed_torch(&format!("eval/{}/{split_name}", e.name));
                        eval::single_draw_correct_counts(bnn, split, runs, self.chunks)
                    }
                })
                .collect();
            Ok(Tensor::stack(&counts, 0))
        })
    }

    /// Table 3 replayed per example on the BNN `ready`: per ensemble size N and set, how
    /// many of the N-draw ensemble's runs classify each example correctly (`[ns, sets,
    /// n]` i64), and the largest ensemble's first run's mean softmax (`[sets, n, 10]`
    /// f16), cached.
    pub(super) fn per_example_ensembles(
        &self,
        ready: &Ready,
        sets: &[PerturbationSet],
    ) -> Result<[Tensor; 2], ReproduceError> {
        let bnn = bnn_of(ready)?;
        let ns = self.cfg.profile.ensemble_ns.clone();
        let n_max = ns.iter().copied().max().unwrap_or(1);
        let key = keys::per_example_counts("table3", &self.eval_key("table3", &ready.key, sets));
        let meta = json!({ "model": ready.key, "n_samples": ns });
        cached_tensors(&self.evals_dir, &key, &meta, ["counts", "probs"], || {
            let mut probs = Vec::new();
            let counts: Vec<Tensor> = ns
                .iter()
                .map(|&n| {
                    let per_set: Vec<Tensor> = sets
                        .iter()
                        .map(|set| {
                            let split = Split {
                                images: set.images.shallow_clone(),
                                labels: set.labels.shallow_clone(),
                            };
                            // The seed of the same cell of Table 3 (`eval_ensembles`).
                            self.seeds
                                .seed_torch(&format!("table3/N={n}/{}", set.label));
                            let runs = eval::ensemble_probs_runs(
                                bnn,
                                &split,
                                n,
                                self.ensemble_runs_for(n),
                                self.chunks,
                            );
                            if let Some(first) = runs.first().filter(|_| n == n_max) {
                                probs.push(first.to_kind(Kind::Half));
                            }
                            eval::correct_counts_of(&runs, &split.labels)
                        })
                        .collect();
                    Tensor::stack(&per_set, 0)
                })
                .collect();
            Ok([Tensor::stack(&counts, 0), Tensor::stack(&probs, 0)])
        })
    }

    /// Table 4 replayed per example on the BNN `ready`: per pruning rate and split
    /// (validation, test, each set), how many of the pruned ensemble's runs classify each
    /// example correctly, `[rates, splits, n]` i64, cached. `ready` is unpruned after.
    pub(super) fn per_example_pruning(
        &self,
        ready: &mut Ready,
        sets: &[PerturbationSet],
    ) -> Result<Tensor, ReproduceError> {
        let mode = self.cfg.prune_mode_or(PruneMode::Global);
        let what = table4_name(mode);
        let key = keys::per_example_counts(what, &self.eval_key(what, &ready.key, sets));
        let p = self.cfg.profile.clone();
        let meta = json!({ "model": ready.key, "rates": p.prune_rates, "runs": p.prune_runs });
        cached_counts(&self.evals_dir, &key, &meta, || {
            let mut per_rate = Vec::new();
            for &rate in &p.prune_rates {
                super::prune_at(ready, mode, rate)?;
                let bnn = bnn_of(ready)?;
                let counts: Vec<Tensor> = self
                    .splits_of(sets)
                    .iter()
                    .map(|(split_name, split)| {
                        // The seed of the same cell of Table 4 (`eval_pruning`).
                        self.seeds
                            .seed_torch(&format!("table4/rate={rate}/{split_name}"));
                        let runs = eval::ensemble_probs_runs(
                            bnn,
                            split,
                            p.prune_ensemble,
                            p.prune_runs,
                            self.chunks,
                        );
                        eval::correct_counts_of(&runs, &split.labels)
                    })
                    .collect();
                per_rate.push(Tensor::stack(&counts, 0));
            }
            if let TrainedModel::Bnn { bnn, .. } = &mut ready.model {
                bnn.unprune();
            }
            Ok(Tensor::stack(&per_rate, 0))
        })
    }
}

/// Table 4's evaluation name (its key's) under pruning `mode`.
pub(super) fn table4_name(mode: PruneMode) -> &'static str {
    match mode {
        PruneMode::Global => "table4",
        PruneMode::PerTensor => "table4-per-tensor",
    }
}

/// Writes `per_example.npz` and `per_example.json` into `out_dir`: `correct` `[models,
/// splits, n]` u8 (correct runs), `runs` `[models]`, `labels` `[n]`, `set_rms` `[sets,
/// n]` f32 (√(‖r‖²/784) of each perturbation as evaluated), `set_fooled` `[sets, n]` u8
/// (the source misclassifies the perturbed image), Table 3's per-example arrays
/// ([`Pipeline::per_example_ensembles`]) and Table 4's counts `table4` (its BNN's name
/// and [`Pipeline::per_example_pruning`]). Returns the files written.
pub(super) fn export(
    pipeline: &Pipeline,
    models: &[Evaluated],
    sources: &[Ready],
    table3: (&str, &Ready),
    table4: (&str, Tensor),
    sets: &[PerturbationSet],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReproduceError> {
    let (table4, pruning_correct) = table4;
    let [ensemble_correct, ensemble_probs] = pipeline.per_example_ensembles(table3.1, sets)?;
    let ns = pipeline.cfg.profile.ensemble_ns.clone();
    let ensemble_runs: Vec<i64> = ns
        .iter()
        .map(|&n| pipeline.ensemble_runs_for(n) as i64)
        .collect();
    let counts: Vec<Tensor> = models
        .iter()
        .map(|e| pipeline.per_example_counts(e, sets))
        .collect::<Result<_, _>>()?;
    let runs: Vec<usize> = models.iter().map(|e| e.runs(pipeline)).collect();
    let correct = Tensor::stack(&counts, 0).to_kind(Kind::Uint8);
    let clean = &pipeline.test.images;
    let sources: Vec<_> = sources.iter().map(mlp_of).collect::<Result<_, _>>()?;
    let (rms, fooled): (Vec<Tensor>, Vec<Tensor>) = tch::no_grad(|| {
        sets.iter()
            .zip(sources)
            .map(|(s, src)| {
                let r = &s.images - clean;
                let rms = (r
                    .square()
                    .sum_dim_intlist([1].as_slice(), false, Kind::Float)
                    / IMAGE_DIM as f64)
                    .sqrt();
                let fooled = src
                    .forward(&s.images)
                    .argmax(-1, false)
                    .ne_tensor(&s.labels)
                    .to_kind(Kind::Uint8);
                (rms, fooled)
            })
            .unzip()
    });
    let arrays = [
        ("correct", correct),
        (
            "runs",
            Tensor::from_slice(&runs.iter().map(|r| *r as i64).collect::<Vec<_>>()),
        ),
        ("labels", pipeline.test.labels.shallow_clone()),
        ("set_rms", Tensor::stack(&rms, 0)),
        ("set_fooled", Tensor::stack(&fooled, 0)),
        ("ensemble_correct", ensemble_correct.to_kind(Kind::Uint8)),
        ("ensemble_runs", Tensor::from_slice(&ensemble_runs)),
        ("ensemble_probs", ensemble_probs),
        ("pruning_correct", pruning_correct.to_kind(Kind::Uint8)),
    ];
    let index = PerExampleIndex {
        note: "correct[m, s, i]: how many of model m's runs classify example i of split s correctly (runs[m] of them; 1 for a deterministic net), replaying the runs of Tables 1-2, so that results.json's cell is 100 * mean(correct[m, s]) / runs[m]; splits: validation, test, then the 12 perturbation sets (made on the same test images, so labels is theirs too); set_rms[k, i]: RMS distortion sqrt(|r|^2/784) of set k's perturbation of example i as evaluated; set_fooled[k, i]: 1 where set k's source misclassifies it; ensemble_correct[j, k, i]: how many of Table 3's runs (ensemble_runs[j]) of the ensemble.n_samples[j]-draw ensemble of ensemble.model classify example i of set k correctly, so that Table 3's cell is 100 * mean(ensemble_correct[j, k]) / ensemble_runs[j]; ensemble_probs[k, i]: the largest ensemble's (ensemble.probs_n draws) predictive probabilities on example i of set k in its first run (f16); pruning_correct[r, s, i]: how many of Table 4's pruning.runs runs of pruning.model pruned at pruning.rates[r] classify example i of split s correctly, so that Table 4's cell is 100 * mean(pruning_correct[r, s]) / pruning.runs".into(),
        models: models
            .iter()
            .zip(&runs)
            .map(|(e, r)| ModelEntry {
                name: e.name.to_owned(),
                group: e.group.to_owned(),
                index: e.index,
                runs: *r,
            })
            .collect(),
        splits: pipeline
            .splits_of(sets)
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        sets: sets.iter().map(|s| s.label.clone()).collect(),
        n: pipeline.test.len(),
        ensemble: Some(EnsembleEntry {
            model: table3.0.to_owned(),
            probs_n: ns.iter().copied().max().unwrap_or(1),
            n_samples: ns,
        }),
        pruning: Some(PruningEntry {
            model: table4.to_owned(),
            rates: pipeline.cfg.profile.prune_rates.clone(),
            ensemble: pipeline.cfg.profile.prune_ensemble,
            runs: pipeline.cfg.profile.prune_runs,
            mode: pipeline.cfg.prune_mode_or(PruneMode::Global),
        }),
    };
    write_per_example(out_dir, &arrays, &index)
}

/// What `per_example_seeds.json` says of `per_example_seeds.npz`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedsIndex {
    pub note: String,
    /// Rows of `correct`'s second axis: the λ nets, then the BNNs.
    pub models: Vec<String>,
    /// Each model's single-draw runs per set (1 for a deterministic net).
    pub draws: Vec<usize>,
    /// Training seeds K (the first axis).
    pub train_seeds: usize,
    /// Sets summed over.
    pub sets: usize,
    /// Test images (the last axis).
    pub n: usize,
}

/// Writes the seeds stage's per-example counts as `per_example_seeds.npz` (`correct`
/// `[K, models, n]`: correct runs summed over the 12 sets) and `per_example_seeds.json`
/// into `out_dir`; returns the files written.
pub(super) fn export_seeds(
    counts: &crate::experiment::seeds::SeedCounts,
    n: usize,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReproduceError> {
    let index = SeedsIndex {
        note: "correct[k, m, i]: how many of model m's single-draw runs at training seed k (the seeds study's evaluation: draws[m] runs per set) classify test image i correctly, summed over the 12 perturbation sets (made on the same test images), so that model m's 12-set average at seed k is 100 * mean(correct[k, m]) / (sets * draws[m])".into(),
        models: counts.models.clone(),
        draws: counts.draws.clone(),
        train_seeds: counts.correct.size().first().copied().unwrap_or(0) as usize,
        sets: counts.sets,
        n,
    };
    crate::experiment::per_example_io::write_named(
        out_dir,
        "per_example_seeds",
        &[("correct", counts.correct.shallow_clone())],
        &index,
    )
}
