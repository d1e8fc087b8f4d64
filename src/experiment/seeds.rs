//! Several training seeds (beyond the paper): the evaluation models retrained with
//! K − 1 more seeds, each family in stacked grids of two seeds ([`crate::train::grid`]), and
//! evaluated on the same perturbation sets. Gives each model's Table 2 set average with
//! a CI across training seeds next to the CI across weight draws, and the paper's
//! margin (best BNN − best deterministic net) per seed with a paired bootstrap over the
//! identical test images, and across seeds.

use tch::{Device, Kind, Tensor};

use super::cache::ArtifactDir;
use super::keys::{self, Key};
use super::stage::{
    GridModel, Ready, ReproduceError, StageReport, Timed, bar, per_run_set_average, training_flops,
};
use crate::data::{Split, Splits};
use crate::eval::summarize_percent;
use crate::model::Classifier;
use crate::model::checkpoint::{CheckpointPaths, ModelSpec};
use crate::seed::SeedTree;
use crate::stats::{MeanCi, paired_bootstrap};
use crate::train::grid::{GridMember, fit_grid_and_save};
use crate::train::{Recipe, TrainOptions, TrainedModel};

/// One model at one training seed (results.json's `seeds.models[].per_seed[]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedRow {
    pub seed: usize,
    pub model_key: String,
    pub best_epoch: usize,
    /// Clean test accuracy, percent (CI over weight draws).
    pub clean: Option<MeanCi>,
    /// Table 2's average over the 12 sets, percent (CI over weight draws).
    pub sets_average: Option<MeanCi>,
}

/// One evaluation model across its training seeds (`seeds.models[]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedsModel {
    /// The model's label (`lambda=0`, `rho_init=-3`).
    pub model: String,
    pub bayesian: bool,
    pub per_seed: Vec<SeedRow>,
    /// The seeds' set averages: mean and Student-t CI over seeds, percent.
    pub across_seeds: Option<MeanCi>,
    /// Their standard deviation over seeds, points.
    pub seed_sd: f64,
}

/// The paper's margin at one seed (`seeds.margin.per_seed[]`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedsMargin {
    pub seed: usize,
    pub best_bnn: String,
    pub best_deterministic: String,
    /// Best BNN − best deterministic net by Table 2's set average, points.
    pub margin: f64,
    /// Over the identical test images, points.
    pub paired_bootstrap: Option<MeanCi>,
}

/// The margin per seed and across the seeds (`seeds.margin`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginAcrossSeeds {
    pub per_seed: Vec<SeedsMargin>,
    pub across_seeds: Option<MeanCi>,
}

/// results.json's `seeds` section.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeedsSection {
    pub train_seeds: usize,
    /// Single weight draws per BNN evaluation.
    pub draws: usize,
    pub bootstrap_resamples: usize,
    pub note: String,
    pub models: Vec<SeedsModel>,
    pub margin: MarginAcrossSeeds,
}

/// Bootstrap resamples of the paired margin test.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// What the seeds stage works with.
pub(super) struct SeedsStage<'a> {
    pub seeds: &'a SeedTree,
    pub recipe: &'a Recipe,
    pub splits: &'a Splits,
    /// Validation, test, then the perturbation sets, by name.
    pub eval_splits: Vec<(String, Split)>,
    /// Identifies the perturbation sets (their cache keys).
    pub sets_key: String,
    pub models_dir: &'a ArtifactDir,
    pub evals_dir: &'a ArtifactDir,
    pub dataset: crate::data::Dataset,
    pub device: Device,
    pub verbose: bool,
    pub train_seeds: usize,
    /// Weight draws per BNN evaluation (single-draw runs).
    pub draws: usize,
}

/// One model at one seed: per split, each run's accuracy and each example's fraction
/// of runs correct.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct SeedEval {
    /// `runs[split][run]`, fractions.
    runs: Vec<Vec<f64>>,
}

/// One stacked grid of the seeds stage: seeds `block` of every model of a family,
/// seed-major and model-minor, with each member's key.
pub(super) struct SeedGrid<'g> {
    pub tag: String,
    pub block: std::ops::Range<usize>,
    /// (seed, model) of each member.
    pub members: Vec<(usize, &'g GridModel)>,
    pub keys: Vec<Key>,
}

impl SeedsStage<'_> {
    fn member_seeds(&self, gm: &GridModel, seed: usize) -> SeedTree {
        self.seeds.child(&format!("train/{}/seed={seed}", gm.name))
    }

    /// The seeds `block` of every model of `family` as one stacked grid (its member
    /// names are part of every member's cache key).
    pub(super) fn seed_grid<'g>(
        &self,
        family: &'g [GridModel],
        tag: &str,
        block: std::ops::Range<usize>,
    ) -> SeedGrid<'g> {
        let members: Vec<(usize, &GridModel)> = block
            .clone()
            .flat_map(|s| family.iter().map(move |gm| (s, gm)))
            .collect();
        let names: Vec<String> = members
            .iter()
            .map(|(s, gm)| format!("{}/seed={s}", gm.name))
            .collect();
        let keys = members
            .iter()
            .map(|(s, gm)| {
                keys::seed_member(
                    &gm.name,
                    *s,
                    &gm.spec,
                    self.recipe,
                    self.seeds.master(),
                    self.member_seeds(gm, *s).prefix(),
                    self.dataset,
                    &names,
                )
            })
            .collect();
        SeedGrid {
            tag: tag.to_owned(),
            block,
            members,
            keys,
        }
    }

    /// Every stacked grid of `family`, one per block of [`seed_blocks`].
    pub(super) fn seed_grids<'g>(&self, family: &'g [GridModel], tag: &str) -> Vec<SeedGrid<'g>> {
        seed_blocks(self.train_seeds)
            .into_iter()
            .map(|block| self.seed_grid(family, tag, block))
            .collect()
    }

    /// Seeds 1..K of every model of `family`, in the order seed-major, model-minor:
    /// each block of [`seed_blocks`] one stacked grid, trained unless all its members
    /// are cached.
    pub(super) fn ensure_family(
        &self,
        family: &[GridModel],
        tag: &str,
    ) -> Result<Vec<Ready>, ReproduceError> {
        let mut ready = Vec::new();
        for grid in self.seed_grids(family, tag) {
            ready.extend(self.ensure_grid(&grid)?);
        }
        Ok(ready)
    }

    /// The members of `grid`, loaded, or trained at once and saved; each member's key
    /// preimage is written beside it.
    pub(super) fn ensure_grid(&self, grid: &SeedGrid) -> Result<Vec<Ready>, ReproduceError> {
        let stems: Vec<_> = grid
            .keys
            .iter()
            .map(|k| self.models_dir.stem(&k.id))
            .collect();
        let ready: Vec<Ready> = if stems.iter().all(|s| CheckpointPaths::new(s).exists()) {
            grid.members
                .iter()
                .zip(&grid.keys)
                .zip(&stems)
                .map(|(((_, gm), key), stem)| {
                    let (model, meta) = TrainedModel::load(&gm.spec, self.device, stem)?;
                    Ok(Ready {
                        key: key.id.clone(),
                        model,
                        meta,
                    })
                })
                .collect::<Result<_, ReproduceError>>()?
        } else {
            let members: Vec<GridMember> = grid
                .members
                .iter()
                .map(|(s, gm)| GridMember {
                    spec: gm.spec.clone(),
                    seeds: self.member_seeds(gm, *s),
                })
                .collect();
            let grid_name = format!(
                "train/grid/{}/seeds={}..{}",
                grid.tag, grid.block.start, grid.block.end
            );
            let options = TrainOptions {
                verbose: self.verbose,
                label: format!("{} grid of {}", grid.tag, members.len()),
            };
            let trained = fit_grid_and_save(
                &members,
                &stems,
                self.splits,
                self.recipe,
                &self.seeds.child(&grid_name),
                self.device,
                &options,
            )?;
            trained
                .into_iter()
                .zip(&grid.keys)
                .map(|((model, meta), key)| Ready {
                    key: key.id.clone(),
                    model,
                    meta,
                })
                .collect()
        };
        for key in &grid.keys {
            key.write_beside(self.models_dir)?;
        }
        Ok(ready)
    }

    /// Weight draws per evaluation of a model of `spec` (1 for a deterministic net).
    pub(super) fn draws_of(&self, spec: &ModelSpec) -> usize {
        match spec {
            ModelSpec::Bnn { .. } => self.draws,
            ModelSpec::Mlp { .. } => 1,
        }
    }

    /// The key of the evaluation `name` (`<model>/seed=<s>`) of the model `model_key`.
    pub(super) fn eval_key(&self, name: &str, model_key: &str, spec: &ModelSpec) -> Key {
        keys::seeds_eval(
            name,
            model_key,
            &self.sets_key,
            self.draws_of(spec),
            self.seeds.master(),
        )
    }

    /// Per split: each run's accuracy, and each example's fraction of runs correct
    /// `[n]`; cached (tensors first, the JSON that marks them complete last). Also
    /// returns whether it was reused.
    pub(super) fn evaluate(
        &self,
        name: &str,
        ready: &Ready,
    ) -> Result<(Timed<SeedEval>, Vec<Tensor>, bool), ReproduceError> {
        let draws = self.draws_of(&ready.meta.model);
        let planned = self.eval_key(name, &ready.key, &ready.meta.model);
        let key = planned.id.clone();
        if let Some(e) = self.evals_dir.read_json::<Timed<SeedEval>>(&key)? {
            let tensors = self.evals_dir.read_tensors(&key)?;
            let per_example = tensors
                .into_iter()
                .find(|(n, _)| n == "per_example")
                .map(|(_, t)| t.unbind(0))
                .ok_or(ReproduceError::MissingTensor {
                    key: key.clone(),
                    name: "per_example",
                })?;
            return Ok((e, per_example, true));
        }
        let t0 = std::time::Instant::now();
        let mut per_example = Vec::new();
        let runs = self
            .eval_splits
            .iter()
            .map(|(split_name, split)| {
                self.seeds
                    .seed_torch(&format!("seeds/eval/{name}/{split_name}"));
                let correct = tch::no_grad(|| correct_per_draw(&ready.model, split, draws));
                per_example.push(correct.mean_dim([0].as_slice(), false, Kind::Float));
                Vec::<f64>::try_from(correct.mean_dim([1].as_slice(), false, Kind::Double))
                    .unwrap_or_default()
            })
            .collect();
        let e = Timed {
            seconds: t0.elapsed().as_secs_f64(),
            value: SeedEval { runs },
        };
        self.evals_dir.write_with_tensors(
            &key,
            &[(
                "per_example",
                &Tensor::stack(&per_example, 0).to_device(Device::Cpu),
            )],
            &e,
        )?;
        planned.write_beside(self.evals_dir)?;
        Ok((e, per_example, false))
    }
}

/// Training seeds per stacked grid of the seeds stage.
pub const SEED_BLOCK: usize = 2;

/// The seeds 1..K, in blocks of [`SEED_BLOCK`] (1–2, 3–4, …; the last one cut at K − 1).
/// A block's grid depends only on the block, so a run with more seeds reuses every
/// complete block of a run with fewer (K = 5 trains seeds 3–4 beside K = 3's 1–2). The
/// BNN members of different grids draw their weight noise from different streams;
/// every member is a training run of its own either way.
pub fn seed_blocks(train_seeds: usize) -> Vec<std::ops::Range<usize>> {
    (1..train_seeds)
        .step_by(SEED_BLOCK)
        .map(|a| a..(a + SEED_BLOCK).min(train_seeds))
        .collect()
}

/// `[draws, n]` 0/1: whether each of `draws` single-draw passes (one weight draw per
/// pass over the whole split) gets each example right.
fn correct_per_draw(model: &TrainedModel, split: &Split, draws: usize) -> Tensor {
    let logits = match model {
        TrainedModel::Mlp { mlp, .. } => mlp.forward(&split.images).unsqueeze(0),
        TrainedModel::Bnn { bnn, .. } => {
            let chunk = 10;
            let parts: Vec<Tensor> = (0..draws)
                .step_by(chunk)
                .map(|d| bnn.sample_logits(&split.images, chunk.min(draws - d)))
                .collect();
            Tensor::cat(&parts, 0)
        }
    };
    logits
        .argmax(-1, false)
        .eq_tensor(&split.labels)
        .to_kind(Kind::Float)
}

/// Per model, per seed: each run's set average, and per split each example's fraction
/// of runs correct.
type Family = Vec<Vec<(Vec<f64>, Vec<Tensor>)>>;

/// `models[model][seed]`: each model's seed-0 model, then its seeds 1.. from `extra`
/// (seed-major, model-minor).
pub(super) fn arrange<'a>(seed0: &'a [Ready], extra: &'a [Ready]) -> Vec<Vec<&'a Ready>> {
    let n = seed0.len().max(1);
    let mut by_model: Vec<Vec<&Ready>> = seed0.iter().map(|r| vec![r]).collect();
    for (i, r) in extra.iter().enumerate() {
        by_model[i % n].push(r);
    }
    by_model
}

/// The models seeds 1..K of the seeds stage trained, seed-major and model-minor per
/// family (see [`arrange`]).
pub(super) struct ExtraSeeds {
    pub dets: Vec<Ready>,
    pub bnns: Vec<Ready>,
    /// Every λ net's and BNN's per-example counts at every seed ([`SeedCounts`]).
    pub counts: SeedCounts,
}

/// Per training seed, model (λ nets, then BNNs) and test image: how many of the seeds
/// evaluation's single-draw runs are correct, summed over the 12 sets (`correct` `[K,
/// models, n]` u8; at most 12 × draws), with each model's draws per set. What the
/// verdicts' CI over seeds × images reads (`per_example_seeds.npz`).
pub struct SeedCounts {
    pub models: Vec<String>,
    pub draws: Vec<usize>,
    pub sets: usize,
    pub correct: Tensor,
}

/// The [`SeedCounts`] of `outcomes` (per family, model, seed: the per-split fractions
/// of draws correct, splits validation, test, then the sets).
fn seed_counts(
    outcomes: &[Family],
    names: &[&GridModel],
    draws: &[usize],
) -> Result<SeedCounts, ReproduceError> {
    let per_model: Vec<&Vec<(Vec<f64>, Vec<Tensor>)>> = outcomes.iter().flatten().collect();
    let k = per_model.first().map_or(0, |m| m.len());
    let mut per_seed = Vec::with_capacity(k);
    let mut sets = 0;
    for s in 0..k {
        let rows: Vec<Tensor> = per_model
            .iter()
            .zip(draws)
            .map(|(seeds, d)| {
                let splits = &seeds[s].1[2..];
                sets = splits.len();
                (Tensor::stack(splits, 0).sum_dim_intlist([0].as_slice(), false, Kind::Double)
                    * *d as f64)
                    .round()
            })
            .collect();
        per_seed.push(Tensor::stack(&rows, 0));
    }
    if per_seed.is_empty() {
        return Err(ReproduceError::Write {
            path: "per_example_seeds.npz".into(),
            reason: "the seeds stage evaluated no model".into(),
        });
    }
    Ok(SeedCounts {
        models: names.iter().map(|g| g.name.clone()).collect(),
        draws: draws.to_vec(),
        sets,
        correct: Tensor::stack(&per_seed, 0).to_kind(super::per_example_io::count_kind(
            sets * draws.iter().copied().max().unwrap_or(1),
        )),
    })
}

/// Runs the seeds stage over `family_dets` and `family_bnns`, whose seed-0 models are
/// `seed0_dets` and `seed0_bnns` (the main pipeline's). Returns the `seeds` section of
/// results.json, the seconds spent training and evaluating when artifacts were made,
/// and the models of seeds 1..K.
pub(super) fn run(
    stage: &SeedsStage,
    dets: &[GridModel],
    bnns: &[GridModel],
    seed0_dets: &[Ready],
    seed0_bnns: &[Ready],
) -> Result<(SeedsSection, StageReport, ExtraSeeds), ReproduceError> {
    let started = std::time::Instant::now();
    let k = stage.train_seeds;
    let extra_dets = stage.ensure_family(dets, "det")?;
    let extra_bnns = stage.ensure_family(bnns, "bnn")?;
    let n_eval: f64 = stage.eval_splits.iter().map(|(_, s)| s.len() as f64).sum();
    let mut flops: f64 = extra_dets
        .iter()
        .chain(&extra_bnns)
        .map(|r| training_flops(r, stage.recipe, stage.splits))
        .sum();
    let train_seconds: f64 = extra_dets
        .iter()
        .chain(&extra_bnns)
        .map(|r| r.meta.wall_seconds)
        .fold(0.0, f64::max);
    let det_models = arrange(seed0_dets, &extra_dets);
    let bnn_models = arrange(seed0_bnns, &extra_bnns);
    let progress = bar((dets.len() + bnns.len()) * k, "seeds", stage.verbose);
    let (mut eval_seconds, mut reused, mut computed) = (0.0, 0, 0);
    let mut rows = Vec::new();
    let mut outcomes: Vec<Family> = Vec::new();
    for (family, models) in [(dets, &det_models), (bnns, &bnn_models)] {
        let mut fam = Vec::new();
        for (gm, seeds) in family.iter().zip(models.iter()) {
            let mut per_seed = Vec::new();
            let mut seed_rows = Vec::new();
            for (s, ready) in seeds.iter().enumerate() {
                progress.set_message(format!("{} seed {s}", gm.label));
                let name = format!("{}/seed={s}", gm.name);
                let (e, per_example, was_cached) = stage.evaluate(&name, ready)?;
                let draws = match gm.spec {
                    ModelSpec::Bnn { .. } => stage.draws,
                    ModelSpec::Mlp { .. } => 1,
                };
                flops += super::flops::forward(gm.spec.arch(), n_eval * draws as f64);
                eval_seconds += e.seconds;
                if was_cached {
                    reused += 1;
                } else {
                    computed += 1;
                }
                let avg = per_run_set_average(&e.value.runs[2..]);
                seed_rows.push(SeedRow {
                    seed: s,
                    model_key: ready.key.clone(),
                    best_epoch: ready.meta.best_epoch,
                    clean: summarize_percent(&e.value.runs[1]),
                    sets_average: summarize_percent(&avg),
                });
                per_seed.push((avg, per_example));
                progress.inc(1);
            }
            let means: Vec<f64> = per_seed
                .iter()
                .map(|(avg, _)| avg.iter().sum::<f64>() / avg.len().max(1) as f64)
                .collect();
            rows.push(SeedsModel {
                model: gm.label.clone(),
                bayesian: matches!(gm.spec, ModelSpec::Bnn { .. }),
                per_seed: seed_rows,
                across_seeds: summarize_percent(&means),
                seed_sd: 100.0 * sd(&means),
            });
            fam.push(per_seed);
        }
        outcomes.push(fam);
    }
    progress.finish_and_clear();

    // The margin per seed: best BNN − best deterministic net by Table 2's set average.
    let mut margins = Vec::new();
    let mut margin_values = Vec::new();
    for s in 0..k {
        let best = |fam: &Family| {
            fam.iter()
                .enumerate()
                .map(|(i, seeds)| {
                    let avg = &seeds[s].0;
                    (i, avg.iter().sum::<f64>() / avg.len().max(1) as f64)
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, f64::NAN))
        };
        let (d, d_acc) = best(&outcomes[0]);
        let (b, b_acc) = best(&outcomes[1]);
        // Per test image: the BNN's fraction of draws correct minus the net's 0/1,
        // averaged over the 12 sets (the same image underlies every set).
        let per_image = |fam: &Family, i: usize| {
            let splits = &fam[i][s].1[2..];
            Tensor::stack(splits, 0).mean_dim([0].as_slice(), false, Kind::Double)
        };
        let diff: Vec<f64> = Vec::try_from(per_image(&outcomes[1], b) - per_image(&outcomes[0], d))
            .unwrap_or_default();
        let mut rng = stage.seeds.rng(&format!("seeds/bootstrap/seed={s}"));
        let boot = paired_bootstrap(&diff, BOOTSTRAP_RESAMPLES, &mut rng).map(|m| m.scaled(100.0));
        margin_values.push(100.0 * (b_acc - d_acc));
        margins.push(SeedsMargin {
            seed: s,
            best_bnn: bnns[b].label.clone(),
            best_deterministic: dets[d].label.clone(),
            margin: 100.0 * (b_acc - d_acc),
            paired_bootstrap: boot,
        });
    }
    let across = MeanCi::from_values(&margin_values);
    let section = SeedsSection {
        train_seeds: k,
        draws: stage.draws,
        bootstrap_resamples: BOOTSTRAP_RESAMPLES,
        note: format!(
            "Seed 0 is the main run's models; seeds 1..{} retrain every evaluation model from new initialisations and data orders (each family in stacked grids of {SEED_BLOCK} seeds). Accuracies in percent: per seed with a CI over {} single weight draws (BNNs), across seeds with a Student-t CI over the {k} seeds. The margin is best BNN − best deterministic net by Table 2's average over the 12 sets, per seed with a paired bootstrap CI over the identical test images ({BOOTSTRAP_RESAMPLES} resamples).",
            k - 1,
            stage.draws
        ),
        models: rows,
        margin: MarginAcrossSeeds {
            per_seed: margins,
            across_seeds: across,
        },
    };
    let report = StageReport {
        stage: "seeds".into(),
        seconds: started.elapsed().as_secs_f64(),
        artifact_seconds: train_seconds + eval_seconds,
        computed,
        reused,
        flops: Some(flops),
    };
    let names: Vec<&GridModel> = dets.iter().chain(bnns).collect();
    let draws: Vec<usize> = names.iter().map(|g| stage.draws_of(&g.spec)).collect();
    let extra = ExtraSeeds {
        dets: extra_dets,
        bnns: extra_bnns,
        counts: seed_counts(&outcomes, &names, &draws)?,
    };
    Ok((section, report, extra))
}

fn sd(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let m = values.iter().sum::<f64>() / n as f64;
    (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}
