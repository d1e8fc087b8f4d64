//! Several training seeds (beyond the paper): the evaluation models retrained with
//! K − 1 more seeds, each family in stacked grids of two seeds ([`crate::train::grid`]), and
//! evaluated on the same perturbation sets. Gives each model's Table 2 set average with
//! a CI across training seeds next to the CI across weight draws, and the paper's
//! margin (best BNN − best deterministic net) per seed with a paired bootstrap over the
//! identical test images, and across seeds.

use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::cache::{self, ArtifactDir};
use super::stage::{
    GridModel, Ready, ReproduceError, StageReport, Timed, bar, per_run_set_average, training_flops,
};
use crate::data::{Split, SplitSpec, Splits};
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
struct SeedEval {
    /// `runs[split][run]`, fractions.
    runs: Vec<Vec<f64>>,
}

impl SeedsStage<'_> {
    fn member_seeds(&self, gm: &GridModel, seed: usize) -> SeedTree {
        self.seeds.child(&format!("train/{}/seed={seed}", gm.name))
    }

    fn member_key(&self, gm: &GridModel, seed: usize, grid: &[String]) -> String {
        cache::key(
            &format!("{}-seed={seed}", gm.name.replace('/', "_")),
            &json!({
                "spec": gm.spec, "recipe": self.recipe, "master_seed": self.seeds.master(),
                "seed_name": self.member_seeds(gm, seed).prefix(), "split": SplitSpec::PAPER,
                "data": self.dataset.name(), "trained": { "stacked_grid": grid },
            }),
        )
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
        for block in seed_blocks(self.train_seeds) {
            ready.extend(self.ensure_block(family, tag, block)?);
        }
        Ok(ready)
    }

    /// The seeds `block` of every model of `family` as one stacked grid (its member
    /// names are part of every member's cache key).
    fn ensure_block(
        &self,
        family: &[GridModel],
        tag: &str,
        block: std::ops::Range<usize>,
    ) -> Result<Vec<Ready>, ReproduceError> {
        let grid_name = format!("train/grid/{tag}/seeds={}..{}", block.start, block.end);
        let grid: Vec<(usize, &GridModel)> = block
            .flat_map(|s| family.iter().map(move |gm| (s, gm)))
            .collect();
        let names: Vec<String> = grid
            .iter()
            .map(|(s, gm)| format!("{}/seed={s}", gm.name))
            .collect();
        let keys: Vec<String> = grid
            .iter()
            .map(|(s, gm)| self.member_key(gm, *s, &names))
            .collect();
        let stems: Vec<_> = keys.iter().map(|k| self.models_dir.stem(k)).collect();
        if stems.iter().all(|s| CheckpointPaths::new(s).exists()) {
            return grid
                .iter()
                .zip(keys)
                .zip(&stems)
                .map(|(((_, gm), key), stem)| {
                    let (model, meta) = TrainedModel::load(&gm.spec, self.device, stem)?;
                    Ok(Ready { key, model, meta })
                })
                .collect();
        }
        let members: Vec<GridMember> = grid
            .iter()
            .map(|(s, gm)| GridMember {
                spec: gm.spec.clone(),
                seeds: self.member_seeds(gm, *s),
            })
            .collect();
        let grid_seeds = self.seeds.child(&grid_name);
        let options = TrainOptions {
            verbose: self.verbose,
            label: format!("{tag} grid of {}", members.len()),
        };
        let trained = fit_grid_and_save(
            &members,
            &stems,
            self.splits,
            self.recipe,
            &grid_seeds,
            self.device,
            &options,
        )?;
        Ok(trained
            .into_iter()
            .zip(keys)
            .map(|((model, meta), key)| Ready { key, model, meta })
            .collect())
    }

    /// Per split: each run's accuracy, and each example's fraction of runs correct
    /// `[n]`; cached (tensors first, the JSON that marks them complete last). Also
    /// returns whether it was reused.
    fn evaluate(
        &self,
        name: &str,
        ready: &Ready,
    ) -> Result<(Timed<SeedEval>, Vec<Tensor>, bool), ReproduceError> {
        let draws = match ready.model {
            TrainedModel::Bnn { .. } => self.draws,
            TrainedModel::Mlp { .. } => 1,
        };
        let key = cache::key(
            &format!("seeds-eval-{}", name.replace('/', "_")),
            &json!({"model": ready.key, "sets": self.sets_key, "draws": draws, "master_seed": self.seeds.master()}),
        );
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
        flops,
    };
    let extra = ExtraSeeds {
        dets: extra_dets,
        bnns: extra_bnns,
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
