//! The paper's experimental grid, its profiles, and the resumable reproduction of
//! Tables 1–4 ([`reproduce`]).

pub mod cache;
pub mod code_protocol;
pub mod examples;
pub mod executor;
pub mod flops;
pub mod keys;
mod per_example_io;
pub mod plan;
pub mod reproduce;
pub mod seeds;
pub mod slurm;
pub mod stage;
pub mod strength;
pub mod whitebox;
pub mod whitebox_targets;

use crate::attack::MinNormAttack;
use crate::model::Arch;

/// The paper's λ grid (eq. 6) and its labels in `paper_tables.json`.
pub const LAMBDAS: [(f64, &str); 4] = [(0.0, "0"), (1e-4, "1e-4"), (1e-2, "1e-2"), (1.0, "1")];
/// The paper's ρ_init grid (§3.2).
pub const RHO_INITS: [f64; 7] = [-30.0, -10.0, -4.0, -3.0, -2.5, -2.0, -1.5];
/// The architectures of the perturbation sources (§3.3).
pub const SOURCE_ARCHS: [&[usize]; 3] = [&[], &[200, 200], &[1200, 1200]];
/// The BNN of Table 3 (the paper: its N = 1 column matches ρ_init = −3).
pub const TABLE3_RHO: f64 = -3.0;
/// The BNN of Table 4 (ρ_init = −2, as the authors' code uses).
pub const TABLE4_RHO: f64 = -2.0;

/// How much work a reproduction does. `paper` is the paper's protocol; `seeds` is the
/// same with 5 training seeds of every evaluation model; `short` is the
/// same protocol on a budget of about half an hour on 2 cores (the Fashion-MNIST
/// report's); `quick` does every table cell with far less work, for tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub name: String,
    /// Epoch budget of every model (early stopping with patience 5 usually ends sooner).
    pub max_epochs: usize,
    pub attack: MinNormAttack,
    /// Examples per attack batch.
    pub attack_chunk: usize,
    /// Evaluate (and attack) only the first this many validation and test images.
    pub eval_examples: Option<usize>,
    /// Single-draw passes per BNN and set (the paper: 100).
    pub single_draw_runs: usize,
    /// Table 3's ensemble sizes N and the runs made for each.
    pub ensemble_ns: Vec<usize>,
    pub ensemble_runs: usize,
    /// Table 4's pruning rates, the ensemble size, and runs per rate.
    pub prune_rates: Vec<f64>,
    pub prune_ensemble: usize,
    pub prune_runs: usize,
    /// Weight draws evaluated together (bounds memory).
    pub draw_chunk: usize,
    /// Per-example distortion budget √(‖r‖²/784) of the perturbation sets (the paper
    /// keeps every set's mean below 0.10); larger r are scaled back onto it.
    pub max_rms_distortion: Option<f64>,
    /// The white-box stage's budget (`reproduce --whitebox`).
    pub whitebox: whitebox::WhiteboxProfile,
    /// Gradient-masking checks run beside the white-box stage (`None`: none).
    #[serde(default)]
    pub whitebox_checks: Option<whitebox::WhiteboxChecks>,
    /// White-box curves for the other six BNNs of the ρ_init grid too: one draw, and
    /// the deployed ensemble attacked through EOT over this many draws (`None`: the
    /// Table 3 BNN alone). Outside `whitebox` so that the older curves keep their keys.
    #[serde(default)]
    pub whitebox_every_bnn_eot_k: Option<usize>,
    /// Restart checks beside the white-box stage: the Table 3 BNN's single draw with
    /// twice the restarts, and its first EOT ensemble with k > 1 with as many restarts
    /// as the single draw (instead of `eot_restarts`).
    #[serde(default)]
    pub whitebox_restart_checks: bool,
    /// Every BNN of the ρ_init grid gets two of the Table 4 BNN's checks (with
    /// `whitebox_every_bnn_eot_k`): its ensemble also through EOT with the largest k of
    /// `whitebox.eot_ks`, and its EOT ensemble met by SPSA (with `whitebox_checks`).
    #[serde(default)]
    pub whitebox_every_bnn_checks: bool,
    /// Training seeds of every evaluation model (`reproduce --train-seeds`); 1 is the
    /// main run alone.
    #[serde(default = "one")]
    pub train_seeds: usize,
    /// Single weight draws per BNN evaluation in the seeds stage.
    #[serde(default = "one")]
    pub seed_draws: usize,
    /// The budget of `reproduce --protocol code`.
    #[serde(default = "code_protocol::CodeProfile::paper")]
    pub code: code_protocol::CodeProfile,
    /// The strength axis of `reproduce --strength`.
    #[serde(default = "strength::StrengthProfile::paper")]
    pub strength: strength::StrengthProfile,
}

pub use crate::results::ModelGroup;

/// Which protocol a reproduction follows: the paper's text, or the authors' notebooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Text,
    Code,
}

impl Profile {
    /// The evaluation batching of this profile: 10,000 examples and `draw_chunk` weight
    /// draws per chunk.
    pub fn eval_chunks(&self) -> crate::eval::EvalChunks {
        crate::eval::EvalChunks {
            draws: self.draw_chunk,
            ..Default::default()
        }
    }

    pub fn paper() -> Self {
        Self {
            name: "paper".into(),
            max_epochs: 300,
            attack: MinNormAttack {
                c: 1.0,
                steps: 300,
                lr: 0.01,
                kappa: 0.0,
                search_rounds: 5,
            },
            attack_chunk: 2000,
            eval_examples: None,
            single_draw_runs: 100,
            ensemble_ns: vec![1, 5, 10, 25, 100],
            ensemble_runs: 10,
            prune_rates: vec![0.25, 0.5, 0.75, 0.9, 0.95, 0.98],
            prune_ensemble: 100,
            prune_runs: 3,
            draw_chunk: 10,
            max_rms_distortion: Some(0.10),
            whitebox: whitebox::WhiteboxProfile::paper(),
            whitebox_checks: Some(whitebox::WhiteboxChecks::paper()),
            whitebox_every_bnn_eot_k: Some(10),
            whitebox_restart_checks: true,
            whitebox_every_bnn_checks: true,
            train_seeds: 3,
            seed_draws: 20,
            code: code_protocol::CodeProfile::paper(),
            strength: strength::StrengthProfile::paper(),
        }
    }

    pub fn quick() -> Self {
        Self {
            name: "quick".into(),
            max_epochs: 1,
            attack: MinNormAttack {
                c: 1.0,
                steps: 20,
                lr: 0.02,
                kappa: 0.0,
                search_rounds: 2,
            },
            attack_chunk: 1000,
            eval_examples: Some(500),
            single_draw_runs: 10,
            ensemble_ns: vec![1, 5, 10, 25, 100],
            ensemble_runs: 2,
            prune_rates: vec![0.25, 0.5, 0.75, 0.9, 0.95, 0.98],
            prune_ensemble: 100,
            prune_runs: 2,
            draw_chunk: 10,
            max_rms_distortion: Some(0.10),
            whitebox: whitebox::WhiteboxProfile::quick(),
            whitebox_checks: Some(whitebox::WhiteboxChecks::quick()),
            whitebox_every_bnn_eot_k: Some(5),
            whitebox_restart_checks: true,
            whitebox_every_bnn_checks: true,
            train_seeds: 2,
            seed_draws: 4,
            code: code_protocol::CodeProfile::quick(),
            strength: strength::StrengthProfile::quick(),
        }
    }

    /// The paper's protocol on a budget: every model trained on the full training set
    /// for at most 15 epochs, the 12 perturbation sets made on the first 2,000 test
    /// images with 100 attack steps × 3 search rounds, 20 single-draw runs, 5 runs per
    /// ensemble size and 2 per pruning rate; white-box with the paper's attack on 500
    /// test images against the nets and every BNN (EOT k ≤ 10), with the doubled-steps
    /// and SPSA checks but no restart checks.
    pub fn short() -> Self {
        Self {
            name: "short".into(),
            max_epochs: 15,
            attack: MinNormAttack {
                c: 1.0,
                steps: 100,
                lr: 0.02,
                kappa: 0.0,
                search_rounds: 3,
            },
            attack_chunk: 2000,
            eval_examples: Some(2000),
            single_draw_runs: 20,
            ensemble_ns: vec![1, 5, 10, 25, 100],
            ensemble_runs: 5,
            prune_rates: vec![0.25, 0.5, 0.75, 0.9, 0.95, 0.98],
            prune_ensemble: 100,
            prune_runs: 2,
            draw_chunk: 10,
            max_rms_distortion: Some(0.10),
            whitebox: whitebox::WhiteboxProfile::short(),
            whitebox_checks: Some(whitebox::WhiteboxChecks::paper()),
            whitebox_every_bnn_eot_k: Some(10),
            whitebox_restart_checks: false,
            whitebox_every_bnn_checks: false,
            train_seeds: 1,
            seed_draws: 4,
            // The quick budget of the code protocol (short has no code report of its own).
            code: code_protocol::CodeProfile::quick(),
            strength: strength::StrengthProfile::paper(),
        }
    }

    /// The paper's protocol with every evaluation model trained with 5 seeds (issue 8's
    /// seeds study). Every other number is the paper profile's, so it shares that
    /// profile's artifact cache ([`Profile::runs_folder`]) and trains only seeds 3–4.
    pub fn seeds() -> Self {
        Self {
            name: "seeds".into(),
            train_seeds: 5,
            ..Self::paper()
        }
    }

    /// The profiles `--profile` accepts.
    pub const NAMES: [&str; 4] = ["paper", "seeds", "short", "quick"];

    /// The folder under runs/ that caches this profile's artifacts: its own, except the
    /// seeds profile's, which is the paper's (the same artifacts, more seeds).
    pub fn runs_folder(&self) -> &str {
        if *self == Self::seeds() {
            "paper"
        } else {
            &self.name
        }
    }

    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "paper" => Some(Self::paper()),
            "seeds" => Some(Self::seeds()),
            "short" => Some(Self::short()),
            "quick" => Some(Self::quick()),
            _ => None,
        }
    }
}

/// The label of a perturbation source as in `paper_tables.json`, e.g.
/// `FC-200-200-10 (lambda=1e-4)`.
pub fn source_label(arch: &Arch, lambda_label: &str) -> String {
    format!("{arch} (lambda={lambda_label})")
}

fn one() -> usize {
    1
}
