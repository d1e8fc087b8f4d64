//! `--per-example` under the code protocol: each evaluation model's per-example counts
//! of correct runs on every split of its sweep (the clean validation and test images,
//! then each kept set at each multiplier), replaying the sweep's own seeds and draws, so
//! that every sweep cell (Tables 1–2 among them) is exactly mean(counts) / runs; with
//! each set's per-attacked-example success and distortion. `run` stacks them into
//! `per_example.npz` and `per_example.json` beside `results.json` (docs/PER_EXAMPLE.md).
//!
//! Each model's counts are a job of the plan (`keys::per_example_counts` of its sweep's
//! key, cached beside the sweep).

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Kind, Tensor};

use super::{CodePipeline, EvalModel, Evaluated, KeptSet, deep_ensemble_probs, set_keys};
use crate::data::Split;
use crate::eval::{self, EvalChunks};
use crate::experiment::keys;
use crate::experiment::per_example_io::{cached_counts, write_per_example};
use crate::experiment::stage::ReproduceError;
use crate::results::SweepRole;

impl Evaluated<'_> {
    /// Per example of `split`, in how many of the runs of [`Evaluated::accuracies`] it
    /// is classified correctly: `[n]` i64. After the same seed, mean(counts) /
    /// [`Evaluated::runs_counted`] is the mean of those accuracies.
    pub fn correct_counts(&self, split: &Split, runs: usize, chunks: EvalChunks) -> Tensor {
        let hits = |scores: &Tensor| {
            scores
                .argmax(-1, false)
                .eq_tensor(&split.labels)
                .to_kind(Kind::Int64)
        };
        tch::no_grad(|| match self {
            Evaluated::Det(mlp) => eval::correct_flags(mlp, split, chunks),
            Evaluated::Draws(bnn) => eval::single_draw_correct_counts(*bnn, split, runs, chunks),
            Evaluated::Ensemble(bnn, n) => eval::correct_counts_of(
                &eval::ensemble_probs_runs(bnn, split, *n, runs, chunks),
                &split.labels,
            ),
            Evaluated::Mode(bnn, mode) => {
                hits(&bnn.forward(&split.images, 1, *mode, false).logits).squeeze_dim(0)
            }
            Evaluated::DeepEnsemble(members) => hits(&deep_ensemble_probs(members, &split.images)),
        })
    }

    /// The runs behind one accuracy: `runs` for a sampled model, 1 otherwise.
    pub fn runs_counted(&self, runs: usize) -> usize {
        match self {
            Evaluated::Draws(_) | Evaluated::Ensemble(..) => runs,
            Evaluated::Det(_) | Evaluated::Mode(..) | Evaluated::DeepEnsemble(_) => 1,
        }
    }
}

/// What `per_example.json` says of the arrays of a code run's `per_example.npz`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CodePerExampleIndex {
    pub note: String,
    pub protocol: String,
    /// Rows of `correct`, in the order of results.json's `sweep.models`.
    pub models: Vec<CodeModelEntry>,
    /// Column ranges of `correct` and `labels`, in sweep order.
    pub splits: Vec<SplitEntry>,
    /// Rows of `set_success` and `set_rms`: the sets' sources.
    pub sets: Vec<String>,
    /// The sweep's multipliers m (results.json's `sweep.multipliers`).
    pub multipliers: Vec<f64>,
    /// Examples attacked per set (the columns of `set_success` and `set_rms`).
    pub n_attacked: usize,
}

/// One row of `correct`: a model of the sweep.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CodeModelEntry {
    pub name: String,
    /// `bnn`, `det` or `control`, as in results.json's `sweep.models[].group`.
    pub group: String,
    pub role: SweepRole,
    /// Runs counted (1 for a model with fixed weights).
    pub runs: usize,
}

/// A split's columns `start..end` of `correct` and `labels`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SplitEntry {
    /// `validation`, `test`, or `<set source>/m=<m>`.
    pub name: String,
    /// The set's index into `sets` and its multiplier; none for a clean split.
    pub set: Option<usize>,
    pub multiplier: Option<f64>,
    pub start: usize,
    pub end: usize,
}

impl CodePipeline<'_> {
    /// One evaluation model's per-example counts on every split of its sweep
    /// ([`CodePipeline::sweep_splits`] order), concatenated: `[columns]` i64, cached.
    pub(super) fn per_example_counts(
        &self,
        e: &EvalModel,
        sets: &[KeptSet],
        ms: &[f64],
    ) -> Result<Tensor, ReproduceError> {
        let sweep = self
            .eval_keys()
            .sweep(&e.name, &e.keys, &set_keys(sets), ms);
        let key = keys::per_example_counts(&e.name, &sweep);
        let runs = self.cp.runs;
        let meta = json!({ "model": e.keys, "runs": e.model.runs_counted(runs) });
        cached_counts(&self.evals_dir, &key, &meta, || {
            let counts: Vec<Tensor> = self
                .sweep_splits(sets, ms)
                .map(|s| {
                    self.seed_sweep(&e.name, &s.tag);
                    e.model.correct_counts(&s.split, runs, self.chunks)
                })
                .collect();
            Ok(Tensor::cat(&counts, 0))
        })
    }
}

/// The splits' column ranges and their labels, concatenated, in sweep order.
fn split_entries(
    pipeline: &CodePipeline,
    sets: &[KeptSet],
    ms: &[f64],
) -> (Vec<SplitEntry>, Tensor) {
    let mut start = 0;
    let (entries, labels): (Vec<SplitEntry>, Vec<Tensor>) = pipeline
        .sweep_splits(sets, ms)
        .map(|s| {
            let end = start + s.split.len();
            let entry = SplitEntry {
                name: s.tag,
                set: s.set.map(|(k, _)| k),
                multiplier: s.set.map(|(_, m)| m),
                start,
                end,
            };
            start = end;
            (entry, s.split.labels)
        })
        .unzip();
    (entries, Tensor::cat(&labels, 0))
}

/// Writes `per_example.npz` and `per_example.json` into `out_dir`: `correct` `[models,
/// columns]` u8 (correct runs), `runs` `[models]`, `labels` `[columns]`, `set_success`
/// `[sets, n_attacked]` u8 and `set_rms` `[sets, n_attacked]` f32. Returns the files.
pub(super) fn export(
    pipeline: &CodePipeline,
    models: &[EvalModel],
    sets: &[KeptSet],
    ms: &[f64],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReproduceError> {
    let counts: Vec<Tensor> = models
        .iter()
        .map(|e| pipeline.per_example_counts(e, sets, ms))
        .collect::<Result<_, _>>()?;
    let runs: Vec<usize> = models
        .iter()
        .map(|e| e.model.runs_counted(pipeline.cp.runs))
        .collect();
    let (splits, labels) = split_entries(pipeline, sets, ms);
    let stack = |f: fn(&KeptSet) -> &Tensor| {
        Tensor::stack(
            &sets
                .iter()
                .map(|s| f(s).to_device(tch::Device::Cpu))
                .collect::<Vec<_>>(),
            0,
        )
    };
    let arrays = [
        ("correct", Tensor::stack(&counts, 0).to_kind(Kind::Uint8)),
        (
            "runs",
            Tensor::from_slice(&runs.iter().map(|r| *r as i64).collect::<Vec<_>>()),
        ),
        ("labels", labels),
        ("set_success", stack(|s| &s.success)),
        ("set_rms", stack(|s| &s.rms)),
    ];
    let index = CodePerExampleIndex {
        note: "correct[m, j]: how many of model m's runs (runs[m]; 1 for fixed weights) classify column j correctly, replaying the code protocol's sweep, so that a sweep cell of results.json is 100 * mean(correct[m, start:end]) / runs[m] over its split's columns (splits); labels[j] is column j's label; a set's columns are its kept examples (the attacked validation images where set_success is 1, in order) at x + m r; set_success[k, i] and set_rms[k, i]: whether the targeted attack of set k succeeded on attacked image i, and its perturbation's RMS distortion sqrt(|r|^2/784) at m = 1".into(),
        protocol: "code".into(),
        models: models
            .iter()
            .zip(&runs)
            .map(|(e, r)| CodeModelEntry {
                name: e.name.clone(),
                group: e.role.group().to_owned(),
                role: e.role,
                runs: *r,
            })
            .collect(),
        splits,
        sets: sets.iter().map(|s| s.label.clone()).collect(),
        multipliers: ms.to_vec(),
        n_attacked: sets.first().map_or(0, |s| s.n_attacked),
    };
    write_per_example(out_dir, &arrays, &index)
}
