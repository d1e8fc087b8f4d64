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
    tch::no_grad(|| {
        let correct: i64 = split
            .batches(chunks.examples)
            .map(|b| {
                mlp.forward(&b.images)
                    .argmax(-1, false)
                    .eq_tensor(&b.labels)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
            .sum();
        correct as f64 / split.len() as f64
    })
}

/// The paper's single-sample protocol (§3.2): `runs` passes over `split`, each with
/// one fresh weight draw for the whole pass; returns each run's accuracy in [0, 1].
/// Draws come from libtorch's generator: seed it first for reproducible runs.
pub fn single_draw_accuracies(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Vec<f64> {
    tch::no_grad(|| {
        let mut out = Vec::with_capacity(runs);
        let mut done = 0;
        while done < runs {
            let k = chunks.draws.min(runs - done).max(1);
            // Each of the k draws covers the whole split, so all examples of a run
            // share one weight sample.
            let logits = model.sample_logits(&split.images, k);
            let acc = per_draw_accuracy(&logits, &split.labels);
            out.extend(Vec::<f64>::try_from(acc.to_kind(Kind::Double)).unwrap_or_default());
            done += k;
        }
        out
    })
}

/// Per example of `split`, whether the deterministic net classifies it correctly:
/// `[n]` i64 of 0/1 (the per-example form of [`accuracy`]).
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

/// Per example of `split`, in how many of `runs` single-draw passes it is classified
/// correctly: `[n]` i64. It draws weights exactly as [`single_draw_accuracies`] does, so
/// after the same seed the counts' mean over examples, divided by `runs`, is the mean of
/// those runs' accuracies.
pub fn single_draw_correct_counts(
    model: &impl Classifier,
    split: &Split,
    runs: usize,
    chunks: EvalChunks,
) -> Tensor {
    tch::no_grad(|| {
        let mut counts = split.labels.zeros_like();
        let mut done = 0;
        while done < runs {
            let k = chunks.draws.min(runs - done).max(1);
            let logits = model.sample_logits(&split.images, k);
            counts += logits
                .argmax(-1, false)
                .eq_tensor(&split.labels)
                .to_kind(Kind::Int64)
                .sum_dim_intlist([0].as_slice(), false, Kind::Int64);
            done += k;
        }
        counts
    })
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
    tch::no_grad(|| {
        (0..runs)
            .map(|_| {
                let probs = bnn.ensemble_probs(&split.images, n, chunks.draws);
                per_draw_accuracy(&probs.unsqueeze(0), &split.labels).double_value(&[0])
            })
            .collect()
    })
}

/// Percent mean and CI of accuracies given as fractions.
pub fn summarize_percent(accuracies: &[f64]) -> Option<MeanCi> {
    MeanCi::from_values(accuracies).map(|m| m.scaled(100.0))
}
