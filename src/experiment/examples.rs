//! The data of the perturbation grid figure: the first few images of one set per
//! perturbation source family, clean and perturbed, with the source's prediction on
//! each and the perturbation's L2 norm, written beside `results.json` as
//! `perturbation_examples.json` (so the report draws the figure without `runs/`).

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::fsio::write_atomic;
use crate::model::checkpoint::ModelSpec;
use crate::model::mlp::Mlp;

#[derive(Debug, thiserror::Error)]
#[error("perturbation examples {path}: {reason}")]
pub struct ExamplesError {
    pub path: PathBuf,
    pub reason: String,
}

/// The file the examples go to, beside `results.json`.
pub const EXAMPLES_FILE: &str = "perturbation_examples.json";
/// Images shown per set.
pub const EXAMPLES_PER_SET: usize = 4;

/// One example: a clean image, its perturbed version x' (as evaluated, 784 values
/// each, row-major 28 × 28) and what the source predicts for each.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// Its row in the set (the test index for the text protocol; the kept example's
    /// rank for the code protocol).
    pub index: usize,
    pub label: i64,
    pub clean: Vec<f32>,
    pub perturbed: Vec<f32>,
    pub clean_prediction: i64,
    pub perturbed_prediction: i64,
    /// ‖x' − x‖₂.
    pub l2: f64,
}

/// The examples of one perturbation set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExampleSet {
    /// The source the set was made against, as results.json names it.
    pub source: String,
    pub examples: Vec<Example>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PerturbationExamples {
    /// `text` or `code`.
    pub protocol: String,
    /// What x' is (the text protocol: the budgeted, clipped set; the code protocol:
    /// the kept examples at m = 1).
    pub note: String,
    pub sets: Vec<ExampleSet>,
}

impl ExampleSet {
    /// The first `n` examples of `clean` and `perturbed` ([N, 784] each), judged by
    /// `source` in one batch.
    pub fn first(
        source_name: &str,
        source: &Mlp,
        clean: &Tensor,
        perturbed: &Tensor,
        labels: &Tensor,
        n: usize,
    ) -> Self {
        let n = n.min(clean.size()[0] as usize) as i64;
        let (x, xp, y) = (
            clean.narrow(0, 0, n),
            perturbed.narrow(0, 0, n),
            labels.narrow(0, 0, n),
        );
        let _guard = tch::no_grad_guard();
        let pred = |t: &Tensor| -> Vec<i64> {
            Vec::<i64>::try_from(
                &source
                    .forward(t)
                    .argmax(-1, false)
                    .to_device(tch::Device::Cpu),
            )
            .unwrap_or_default()
        };
        let (p_clean, p_pert) = (pred(&x), pred(&xp));
        let l2: Vec<f64> = Vec::try_from(
            &(&xp - &x)
                .to_kind(Kind::Double)
                .norm_scalaropt_dim(2, [1], false)
                .to_device(tch::Device::Cpu),
        )
        .unwrap_or_default();
        let rows = |t: &Tensor| -> Vec<Vec<f32>> {
            Vec::<Vec<f32>>::try_from(&t.to_kind(Kind::Float).to_device(tch::Device::Cpu))
                .unwrap_or_default()
        };
        let labels: Vec<i64> = Vec::try_from(&y.to_device(tch::Device::Cpu)).unwrap_or_default();
        let examples = rows(&x)
            .into_iter()
            .zip(rows(&xp))
            .enumerate()
            .map(|(i, (clean, perturbed))| Example {
                index: i,
                label: labels[i],
                clean,
                perturbed,
                clean_prediction: p_clean[i],
                perturbed_prediction: p_pert[i],
                l2: l2[i],
            })
            .collect();
        Self {
            source: source_name.to_owned(),
            examples,
        }
    }
}

/// One perturbation set of a run, as the examples read it.
pub struct SourceSet<'a> {
    pub spec: &'a ModelSpec,
    /// The set's source, as results.json names it.
    pub label: &'a str,
    pub source: &'a Mlp,
    /// Clean and perturbed images ([N, 784]) and their labels.
    pub clean: Tensor,
    pub perturbed: Tensor,
    pub labels: &'a Tensor,
}

impl PerturbationExamples {
    /// The first [`EXAMPLES_PER_SET`] examples of each set whose source has λ = 0 (one
    /// per source family).
    pub fn of_lambda_zero_sets<'a>(
        protocol: &str,
        note: &str,
        sets: impl Iterator<Item = SourceSet<'a>>,
    ) -> Self {
        let sets = sets
            .filter(|s| matches!(s.spec, ModelSpec::Mlp { lambda, .. } if *lambda == 0.0))
            .map(|s| {
                ExampleSet::first(
                    s.label,
                    s.source,
                    &s.clean,
                    &s.perturbed,
                    s.labels,
                    EXAMPLES_PER_SET,
                )
            })
            .collect();
        Self {
            protocol: protocol.to_owned(),
            note: note.to_owned(),
            sets,
        }
    }

    /// Writes `perturbation_examples.json` into `dir` (atomically); returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ExamplesError> {
        let path = dir.join(EXAMPLES_FILE);
        let err = |reason: String| ExamplesError {
            path: path.clone(),
            reason,
        };
        let text = serde_json::to_vec(self).map_err(|e| err(e.to_string()))?;
        write_atomic(&path, &text).map_err(|e| err(e.to_string()))?;
        Ok(path)
    }

    /// Reads `dir/perturbation_examples.json`, or `None` if the run wrote none.
    pub fn read(dir: &Path) -> Result<Option<Self>, ExamplesError> {
        let path = dir.join(EXAMPLES_FILE);
        let err = |reason: String| ExamplesError {
            path: path.clone(),
            reason,
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| err(format!("corrupt ({e})"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e.to_string())),
        }
    }
}
