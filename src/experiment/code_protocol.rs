//! `reproduce --protocol code`: the protocol of the authors' notebooks
//! (`../shared/reference/authors-code.md`, docs/FIDELITY.md) and the controls that ask
//! whether the paper's margin comes from weight sampling.
//!
//! What differs from the paper's text (the `text` protocol of [`super::reproduce`]):
//! - training: deterministic nets with batch 10,000 and a fixed epoch budget; BNNs with
//!   the summed cross-entropy + KL / number_of_batches, SGD lr 1e-5, momentum 0.95, a
//!   fixed epoch budget and no early stopping;
//! - attack: the targeted brighten-only RMSprop attack ([`TargetedAttack`]) on the
//!   validation images, dropping the examples where it failed;
//! - evaluation: x + m·r with multiplier m (×1.5 for BNNs, ×3 for non-Bayesian nets),
//!   no clipping; pruning per tensor.
//!
//! Controls, on the same sets with the BNNs' multiplier: deterministic nets trained
//! with the BNN's own recipe (with the BNN's μ initialisation and with Glorot's), each
//! BNN's posterior mean and one frozen draw, deterministic nets with test-time Gaussian
//! weight noise of a BNN's learned σ, and a deep ensemble of independently trained
//! deterministic nets. Every evaluation model is also swept over multipliers.
//!
//! Its plan ([`code_plan`]) holds the training, the targeted sets and every evaluation;
//! [`reproduce_code`] then finds them cached and assembles results.json.

mod per_example_code;
mod plan_code;

use crate::results::{CodeSweep, Meta, StageReport, SweepRow};
pub use per_example_code::{CodeModelEntry, CodePerExampleIndex, SplitEntry};
pub use plan_code::{CodeRunSpec, code_plan, run_code_job, run_code_plan};

use std::time::Instant;

use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::Profile;
use super::cache::{self, ArtifactDir};
use super::keys::{self, Key};
use super::stage::{
    Ready, ReproduceConfig, ReproduceError, Timed, average_cell, bar, bnn_of, cell, each_item,
    mlp_of, write_results,
};
use super::{LAMBDAS, RHO_INITS, SOURCE_ARCHS, TABLE3_RHO, TABLE4_RHO, source_label};
use crate::attack::TargetedAttack;
use crate::data::{ChecksumPolicy, Dataset, RawDataset, Split, SplitSpec, Splits};
use crate::eval::{self, EvalChunks};
use crate::model::bayes::{BayesConfig, BayesMlp, MixturePrior, PruneMode};
use crate::model::checkpoint::{CheckpointPaths, ModelSpec};
use crate::model::mlp::{Mlp, MlpConfig, MlpInit};
use crate::model::{Arch, WeightMode};
use crate::results::{
    BnnSigmas, Cell, CodeModelRow, ModelGroup, Sigmas, Table1, Table2, Table3, Table4,
    TargetedSetRow, rows_by_set,
};
use crate::seed::SeedTree;
use crate::train::grid::{GridMember, fit_grid_and_save};
use crate::train::{self, Recipe, Reduction, TrainOptions, TrainedModel};

/// The code protocol's budget. The notebooks' own values are in the doc of each field;
/// a profile may run less where the machine cannot afford it (the report says so).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CodeProfile {
    /// Epochs of the perturbation sources per architecture, in [`SOURCE_ARCHS`] order
    /// (notebook: 200 each, batch 10,000).
    pub source_epochs: Vec<usize>,
    /// Epochs of the FC-100-100-10 λ grid (notebook: 200).
    pub det_epochs: usize,
    /// The non-Bayesian nets' batch (10,000) and learning rate (SGD 1e-3, momentum 0.95).
    pub det_batch: usize,
    pub det_lr: f64,
    /// The BNNs' fixed epoch budget (notebook: 600) and learning rate on the summed loss
    /// (1e-5, i.e. 1.28e-3 on a batch mean).
    pub bnn_epochs: usize,
    pub bnn_lr: f64,
    pub attack: TargetedAttack,
    /// Attack only the first this many validation images (notebook: all 10,000).
    pub attack_examples: Option<usize>,
    /// Examples per attack batch (each becomes 10 rows, one per target).
    pub attack_chunk: usize,
    /// The multiplier sweep (the BNN and deterministic multipliers are added to it).
    pub multipliers: Vec<f64>,
    /// Single-draw runs per cell for sampled models.
    pub runs: usize,
    /// Members of the deep-ensemble control.
    pub ensemble_members: usize,
    /// Early-stopping patience of the non-Bayesian nets (validation accuracy, best
    /// weights kept); `None` (the notebook) trains their whole budget.
    #[serde(default)]
    pub det_patience: Option<usize>,
    /// The budgets of the trained-to-accuracy variant ([`CodeBudget::TrainedToAccuracy`]).
    #[serde(default = "TrainedBudget::paper")]
    pub trained: TrainedBudget,
}

/// Which training budgets the code protocol's models get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeBudget {
    /// The budgets the notebooks' cells state (or the profile's reduction of them),
    /// each model trained on its own.
    #[default]
    AsWritten,
    /// As far as the notebooks' printed accuracies show the authors' models were
    /// trained: [`TrainedBudget`], each family as one stacked grid.
    TrainedToAccuracy,
}

impl CodeBudget {
    /// The report folder's suffix after the profile name.
    pub fn dir_suffix(self) -> &'static str {
        match self {
            CodeBudget::AsWritten => "-code",
            CodeBudget::TrainedToAccuracy => "-code-trained",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CodeBudget::AsWritten => "as written",
            CodeBudget::TrainedToAccuracy => "trained to accuracy",
        }
    }
}

/// The trained-to-accuracy variant's budgets: the non-Bayesian nets keep the notebook's
/// recipe and train until validation accuracy stops improving (or their cap), the
/// BNNs and the matched-recipe controls get the notebook's 600-epoch loop.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainedBudget {
    /// Epoch caps of the perturbation sources per architecture, in [`SOURCE_ARCHS`]
    /// order (FC-1200-1200-10: the notebook's 200).
    pub source_epochs: Vec<usize>,
    /// Epoch cap of the FC-100-100-10 λ grid.
    pub det_epochs: usize,
    /// Epochs without a new best validation accuracy before a non-Bayesian net stops.
    pub det_patience: usize,
    /// The BNNs' (and matched-recipe controls') fixed loop (notebook: 600).
    pub bnn_epochs: usize,
}

impl TrainedBudget {
    pub fn paper() -> Self {
        Self {
            source_epochs: vec![3000, 3000, 200],
            det_epochs: 3000,
            det_patience: 100,
            bnn_epochs: 600,
        }
    }

    pub fn quick() -> Self {
        Self {
            source_epochs: vec![4, 4, 2],
            det_epochs: 4,
            det_patience: 2,
            bnn_epochs: 2,
        }
    }
}

impl CodeProfile {
    pub fn paper() -> Self {
        Self {
            source_epochs: vec![200, 200, 20],
            det_epochs: 200,
            det_batch: 10_000,
            det_lr: 1e-3,
            bnn_epochs: 40,
            bnn_lr: 1e-5,
            attack: TargetedAttack {
                steps: 200,
                ..TargetedAttack::default()
            },
            attack_examples: Some(1000),
            attack_chunk: 1000,
            multipliers: vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
            runs: 30,
            ensemble_members: 5,
            det_patience: None,
            trained: TrainedBudget::paper(),
        }
    }

    pub fn quick() -> Self {
        Self {
            source_epochs: vec![2, 2, 1],
            det_epochs: 2,
            det_batch: 10_000,
            det_lr: 1e-3,
            bnn_epochs: 1,
            bnn_lr: 1e-5,
            attack: TargetedAttack {
                steps: 10,
                ..TargetedAttack::default()
            },
            attack_examples: Some(200),
            attack_chunk: 200,
            multipliers: vec![0.0, 1.0, 1.5, 3.0],
            runs: 3,
            ensemble_members: 2,
            det_patience: None,
            trained: TrainedBudget::quick(),
        }
    }

    /// This profile with `budget`'s training budgets; every other field (the attack,
    /// the multipliers, the evaluation budget) unchanged.
    pub fn with_budget(&self, budget: CodeBudget) -> Self {
        match budget {
            CodeBudget::AsWritten => self.clone(),
            CodeBudget::TrainedToAccuracy => Self {
                source_epochs: self.trained.source_epochs.clone(),
                det_epochs: self.trained.det_epochs,
                det_patience: Some(self.trained.det_patience),
                bnn_epochs: self.trained.bnn_epochs,
                ..self.clone()
            },
        }
    }
}

/// The evaluation multipliers m of x + m·r.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Multipliers {
    pub bnn: f64,
    pub det: f64,
}

impl Multipliers {
    /// The notebook's: ×1.5 for BNNs (and their controls), ×3 for non-Bayesian nets.
    pub const CODE: Multipliers = Multipliers { bnn: 1.5, det: 3.0 };
    /// The paper's text: the perturbation as made.
    pub const TEXT: Multipliers = Multipliers { bnn: 1.0, det: 1.0 };
}

/// The non-Bayesian nets' recipe in the notebook: SGD lr 1e-3, momentum 0.95, batch
/// 10,000, batch-mean loss, a fixed number of epochs.
pub fn det_recipe(cp: &CodeProfile, epochs: usize) -> Recipe {
    Recipe {
        lr: cp.det_lr,
        momentum: 0.95,
        batch_size: cp.det_batch,
        reduction: Reduction::Mean,
        max_epochs: epochs,
        patience: cp.det_patience,
        val_draws: 1,
    }
}

/// The BNNs' recipe in the notebook: batch 128, summed cross-entropy + KL /
/// number_of_batches, SGD lr 1e-5, momentum 0.95, fixed epochs, last weights kept.
pub fn bnn_recipe(cp: &CodeProfile) -> Recipe {
    Recipe {
        lr: cp.bnn_lr,
        momentum: 0.95,
        batch_size: 128,
        reduction: Reduction::Sum,
        max_epochs: cp.bnn_epochs,
        patience: None,
        val_draws: 10,
    }
}

/// A model of the code protocol's grid with its own recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeModel {
    pub name: String,
    pub label: String,
    pub spec: ModelSpec,
    pub recipe: Recipe,
    /// The stacked grid it is trained in (trained-to-accuracy variant); `None`: alone.
    pub family: Option<String>,
}

/// Every model the code protocol trains under `budget`, in training order: the 12
/// sources, the λ grid, the ρ_init grid and the controls.
pub fn training_plan(cp: &CodeProfile, budget: CodeBudget) -> Vec<CodeModel> {
    Grid::new(&cp.with_budget(budget), budget)
        .all()
        .into_iter()
        .cloned()
        .collect()
}

fn mlp_spec(arch: Arch, init: MlpInit, lambda: f64) -> ModelSpec {
    ModelSpec::Mlp {
        config: MlpConfig { arch, init },
        lambda,
    }
}

/// One `T` per model of the code protocol's grid, by role: 12 sources, the λ grid, the
/// ρ_init grid and the controls, in that order ([`ByRole::all`]).
struct ByRole<T> {
    sources: Vec<T>,
    dets: Vec<T>,
    bnns: Vec<T>,
    /// The matched-recipe net with the BNN's μ initialisation.
    matched_init: T,
    /// Matched-recipe nets with Glorot initialisation; member 0 is the single control,
    /// all of them the deep ensemble.
    members: Vec<T>,
}

impl<T> ByRole<T> {
    fn all(&self) -> Vec<&T> {
        self.sources
            .iter()
            .chain(&self.dets)
            .chain(&self.bnns)
            .chain(std::iter::once(&self.matched_init))
            .chain(&self.members)
            .collect()
    }

    /// `items`, one per model in [`ByRole::all`] order, arranged by the same roles;
    /// `None` unless there is exactly one per model.
    fn arrange<U>(&self, items: Vec<U>) -> Option<ByRole<U>> {
        if items.len() != self.all().len() {
            return None;
        }
        let mut it = items.into_iter();
        let mut take = |n: usize| it.by_ref().take(n).collect::<Vec<_>>();
        let sources = take(self.sources.len());
        let dets = take(self.dets.len());
        let bnns = take(self.bnns.len());
        let matched_init = take(1).pop()?;
        let members = take(self.members.len());
        Some(ByRole {
            sources,
            dets,
            bnns,
            matched_init,
            members,
        })
    }
}

/// The models the code protocol trains.
type Grid = ByRole<CodeModel>;

/// The code protocol's trained models, by role.
type CodeTrained = ByRole<Ready>;

impl Grid {
    fn new(cp: &CodeProfile, budget: CodeBudget) -> Self {
        let family = |name: String| match budget {
            CodeBudget::AsWritten => None,
            CodeBudget::TrainedToAccuracy => Some(name),
        };
        let sources = SOURCE_ARCHS
            .iter()
            .enumerate()
            .flat_map(|(i, hidden)| {
                let epochs = cp.source_epochs.get(i).copied().unwrap_or(cp.det_epochs);
                LAMBDAS.iter().map(move |(lambda, l)| {
                    let arch = Arch::new(hidden);
                    CodeModel {
                        name: format!("source/{arch}/lambda={l}"),
                        label: source_label(&arch, l),
                        family: family(format!("sources/{arch}")),
                        spec: mlp_spec(arch, MlpInit::GlorotUniform, *lambda),
                        recipe: det_recipe(cp, epochs),
                    }
                })
            })
            .collect();
        let fc100 = || Arch::new(&[100, 100]);
        let dets = LAMBDAS
            .iter()
            .map(|(lambda, l)| CodeModel {
                name: format!("det/lambda={l}"),
                label: format!("lambda={l}"),
                spec: mlp_spec(fc100(), MlpInit::GlorotUniform, *lambda),
                recipe: det_recipe(cp, cp.det_epochs),
                family: family("det".into()),
            })
            .collect();
        let bnns = RHO_INITS
            .iter()
            .map(|rho| CodeModel {
                name: format!("bnn/rho={rho}"),
                label: format!("rho_init={rho}"),
                spec: ModelSpec::Bnn {
                    config: BayesConfig::with_rho_init(*rho),
                },
                recipe: bnn_recipe(cp),
                family: family("bnn".into()),
            })
            .collect();
        let matched_init = CodeModel {
            name: "control/matched-recipe/bnn-init".into(),
            label: "deterministic, BNN recipe, BNN init".into(),
            spec: mlp_spec(
                fc100(),
                MlpInit::TruncatedNormal {
                    std: MixturePrior::default().std(),
                },
                0.0,
            ),
            recipe: bnn_recipe(cp),
            family: family("controls".into()),
        };
        let members = (0..cp.ensemble_members.max(1))
            .map(|i| CodeModel {
                name: format!("control/matched-recipe/glorot/member={i}"),
                label: format!("deterministic, BNN recipe, Glorot init, member {i}"),
                spec: mlp_spec(fc100(), MlpInit::GlorotUniform, 0.0),
                recipe: bnn_recipe(cp),
                family: family("controls".into()),
            })
            .collect();
        Self {
            sources,
            dets,
            bnns,
            matched_init,
            members,
        }
    }

    /// The members of the stacked grid `family`, in grid order.
    fn family(&self, family: &str) -> Vec<&CodeModel> {
        self.all()
            .into_iter()
            .filter(|m| m.family.as_deref() == Some(family))
            .collect()
    }
}

/// A perturbation set of the code protocol: the kept images (those where the targeted
/// attack succeeded), their labels and perturbations, evaluated as x + m·r.
pub struct KeptSet {
    pub label: String,
    pub key: String,
    pub x: Tensor,
    pub r: Tensor,
    pub labels: Tensor,
    pub n_attacked: usize,
    /// Per attacked example, 1 where the attack succeeded (the example is kept):
    /// `[n_attacked]` u8.
    pub success: Tensor,
    /// Per attacked example, its perturbation's RMS distortion √(‖r‖²/784) at m = 1:
    /// `[n_attacked]` f32.
    pub rms: Tensor,
    pub mean_distortion: f64,
    pub seconds: f64,
}

impl KeptSet {
    /// The examples of `split` where `outcome` succeeded, with their perturbations.
    pub fn keep(label: &str, split: &Split, delta: &Tensor, success: &Tensor) -> Self {
        let idx = success.to_kind(Kind::Bool).nonzero().squeeze_dim(1);
        Self {
            label: label.to_owned(),
            key: String::new(),
            x: split.images.index_select(0, &idx),
            r: delta.index_select(0, &idx),
            labels: split.labels.index_select(0, &idx),
            n_attacked: split.len(),
            success: success.to_kind(Kind::Uint8),
            rms: tch::no_grad(|| {
                crate::attack::row_norms(delta).to_kind(Kind::Float)
                    / (crate::data::IMAGE_DIM as f64).sqrt()
            }),
            mean_distortion: kept_distortion(delta, success),
            seconds: 0.0,
        }
    }

    pub fn kept(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// The evaluation split x + m·r (not clipped, as in the notebook).
    pub fn at(&self, m: f64) -> Split {
        Split {
            images: &self.x + &self.r * m,
            labels: self.labels.shallow_clone(),
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TargetedRecord {
    source: String,
    source_key: String,
    n_attacked: usize,
    kept: usize,
    mean_distortion: f64,
    seconds: f64,
    attack: TargetedAttack,
}

/// A model under evaluation and how its accuracy is measured.
pub enum Evaluated<'a> {
    Det(&'a Mlp),
    /// Independent runs, one fresh weight draw per run.
    Draws(&'a BayesMlp),
    /// One fixed set of weights (posterior mean, a frozen draw).
    Mode(&'a BayesMlp, WeightMode),
    /// The softmax averaged over the members.
    DeepEnsemble(Vec<&'a Mlp>),
    /// Eq. 7: the softmax averaged over this many fresh draws, per run.
    Ensemble(&'a BayesMlp, usize),
}

impl Evaluated<'_> {
    /// Accuracies in [0, 1]: `runs` of them for a sampled model, one otherwise.
    pub fn accuracies(&self, split: &Split, runs: usize, chunks: EvalChunks) -> Vec<f64> {
        match self {
            Evaluated::Det(mlp) => vec![eval::accuracy(mlp, split, chunks)],
            Evaluated::Draws(bnn) => eval::single_draw_accuracies(*bnn, split, runs, chunks),
            Evaluated::Ensemble(bnn, n) => eval::ensemble_accuracies(bnn, split, *n, runs, chunks),
            Evaluated::Mode(bnn, mode) => tch::no_grad(|| {
                vec![
                    train::per_draw_accuracy(
                        &bnn.forward(&split.images, 1, *mode, false).logits,
                        &split.labels,
                    )
                    .double_value(&[0]),
                ]
            }),
            Evaluated::DeepEnsemble(members) => tch::no_grad(|| {
                let probs = deep_ensemble_probs(members, &split.images);
                vec![
                    train::per_draw_accuracy(&probs.unsqueeze(0), &split.labels).double_value(&[0]),
                ]
            }),
        }
    }
}

/// A deep ensemble's prediction: its members' softmax averaged, `[n, classes]`.
fn deep_ensemble_probs(members: &[&Mlp], images: &Tensor) -> Tensor {
    Tensor::stack(
        &members
            .iter()
            .map(|m| m.forward(images).softmax(-1, None::<Kind>))
            .collect::<Vec<_>>(),
        0,
    )
    .mean_dim([0].as_slice(), false, None::<Kind>)
}

/// The name of a set's split at multiplier `m` in a sweep (its seed is named by it).
fn set_tag(label: &str, m: f64) -> String {
    format!("{label}/m={m}")
}

/// One split of a sweep: its name (its seed's), the set's index and multiplier (none
/// for clean images), and the images as evaluated.
struct SweepSplit {
    tag: String,
    set: Option<(usize, f64)>,
    split: Split,
}

/// Table 3's runs: `rows[set][n]`.
#[derive(serde::Serialize, serde::Deserialize)]
struct EnsembleRows {
    rows: Vec<Vec<Vec<f64>>>,
}

/// Table 4's runs at one pruning rate.
#[derive(serde::Serialize, serde::Deserialize)]
struct PruneRate {
    pruned_per_tensor: Vec<usize>,
    validation: Vec<f64>,
    test: Vec<f64>,
    sets: Vec<Vec<f64>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PruneRates {
    rates: Vec<PruneRate>,
}

/// One evaluation model's sweep: clean accuracies and, per set and multiplier, runs.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct SweepEval {
    validation: Vec<f64>,
    test: Vec<f64>,
    /// `sets[set][multiplier]` = run accuracies.
    sets: Vec<Vec<Vec<f64>>>,
}

/// How far one model was trained and what it reached, in percent: the table the
/// trained-to-accuracy variant is judged by (beside the notebooks' printed figures).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingRow {
    pub name: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub max_epochs: usize,
    /// The trainer's validation accuracy of the weights kept (a BNN: the mean over its
    /// fixed validation draws).
    pub validation: f64,
    /// Clean test accuracy: a deterministic net's, or a BNN's `test_draws`-draw
    /// ensemble's (eq. 7).
    pub test: f64,
    pub test_draws: usize,
}

impl TrainingRow {
    /// Early stopping ended it before its cap.
    pub fn stopped_early(&self) -> bool {
        self.epochs_run < self.max_epochs
    }
}

/// Every model's [`TrainingRow`], in training order (a struct: cached evaluations
/// flatten their value).
#[derive(serde::Serialize, serde::Deserialize)]
struct TrainingRows {
    rows: Vec<TrainingRow>,
}

/// The draws of a BNN's ensemble in [`TrainingRow::test`] (the notebook printed a
/// 100-draw ensemble's test accuracy).
pub const TRAINING_ENSEMBLE_DRAWS: usize = 100;

/// The seeds of model `m` under the protocol's seed tree `seeds`.
fn model_seeds(seeds: &SeedTree, m: &CodeModel) -> SeedTree {
    seeds.child(&format!("train/{}", m.name))
}

/// Model `m`'s key ([`keys::code_model`]); a member of a stacked grid also names the
/// grid's members.
fn model_key(seeds: &SeedTree, dataset: Dataset, m: &CodeModel, grid: &Grid) -> Key {
    let names: Option<Vec<&str>> = m.family.as_ref().map(|family| {
        grid.family(family)
            .iter()
            .map(|g| g.name.as_str())
            .collect()
    });
    keys::code_model(
        &m.name,
        &m.spec,
        &m.recipe,
        seeds.master(),
        model_seeds(seeds, m).prefix(),
        dataset,
        names.as_deref(),
    )
}

/// The targeted attack's key on the first `n` validation images of the source `label`.
fn attack_key(cp: &CodeProfile, label: &str, source_key: &str, n: usize) -> Key {
    keys::targeted_attack(label, source_key, &cp.attack, n, cp.attack_chunk)
}

/// The keys of every model the code protocol trains under `budget` and of every
/// targeted attack it makes (training order, then the sources' order), computed
/// without data or training: what `fixtures/golden-keys/code-plans.txt` pins.
pub fn planned_keys(
    profile: &Profile,
    dataset: Dataset,
    master_seed: u64,
    budget: CodeBudget,
) -> Vec<Key> {
    plan_code::plan_tasks(profile, dataset, master_seed, budget)
        .0
        .jobs
        .into_iter()
        .flat_map(|j| std::iter::once(j.key).chain(j.also))
        .collect()
}

/// The keys of the code protocol's evaluations under a run's settings
/// ([`keys::code_sweep`] and the others): the same for the plan and the pipeline.
struct EvalKeys<'a> {
    cfg: &'a ReproduceConfig,
    cp: &'a CodeProfile,
}

impl EvalKeys<'_> {
    fn training_rows(&self, model_keys: &[String]) -> Key {
        keys::code_training_rows(
            model_keys,
            TRAINING_ENSEMBLE_DRAWS,
            self.cfg.master_seed,
            self.cfg.profile.eval_examples,
        )
    }

    fn sweep(&self, name: &str, model_keys: &str, set_keys: &[String], ms: &[f64]) -> Key {
        keys::code_sweep(
            name,
            model_keys,
            set_keys,
            ms,
            self.cp.runs,
            self.cfg.master_seed,
            self.cfg.profile.eval_examples,
        )
    }

    fn table3(&self, model_key: &str, set_keys: &[String], m_bnn: f64) -> Key {
        let p = &self.cfg.profile;
        keys::code_table3(
            model_key,
            set_keys,
            m_bnn,
            &p.ensemble_ns,
            p.ensemble_runs,
            self.cfg.master_seed,
        )
    }

    fn table4(
        &self,
        model_key: &str,
        set_keys: &[String],
        m_bnn: f64,
        prune_mode: PruneMode,
    ) -> Key {
        let p = &self.cfg.profile;
        let pruning = keys::CodePruning {
            per_tensor: prune_mode == PruneMode::PerTensor,
            rates: &p.prune_rates,
            ensemble: p.prune_ensemble,
            runs: p.prune_runs,
        };
        keys::code_table4(
            model_key,
            set_keys,
            m_bnn,
            pruning,
            self.cfg.master_seed,
            p.eval_examples,
        )
    }
}

struct CodePipeline<'a> {
    cfg: &'a ReproduceConfig,
    cp: CodeProfile,
    seeds: SeedTree,
    splits: Splits,
    /// The clean validation and test images evaluated (the profile's `eval_examples`).
    clean_validation: Split,
    clean_test: Split,
    models_dir: ArtifactDir,
    attacks_dir: ArtifactDir,
    evals_dir: ArtifactDir,
    chunks: EvalChunks,
    /// The stacked grids this process has trained.
    trained_families: std::cell::RefCell<Vec<String>>,
}

impl<'a> CodePipeline<'a> {
    /// The data, folders and settings of a code-protocol run under `budget`.
    fn new(
        cfg: &'a ReproduceConfig,
        budget: CodeBudget,
        raw: &RawDataset,
    ) -> Result<Self, ReproduceError> {
        let p = &cfg.profile;
        let splits = Splits::from_raw(raw, SplitSpec::PAPER)?.to_device(cfg.device);
        let n_eval = p.eval_examples.unwrap_or(usize::MAX);
        let [models_dir, attacks_dir, evals_dir] = cache::run_folders(&cfg.runs_dir);
        Ok(CodePipeline {
            clean_validation: splits.validation.head(n_eval),
            clean_test: splits.test.head(n_eval),
            cfg,
            cp: p.code.with_budget(budget),
            seeds: SeedTree::new(cfg.master_seed).child("code"),
            splits,
            models_dir,
            attacks_dir,
            evals_dir,
            chunks: p.eval_chunks(),
            trained_families: Default::default(),
        })
    }

    fn model_seeds(&self, m: &CodeModel) -> SeedTree {
        model_seeds(&self.seeds, m)
    }

    fn model_key(&self, m: &CodeModel, grid: &Grid) -> Key {
        model_key(&self.seeds, self.cfg.dataset, m, grid)
    }

    /// Trains every member of the stacked grid `family` at once and saves each.
    fn train_family(&self, family: &str, grid: &Grid) -> Result<(), ReproduceError> {
        let models = grid.family(family);
        let members: Vec<GridMember> = models
            .iter()
            .map(|m| GridMember {
                spec: m.spec.clone(),
                seeds: self.model_seeds(m),
            })
            .collect();
        let stems: Vec<_> = models
            .iter()
            .map(|m| self.models_dir.stem(&self.model_key(m, grid).id))
            .collect();
        let options = TrainOptions {
            verbose: self.cfg.verbose,
            label: format!("{family} grid of {}", members.len()),
        };
        fit_grid_and_save(
            &members,
            &stems,
            &self.splits,
            &models[0].recipe,
            &self.seeds.child(&format!("train/grid/{family}")),
            self.cfg.device,
            &options,
        )?;
        Ok(())
    }

    fn ensure_model(&self, m: &CodeModel, grid: &Grid) -> Result<(Ready, bool), ReproduceError> {
        let key = self.model_key(m, grid);
        let stem = self.models_dir.stem(&key.id);
        let exists = CheckpointPaths::new(&stem).exists();
        // A grid member saved by this process (with the member that trained its grid)
        // was computed here, not reused.
        let trained_here = m
            .family
            .as_ref()
            .is_some_and(|f| self.trained_families.borrow().contains(f));
        let reused = exists && !trained_here;
        let (model, meta) = if exists {
            TrainedModel::load(&m.spec, self.cfg.device, &stem)?
        } else if let Some(family) = &m.family {
            self.train_family(family, grid)?;
            self.trained_families.borrow_mut().push(family.clone());
            TrainedModel::load(&m.spec, self.cfg.device, &stem)?
        } else {
            let options = TrainOptions {
                verbose: self.cfg.verbose,
                label: m.name.clone(),
            };
            train::train_and_save(
                &m.spec,
                &self.splits,
                &m.recipe,
                &self.model_seeds(m),
                self.cfg.device,
                &stem,
                &options,
            )?
        };
        key.write_beside(&self.models_dir)?;
        let key = key.id;
        Ok((Ready { key, model, meta }, reused))
    }

    /// Every trained model's [`TrainingRow`], cached under one key.
    fn training_rows(
        &self,
        models: &[&CodeModel],
        ready: &[&Ready],
    ) -> Result<(Timed<TrainingRows>, bool), ReproduceError> {
        let model_keys: Vec<String> = ready.iter().map(|r| r.key.clone()).collect();
        let key = self.eval_keys().training_rows(&model_keys);
        super::stage::cached_keyed_eval(&self.evals_dir, &key, || {
            let rows = models
                .iter()
                .zip(ready)
                .map(|(m, r)| {
                    let (test, test_draws) = match &r.model {
                        TrainedModel::Mlp { mlp, .. } => {
                            (eval::accuracy(mlp, &self.clean_test, self.chunks), 1)
                        }
                        TrainedModel::Bnn { bnn, .. } => {
                            self.seeds
                                .seed_torch(&format!("training/ensemble/{}", m.name));
                            let runs = eval::ensemble_accuracies(
                                bnn,
                                &self.clean_test,
                                TRAINING_ENSEMBLE_DRAWS,
                                1,
                                self.chunks,
                            );
                            (runs[0], TRAINING_ENSEMBLE_DRAWS)
                        }
                    };
                    TrainingRow {
                        name: m.name.clone(),
                        epochs_run: r.meta.epochs_run,
                        best_epoch: r.meta.best_epoch,
                        max_epochs: m.recipe.max_epochs,
                        validation: 100.0 * r.meta.best_validation_accuracy,
                        test: 100.0 * test,
                        test_draws,
                    }
                })
                .collect();
            Ok(TrainingRows { rows })
        })
    }

    fn eval_keys(&self) -> EvalKeys<'_> {
        EvalKeys {
            cfg: self.cfg,
            cp: &self.cp,
        }
    }

    fn attacked(&self) -> Split {
        self.splits
            .validation
            .head(self.cp.attack_examples.unwrap_or(usize::MAX))
    }

    fn attack_key(&self, label: &str, source_key: &str) -> Key {
        attack_key(&self.cp, label, source_key, self.attacked().len())
    }

    fn ensure_attack(
        &self,
        label: &str,
        source: &Ready,
    ) -> Result<(KeptSet, bool), ReproduceError> {
        let mlp = mlp_of(source)?;
        let split = self.attacked();
        let planned = self.attack_key(label, &source.key);
        let key = planned.id.clone();
        let cached = self.attacks_dir.read_json::<TargetedRecord>(&key)?;
        let reused = cached.is_some();
        let record = match cached {
            Some(record) => record,
            None => {
                let t0 = Instant::now();
                let (mut deltas, mut successes) = (Vec::new(), Vec::new());
                for batch in split.batches(self.cp.attack_chunk.max(1)) {
                    let out = self.cp.attack.run(mlp, &batch.images, &batch.labels);
                    deltas.push(out.delta);
                    successes.push(out.success);
                }
                let delta = Tensor::cat(&deltas, 0).to_device(Device::Cpu);
                let success = Tensor::cat(&successes, 0)
                    .to_kind(Kind::Uint8)
                    .to_device(Device::Cpu);
                let kept = success.sum(Kind::Int64).int64_value(&[]) as usize;
                let record = TargetedRecord {
                    source: label.to_owned(),
                    source_key: source.key.clone(),
                    n_attacked: split.len(),
                    kept,
                    mean_distortion: kept_distortion(&delta, &success),
                    seconds: t0.elapsed().as_secs_f64(),
                    attack: self.cp.attack.clone(),
                };
                self.attacks_dir.write_with_tensors(
                    &key,
                    &[("delta", &delta), ("success", &success)],
                    &record,
                )?;
                record
            }
        };
        planned.write_beside(&self.attacks_dir)?;
        let tensors = self.attacks_dir.read_tensors(&key)?;
        let get = |name: &'static str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.to_device(self.cfg.device))
                .ok_or(ReproduceError::MissingTensor {
                    key: key.clone(),
                    name,
                })
        };
        let (delta, success) = (get("delta")?, get("success")?);
        let set = KeptSet {
            key,
            seconds: record.seconds,
            ..KeptSet::keep(label, &split, &delta, &success)
        };
        Ok((set, reused))
    }

    /// The sweep of one evaluation model over clean data and every set × multiplier.
    fn sweep(
        &self,
        name: &str,
        model_keys: &str,
        model: &Evaluated,
        sets: &[KeptSet],
        ms: &[f64],
    ) -> Result<(Timed<SweepEval>, bool), ReproduceError> {
        let key = self
            .eval_keys()
            .sweep(name, model_keys, &set_keys(sets), ms);
        let runs = self.cp.runs;
        super::stage::cached_keyed_eval(&self.evals_dir, &key, || {
            let mut accuracies = self.sweep_splits(sets, ms).map(|s| {
                self.seed_sweep(name, &s.tag);
                model.accuracies(&s.split, runs, self.chunks)
            });
            let validation = accuracies.next().unwrap_or_default();
            let test = accuracies.next().unwrap_or_default();
            let sets = sets
                .iter()
                .map(|_| accuracies.by_ref().take(ms.len()).collect())
                .collect();
            Ok(SweepEval {
                validation,
                test,
                sets,
            })
        })
    }

    /// The splits of a sweep in order: the clean validation and test images, then each
    /// set at each multiplier (x + m·r).
    fn sweep_splits<'s>(
        &'s self,
        sets: &'s [KeptSet],
        ms: &'s [f64],
    ) -> impl Iterator<Item = SweepSplit> + 's {
        let clean = [
            ("validation", &self.clean_validation),
            ("test", &self.clean_test),
        ]
        .into_iter()
        .map(|(tag, split)| SweepSplit {
            tag: tag.to_owned(),
            set: None,
            split: split.head(split.len()),
        });
        let perturbed = sets.iter().enumerate().flat_map(move |(k, s)| {
            ms.iter().map(move |m| SweepSplit {
                tag: set_tag(&s.label, *m),
                set: Some((k, *m)),
                split: s.at(*m),
            })
        });
        clean.chain(perturbed)
    }

    /// Seeds libtorch for the sweep of the model `name` on the split `tag`.
    fn seed_sweep(&self, name: &str, tag: &str) {
        self.seeds.seed_torch(&format!("sweep/{name}/{tag}"));
    }
}

/// The keys of the targeted sets, as the evaluations' keys name them.
fn set_keys(sets: &[KeptSet]) -> Vec<String> {
    sets.iter().map(|s| s.key.clone()).collect()
}

/// Mean √(‖r‖²/784) over the examples where the attack succeeded.
fn kept_distortion(delta: &Tensor, success: &Tensor) -> f64 {
    tch::no_grad(|| {
        let d = crate::attack::row_norms(delta) / (crate::data::IMAGE_DIM as f64).sqrt();
        let mask = success.to_kind(Kind::Double);
        let kept = mask.sum(Kind::Double).double_value(&[]);
        if kept == 0.0 {
            return f64::NAN;
        }
        (d.to_kind(Kind::Double) * mask)
            .sum(Kind::Double)
            .double_value(&[])
            / kept
    })
}

/// The union of the sweep and the two multipliers, sorted.
fn multiplier_grid(sweep: &[f64], mult: Multipliers) -> Vec<f64> {
    let mut ms: Vec<f64> = sweep.iter().copied().chain([mult.bnn, mult.det]).collect();
    ms.sort_by(f64::total_cmp);
    ms.dedup();
    ms
}

fn index_of(ms: &[f64], m: f64) -> usize {
    ms.iter().position(|x| *x == m).unwrap_or(0)
}

/// The table rows at multiplier index `mi` of a group of sweeps: per set, per model.
fn rows_at(evals: &[&SweepEval], mi: usize) -> (Vec<Vec<Cell>>, Vec<Cell>) {
    let at_m =
        |e: &SweepEval| -> Vec<Vec<f64>> { e.sets.iter().map(|per_m| per_m[mi].clone()).collect() };
    let per_model: Vec<Vec<Cell>> = evals
        .iter()
        .map(|e| at_m(e).iter().map(|runs| cell(runs)).collect())
        .collect();
    let average = evals.iter().map(|e| average_cell(&at_m(e))).collect();
    (rows_by_set(&per_model), average)
}

/// The quantiles of learned σ reported per layer.
pub const SIGMA_QUANTILES: [f64; 5] = [0.05, 0.25, 0.5, 0.75, 0.95];

/// The perturbation grid's examples: the first kept examples of each source family's
/// λ = 0 set, at m = 1.
fn code_examples(
    grid_sources: &[CodeModel],
    sources: &[Ready],
    sets: &[KeptSet],
) -> Result<super::examples::PerturbationExamples, ReproduceError> {
    use super::examples::{PerturbationExamples, SourceSet};
    Ok(PerturbationExamples::of_lambda_zero_sets(
        "code",
        "x' = x + r for the first kept validation examples of the set (the targeted attack succeeded on them), before any evaluation multiplier and unclipped, as the notebook keeps it",
        grid_sources
            .iter()
            .zip(sources)
            .zip(sets)
            .map(|((cm, ready), set)| {
                Ok(SourceSet {
                    spec: &cm.spec,
                    label: &set.label,
                    source: mlp_of(ready)?,
                    clean: set.x.shallow_clone(),
                    perturbed: &set.x + &set.r,
                    labels: &set.labels,
                })
            })
            .collect::<Result<Vec<_>, ReproduceError>>()?
            .into_iter(),
    ))
}

impl CodeTrained {
    /// The BNN trained with `rho_init` (the first one if the grid lacks it).
    fn bnn(&self, rho_init: f64) -> &Ready {
        &self.bnns[rho_index(rho_init)]
    }
}

fn rho_index(rho_init: f64) -> usize {
    RHO_INITS.iter().position(|r| *r == rho_init).unwrap_or(0)
}

/// The runs of an N-draw ensemble in Table 3: max(100/N, the profile's runs).
fn ensemble_runs(ensemble_runs: usize, n: usize) -> usize {
    (100 / n.max(1)).max(ensemble_runs).max(1)
}

/// One stage's line of `meta.stages`.
fn stage_line(
    stage: &str,
    t0: Instant,
    artifact_seconds: f64,
    computed: usize,
    reused: usize,
) -> StageReport {
    StageReport {
        stage: stage.to_owned(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds,
        computed,
        reused,
        flops: None,
    }
}

/// Stage 1: every model of `grid`, loaded (or trained).
fn code_train_stage(
    pipeline: &CodePipeline,
    grid: &Grid,
    stages: &mut Vec<StageReport>,
) -> Result<CodeTrained, ReproduceError> {
    let cfg = pipeline.cfg;
    let t0 = Instant::now();
    let all = grid.all();
    let progress = bar(all.len(), "train", cfg.verbose);
    let (ready, reused) = each_item(all.len(), &progress, |i| {
        progress.set_message(all[i].name.clone());
        pipeline.ensure_model(all[i], grid)
    })?;
    let artifact_seconds = ready.iter().map(|r| r.meta.wall_seconds).sum();
    stages.push(stage_line(
        "train",
        t0,
        artifact_seconds,
        ready.len() - reused,
        reused,
    ));
    let made = ready.len();
    grid.arrange(ready)
        .ok_or_else(|| ReproduceError::IncompleteTraining {
            made,
            planned: grid.all().len(),
        })
}

/// Stage 2: the targeted attack on every source, kept where it succeeded (loaded, or
/// made).
fn code_attack_stage(
    pipeline: &CodePipeline,
    grid: &Grid,
    sources: &[Ready],
    stages: &mut Vec<StageReport>,
) -> Result<Vec<KeptSet>, ReproduceError> {
    let cfg = pipeline.cfg;
    let t0 = Instant::now();
    let progress = bar(sources.len(), "attack", cfg.verbose);
    let (sets, reused) = each_item(sources.len(), &progress, |i| {
        progress.set_message(grid.sources[i].label.clone());
        pipeline.ensure_attack(&grid.sources[i].label, &sources[i])
    })?;
    let artifact_seconds = sets.iter().map(|s| s.seconds).sum();
    stages.push(stage_line(
        "attack",
        t0,
        artifact_seconds,
        sets.len() - reused,
        reused,
    ));
    Ok(sets)
}

/// The weight-noise controls: the λ = 0 net and the matched-init net with test-time
/// Gaussian weight noise of, per layer, the median learned σ of the ρ_init =
/// [`TABLE3_RHO`] BNN.
struct NoiseControls {
    sigmas: Vec<f64>,
    det: BayesMlp,
    matched: BayesMlp,
}

impl NoiseControls {
    fn new(trained: &CodeTrained) -> Result<Self, ReproduceError> {
        let sigmas = Self::sigmas_of(bnn_of(trained.bnn(TABLE3_RHO))?);
        Ok(Self {
            det: BayesMlp::from_mlp(mlp_of(&trained.dets[0])?, &sigmas),
            matched: BayesMlp::from_mlp(mlp_of(&trained.matched_init)?, &sigmas),
            sigmas,
        })
    }

    /// Per layer, the median learned σ of `bnn`: the noise's σ.
    fn sigmas_of(bnn: &BayesMlp) -> Vec<f64> {
        bnn.sigma_quantiles(&[0.5])
            .into_iter()
            .map(|q| q[0])
            .collect()
    }
}

pub use crate::results::SweepRole;

/// Where an evaluation model of the sweep gets its weights among the trained models.
#[derive(Debug, Clone, Copy, PartialEq)]
enum EvalSource {
    /// The i-th BNN, one fresh draw per run.
    Bnn(usize),
    /// The i-th net of the λ grid.
    Det(usize),
    MatchedInit,
    /// Member 0 of the matched-recipe Glorot nets.
    MatchedGlorot,
    /// Every matched-recipe Glorot net, their softmax average.
    DeepEnsemble,
    /// The λ = 0 net with the learned weight noise.
    NoisyDet,
    /// The matched-init net with the learned weight noise.
    NoisyMatchedInit,
    /// The i-th BNN's posterior mean.
    Mean(usize),
    /// The i-th BNN's frozen sample.
    Frozen(usize),
}

/// A model of the sweep before its weights are loaded: its row name, role, the keys of
/// the models it is made of (the sweep's cache key names them), the checkpoints it
/// reads and where its weights come from.
struct EvalSpec {
    pub name: String,
    pub role: SweepRole,
    pub keys: String,
    pub inputs: Vec<String>,
    pub source: EvalSource,
}

/// Every evaluation model of the sweep, in the order of results.json's `sweep.models`:
/// the BNNs, the λ grid, then the controls. `keys` are the trained models' keys;
/// `sigmas` the weight-noise controls' σ, without which they are left out (the plan
/// before the ρ_init = [`TABLE3_RHO`] BNN is trained).
fn eval_specs(
    grid: &Grid,
    keys: &ByRole<String>,
    sigmas: Option<&[f64]>,
) -> Result<Vec<EvalSpec>, ReproduceError> {
    let row = |name: String, role, inputs: Vec<String>, source| EvalSpec {
        name,
        role,
        keys: inputs.join("+"),
        inputs,
        source,
    };
    let mut out = Vec::new();
    for (i, (m, k)) in grid.bnns.iter().zip(&keys.bnns).enumerate() {
        let name = format!("BNN {}", m.label);
        out.push(row(name, bnn_role(m)?, vec![k.clone()], EvalSource::Bnn(i)));
    }
    for (i, (m, k)) in grid.dets.iter().zip(&keys.dets).enumerate() {
        let role = match m.spec {
            ModelSpec::Mlp { lambda, .. } => SweepRole::Deterministic { lambda },
            ModelSpec::Bnn { .. } => return Err(wrong_spec(m, "a deterministic net")),
        };
        let name = format!("deterministic {}", m.label);
        out.push(row(name, role, vec![k.clone()], EvalSource::Det(i)));
    }
    out.push(row(
        grid.matched_init.label.clone(),
        SweepRole::MatchedInit,
        vec![keys.matched_init.clone()],
        EvalSource::MatchedInit,
    ));
    out.push(row(
        "deterministic, BNN recipe, Glorot init".to_owned(),
        SweepRole::MatchedGlorot,
        keys.members.iter().take(1).cloned().collect(),
        EvalSource::MatchedGlorot,
    ));
    let members = keys.members.len();
    out.push(row(
        format!("deep ensemble of {members} (BNN recipe, Glorot init)"),
        SweepRole::DeepEnsemble { members },
        keys.members.clone(),
        EvalSource::DeepEnsemble,
    ));
    if let Some(sigmas) = sigmas {
        let t3 = keys.bnns[rho_index(TABLE3_RHO)].clone();
        let noisy = |name: &str, role, key: &String, source| EvalSpec {
            name: name.to_owned(),
            role,
            keys: format!("{key}+noise{sigmas:?}"),
            inputs: vec![key.clone(), t3.clone()],
            source,
        };
        out.push(noisy(
            "deterministic lambda=0 + weight noise",
            SweepRole::NoisyDeterministic,
            &keys.dets[0],
            EvalSource::NoisyDet,
        ));
        out.push(noisy(
            "deterministic, BNN recipe, BNN init + weight noise",
            SweepRole::NoisyMatchedInit,
            &keys.matched_init,
            EvalSource::NoisyMatchedInit,
        ));
    }
    for (i, (m, k)) in grid.bnns.iter().zip(&keys.bnns).enumerate() {
        let rho_init = bnn_rho(m)?;
        out.push(row(
            format!("BNN {}, posterior mean", m.label),
            SweepRole::PosteriorMean { rho_init },
            vec![k.clone()],
            EvalSource::Mean(i),
        ));
        out.push(row(
            format!("BNN {}, frozen sample", m.label),
            SweepRole::FrozenSample { rho_init },
            vec![k.clone()],
            EvalSource::Frozen(i),
        ));
    }
    Ok(out)
}

impl EvalSource {
    /// The model with its weights among the trained models and the noise controls.
    fn loaded<'a>(
        self,
        t: &'a CodeTrained,
        noise: &'a NoiseControls,
    ) -> Result<Evaluated<'a>, ReproduceError> {
        Ok(match self {
            EvalSource::Bnn(i) => Evaluated::Draws(bnn_of(&t.bnns[i])?),
            EvalSource::Det(i) => Evaluated::Det(mlp_of(&t.dets[i])?),
            EvalSource::MatchedInit => Evaluated::Det(mlp_of(&t.matched_init)?),
            EvalSource::MatchedGlorot => Evaluated::Det(mlp_of(&t.members[0])?),
            EvalSource::DeepEnsemble => {
                Evaluated::DeepEnsemble(t.members.iter().map(mlp_of).collect::<Result<_, _>>()?)
            }
            EvalSource::NoisyDet => Evaluated::Draws(&noise.det),
            EvalSource::NoisyMatchedInit => Evaluated::Draws(&noise.matched),
            EvalSource::Mean(i) => Evaluated::Mode(bnn_of(&t.bnns[i])?, WeightMode::Mean),
            EvalSource::Frozen(i) => Evaluated::Mode(bnn_of(&t.bnns[i])?, WeightMode::Frozen(0)),
        })
    }
}

/// A model of the sweep: its row name, role, the keys of the models it is made of
/// (the sweep's cache key names them) and how it is evaluated.
struct EvalModel<'a> {
    name: String,
    role: SweepRole,
    keys: String,
    source: EvalSource,
    model: Evaluated<'a>,
}

/// The trained models' keys, by role.
fn trained_keys(t: &CodeTrained) -> ByRole<String> {
    let key = |r: &Ready| r.key.clone();
    ByRole {
        sources: t.sources.iter().map(key).collect(),
        dets: t.dets.iter().map(key).collect(),
        bnns: t.bnns.iter().map(key).collect(),
        matched_init: key(&t.matched_init),
        members: t.members.iter().map(key).collect(),
    }
}

/// Every evaluation model of the sweep ([`eval_specs`]), loaded.
fn evaluated_models<'a>(
    grid: &Grid,
    t: &'a CodeTrained,
    noise: &'a NoiseControls,
) -> Result<Vec<EvalModel<'a>>, ReproduceError> {
    eval_specs(grid, &trained_keys(t), Some(&noise.sigmas))?
        .into_iter()
        .map(|s| {
            Ok(EvalModel {
                model: s.source.loaded(t, noise)?,
                source: s.source,
                name: s.name,
                role: s.role,
                keys: s.keys,
            })
        })
        .collect()
}

/// The error for a grid model whose spec is not the kind its place in the grid needs.
fn wrong_spec(m: &CodeModel, expected: &'static str) -> ReproduceError {
    ReproduceError::WrongModel {
        key: m.name.clone(),
        expected,
    }
}

/// The ρ_init of a model of the BNN grid.
fn bnn_rho(m: &CodeModel) -> Result<f64, ReproduceError> {
    match &m.spec {
        ModelSpec::Bnn { config } => Ok(config.rho_init),
        ModelSpec::Mlp { .. } => Err(wrong_spec(m, "a BNN")),
    }
}

fn bnn_role(m: &CodeModel) -> Result<SweepRole, ReproduceError> {
    bnn_rho(m).map(|rho_init| SweepRole::Bnn { rho_init })
}

/// Stage 3's results: the training table, each evaluation model's sweep (in
/// [`evaluated_models`] order), Table 3's runs and Table 4's rates.
struct CodeEvaluations {
    training: Vec<TrainingRow>,
    sweeps: Vec<SweepEval>,
    table3: Vec<Vec<Vec<f64>>>,
    table4: Vec<PruneRate>,
}

/// Counts a stage's reused evaluations and the wall time its artifacts recorded.
#[derive(Default)]
struct Tally {
    reused: usize,
    seconds: f64,
}

impl Tally {
    fn add<T>(&mut self, (timed, reused): (Timed<T>, bool)) -> T {
        self.reused += reused as usize;
        self.seconds += timed.seconds;
        timed.value
    }
}

impl CodePipeline<'_> {
    /// Table 3: ensembles of the ρ_init = [`TABLE3_RHO`] BNN at the BNN multiplier,
    /// `rows[set][n]`.
    fn table3(
        &self,
        t3: &Ready,
        sets: &[KeptSet],
        m_bnn: f64,
    ) -> Result<(Timed<EnsembleRows>, bool), ReproduceError> {
        let p = &self.cfg.profile;
        let key = self.eval_keys().table3(&t3.key, &set_keys(sets), m_bnn);
        super::stage::cached_keyed_eval(&self.evals_dir, &key, || {
            let bnn = bnn_of(t3)?;
            let rows = sets
                .iter()
                .map(|s| {
                    let split = s.at(m_bnn);
                    p.ensemble_ns
                        .iter()
                        .map(|&n| {
                            self.seeds.seed_torch(&format!("table3/N={n}/{}", s.label));
                            let runs = ensemble_runs(p.ensemble_runs, n);
                            eval::ensemble_accuracies(bnn, &split, n, runs, self.chunks)
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>();
            Ok(EnsembleRows { rows })
        })
    }

    /// Table 4: `prune_mode` SNR pruning of the ρ_init = [`TABLE4_RHO`] BNN (`spec`,
    /// cached under `model_key`), ensembles at the BNN multiplier. The BNN is loaded
    /// afresh: pruning changes it, and the evaluation models borrow the first copy.
    fn table4(
        &self,
        spec: &ModelSpec,
        model_key: &str,
        sets: &[KeptSet],
        m_bnn: f64,
        prune_mode: PruneMode,
    ) -> Result<(Timed<PruneRates>, bool), ReproduceError> {
        let p = &self.cfg.profile;
        let key = self
            .eval_keys()
            .table4(model_key, &set_keys(sets), m_bnn, prune_mode);
        let (mut model, _) =
            TrainedModel::load(spec, self.cfg.device, &self.models_dir.stem(model_key))?;
        let TrainedModel::Bnn { bnn, .. } = &mut model else {
            return Err(ReproduceError::WrongModel {
                key: model_key.to_owned(),
                expected: "a BNN",
            });
        };
        super::stage::cached_keyed_eval(&self.evals_dir, &key, || {
            let mut out = Vec::new();
            for &rate in &p.prune_rates {
                let pruned = match prune_mode {
                    PruneMode::PerTensor => bnn.prune_per_tensor(rate)?,
                    PruneMode::Global => vec![bnn.prune(rate)?],
                };
                let acc = |tag: &str, split: &Split| {
                    self.seeds.seed_torch(&format!("table4/rate={rate}/{tag}"));
                    eval::ensemble_accuracies(
                        &*bnn,
                        split,
                        p.prune_ensemble,
                        p.prune_runs,
                        self.chunks,
                    )
                };
                out.push(PruneRate {
                    pruned_per_tensor: pruned,
                    validation: acc("validation", &self.clean_validation),
                    test: acc("test", &self.clean_test),
                    sets: sets.iter().map(|s| acc(&s.label, &s.at(m_bnn))).collect(),
                });
            }
            bnn.unprune();
            Ok(PruneRates { rates: out })
        })
    }
}

/// Stage 3: the training table, the sweep of every evaluation model, Tables 3 and 4.
#[allow(clippy::too_many_arguments)]
fn code_eval_stage(
    pipeline: &CodePipeline,
    grid: &Grid,
    trained: &CodeTrained,
    sets: &[KeptSet],
    evaluated: &[EvalModel],
    ms: &[f64],
    mult: Multipliers,
    stages: &mut Vec<StageReport>,
) -> Result<CodeEvaluations, ReproduceError> {
    let cfg = pipeline.cfg;
    let t0 = Instant::now();
    let mut tally = Tally::default();
    let training = tally
        .add(pipeline.training_rows(&grid.all(), &trained.all())?)
        .rows;
    let progress = bar(evaluated.len() + 2, "eval", cfg.verbose);
    let mut sweeps = Vec::new();
    for e in evaluated {
        progress.set_message(e.name.clone());
        sweeps.push(tally.add(pipeline.sweep(&e.name, &e.keys, &e.model, sets, ms)?));
        progress.inc(1);
    }
    progress.set_message("table 3");
    let table3 = tally
        .add(pipeline.table3(trained.bnn(TABLE3_RHO), sets, mult.bnn)?)
        .rows;
    progress.inc(1);
    progress.set_message("table 4");
    let t4 = rho_index(TABLE4_RHO);
    let prune_mode = cfg.prune_mode_or(PruneMode::PerTensor);
    let t4_run = pipeline.table4(
        &grid.bnns[t4].spec,
        &trained.bnns[t4].key,
        sets,
        mult.bnn,
        prune_mode,
    )?;
    let table4 = tally.add(t4_run).rates;
    progress.finish_and_clear();
    let computed = evaluated.len() + 3 - tally.reused;
    stages.push(stage_line(
        "eval",
        t0,
        tally.seconds,
        computed,
        tally.reused,
    ));
    Ok(CodeEvaluations {
        training,
        sweeps,
        table3,
        table4,
    })
}

/// One finished run of the code protocol: what results.json is made of.
struct CodeRun<'a> {
    pipeline: &'a CodePipeline<'a>,
    grid: &'a Grid,
    trained: &'a CodeTrained,
    sets: &'a [KeptSet],
    evaluated: &'a [EvalModel<'a>],
    evals: &'a CodeEvaluations,
    noise: &'a NoiseControls,
    /// The sweep's multipliers, sorted.
    ms: &'a [f64],
    mult: Multipliers,
    budget: CodeBudget,
}

impl CodeRun<'_> {
    /// The sweeps of the evaluation models in `group`, in sweep order.
    fn group(&self, group: &str) -> Vec<&SweepEval> {
        self.evaluated
            .iter()
            .zip(&self.evals.sweeps)
            .filter(|(e, _)| e.role.group() == group)
            .map(|(_, s)| s)
            .collect()
    }

    fn tables_1_2(&self) -> (Table1, Table2) {
        let (bnn, det) = (self.group("bnn"), self.group("det"));
        let (bnn_rows, bnn_avg) = rows_at(&bnn, index_of(self.ms, self.mult.bnn));
        let (det_rows, det_avg) = rows_at(&det, index_of(self.ms, self.mult.det));
        let lambdas: Vec<f64> = LAMBDAS.iter().map(|l| l.0).collect();
        let clean = |sweeps: &[&SweepEval], test: bool| -> Vec<Cell> {
            sweeps
                .iter()
                .map(|e| cell(if test { &e.test } else { &e.validation }))
                .collect()
        };
        let table1 = Table1::new(
            &RHO_INITS,
            &lambdas,
            (clean(&bnn, false), clean(&bnn, true)),
            (clean(&det, false), clean(&det, true)),
        );
        let note = format!(
            "kept validation examples of each set, evaluated at x + m r with m = {} for BNNs and m = {} for deterministic nets",
            self.mult.bnn, self.mult.det
        );
        let table2 = Table2::new(
            Some(note),
            &RHO_INITS,
            &lambdas,
            (bnn_rows, bnn_avg),
            (det_rows, det_avg),
        );
        (table1, table2)
    }

    fn table3(&self) -> Table3 {
        let p = &self.pipeline.cfg.profile;
        let rows = &self.evals.table3;
        Table3 {
            note: format!(
                "BNN rho_init={TABLE3_RHO} at m = {}; each cell over max(100/N, {}) runs of an N-draw ensemble",
                self.mult.bnn, p.ensemble_runs
            ),
            n_samples: p.ensemble_ns.clone(),
            runs: p
                .ensemble_ns
                .iter()
                .map(|n| ensemble_runs(p.ensemble_runs, *n))
                .collect(),
            rows: rows
                .iter()
                .map(|row| row.iter().map(|runs| cell(runs)).collect())
                .collect(),
            average: (0..p.ensemble_ns.len())
                .map(|j| average_cell(&rows.iter().map(|row| row[j].clone()).collect::<Vec<_>>()))
                .collect(),
            paper_protocol: None,
        }
    }

    fn table4(&self) -> Table4 {
        let cfg = self.pipeline.cfg;
        let p = &cfg.profile;
        let mode = cfg.prune_mode_or(PruneMode::PerTensor);
        let t4 = &self.evals.table4;
        let how = match mode {
            PruneMode::PerTensor => "per tensor, weights and biases (the notebook)",
            PruneMode::Global => "ranked over all weight matrices together (the paper's text)",
        };
        Table4 {
            note: format!(
                "BNN rho_init={TABLE4_RHO}; SNR |mu|/sigma pruning {how}, ensemble of {} draws at m = {}, {} runs per cell",
                p.prune_ensemble, self.mult.bnn, p.prune_runs
            ),
            mode,
            rate_percent: p.prune_rates.iter().map(|r| r * 100.0).collect(),
            pruned_weights: None,
            pruned_per_tensor: Some(t4.iter().map(|r| r.pruned_per_tensor.clone()).collect()),
            snr_histogram: None,
            clean_validation: t4.iter().map(|r| cell(&r.validation)).collect(),
            clean_test: t4.iter().map(|r| cell(&r.test)).collect(),
            rows: (0..self.sets.len())
                .map(|i| t4.iter().map(|r| cell(&r.sets[i])).collect())
                .collect(),
            average: t4.iter().map(|r| average_cell(&r.sets)).collect(),
        }
    }

    fn sweep(&self) -> CodeSweep {
        let models: Vec<SweepRow> = self
            .evaluated
            .iter()
            .zip(&self.evals.sweeps)
            .map(|(e, s)| SweepRow {
                name: e.name.clone(),
                group: e.role.group().to_owned(),
                role: Some(e.role),
                clean_validation: cell(&s.validation),
                clean_test: cell(&s.test),
                sets: s
                    .sets
                    .iter()
                    .map(|per_m| per_m.iter().map(|runs| cell(runs)).collect())
                    .collect(),
                average: (0..self.ms.len())
                    .map(|mi| {
                        let at_m: Vec<Vec<f64>> =
                            s.sets.iter().map(|per_m| per_m[mi].clone()).collect();
                        average_cell(&at_m)
                    })
                    .collect(),
            })
            .collect();
        CodeSweep {
            note: "accuracy of every evaluation model on every set at x + m r, for each multiplier m; sampled models over `runs` single-draw runs".into(),
            multipliers: self.ms.to_vec(),
            models,
        }
    }

    fn sigmas(&self) -> Result<Sigmas, ReproduceError> {
        let bnns = self
            .grid
            .bnns
            .iter()
            .zip(&self.trained.bnns)
            .map(|(m, r)| {
                Ok(BnnSigmas {
                    model: m.label.clone(),
                    layers: bnn_of(r)?.sigma_quantiles(&SIGMA_QUANTILES),
                })
            })
            .collect::<Result<Vec<_>, ReproduceError>>()?;
        Ok(Sigmas {
            quantiles: SIGMA_QUANTILES.to_vec(),
            bnns,
            noise_sigmas: Some(self.noise.sigmas.clone()),
            noise_note: Some(format!(
                "the weight-noise controls use, per layer, the median learned weight sigma of the code protocol's BNN rho_init={TABLE3_RHO}"
            )),
        })
    }

    /// results.json, in the shape of the text protocol's for Tables 1–4.
    fn results_json(&self, meta: Meta) -> Result<Value, ReproduceError> {
        let (table1, table2) = self.tables_1_2();
        let p = &self.pipeline.cfg.profile;
        Ok(json!({
            "source": format!("bayes-robust {} reproduction under the authors' code protocol, profile {}; all accuracies in percent as {{mean, ci95, runs}}", env!("CARGO_PKG_VERSION"), p.name),
            "protocol": "code",
            "budget": self.budget,
            "multipliers": { "bnn": self.mult.bnn, "det": self.mult.det },
            "training": {
                "note": format!("every model's training budget and the accuracy it reached (validation: the trainer's, of the weights kept; test: a deterministic net's, or a BNN's {TRAINING_ENSEMBLE_DRAWS}-draw ensemble's), budget {}", self.budget.label()),
                "models": self.evals.training,
            },
            "attack_sources": self.sets.iter().map(|s| &s.label).collect::<Vec<_>>(),
            "perturbation_examples_file": super::examples::EXAMPLES_FILE,
            "table1_clean": table1,
            "table2_perturbed": table2,
            "table3_ensemble": self.table3(),
            "table4_pruning": self.table4(),
            "sweep": self.sweep(),
            "sigma": self.sigmas()?,
            "perturbation_sets": self.sets.iter().map(|s| TargetedSetRow {
                source: s.label.clone(), n: s.kept(), n_attacked: s.n_attacked,
                kept_fraction: s.kept() as f64 / s.n_attacked.max(1) as f64,
                mean_distortion: s.mean_distortion, attack_seconds: s.seconds,
            }).collect::<Vec<_>>(),
            "models": self.model_rows(),
            "meta": meta,
        }))
    }

    /// Each trained model's row of `models`, with its part of the grid and the
    /// validation curve its checkpoint recorded.
    fn model_rows(&self) -> Vec<CodeModelRow> {
        let groups = ByRole {
            sources: vec![ModelGroup::Source; self.grid.sources.len()],
            dets: vec![ModelGroup::Deterministic; self.grid.dets.len()],
            bnns: vec![ModelGroup::Bnn; self.grid.bnns.len()],
            matched_init: ModelGroup::Control,
            members: vec![ModelGroup::Control; self.grid.members.len()],
        };
        self.trained
            .all()
            .iter()
            .zip(self.grid.all())
            .zip(groups.all())
            .map(|((r, m), group)| CodeModelRow {
                name: m.name.clone(),
                model: r.meta.model.describe(),
                key: r.key.clone(),
                epochs_run: r.meta.epochs_run,
                final_validation_accuracy: r.meta.best_validation_accuracy,
                train_seconds: r.meta.wall_seconds,
                recipe: r.meta.recipe.clone(),
                group: Some(*group),
                spec: Some(r.meta.model.clone()),
                best_epoch: Some(r.meta.best_epoch),
                validation_curve: Some(train::validation_curve(&r.meta)),
            })
            .collect()
    }

    /// The command that remakes this run.
    fn command(&self) -> String {
        let cfg = self.pipeline.cfg;
        let budget = match self.budget {
            CodeBudget::AsWritten => "",
            CodeBudget::TrainedToAccuracy => " --code-budget trained",
        };
        let mult = if self.mult == Multipliers::CODE {
            String::new()
        } else {
            format!(
                " --multiplier-bnn {} --multiplier-det {}",
                self.mult.bnn, self.mult.det
            )
        };
        let pruning = match cfg.prune_mode_or(PruneMode::PerTensor) {
            PruneMode::Global => " --pruning global",
            PruneMode::PerTensor => "",
        };
        let per_example = if cfg.per_example {
            " --per-example"
        } else {
            ""
        };
        format!(
            "bayes-robust --seed {} --threads {} reproduce --profile {} --protocol code{budget}{mult}{pruning}{per_example}{}",
            cfg.master_seed,
            cfg.threads,
            cfg.profile.name,
            cfg.folder_flags(self.budget.dir_suffix()),
        )
    }

    fn meta(&self, raw: &RawDataset, stages: Vec<StageReport>, started: Instant) -> Meta {
        let cfg = self.pipeline.cfg;
        Meta {
            profile: serde_json::to_value(&cfg.profile).unwrap_or(Value::Null),
            code_profile: serde_json::to_value(&self.pipeline.cp).ok(),
            protocol: Some("code".to_owned()),
            master_seed: cfg.master_seed,
            dataset: None,
            versions: super::stage::versions(),
            threads: cfg.threads,
            device: format!("{:?}", cfg.device),
            n_validation: self.pipeline.clean_validation.len(),
            n_test: self.pipeline.clean_test.len(),
            n_attacked: Some(self.pipeline.attacked().len()),
            data_checksums: raw.files().iter().map(|f| f.checksum.to_string()).collect(),
            stages,
            sgemm_gflops: None,
            cpu: None,
            wall_seconds: started.elapsed().as_secs_f64(),
            command: self.command(),
        }
    }
}

/// Runs the code protocol with `budget`'s training budgets and writes
/// `<out_dir>/results.json`; returns its value. Models and sets not in the cache are
/// made here (`run` makes them first, as the plan's jobs: [`run_code_plan`]).
pub fn reproduce_code(
    cfg: &ReproduceConfig,
    mult: Multipliers,
    budget: CodeBudget,
) -> Result<Value, ReproduceError> {
    let started = Instant::now();
    let raw = RawDataset::load(&cfg.data_dir, ChecksumPolicy::Require(cfg.dataset))?;
    let pipeline = CodePipeline::new(cfg, budget, &raw)?;
    let cp = pipeline.cp.clone();
    let grid = Grid::new(&cp, budget);
    let mut stages = Vec::new();
    let trained = code_train_stage(&pipeline, &grid, &mut stages)?;
    let sets = code_attack_stage(&pipeline, &grid, &trained.sources, &mut stages)?;
    code_examples(&grid.sources, &trained.sources, &sets)?.write(&cfg.out_dir)?;
    let ms = multiplier_grid(&cp.multipliers, mult);
    let noise = NoiseControls::new(&trained)?;
    let evaluated = evaluated_models(&grid, &trained, &noise)?;
    let evals = code_eval_stage(
        &pipeline,
        &grid,
        &trained,
        &sets,
        &evaluated,
        &ms,
        mult,
        &mut stages,
    )?;
    let run = CodeRun {
        pipeline: &pipeline,
        grid: &grid,
        trained: &trained,
        sets: &sets,
        evaluated: &evaluated,
        evals: &evals,
        noise: &noise,
        ms: &ms,
        mult,
        budget,
    };
    let mut results = run.results_json(run.meta(&raw, stages, started))?;
    let per_example_files: Vec<String> = if cfg.per_example {
        per_example_code::export(&pipeline, &evaluated, &sets, &ms, &cfg.out_dir)?
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    } else {
        Vec::new()
    };
    results["per_example_files"] = json!(per_example_files);
    let path = write_results(cfg, &results)?;
    if cfg.verbose {
        eprintln!("wrote {}", path.display());
    }
    Ok(results)
}
