//! The training-seeds extension of the text plan (`--train-seeds K`, K > 1): each
//! stacked grid of seeds 1..K of the λ nets and of the BNNs (one job that makes all its
//! members), and the evaluation of every λ net and BNN at every seed 0..K (seed 0 is the
//! main grid's model) on the clean splits and the 12 sets. The seeds section of
//! results.json is then assembled from these artifacts in-process.

use super::{GridModel, Pipeline, ReproduceError, seeds_stage_keyed, seeds_stage_of};
use crate::experiment::flops;
use crate::experiment::plan::{Job, JobKind};
use crate::experiment::seeds::{SeedGrid, SeedsStage};

/// Which family of evaluation models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Det,
    Bnn,
}

impl Family {
    const BOTH: [Family; 2] = [Family::Det, Family::Bnn];

    /// The tag of its stacked grids (part of the grids' seed names).
    fn tag(self) -> &'static str {
        match self {
            Family::Det => "det",
            Family::Bnn => "bnn",
        }
    }

    fn of<'a, T>(self, dets: &'a [T], bnns: &'a [T]) -> &'a [T] {
        match self {
            Family::Det => dets,
            Family::Bnn => bnns,
        }
    }
}

/// What runs a job of the seeds extension.
#[derive(Debug, Clone, Copy)]
pub(super) enum SeedsTask {
    /// The `grid`-th stacked grid of `family`.
    Grid { family: Family, grid: usize },
    /// The evaluation of the `model`-th model of `family` at `seed`.
    Eval {
        family: Family,
        model: usize,
        seed: usize,
    },
}

/// The grid of `grids` that trains `seed` of `gm`, and the member's index in it.
fn member_of(grids: &[SeedGrid], gm: &GridModel, seed: usize) -> Option<(usize, usize)> {
    grids.iter().enumerate().find_map(|(g, grid)| {
        grid.members
            .iter()
            .position(|(s, m)| *s == seed && m.name == gm.name)
            .map(|i| (g, i))
    })
}

/// The ids the seeds extension's jobs read: the main grid's λ nets and BNNs (seed 0),
/// the sets as evaluated, and the raw attacks they are made from.
pub(super) struct SeedsInputs<'a> {
    pub det_keys: &'a [String],
    pub bnn_keys: &'a [String],
    pub set_ids: &'a [String],
    pub attack_ids: &'a [String],
}

impl Pipeline<'_> {
    /// The seeds extension's jobs: the stacked grids first, then the evaluations.
    pub(super) fn seeds_jobs(
        &self,
        dets: &[GridModel],
        bnns: &[GridModel],
        inputs: &SeedsInputs,
    ) -> Vec<(Job, SeedsTask)> {
        let ids: Vec<&str> = inputs.set_ids.iter().map(String::as_str).collect();
        let stage = seeds_stage_keyed(self, &ids, Vec::new());
        let n_eval = (self.validation.len() + self.test.len() * (1 + ids.len())) as f64;
        let mut out = Vec::new();
        let mut evals = Vec::new();
        for family in Family::BOTH {
            let models = family.of(dets, bnns);
            let grids = stage.seed_grids(models, family.tag());
            for (g, grid) in grids.iter().enumerate() {
                let mut keys = grid.keys.iter().cloned();
                let Some(key) = keys.next() else { continue };
                let job = Job {
                    key,
                    also: keys.collect(),
                    memory_mib: None,
                    kind: JobKind::TrainModel,
                    label: format!(
                        "train the {} grid of seeds {}..={} ({} models)",
                        family.tag(),
                        grid.block.start,
                        grid.block.end - 1,
                        grid.members.len()
                    ),
                    inputs: Vec::new(),
                    flops: grid
                        .members
                        .iter()
                        .map(|(_, gm)| self.training_work(gm))
                        .sum(),
                };
                out.push((job, SeedsTask::Grid { family, grid: g }));
            }
            let seed0 = family.of(inputs.det_keys, inputs.bnn_keys);
            for (j, gm) in models.iter().enumerate() {
                for seed in 0..stage.train_seeds {
                    let model_key = match member_of(&grids, gm, seed) {
                        Some((g, i)) => grids[g].keys[i].id.clone(),
                        None => seed0[j].clone(),
                    };
                    let name = format!("{}/seed={seed}", gm.name);
                    let draws = stage.draws_of(&gm.spec) as f64;
                    let job = Job {
                        key: stage.eval_key(&name, &model_key, &gm.spec),
                        also: Vec::new(),
                        memory_mib: None,
                        kind: JobKind::Evaluation,
                        label: format!("evaluate {name}"),
                        inputs: std::iter::once(model_key)
                            .chain(inputs.attack_ids.iter().cloned())
                            .collect(),
                        flops: flops::forward(gm.spec.arch(), n_eval * draws),
                    };
                    let task = SeedsTask::Eval {
                        family,
                        model: j,
                        seed,
                    };
                    evals.push((job, task));
                }
            }
        }
        out.extend(evals);
        out
    }

    /// Makes the artifact of one job of the seeds extension (its inputs are cached).
    pub(super) fn run_seeds_task(
        &self,
        dets: &[GridModel],
        bnns: &[GridModel],
        task: SeedsTask,
    ) -> Result<(), ReproduceError> {
        match task {
            SeedsTask::Grid { family, grid } => {
                let stage: SeedsStage = seeds_stage_keyed(self, &[], Vec::new());
                let models = family.of(dets, bnns);
                if let Some(g) = stage.seed_grids(models, family.tag()).get(grid) {
                    stage.ensure_grid(g)?;
                }
            }
            SeedsTask::Eval {
                family,
                model,
                seed,
            } => {
                let (trained, sets) = self.load_grid_and_sets()?;
                let stage = seeds_stage_of(self, &sets);
                let models = family.of(&trained.dets, &trained.bnns);
                let gm = &models[model];
                let grids = stage.seed_grids(models, family.tag());
                let name = format!("{}/seed={seed}", gm.name);
                match member_of(&grids, gm, seed) {
                    Some((g, i)) => {
                        let ready = stage.ensure_grid(&grids[g])?;
                        stage.evaluate(&name, &ready[i])?;
                    }
                    None => {
                        let seed0 = family.of(&trained.det_ready, &trained.bnn_ready);
                        stage.evaluate(&name, &seed0[model])?;
                    }
                }
            }
        }
        Ok(())
    }
}
