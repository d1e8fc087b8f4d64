//! Accuracy of models under weight sampling, over repeated runs.

use tch::{Kind, Tensor};

use crate::data::Split;
use crate::model::Classifier;
use crate::model::bayes::BayesMlp;
use crate::model::mlp::Mlp;
use crate::stats::MeanCi;
use crate::train::per_draw_accuracy;

/// Test-time batching: examples per chunk and weight draws per chunk.
#[derive(Debug, Clone, Copy)]
pub struct EvalChunks {
    pub examples: usize,
    pub draws: usize,
}

impl Default for EvalChunks {
    fn default() -> Self {
        Self {
            examples: 10_000,
            draws: 10,
        }
    }
}

/// Accuracy of a deterministic model on `split`, in [0, 1].
pub fn accuracy(mlp: &Mlp, split: &Split, chunks: EvalChunks) -> f64 {
    correct_flags(mlp, split, chunks)
        .sum(Kind::Int64)
        .int64_value(&[]) as f64
        / split.len() as f64
}

/// Per example of `split`, whether the deterministic net classifies it correctly:
/// `[n]` i64 of 0/1.
pub fn correct_flags(mlp: &Mlp, split: &Split, chunks: EvalChunks) -> Tensor {
    tch::no_grad(|| {
        let parts: Vec<Tensor> = split
            .batches(chunks.examples)
            .map(|b| {
                mlp.forward(&b.images)
                    .argmax(-1, false)
                    .eq_tensor(&b.labels)
                    .to_kind(Kind::Int64)
            })
            .collect();
        Tensor::cat(&parts, 0)
    })
}

/// The paper's single-sample protocol (§3.2) as `[k, n]` correctness tensors, one per
/// chunk of at most `chunks.draws` runs: each run is one fresh weight draw for the whole
/// pass over `split`. Draws come from libtorch's generator: seed it first.
fn single_draw_correct(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Vec<Tensor> {
    tch::no_grad(|| {
        let mut out = Vec::new();
        let mut done = 0;
        while done < runs {
            let k = chunks.draws.min(runs - done).max(1);
            let logits = model.sample_logits(&split.images, k);
            out.push(logits.argmax(-1, false).eq_tensor(&split.labels));
            done += k;
        }
        out
    })
}

/// [`single_draw_correct`] as one `[runs, n]` float tensor of 0/1: whether each run
/// (one fresh weight draw) classifies each example correctly.
pub fn single_draw_correct_table(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Tensor {
    Tensor::cat(&single_draw_correct(model, split, runs, chunks), 0).to_kind(Kind::Float)
}

/// [`single_draw_correct`]'s runs' accuracies in [0, 1].
pub fn single_draw_accuracies(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Vec<f64> {
    single_draw_correct(model, split, runs, chunks)
        .iter()
        .flat_map(|correct| {
            let acc = correct
                .to_kind(Kind::Float)
                .mean_dim([-1].as_slice(), false, Kind::Float);
            Vec::<f64>::try_from(acc.to_kind(Kind::Double)).unwrap_or_default()
        })
        .collect()
}

/// Per example of `split`, in how many of [`single_draw_correct`]'s `runs` it is
/// classified correctly: `[n]` i64. After the same seed, the counts' mean over examples
/// divided by `runs` is the mean of [`single_draw_accuracies`].
pub fn single_draw_correct_counts(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Tensor {
    single_draw_correct(model, split, runs, chunks)
        .iter()
        .map(|c| {
            c.to_kind(Kind::Int64)
                .sum_dim_intlist([0].as_slice(), false, Kind::Int64)
        })
        .fold(split.labels.zeros_like(), |acc, c| acc + c)
}

/// Eq. 7 ensembles: `runs` runs, each averaging the softmax of `n` fresh draws; returns
/// each run's accuracy in [0, 1].
pub fn ensemble_accuracies(
    bnn: &BayesMlp,
    split: &Split,
    n: usize,
    runs: usize,
    chunks: EvalChunks,
) -> Vec<f64> {
    ensemble_probs_runs(bnn, split, n, runs, chunks)
        .iter()
        .map(|probs| per_draw_accuracy(&probs.unsqueeze(0), &split.labels).double_value(&[0]))
        .collect()
}

/// The runs of [`ensemble_accuracies`] as predictive distributions: each run's softmax
/// averaged over `n` fresh draws (eq. 7), `[examples, classes]`. Seed libtorch first.
pub fn ensemble_probs_runs(
    bnn: &BayesMlp,
    split: &Split,
    n: usize,
    runs: usize,
    chunks: EvalChunks,
) -> Vec<Tensor> {
    tch::no_grad(|| {
        (0..runs)
            .map(|_| bnn.ensemble_probs(&split.images, n, chunks.draws))
            .collect()
    })
}

/// Per example, in how many of the predictive distributions `probs` (one `[n, classes]`
/// per run) the top class is its label: `[n]` i64.
pub fn correct_counts_of(probs: &[Tensor], labels: &Tensor) -> Tensor {
    probs
        .iter()
        .map(|p| p.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Int64))
        .fold(labels.zeros_like(), |acc, c| acc + c)
}

/// Percent mean and CI of accuracies given as fractions.
pub fn summarize_percent(accuracies: &[f64]) -> Option<MeanCi> {
    MeanCi::from_values(accuracies).map(|m| m.scaled(100.0))
}
