//! Whole model grids trained at once: G same-shaped members (the ρ_init grid's BNNs,
//! the λ grid's MLPs, several training seeds of each) stacked into weights
//! `[G, in, out]`, so every layer of every member is one batched product per step.
//! Each member keeps what [`fit`](super::fit) gives a model trained alone: its own
//! initialisation and data order (from its own seeds), its own early stopping and its
//! own best weights. A member that stops leaves the stack, so the rest run smaller.
//!
//! What is not the same as training one by one: a BNN member's weight noise ε comes
//! from the grid's generator (libtorch has one per process, and G members cannot each
//! replay their own stream inside one batched draw). Members are therefore equal in
//! distribution to one-by-one training, not draw for draw; where the noise has no
//! effect (deterministic nets, σ ≈ 0) they are equal up to float rounding (tested).

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::bnn_step::{BnnElbo, BnnSgd, MomentumSgd};
use super::{EpochRecord, LossScale, Recipe, TrainError, TrainOptions, TrainOutcome, TrainedModel};
use crate::data::{IMAGE_DIM, ShuffledBatches, Splits};
use crate::model::bayes::frozen_normal;
use crate::model::checkpoint::ModelSpec;
use crate::seed::SeedTree;

/// One member of a grid: what it is and the seeds it would be trained with alone.
pub struct GridMember {
    pub spec: ModelSpec,
    /// Initialisation (`init`) and data order (`shuffle`) come from here, as in
    /// [`super::train_and_save`].
    pub seeds: SeedTree,
}

/// Why a set of models cannot be trained as one grid.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("a grid needs at least one member")]
    Empty,
    #[error(
        "grid members must share kind, architecture and prior: member {index} is `{found}`, member 0 `{first}`"
    )]
    Mixed {
        index: usize,
        found: String,
        first: String,
    },
}

/// What the stacked loss adds to cross-entropy, with how its stack is stepped (made
/// once per grid).
enum Regulariser {
    /// Eq. 6 with each member's λ (`[G]`), stepped through autograd.
    Penalty { lambdas: Tensor, sgd: MomentumSgd },
    /// The Monte Carlo KL of each member's draw (Bayes by Backprop), stepped by hand.
    Kl(BnnSgd),
}

/// The stacked variables of the members still training, with their SGD momentum.
struct Stack {
    /// Per layer: `[w, b]` (MLP) or `[μ_w, ρ_w, μ_b, ρ_b]` (BNN); weights `[G, in, out]`,
    /// biases `[G, 1, out]`.
    params: Vec<Tensor>,
    momentum: Vec<Option<Tensor>>,
    /// Which member each row is.
    members: Vec<usize>,
    regulariser: Regulariser,
    per_layer: usize,
}

fn member_tensors(model: &TrainedModel) -> Vec<Tensor> {
    match model {
        TrainedModel::Mlp { mlp, .. } => mlp
            .layers
            .iter()
            .flat_map(|l| [l.weight.shallow_clone(), l.bias.unsqueeze(0)])
            .collect(),
        TrainedModel::Bnn { bnn, .. } => bnn
            .layers
            .iter()
            .flat_map(|l| {
                [
                    l.mu_w.shallow_clone(),
                    l.rho_w.shallow_clone(),
                    l.mu_b.unsqueeze(0),
                    l.rho_b.unsqueeze(0),
                ]
            })
            .collect(),
    }
}

/// Copies row `row` of the stacked `params` into `model`'s own variables.
fn write_member(model: &TrainedModel, params: &[Tensor], row: i64) {
    tch::no_grad(|| {
        for (var, stacked) in member_tensors(model).iter().zip(params) {
            var.shallow_clone()
                .view_as(&stacked.get(row))
                .copy_(&stacked.get(row));
        }
    });
}

impl Stack {
    fn new(models: &[TrainedModel], regulariser: Regulariser) -> Self {
        let per_member: Vec<Vec<Tensor>> = models.iter().map(member_tensors).collect();
        let params: Vec<Tensor> = (0..per_member[0].len())
            .map(|i| {
                let rows: Vec<Tensor> = per_member.iter().map(|m| m[i].detach()).collect();
                Tensor::stack(&rows, 0).set_requires_grad(true)
            })
            .collect();
        let per_layer = match regulariser {
            Regulariser::Penalty { .. } => 2,
            Regulariser::Kl(_) => 4,
        };
        Self {
            momentum: params.iter().map(|_| None).collect(),
            params,
            members: (0..models.len()).collect(),
            regulariser,
            per_layer,
        }
    }

    fn layers(&self) -> usize {
        self.params.len() / self.per_layer
    }

    /// Each MLP member's minibatch loss `[G]` on `x` `[G, B, 784]`: cross-entropy plus
    /// its λ times the eq. 6 penalty.
    fn penalised_losses(
        &self,
        lambdas: &Tensor,
        x: &Tensor,
        y: &Tensor,
        scale: &LossScale,
    ) -> Tensor {
        let weights: Vec<(Tensor, Tensor)> = self
            .params
            .chunks(2)
            .map(|p| (p[0].shallow_clone(), p[1].shallow_clone()))
            .collect();
        let logits = stacked_forward(&weights, x);
        let nll = -logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &y.unsqueeze(2), false)
            .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float);
        let ce = match scale.reduction {
            super::Reduction::Mean => nll / y.size()[1] as f64,
            super::Reduction::Sum => nll,
        };
        let penalty = weights
            .iter()
            .map(|(w, _)| {
                w.square()
                    .sum_dim_intlist([1, 2].as_slice(), false, Kind::Float)
                    / w.size()[2] as f64
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| ce.zeros_like());
        ce + penalty * lambdas
    }

    /// One SGD step of every member on its minibatch (`x` `[G, B, 784]`, `y` `[G, B]`):
    /// BNNs through the hand-differentiated [`BnnSgd`], MLPs through autograd. Returns
    /// each member's loss `[G]` and (BNN) its KL part, detached.
    fn step(&mut self, x: &Tensor, y: &Tensor, scale: &LossScale) -> (Tensor, Option<Tensor>) {
        match &self.regulariser {
            Regulariser::Kl(sgd) => {
                let noise = super::bnn_step::draw_noise(&self.params);
                let losses = sgd.step(&self.params, &mut self.momentum, &noise, x, y);
                (losses.loss, Some(losses.kl_part))
            }
            Regulariser::Penalty { lambdas, sgd } => {
                let losses = self.penalised_losses(lambdas, x, y, scale);
                let grads =
                    Tensor::run_backward(&[losses.sum(Kind::Float)], &self.params, false, false);
                sgd.update_all(&self.params, &mut self.momentum, grads);
                (losses.detach(), None)
            }
        }
    }

    /// Each member's validation accuracy `[G]`: MLPs on their weights; BNNs as the mean
    /// over the same `val_draws` frozen draws that [`super::fit`] uses (ids 0..n).
    fn validation_accuracy(&self, images: &Tensor, labels: &Tensor, frozen: &[Tensor]) -> Tensor {
        tch::no_grad(|| {
            let g = self.members.len() as i64;
            let (weights, draws) = match &self.regulariser {
                Regulariser::Penalty { .. } => (
                    self.params
                        .chunks(2)
                        .map(|p| (p[0].shallow_clone(), p[1].shallow_clone()))
                        .collect::<Vec<_>>(),
                    1,
                ),
                Regulariser::Kl(_) => {
                    let n = frozen[0].size()[0];
                    let weights = self
                        .params
                        .chunks(4)
                        .zip(frozen.chunks(2))
                        .map(|(p, eps)| {
                            let frozen_draw = |mu: &Tensor, rho: &Tensor, e: &Tensor| {
                                // [G, 1, …] + [G, 1, …]·[1, n, …] → [G·n, …]
                                let w =
                                    mu.unsqueeze(1) + rho.softplus().unsqueeze(1) * e.unsqueeze(0);
                                let mut shape = w.size();
                                shape.remove(0);
                                shape[0] = g * n;
                                w.reshape(shape.as_slice())
                            };
                            (
                                frozen_draw(&p[0], &p[1], &eps[0]),
                                frozen_draw(&p[2], &p[3], &eps[1].unsqueeze(1)),
                            )
                        })
                        .collect();
                    (weights, n)
                }
            };
            let b = images.size()[0];
            let chunk = crate::model::bayes::IMAGE_CHUNK as i64;
            let mut correct = Tensor::zeros([g * draws], (Kind::Float, images.device()));
            for start in (0..b).step_by(chunk as usize) {
                let len = chunk.min(b - start);
                let logits = stacked_forward(&weights, &images.narrow(0, start, len));
                correct += logits
                    .argmax(-1, false)
                    .eq_tensor(&labels.narrow(0, start, len))
                    .to_kind(Kind::Float)
                    .sum_dim_intlist([1].as_slice(), false, Kind::Float);
            }
            (correct / b as f64)
                .view([g, draws])
                .mean_dim([1].as_slice(), false, Kind::Float)
        })
    }

    /// Drops the rows whose member is not in `keep` (parameters and momentum alike).
    fn retain(&mut self, keep: &[usize]) {
        let rows: Vec<i64> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| keep.contains(m))
            .map(|(row, _)| row as i64)
            .collect();
        let device = self.params[0].device();
        let index = Tensor::from_slice(&rows).to_device(device);
        let select = |t: &Tensor| t.detach().index_select(0, &index);
        self.params = self
            .params
            .iter()
            .map(|p| select(p).set_requires_grad(true))
            .collect();
        self.momentum = self
            .momentum
            .iter()
            .map(|m| m.as_ref().map(&select))
            .collect();
        if let Regulariser::Penalty { lambdas, .. } = &mut self.regulariser {
            *lambdas = select(lambdas);
        }
        self.members = rows.iter().map(|r| self.members[*r as usize]).collect();
    }
}

/// Logits `[G, B, 10]` of a ReLU net whose layer l has weights `[G, in, out]` and
/// biases `[G, 1, out]`; `x` is `[G, B, 784]`, or `[B, 784]` shared by every row.
fn stacked_forward(weights: &[(Tensor, Tensor)], x: &Tensor) -> Tensor {
    let last = weights.len() - 1;
    weights
        .iter()
        .enumerate()
        .fold(x.shallow_clone(), |h, (i, (w, b))| {
            let z = h.matmul(w) + b;
            if i < last { z.relu() } else { z }
        })
}

/// Checks that `members` can share one stack and makes its regulariser.
fn check_members(
    members: &[GridMember],
    scale: &LossScale,
    recipe: &Recipe,
    device: Device,
) -> Result<Regulariser, GridError> {
    let first = members.first().ok_or(GridError::Empty)?;
    let shape = |spec: &ModelSpec| match spec {
        ModelSpec::Mlp { config, .. } => format!("mlp {}", config.arch),
        ModelSpec::Bnn { config } => format!("bnn {} {:?}", config.arch, config.prior),
    };
    for (index, m) in members.iter().enumerate() {
        if shape(&m.spec) != shape(&first.spec) {
            return Err(GridError::Mixed {
                index,
                found: m.spec.describe(),
                first: first.spec.describe(),
            });
        }
    }
    let sgd = MomentumSgd::new(recipe.lr, recipe.momentum, device);
    Ok(match &first.spec {
        ModelSpec::Mlp { .. } => {
            let lambdas: Vec<f32> = members
                .iter()
                .map(|m| match m.spec {
                    ModelSpec::Mlp { lambda, .. } => lambda as f32,
                    ModelSpec::Bnn { .. } => 0.0,
                })
                .collect();
            Regulariser::Penalty {
                lambdas: Tensor::from_slice(&lambdas).to_device(device),
                sgd,
            }
        }
        ModelSpec::Bnn { config } => Regulariser::Kl(BnnSgd {
            elbo: BnnElbo::new(&config.prior, scale, device),
            sgd,
        }),
    })
}

/// Trains every member of `members` at once with `recipe` and returns, in order, each
/// trained model (its best weights, as [`super::fit`] keeps them) and its outcome.
/// The weight noise of BNN members is seeded by `grid_seeds` (`noise/epoch=<e>`).
pub fn fit_grid(
    members: &[GridMember],
    splits: &Splits,
    recipe: &Recipe,
    grid_seeds: &SeedTree,
    device: Device,
    options: &TrainOptions,
) -> Result<Vec<(TrainedModel, TrainOutcome)>, TrainError> {
    let start = Instant::now();
    let n_train = splits.train.len();
    let batch = recipe.batch_size.max(1);
    let scale = LossScale {
        reduction: recipe.reduction,
        n_train,
        n_batches: n_train.div_ceil(batch),
    };
    let regulariser = check_members(members, &scale, recipe, device)
        .map_err(|e| TrainError::Grid(e.to_string()))?;
    let models: Vec<TrainedModel> = members
        .iter()
        .map(|m| TrainedModel::init(&m.spec, device, &m.seeds))
        .collect();
    let mut stack = Stack::new(&models, regulariser);
    let mut orders: Vec<ShuffledBatches> = members
        .iter()
        .map(|m| ShuffledBatches::new(m.seeds.rng("shuffle"), n_train, recipe.batch_size))
        .collect();
    // The frozen validation draws' ε, made once: per layer [n, in, out] and [n, out].
    let frozen: Vec<Tensor> = match &stack.regulariser {
        Regulariser::Penalty { .. } => Vec::new(),
        Regulariser::Kl(_) => {
            let n = recipe.val_draws.max(1) as i64;
            (0..stack.layers())
                .flat_map(|i| {
                    let w = stack.params[4 * i].size();
                    let b = stack.params[4 * i + 2].size();
                    [
                        frozen_normal(&[n, w[1], w[2]], 0, 2 * i as u64),
                        frozen_normal(&[n, b[2]], 0, 2 * i as u64 + 1),
                    ]
                })
                .map(|t| t.to_device(device))
                .collect()
        }
    };
    let g = members.len();
    let bar = crate::progress::bar(recipe.max_epochs, &options.label, "epoch", options.verbose);
    let mut histories: Vec<Vec<EpochRecord>> = vec![Vec::new(); g];
    let mut best: Vec<(f64, usize)> = vec![(f64::NEG_INFINITY, 0); g];
    let mut best_weights: Vec<Option<Vec<Tensor>>> = (0..g).map(|_| None).collect();
    let mut finished_at = vec![0.0; g];
    let images = &splits.train.images;
    let labels = &splits.train.labels;
    for epoch in 1..=recipe.max_epochs {
        if stack.members.is_empty() {
            break;
        }
        let t0 = Instant::now();
        grid_seeds.seed_torch(&format!("noise/epoch={epoch}"));
        let active = stack.members.len() as i64;
        let order: Vec<i64> = stack
            .members
            .iter()
            .flat_map(|&m| orders[m].next_order())
            .collect();
        let order = Tensor::from_slice(&order)
            .view([active, n_train as i64])
            .to_device(device);
        let mut loss_sum = Tensor::zeros([active], (Kind::Double, device));
        let mut kl_sum: Option<Tensor> = None;
        let n_steps = n_train.div_ceil(batch);
        for step in 0..n_steps {
            let begin = (step * batch) as i64;
            let len = batch.min(n_train - step * batch) as i64;
            let index = order.narrow(1, begin, len).reshape([-1]);
            let x = images
                .index_select(0, &index)
                .view([active, len, IMAGE_DIM as i64]);
            let y = labels.index_select(0, &index).view([active, len]);
            let (losses, kl) = stack.step(&x, &y, &scale);
            loss_sum += losses;
            if let Some(kl) = kl {
                kl_sum = Some(match kl_sum {
                    Some(s) => s + kl,
                    None => kl.to_kind(Kind::Double),
                });
            }
        }
        let val: Vec<f64> = Vec::<f64>::try_from(
            stack
                .validation_accuracy(
                    &splits.validation.images,
                    &splits.validation.labels,
                    &frozen,
                )
                .to_kind(Kind::Double),
        )?;
        let losses: Vec<f64> = Vec::try_from(loss_sum / n_steps as f64)?;
        let kls: Option<Vec<f64>> = kl_sum
            .map(|k| Vec::try_from(k / n_steps as f64))
            .transpose()?;
        let seconds = t0.elapsed().as_secs_f64();
        let mut keep = Vec::new();
        for (row, &m) in stack.members.iter().enumerate() {
            if !losses[row].is_finite() {
                return Err(TrainError::Torch(tch::TchError::Kind(format!(
                    "{}: member {m} ({}) diverged at epoch {epoch} (loss {})",
                    options.label,
                    members[m].spec.describe(),
                    losses[row]
                ))));
            }
            histories[m].push(EpochRecord {
                epoch,
                loss: losses[row],
                kl: kls.as_ref().map(|k| k[row]),
                validation_accuracy: val[row],
                seconds,
            });
            let (best_acc, best_epoch) = &mut best[m];
            let stop = if val[row] > *best_acc {
                *best_acc = val[row];
                *best_epoch = epoch;
                if recipe.patience.is_some() {
                    best_weights[m] = Some(
                        stack
                            .params
                            .iter()
                            .map(|p| p.get(row as i64).detach().copy())
                            .collect(),
                    );
                }
                false
            } else {
                recipe.patience.is_some_and(|p| epoch - *best_epoch >= p)
            };
            if stop || epoch == recipe.max_epochs {
                write_member(&models[m], &stack.params, row as i64);
                finished_at[m] = start.elapsed().as_secs_f64();
            } else {
                keep.push(m);
            }
        }
        if options.verbose {
            let line = format!(
                "{} epoch {:>3}  {} training  best val {:.2}%  {:.1}s",
                options.label,
                epoch,
                keep.len(),
                100.0 * best.iter().map(|b| b.0).fold(0.0, f64::max),
                seconds
            );
            bar.suspend(|| eprintln!("{line}"));
        }
        bar.inc(1);
        bar.set_message(format!("{} training", keep.len()));
        if keep.len() < stack.members.len() {
            if keep.is_empty() {
                stack.members.clear();
            } else {
                stack.retain(&keep);
            }
        }
    }
    bar.finish_and_clear();
    Ok(models
        .into_iter()
        .enumerate()
        .map(|(m, model)| {
            if let Some(saved) = &best_weights[m] {
                let stacked: Vec<Tensor> = saved.iter().map(|t| t.unsqueeze(0)).collect();
                write_member(&model, &stacked, 0);
            }
            let history = std::mem::take(&mut histories[m]);
            let (best_epoch, best_acc) = match (recipe.patience, history.last()) {
                (None, Some(last)) => (last.epoch, last.validation_accuracy),
                _ => (best[m].1, best[m].0),
            };
            let outcome = TrainOutcome {
                epochs_run: history.len(),
                best_epoch,
                best_validation_accuracy: best_acc,
                wall_seconds: finished_at[m],
                history,
            };
            (model, outcome)
        })
        .collect())
}

/// [`fit_grid`], then each member's checkpoint saved at its stem (in member order), as
/// [`super::train_and_save`] saves a model trained alone.
pub fn fit_grid_and_save(
    members: &[GridMember],
    stems: &[std::path::PathBuf],
    splits: &Splits,
    recipe: &Recipe,
    grid_seeds: &SeedTree,
    device: Device,
    options: &TrainOptions,
) -> Result<Vec<(TrainedModel, crate::model::checkpoint::CheckpointMeta)>, TrainError> {
    let trained = fit_grid(members, splits, recipe, grid_seeds, device, options)?;
    trained
        .into_iter()
        .zip(members)
        .zip(stems)
        .map(|(((model, outcome), m), stem)| {
            let meta = super::checkpoint_meta(&m.spec, recipe, &m.seeds, &outcome)?;
            crate::model::checkpoint::save(model.vs(), &meta, stem)?;
            let meta = crate::model::checkpoint::read_meta(stem)?;
            Ok((model, meta))
        })
        .collect()
}
