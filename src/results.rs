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
    /// A deterministic control trained with the BNNs' recipe (code protocol).
    Control,
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
/// trained with and its accuracy after the last epoch. Files older than the
/// training-curve figure lack the last four fields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeModelRow {
    pub name: String,
    pub model: String,
    pub key: String,
    pub epochs_run: usize,
    pub final_validation_accuracy: f64,
    pub train_seconds: f64,
    pub recipe: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<ModelGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ModelSpec>,
    /// The epoch whose weights were kept, 1-based into `validation_curve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<usize>,
    /// Validation accuracy after each epoch (fractions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_curve: Option<Vec<f64>>,
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

/// Tables 1–4 of results.json and the sources of the sets their rows are (text and
/// code protocol alike).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tables {
    pub attack_sources: Vec<String>,
    pub table1_clean: Table1,
    pub table2_perturbed: Table2,
    pub table3_ensemble: Table3,
    pub table4_pruning: Table4,
}

impl Tables {
    /// Tables 1, 2, 3 and 4.
    pub fn parts(&self) -> (&Table1, &Table2, &Table3, &Table4) {
        (
            &self.table1_clean,
            &self.table2_perturbed,
            &self.table3_ensemble,
            &self.table4_pruning,
        )
    }
}

/// results.json's `meta`: what made the results, on what, and how long it took. Files
/// written by older versions or by the code protocol lack some fields (`None`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The profile as run, as the version that wrote the file spelled it
    /// (`experiment::Profile` today; older files lack its newer fields).
    pub profile: serde_json::Value,
    /// The code protocol's own settings (`experiment::code_protocol::CodeProfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_profile: Option<serde_json::Value>,
    /// `code` for the code protocol; absent for the text protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub master_seed: u64,
    /// `mnist` or `fashion-mnist` (text protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    pub versions: Versions,
    pub threads: usize,
    pub device: String,
    pub n_validation: usize,
    pub n_test: usize,
    /// Validation images attacked per source (code protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_attacked: Option<usize>,
    /// SHA-256 of each dataset file read.
    pub data_checksums: Vec<String>,
    pub stages: Vec<StageReport>,
    /// The matrix-product rate measured when the run started (GFLOP/s, CPU runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sgemm_gflops: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub wall_seconds: f64,
    /// The command line that makes these results again.
    pub command: String,
}

impl Meta {
    /// The dataset, MNIST where the file predates the option.
    pub fn dataset_name(&self) -> &str {
        self.dataset.as_deref().unwrap_or("mnist")
    }

    /// A field of the profile as run, where the file has it.
    pub fn profile_field(&self, pointer: &str) -> Option<&serde_json::Value> {
        self.profile.pointer(pointer)
    }
}

/// The versions of this crate, tch and libtorch that made the results.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Versions {
    pub bayes_robust: String,
    pub tch: String,
    pub libtorch: String,
}

/// What one stage of `run` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageReport {
    pub stage: String,
    /// Wall time of this run of the stage (small when artifacts were reused).
    pub seconds: f64,
    /// Wall time recorded by the artifacts when they were made.
    pub artifact_seconds: f64,
    pub computed: usize,
    pub reused: usize,
    /// Counted matrix-product FLOPs of the stage's work, made or reused (text
    /// protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flops: Option<f64>,
}

/// The code protocol's multiplier sweep: every evaluation model on every kept set at
/// x + m·r, for each multiplier m.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeSweep {
    pub note: String,
    pub multipliers: Vec<f64>,
    pub models: Vec<SweepRow>,
}

/// One evaluation model of the sweep: its clean accuracy, each set at each multiplier
/// (`sets[m][set]`) and the average over the sets at each multiplier.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SweepRow {
    pub name: String,
    /// `bnn`, `det` or `control` ([`SweepRole::group`]).
    pub group: String,
    /// Absent in files older than it (the report then reads it from the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<SweepRole>,
    pub clean_validation: Cell,
    pub clean_test: Cell,
    pub sets: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

/// What an evaluation model of the code protocol's sweep is: results.json's
/// `sweep.models[].role`, by which the report finds its rows (never by their names).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SweepRole {
    /// A BNN of the ρ_init grid, one fresh draw per run (Tables 1–2, BNN side).
    Bnn {
        rho_init: f64,
    },
    /// A net of the λ grid (Tables 1–2, deterministic side).
    Deterministic {
        lambda: f64,
    },
    /// The deterministic net with the BNN's recipe and μ initialisation.
    MatchedInit,
    /// The deterministic net with the BNN's recipe and Glorot initialisation.
    MatchedGlorot,
    /// The softmax average of that many matched-recipe Glorot nets.
    DeepEnsemble {
        members: usize,
    },
    /// The λ = 0 net with test-time weight noise of the learned σ.
    NoisyDeterministic,
    /// The matched-init net with the same weight noise.
    NoisyMatchedInit,
    PosteriorMean {
        rho_init: f64,
    },
    FrozenSample {
        rho_init: f64,
    },
}

impl SweepRole {
    /// Its `group` in results.json: `bnn` and `det` are the rows of Tables 1–2, every
    /// other model is a `control`.
    pub fn group(self) -> &'static str {
        match self {
            SweepRole::Bnn { .. } => "bnn",
            SweepRole::Deterministic { .. } => "det",
            _ => "control",
        }
    }
}
