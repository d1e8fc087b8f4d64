//! The strength study's per-example counts (`per_example_strength.npz`): every model of
//! the study (λ nets, BNNs, the matched-init control) at every training seed and study
//! point, per test image, so that the verdicts' CI over seeds × images covers the
//! strength axis too. Made from the study's cached per-image results: no new job.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::ReproduceError;

/// One point of the study: its name and each set's mean distortion there (for the
/// paper's per-set bound).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StudyPoint {
    pub name: String,
    pub set_distortions: Vec<f64>,
}

/// What `per_example_strength.json` says of `per_example_strength.npz`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StrengthCountsIndex {
    pub note: String,
    /// The third axis of `correct`.
    pub models: Vec<String>,
    /// Each model's single-draw runs per set (1 for a deterministic net).
    pub draws: Vec<usize>,
    /// Sets summed over.
    pub sets: usize,
    /// The first axis.
    pub points: Vec<StudyPoint>,
    /// Training seeds K (the second axis).
    pub train_seeds: usize,
    /// Test images (the last axis).
    pub n: usize,
}

/// The counts and their index.
pub struct StrengthCounts {
    pub index: StrengthCountsIndex,
    /// `[points, K, models, n]` u8: correct runs summed over the sets.
    pub correct: Tensor,
}

impl StrengthCounts {
    /// From `per_image[model][seed]` (`[points, n]` fractions of runs correct, averaged
    /// over `sets` sets), each model's `draws`, and the points.
    pub fn of(
        models: Vec<String>,
        draws: Vec<usize>,
        points: Vec<StudyPoint>,
        per_image: &[Vec<&Tensor>],
        sets: usize,
    ) -> Result<Self, ReproduceError> {
        let k = per_image.iter().map(Vec::len).min().unwrap_or(0);
        let n = per_image
            .first()
            .and_then(|s| s.first())
            .map_or(0, |t| t.size().last().copied().unwrap_or(0));
        if k == 0 || models.len() != per_image.len() || draws.len() != models.len() {
            return Err(ReproduceError::Write {
                path: "per_example_strength.npz".into(),
                reason: format!(
                    "{} models, {} draw counts, {k} seeds: nothing to write",
                    models.len(),
                    draws.len()
                ),
            });
        }
        // [models][seeds] of [points, n] → [points, seeds, models, n].
        let by_model: Vec<Tensor> = per_image
            .iter()
            .zip(&draws)
            .map(|(seeds, d)| {
                let stacked = Tensor::stack(&seeds[..k], 1).to_kind(Kind::Double);
                (stacked * (sets * d) as f64).round()
            })
            .collect();
        let max = sets * draws.iter().copied().max().unwrap_or(1);
        let correct =
            Tensor::stack(&by_model, 2).to_kind(crate::experiment::per_example_io::count_kind(max));
        Ok(Self {
            index: StrengthCountsIndex {
                note: "correct[p, k, m, i]: how many of model m's single-draw runs at training seed k (draws[m] per set) classify test image i correctly at study point p, summed over the 12 sets (the strength study across seeds: per-example cap, kappa = 0, each set at its m); model m's 12-set average there is 100 * mean(correct[p, k, m]) / (sets * draws[m]); points[p].set_distortions are each set's mean RMS distortion at that point".into(),
                models,
                draws,
                sets,
                points,
                train_seeds: k,
                n: n as usize,
            },
            correct,
        })
    }

    /// Writes `per_example_strength.npz` and `.json` into `out_dir`.
    pub fn write(&self, out_dir: &Path) -> Result<Vec<PathBuf>, ReproduceError> {
        crate::experiment::per_example_io::write_named(
            out_dir,
            "per_example_strength",
            &[("correct", self.correct.shallow_clone())],
            &self.index,
        )
    }
}
