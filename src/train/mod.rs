//! The training loop: minibatch SGD with momentum, seeded shuffling, early stopping on
//! validation accuracy keeping the best weights, and checkpoints; [`grid`] trains a
//! whole grid of same-shaped models at once.

pub mod bnn_step;
pub mod grid;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor, nn};

use crate::data::{ShuffledBatches, Split, Splits};
use crate::model::WeightMode;
use crate::model::bayes::BayesMlp;
use crate::model::checkpoint::{
    self, CHECKPOINT_FORMAT, CheckpointError, CheckpointMeta, ModelSpec,
};
use crate::model::mlp::Mlp;
use crate::seed::SeedTree;

/// How per-example losses are combined in a minibatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Batch-mean cross-entropy; a BNN adds KL / n_train (the paper's lr 1e-3 works).
    Mean,
    /// Batch-sum cross-entropy; a BNN adds KL / number_of_batches (the authors' code).
    Sum,
}

/// A training recipe: optimiser, batching, loss convention and stopping rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    pub lr: f64,
    pub momentum: f64,
    pub batch_size: usize,
    pub reduction: Reduction,
    pub max_epochs: usize,
    /// Stop after this many epochs without a new best validation accuracy; `None`
    /// trains all `max_epochs` and keeps the last weights.
    pub patience: Option<usize>,
    /// A BNN's validation accuracy is the mean over this many fixed weight draws.
    pub val_draws: usize,
}

impl Recipe {
    /// The paper's recipe (§3.2): SGD lr 1e-3, momentum 0.95, batch 128, early stopping
    /// with patience 5, batch-mean loss, at most `max_epochs` epochs.
    pub fn paper(max_epochs: usize) -> Self {
        Self {
            lr: 1e-3,
            momentum: 0.95,
            batch_size: 128,
            reduction: Reduction::Mean,
            max_epochs,
            patience: Some(5),
            val_draws: 10,
        }
    }
}

/// What the trainer logs each epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean over minibatches of the full minibatch loss.
    pub loss: f64,
    /// Mean over minibatches of the KL part of the loss (BNNs only).
    pub kl: Option<f64>,
    pub validation_accuracy: f64,
    pub seconds: f64,
}

/// The validation accuracy after each epoch recorded in a checkpoint's history (empty
/// for a history of another shape).
pub fn validation_curve(meta: &crate::model::checkpoint::CheckpointMeta) -> Vec<f64> {
    serde_json::from_value::<Vec<EpochRecord>>(meta.history.clone())
        .map(|h| h.iter().map(|r| r.validation_accuracy).collect())
        .unwrap_or_default()
}

/// The result of a training run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub wall_seconds: f64,
    pub history: Vec<EpochRecord>,
}

/// A model the trainer can fit: a minibatch loss and a validation accuracy.
pub trait Trainee {
    /// The minibatch loss and (for BNNs) its KL part, as tensors (no host sync).
    fn batch_loss(&self, x: &Tensor, y: &Tensor, scale: &LossScale) -> (Tensor, Option<Tensor>);
    /// Validation accuracy in [0, 1].
    fn validation_accuracy(&self, split: &Split, recipe: &Recipe) -> f64;
    /// What [`fit`] calls once per minibatch: by default autograd through
    /// [`Self::batch_loss`] and SGD with `recipe`'s learning rate and momentum
    /// ([`AutogradSgd`]).
    fn stepper<'a>(
        &'a self,
        vs: &nn::VarStore,
        recipe: &Recipe,
        scale: &LossScale,
    ) -> Box<dyn Stepper + 'a>
    where
        Self: Sized,
    {
        AutogradSgd::boxed(self, vs, recipe, scale)
    }
}

/// One training step on a minibatch: loss, gradient, SGD update.
pub trait Stepper {
    /// The minibatch loss and (for BNNs) its KL part, detached scalars (no host sync).
    fn step(&mut self, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>);
}

/// Autograd through [`Trainee::batch_loss`] and SGD with momentum as torch's
/// (v ← m·v + g, p ← p − lr·v): the gradients of the trainable variables are returned
/// by the backward pass (none accumulates in `.grad`, so none is zeroed) and applied by
/// [`bnn_step::MomentumSgd`]'s two in-place passes a tensor.
pub struct AutogradSgd<'a, T: Trainee> {
    model: &'a T,
    params: Vec<Tensor>,
    buffers: Vec<Option<Tensor>>,
    sgd: bnn_step::MomentumSgd,
    scale: LossScale,
}

impl<'a, T: Trainee> AutogradSgd<'a, T> {
    pub fn boxed(
        model: &'a T,
        vs: &nn::VarStore,
        recipe: &Recipe,
        scale: &LossScale,
    ) -> Box<dyn Stepper + 'a> {
        let params = vs.trainable_variables();
        Box::new(Self {
            model,
            buffers: params.iter().map(|_| None).collect(),
            params,
            sgd: bnn_step::MomentumSgd::new(recipe.lr, recipe.momentum, vs.device()),
            scale: *scale,
        })
    }
}

impl<T: Trainee> Stepper for AutogradSgd<'_, T> {
    fn step(&mut self, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>) {
        let (loss, kl) = self.model.batch_loss(x, y, &self.scale);
        let grads = Tensor::run_backward(&[&loss], &self.params, false, false);
        self.sgd.update_all(&self.params, &mut self.buffers, grads);
        (loss.detach(), kl.map(|k| k.detach()))
    }
}

/// A BNN's own variables as a stack of one ([`bnn_step`]'s layout), updated in place
/// by the hand-differentiated step.
struct HandBnnSgd {
    params: Vec<Tensor>,
    buffers: Vec<Option<Tensor>>,
    sgd: bnn_step::BnnSgd,
}

impl Stepper for HandBnnSgd {
    fn step(&mut self, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>) {
        let noise = bnn_step::draw_noise(&self.params);
        let losses = self.sgd.step(&self.params, &mut self.buffers, &noise, x, y);
        (
            losses.loss.squeeze_dim(0),
            Some(losses.kl_part.squeeze_dim(0)),
        )
    }
}

/// What the loss convention needs to know about the data.
#[derive(Debug, Clone, Copy)]
pub struct LossScale {
    pub reduction: Reduction,
    pub n_train: usize,
    pub n_batches: usize,
}

impl LossScale {
    fn cross_entropy(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        let nll = logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Sum, -100, 0.0);
        match self.reduction {
            Reduction::Mean => nll / y.size()[0] as f64,
            Reduction::Sum => nll,
        }
    }

    /// The weight of the full KL term in one minibatch's loss, so that an epoch sums to
    /// one KL in the loss's own units (Blundell et al. 2015, equal minibatch weights).
    pub fn kl_weight(&self) -> f64 {
        match self.reduction {
            Reduction::Mean => 1.0 / self.n_train as f64,
            Reduction::Sum => 1.0 / self.n_batches as f64,
        }
    }
}

/// Fraction of `labels` that each of the `[n, B, 10]` logits gets right: `[n]`.
pub fn per_draw_accuracy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Float)
        .mean_dim([-1].as_slice(), false, Kind::Float)
}

/// A deterministic MLP with its eq. 6 penalty weight λ.
pub struct PenalisedMlp<'a> {
    pub mlp: &'a Mlp,
    pub lambda: f64,
}

impl Trainee for PenalisedMlp<'_> {
    fn batch_loss(&self, x: &Tensor, y: &Tensor, scale: &LossScale) -> (Tensor, Option<Tensor>) {
        let ce = scale.cross_entropy(&self.mlp.forward(x), y);
        let loss = if self.lambda > 0.0 {
            ce + self.mlp.l2_penalty() * self.lambda
        } else {
            ce
        };
        (loss, None)
    }

    fn validation_accuracy(&self, split: &Split, _recipe: &Recipe) -> f64 {
        tch::no_grad(|| {
            per_draw_accuracy(&self.mlp.forward(&split.images).unsqueeze(0), &split.labels)
                .double_value(&[0])
        })
    }

    /// [`PenalisedSgd`]: the cross-entropy through autograd, eq. 6's gradient written
    /// out.
    fn stepper<'a>(
        &'a self,
        vs: &nn::VarStore,
        recipe: &Recipe,
        scale: &LossScale,
    ) -> Box<dyn Stepper + 'a> {
        Box::new(PenalisedSgd::new(self, vs.device(), recipe, scale))
    }
}

/// SGD on a deterministic MLP's eq. 6 loss CE + λ Σ_l (1/|l|) Σ_{w∈l} w² with only
/// the cross-entropy differentiated by autograd: the penalty adds (2λ/|l|)·w to each
/// weight's gradient (one fused pass, where autograd's backward made two over every
/// weight), and its value, for the loss record, is [`Mlp::l2_penalty`] without a graph.
/// The same steps as [`AutogradSgd`] through [`Trainee::batch_loss`] up to float
/// rounding (tested).
pub struct PenalisedSgd<'a> {
    model: &'a PenalisedMlp<'a>,
    /// Per layer: weight, bias.
    params: Vec<Tensor>,
    /// 0-dimensional 2λ/|l| per layer; empty when λ = 0.
    slopes: Vec<Tensor>,
    buffers: Vec<Option<Tensor>>,
    sgd: bnn_step::MomentumSgd,
    scale: LossScale,
}

impl<'a> PenalisedSgd<'a> {
    pub fn new(
        model: &'a PenalisedMlp<'a>,
        device: Device,
        recipe: &Recipe,
        scale: &LossScale,
    ) -> Self {
        let layers = &model.mlp.layers;
        let params: Vec<Tensor> = layers
            .iter()
            .flat_map(|l| [l.weight.shallow_clone(), l.bias.shallow_clone()])
            .collect();
        let slopes = if model.lambda > 0.0 {
            layers
                .iter()
                .map(|l| {
                    let slope = 2.0 * model.lambda * l.penalty_scale();
                    Tensor::from(slope as f32).to_device(device)
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            model,
            buffers: params.iter().map(|_| None).collect(),
            params,
            slopes,
            sgd: bnn_step::MomentumSgd::new(recipe.lr, recipe.momentum, device),
            scale: *scale,
        }
    }
}

impl Stepper for PenalisedSgd<'_> {
    fn step(&mut self, x: &Tensor, y: &Tensor) -> (Tensor, Option<Tensor>) {
        let ce = self.scale.cross_entropy(&self.model.mlp.forward(x), y);
        let mut grads = Tensor::run_backward(&[&ce], &self.params, false, false);
        let loss = tch::no_grad(|| {
            for ((grad, w), slope) in grads
                .iter_mut()
                .step_by(2)
                .zip(self.params.iter().step_by(2))
                .zip(&self.slopes)
            {
                let _ = grad.addcmul_(w, slope);
            }
            if self.slopes.is_empty() {
                ce.detach()
            } else {
                ce.detach() + self.model.mlp.l2_penalty() * self.model.lambda
            }
        });
        self.sgd.update_all(&self.params, &mut self.buffers, grads);
        (loss, None)
    }
}

impl Trainee for BayesMlp {
    /// One weight draw per minibatch: cross-entropy plus the Monte Carlo KL
    /// log q(w|μ,σ) − log P(w) of that draw, weighted by [`LossScale::kl_weight`].
    fn batch_loss(&self, x: &Tensor, y: &Tensor, scale: &LossScale) -> (Tensor, Option<Tensor>) {
        let out = self.forward(x, 1, WeightMode::Sample, true);
        let ce = scale.cross_entropy(&out.logits.squeeze_dim(0), y);
        match out.kl {
            Some(kl) => {
                let kl_part = kl.squeeze_dim(0) * scale.kl_weight();
                (ce + &kl_part, Some(kl_part))
            }
            None => (ce, None),
        }
    }

    /// The hand-differentiated step of [`bnn_step`] (the same draws and gradients as
    /// autograd through [`Self::batch_loss`], several times faster); autograd when
    /// weights are pruned.
    fn stepper<'a>(
        &'a self,
        vs: &nn::VarStore,
        recipe: &Recipe,
        scale: &LossScale,
    ) -> Box<dyn Stepper + 'a> {
        if self
            .layers
            .iter()
            .any(|l| l.mask_w.is_some() || l.mask_b.is_some())
        {
            return AutogradSgd::boxed(self, vs, recipe, scale);
        }
        let params = bnn_step::stack_of_one(self);
        Box::new(HandBnnSgd {
            buffers: params.iter().map(|_| None).collect(),
            params,
            sgd: bnn_step::BnnSgd {
                elbo: bnn_step::BnnElbo::new(&self.config.prior, scale, vs.device()),
                sgd: bnn_step::MomentumSgd::new(recipe.lr, recipe.momentum, vs.device()),
            },
        })
    }

    /// Mean accuracy of `val_draws` frozen weight draws (ids 0..val_draws): the same ε in
    /// every epoch, so epochs are compared on common random numbers.
    fn validation_accuracy(&self, split: &Split, recipe: &Recipe) -> f64 {
        tch::no_grad(|| {
            let logits = self
                .forward(
                    &split.images,
                    recipe.val_draws.max(1),
                    WeightMode::Frozen(0),
                    false,
                )
                .logits;
            per_draw_accuracy(&logits, &split.labels)
                .mean(Kind::Float)
                .double_value(&[])
        })
    }
}

/// Options that do not change the result.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Print one line per epoch and show a progress bar.
    pub verbose: bool,
    /// A label for the progress bar and log lines.
    pub label: String,
}

fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect()
}

fn restore(vs: &nn::VarStore, saved: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, var) in vs.variables() {
            if let Some(v) = saved.get(&name) {
                var.shallow_clone().copy_(v);
            }
        }
    });
}

/// Fits the variables of `vs` through `model` on `splits.train`, early-stopping on
/// `splits.validation`. Seeds: `shuffle` (data order, ChaCha20) and `noise/epoch=<e>`
/// (libtorch's generator at the start of every epoch) under `seeds`.
pub fn fit(
    vs: &nn::VarStore,
    model: &impl Trainee,
    splits: &Splits,
    recipe: &Recipe,
    seeds: &SeedTree,
    options: &TrainOptions,
) -> Result<TrainOutcome, tch::TchError> {
    let start = Instant::now();
    let n_train = splits.train.len();
    let mut batches = ShuffledBatches::new(seeds.rng("shuffle"), n_train, recipe.batch_size);
    let scale = LossScale {
        reduction: recipe.reduction,
        n_train,
        n_batches: n_train.div_ceil(recipe.batch_size.max(1)),
    };
    let mut stepper = model.stepper(vs, recipe, &scale);

    let bar = crate::progress::bar(recipe.max_epochs, &options.label, "epoch", options.verbose);

    let mut history = Vec::new();
    let (mut best_acc, mut best_epoch) = (f64::NEG_INFINITY, 0);
    let mut best_weights = None;
    let device = vs.device();
    for epoch in 1..=recipe.max_epochs {
        let t0 = Instant::now();
        seeds.seed_torch(&format!("noise/epoch={epoch}"));
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut kl_sum: Option<Tensor> = None;
        let order = batches.next_epoch();
        let n_steps = order.len();
        for index in order {
            let index = index.to_device(device);
            let x = splits.train.images.index_select(0, &index);
            let y = splits.train.labels.index_select(0, &index);
            let (loss, kl) = stepper.step(&x, &y);
            loss_sum += loss;
            if let Some(kl) = kl {
                kl_sum = Some(match kl_sum {
                    Some(s) => s + kl,
                    None => kl,
                });
            }
        }
        let val = model.validation_accuracy(&splits.validation, recipe);
        let record = EpochRecord {
            epoch,
            loss: loss_sum.double_value(&[]) / n_steps as f64,
            kl: kl_sum.map(|k| k.double_value(&[]) / n_steps as f64),
            validation_accuracy: val,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if !record.loss.is_finite() {
            return Err(tch::TchError::Kind(format!(
                "{}: training diverged at epoch {epoch} (loss {})",
                options.label, record.loss
            )));
        }
        if options.verbose {
            let line = format!(
                "{} epoch {:>3}  loss {:.4}{}  val {:.2}%  {:.1}s",
                options.label,
                epoch,
                record.loss,
                record
                    .kl
                    .map(|k| format!("  kl {k:.4}"))
                    .unwrap_or_default(),
                100.0 * val,
                record.seconds
            );
            bar.suspend(|| eprintln!("{line}"));
        }
        history.push(record);
        bar.inc(1);
        bar.set_message(format!("val {:.2}%", 100.0 * val));
        if val > best_acc {
            best_acc = val;
            best_epoch = epoch;
            if recipe.patience.is_some() {
                best_weights = Some(snapshot(vs));
            }
        } else if recipe.patience.is_some_and(|p| epoch - best_epoch >= p) {
            break;
        }
    }
    bar.finish_and_clear();
    if let Some(saved) = &best_weights {
        restore(vs, saved);
    }
    let last = history.last().map(|r| (r.epoch, r.validation_accuracy));
    let (best_epoch, best_acc) = match (recipe.patience, last) {
        (None, Some(last)) => last,
        _ => (best_epoch, best_acc),
    };
    Ok(TrainOutcome {
        epochs_run: history.len(),
        best_epoch,
        best_validation_accuracy: best_acc,
        wall_seconds: start.elapsed().as_secs_f64(),
        history,
    })
}

/// Why training a model failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training failed: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot record the training run: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot train these models as one grid: {0}")]
    Grid(String),
}

/// A trained model of either kind, with its variables.
pub enum TrainedModel {
    Mlp {
        vs: nn::VarStore,
        mlp: Mlp,
        lambda: f64,
    },
    Bnn {
        vs: nn::VarStore,
        bnn: BayesMlp,
    },
}

impl TrainedModel {
    /// Builds the model of `spec` on `device`, initialised from seed `<seeds>/init`.
    pub fn init(spec: &ModelSpec, device: Device, seeds: &SeedTree) -> Self {
        let vs = nn::VarStore::new(device);
        seeds.seed_torch("init");
        match spec {
            ModelSpec::Mlp { config, lambda } => {
                let mlp = Mlp::new(&vs.root(), config);
                TrainedModel::Mlp {
                    vs,
                    mlp,
                    lambda: *lambda,
                }
            }
            ModelSpec::Bnn { config } => {
                let bnn = BayesMlp::new(&vs.root(), config);
                TrainedModel::Bnn { vs, bnn }
            }
        }
    }

    pub fn vs(&self) -> &nn::VarStore {
        match self {
            TrainedModel::Mlp { vs, .. } | TrainedModel::Bnn { vs, .. } => vs,
        }
    }

    /// Loads a checkpoint of `spec` from `stem`.
    pub fn load(
        spec: &ModelSpec,
        device: Device,
        stem: &Path,
    ) -> Result<(Self, CheckpointMeta), CheckpointError> {
        let mut model = Self::init(spec, device, &SeedTree::new(0));
        let vs = match &mut model {
            TrainedModel::Mlp { vs, .. } | TrainedModel::Bnn { vs, .. } => vs,
        };
        let meta = checkpoint::load_into(vs, spec, stem)?;
        Ok((model, meta))
    }
}

/// Trains the model of `spec` from scratch, seeded from `seeds`, and saves a checkpoint
/// at `stem`.
pub fn train_and_save(
    spec: &ModelSpec,
    splits: &Splits,
    recipe: &Recipe,
    seeds: &SeedTree,
    device: Device,
    stem: &Path,
    options: &TrainOptions,
) -> Result<(TrainedModel, CheckpointMeta), TrainError> {
    let model = TrainedModel::init(spec, device, seeds);
    let outcome = match &model {
        TrainedModel::Mlp { vs, mlp, lambda } => fit(
            vs,
            &PenalisedMlp {
                mlp,
                lambda: *lambda,
            },
            splits,
            recipe,
            seeds,
            options,
        )?,
        TrainedModel::Bnn { vs, bnn } => fit(vs, bnn, splits, recipe, seeds, options)?,
    };
    let meta = checkpoint_meta(spec, recipe, seeds, &outcome)?;
    checkpoint::save(model.vs(), &meta, stem)?;
    // The sidecar as written: with the weights' hash and its writer (or, where another
    // writer finished first, theirs).
    let meta = checkpoint::read_meta(stem)?;
    Ok((model, meta))
}

/// The sidecar of a model of `spec` trained with `recipe` from `seeds`.
pub fn checkpoint_meta(
    spec: &ModelSpec,
    recipe: &Recipe,
    seeds: &SeedTree,
    outcome: &TrainOutcome,
) -> Result<CheckpointMeta, TrainError> {
    Ok(CheckpointMeta {
        format: CHECKPOINT_FORMAT,
        crate_version: env!("CARGO_PKG_VERSION").to_owned(),
        model: spec.clone(),
        master_seed: seeds.master(),
        seed_name: seeds.prefix().to_owned(),
        epochs_run: outcome.epochs_run,
        best_epoch: outcome.best_epoch,
        best_validation_accuracy: outcome.best_validation_accuracy,
        wall_seconds: outcome.wall_seconds,
        recipe: serde_json::to_value(recipe)?,
        history: serde_json::to_value(&outcome.history)?,
        weights_sha256: None,
        made_by: None,
    })
}
