//! `run --per-example`: each evaluation model's per-example results on every split of
//! Tables 1–2, and each perturbation set's per-example distortion and success, written
//! beside `results.json` as `per_example.npz` (numpy reads it directly) with
//! `per_example.json` saying what each axis is. docs/PER_EXAMPLE.md has a Python example
//! that recomputes a Table 2 cell and a paired margin from them.
//!
//! Each model's counts are a job of the plan (`keys::per_example_counts`, cached beside
//! its evaluation); the export stacks them and measures the sets, when `run` assembles
//! the report. The counts replay the Table 1–2 evaluations' own seeds and draws
//! ([`eval::single_draw_correct_counts`]), so a cell is exactly mean(counts) / runs.

use std::path::{Path, PathBuf};

use serde_json::json;
use tch::{Kind, Tensor};

use super::{GridModel, PerturbationSet, Pipeline, Ready, ReproduceError, TrainedGrid, mlp_of};
use crate::data::IMAGE_DIM;
use crate::eval;
use crate::experiment::keys;
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
        key.write_beside(&self.evals_dir)?;
        let key = key.id;
        if self
            .evals_dir
            .read_json::<serde_json::Value>(&key)?
            .is_some()
        {
            let tensors = self.evals_dir.read_tensors(&key)?;
            return tensors
                .into_iter()
                .find(|(n, _)| n == "counts")
                .map(|(_, t)| t)
                .ok_or(ReproduceError::MissingTensor {
                    key: key.clone(),
                    name: "counts",
                });
        }
        let runs = e.runs(self);
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
        let counts = Tensor::stack(&counts, 0).to_device(tch::Device::Cpu);
        self.evals_dir.write_with_tensors(
            &key,
            &[("counts", &counts)],
            &json!({ "model": e.ready.key, "runs": runs }),
        )?;
        Ok(counts)
    }
}

/// Writes `per_example.npz` and `per_example.json` into `out_dir`: `correct` `[models,
/// splits, n]` u8 (correct runs), `runs` `[models]`, `labels` `[n]`, `set_rms` `[sets,
/// n]` f32 (√(‖r‖²/784) of each perturbation as evaluated) and `set_fooled` `[sets, n]` u8
/// (the source misclassifies the perturbed image). Returns the files written.
pub(super) fn export(
    pipeline: &Pipeline,
    models: &[Evaluated],
    sources: &[Ready],
    sets: &[PerturbationSet],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ReproduceError> {
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
    let cpu = |t: Tensor| t.to_device(tch::Device::Cpu);
    let arrays = [
        ("correct", cpu(correct)),
        (
            "runs",
            Tensor::from_slice(&runs.iter().map(|r| *r as i64).collect::<Vec<_>>()),
        ),
        ("labels", cpu(pipeline.test.labels.shallow_clone())),
        ("set_rms", cpu(Tensor::stack(&rms, 0))),
        ("set_fooled", cpu(Tensor::stack(&fooled, 0))),
    ];
    let err = |path: &Path, e: String| ReproduceError::Write {
        path: path.to_owned(),
        reason: e,
    };
    let npz = out_dir.join("per_example.npz");
    let tmp = out_dir.join(format!(".per_example.npz.tmp{}", std::process::id()));
    Tensor::write_npz(&arrays, &tmp).map_err(|e| err(&npz, e.to_string()))?;
    std::fs::rename(&tmp, &npz).map_err(|e| err(&npz, e.to_string()))?;
    let index = PerExampleIndex {
        note: "correct[m, s, i]: how many of model m's runs classify example i of split s correctly (runs[m] of them; 1 for a deterministic net), replaying the runs of Tables 1-2, so that results.json's cell is 100 * mean(correct[m, s]) / runs[m]; splits: validation, test, then the 12 perturbation sets (made on the same test images, so labels is theirs too); set_rms[k, i]: RMS distortion sqrt(|r|^2/784) of set k's perturbation of example i as evaluated; set_fooled[k, i]: 1 where set k's source misclassifies it".into(),
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
    };
    let json_path = out_dir.join("per_example.json");
    let text = serde_json::to_string_pretty(&index).map_err(|e| err(&json_path, e.to_string()))?;
    crate::fsio::write_atomic(&json_path, text.as_bytes())
        .map_err(|e| err(&json_path, e.to_string()))?;
    Ok(vec![npz, json_path])
}
