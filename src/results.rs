//! Tables 1–4, the perturbation sets and the trained models of results.json as types,
//! shared by the protocols that write them
//! (`experiment::reproduce`, `experiment::code_protocol`) and by whoever reads them.
//! Every cell is a percentage with its 95% CI over runs ([`MeanCi`], `{mean, ci95,
//! runs}`), or `null` where no run was made. The JSON is the shape every committed
//! results.json has had (tests/report.rs round-trips them).

use crate::model::bayes::PruneMode;
use crate::model::checkpoint::ModelSpec;
use crate::stats::MeanCi;

/// One cell of a table: percent accuracy with its CI, or none.
pub type Cell = Option<MeanCi>;

/// Table 1: clean validation and test accuracy of the BNNs (by ρ_init) and the
/// deterministic nets (by λ).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table1 {
    pub bnn: BnnClean,
    pub deterministic: DetClean,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnnClean {
    pub rho_init: Vec<f64>,
    pub validation: Vec<Cell>,
    pub test: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetClean {
    pub lambda: Vec<f64>,
    pub validation: Vec<Cell>,
    pub test: Vec<Cell>,
}

/// Table 2: accuracy on each perturbation set (`rows[set][model]`) and each model's
/// average over the sets (the per-run average's CI).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table2 {
    /// How the sets were evaluated, where the protocol says (the code protocol's
    /// multipliers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub bnn: BnnPerturbed,
    pub deterministic: DetPerturbed,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnnPerturbed {
    pub rho_init: Vec<f64>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetPerturbed {
    pub lambda: Vec<f64>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

/// Table 3: the Table 3 BNN's N-draw ensembles (`n_samples`, each cell over `runs`
/// runs) on each set (`rows[set][n]`) and their average over the sets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table3 {
    pub note: String,
    pub n_samples: Vec<usize>,
    pub runs: Vec<usize>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
    /// The same cells over the paper's run count, max(100/N, 1) (text protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paper_protocol: Option<PaperProtocol>,
}

/// Table 3's cells as the paper counts runs: `runs[n]` runs of each N-draw ensemble,
/// percent means without CIs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PaperProtocol {
    pub runs: Vec<usize>,
    pub rows: Vec<Vec<f64>>,
    pub average: Vec<f64>,
}

/// Table 4: the Table 4 BNN pruned by SNR at each rate (`rate_percent`), its ensemble's
/// clean accuracy, its accuracy on each set (`rows[set][rate]`) and the average.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table4 {
    pub note: String,
    pub mode: PruneMode,
    pub rate_percent: Vec<f64>,
    /// Weights pruned at each rate (global ranking, text protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_weights: Option<Vec<usize>>,
    /// Entries pruned in each tensor at each rate (per-tensor ranking, code protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_per_tensor: Option<Vec<Vec<usize>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_histogram: Option<SnrHistogram>,
    pub clean_validation: Vec<Cell>,
    pub clean_test: Vec<Cell>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

/// The pruned BNN's log10 SNR (|μ|/σ) of every weight in 40 bins, and the threshold of
/// each pruning rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SnrHistogram {
    pub log10_edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub log10_thresholds: Vec<f64>,
}

/// A text-protocol perturbation set as evaluated: the min-norm attack's set against one
/// source under the distortion budget, and the attack's r before it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SetRow {
    pub source: String,
    pub n: i64,
    pub mean_distortion: f64,
    /// The fraction of the source's predictions the set changes.
    pub success_rate: f64,
    pub attack_seconds: f64,
    pub uncapped_distortion: f64,
    pub uncapped_success_rate: f64,
    /// The fraction of perturbations the per-example cap scaled down.
    pub capped_fraction: f64,
}

/// A code-protocol targeted set: the `n` of `n_attacked` validation images whose
/// attack succeeded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetedSetRow {
    pub source: String,
    pub n: usize,
    pub n_attacked: usize,
    pub kept_fraction: f64,
    pub mean_distortion: f64,
    pub attack_seconds: f64,
}

/// Which part of the grid a trained model belongs to (results.json's `models[].group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelGroup {
    /// A perturbation source (§3.3).
    Source,
    /// A deterministic net of the λ grid (eq. 6).
    Deterministic,
    /// A BNN of the ρ_init grid.
    Bnn,
}

/// A trained model of the text protocol and its training with early stopping.
/// Files older than the training-curve figure lack the last three fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelRow {
    /// What it is (`mlp FC-10 lambda=0`).
    pub model: String,
    /// Its checkpoint's key.
    pub key: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub train_seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ModelGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ModelSpec>,
    /// Validation accuracy after each epoch (fractions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_curve: Option<Vec<f64>>,
}

/// A trained model of the code protocol: its stable name, the notebook recipe it was
/// trained with and its accuracy after the last epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeModelRow {
    pub name: String,
    pub model: String,
    pub key: String,
    pub epochs_run: usize,
    pub final_validation_accuracy: f64,
    pub train_seconds: f64,
    pub recipe: serde_json::Value,
}

/// One family's clean cells: (validation, test), one per model.
pub type CleanCells = (Vec<Cell>, Vec<Cell>);

/// One family's Table 2 part: (rows `[set][model]`, each model's average).
pub type PerturbedCells = (Vec<Vec<Cell>>, Vec<Cell>);

impl Table1 {
    /// The table of the BNNs `rho_init` and the nets `lambda`.
    pub fn new(rho_init: &[f64], lambda: &[f64], bnn: CleanCells, det: CleanCells) -> Self {
        Self {
            bnn: BnnClean {
                rho_init: rho_init.to_vec(),
                validation: bnn.0,
                test: bnn.1,
            },
            deterministic: DetClean {
                lambda: lambda.to_vec(),
                validation: det.0,
                test: det.1,
            },
        }
    }
}

impl Table2 {
    /// The table of the BNNs `rho_init` and the nets `lambda`.
    pub fn new(
        note: Option<String>,
        rho_init: &[f64],
        lambda: &[f64],
        bnn: PerturbedCells,
        det: PerturbedCells,
    ) -> Self {
        Self {
            note,
            bnn: BnnPerturbed {
                rho_init: rho_init.to_vec(),
                rows: bnn.0,
                average: bnn.1,
            },
            deterministic: DetPerturbed {
                lambda: lambda.to_vec(),
                rows: det.0,
                average: det.1,
            },
        }
    }
}

/// Each model's per-set cells `sets[model][set]`, as Table 2's rows `[set][model]`.
pub fn rows_by_set(sets: &[Vec<Cell>]) -> Vec<Vec<Cell>> {
    let n_sets = sets.first().map_or(0, Vec::len);
    (0..n_sets)
        .map(|i| sets.iter().map(|model| model[i]).collect())
        .collect()
}

/// Calibration and detection of the evaluation models (text protocol): what was
/// measured, and one row per model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub note: String,
    pub rows: Vec<CalibrationRow>,
}

/// Calibration and detection of one model: ECE and NLL on the clean test set and on
/// every perturbation set, and the AUROC of uncertainty scores separating each set's
/// perturbed images (positives) from the clean test images (negatives). Each `*_ci` is
/// a 95% percentile bootstrap interval over the test images (a perturbed image is
/// resampled with its clean original, so the set averages are paired); `None` in
/// artifacts made before them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationRow {
    pub model: String,
    pub clean_ece: f64,
    pub clean_nll: f64,
    pub sets_ece: Vec<f64>,
    pub sets_nll: Vec<f64>,
    /// Predictive entropy as the score.
    pub sets_auroc_entropy: Vec<f64>,
    /// Mutual information as the score (sampled models only).
    pub sets_auroc_mi: Option<Vec<f64>>,
    #[serde(default)]
    pub clean_ece_ci: Option<[f64; 2]>,
    #[serde(default)]
    pub clean_nll_ci: Option<[f64; 2]>,
    /// Intervals of the averages over the sets.
    #[serde(default)]
    pub sets_ece_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    pub sets_nll_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    pub sets_auroc_entropy_mean_ci: Option<[f64; 2]>,
    #[serde(default)]
    pub sets_auroc_mi_mean_ci: Option<[f64; 2]>,
}

/// The learned weight σ of every BNN: per layer, the `quantiles` of softplus(ρ) over
/// its weights; the code protocol adds the weight-noise controls' σ.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sigmas {
    pub quantiles: Vec<f64>,
    pub bnns: Vec<BnnSigmas>,
    /// Per layer, the σ of the code protocol's weight-noise controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_sigmas: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_note: Option<String>,
}

/// One BNN's σ quantiles, `layers[layer][quantile]`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnnSigmas {
    pub model: String,
    pub layers: Vec<Vec<f64>>,
}
