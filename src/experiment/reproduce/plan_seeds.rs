//! The training-seeds extension of the text plan (`--train-seeds K`, K > 1): each
//! stacked grid of seeds 1..K of the λ nets and of the BNNs (one job that makes all its
//! members), and the evaluation of every λ net and BNN at every seed 0..K (seed 0 is the
//! main grid's model) on the clean splits and the 12 sets. The seeds section of
//! results.json is then assembled from these artifacts in-process.
//!
//! With `--strength` too: the matched-init control's stacked grids of seeds 1..K, and,
//! once the strength axis's claim points are known (the λ = 0 net's sweep row is
//! cached), every model of the strength study at every seed at its points
//! ([`super::strength_seeds`]).

use super::claim_points::ClaimDesc;
use super::claim_points::{matched_of, seed_points};
use super::strength_seeds::{measure_one, study_families, study_key};
use super::strength_stage::control_models;
use super::{GridModel, Pipeline, ReproduceError, seeds_stage_keyed, seeds_stage_of};
use crate::experiment::flops;
use crate::experiment::keys::Key;
use crate::experiment::plan::{Job, JobKind};
use crate::experiment::seeds::{SeedGrid, SeedsStage};
use crate::model::Arch;

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
    /// The `grid`-th stacked grid of the matched-init control's seeds.
    ControlGrid(usize),
    /// The strength study's `model`-th model at `seed`.
    Study { model: usize, seed: usize },
}

/// What the strength study's jobs read besides [`SeedsInputs`]: the matched-init
/// control's key (seed 0), the claim points and the λ = 0 net's sweep evaluation they
/// were matched on.
pub(super) struct StudyInputs<'a> {
    pub control_key: &'a str,
    pub claims: &'a [ClaimDesc],
    pub det0: &'a Key,
}

/// The grid of `grids` that trains `seed` of `gm`, and the member's index in it.
pub(super) fn member_of(grids: &[SeedGrid], gm: &GridModel, seed: usize) -> Option<(usize, usize)> {
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
                let label = format!(
                    "train the {} grid of seeds {}..={} ({} models)",
                    family.tag(),
                    grid.block.start,
                    grid.block.end - 1,
                    grid.members.len()
                );
                if let Some(job) = self.seed_grid_job(grid, label) {
                    out.push((job, SeedsTask::Grid { family, grid: g }));
                }
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
        if self.cfg.strength {
            let (control, _) = control_models(1);
            let control = std::slice::from_ref(&control);
            for (g, grid) in stage.seed_grids(control, "control").iter().enumerate() {
                let label = format!(
                    "train the matched-init control's seeds {}..={}",
                    grid.block.start,
                    grid.block.end - 1
                );
                if let Some(job) = self.seed_grid_job(grid, label) {
                    out.push((job, SeedsTask::ControlGrid(g)));
                }
            }
        }
        out.extend(evals);
        out
    }

    /// The job that trains the stacked grid `grid` (every member an output).
    fn seed_grid_job(&self, grid: &SeedGrid, label: String) -> Option<Job> {
        let flops = grid
            .members
            .iter()
            .map(|(_, gm)| self.training_work(gm))
            .sum();
        Job::training(grid.keys.iter().cloned(), label, flops)
    }

    /// The strength study's jobs: every model (λ nets, BNNs, the matched-init control) at
    /// every seed, at the study's points, with the keys the study names.
    pub(super) fn strength_seeds_jobs(
        &self,
        dets: &[GridModel],
        bnns: &[GridModel],
        inputs: &SeedsInputs,
        study: &StudyInputs,
    ) -> Vec<(Job, SeedsTask)> {
        let stage = seeds_stage_keyed(self, &[], Vec::new());
        let sp = &self.cfg.profile.strength;
        let bound = self.cfg.profile.max_rms_distortion.unwrap_or(0.10);
        let n_sets = inputs.attack_ids.len();
        let points = seed_points(matched_of(study.claims), &sp.seed_multipliers, n_sets);
        let (control, _) = control_models(1);
        let control_key = [study.control_key.to_owned()];
        let seed0_keys: [&[String]; 3] = [inputs.det_keys, inputs.bnn_keys, &control_key];
        let n = (self.test.len() * n_sets * points.len()) as f64;
        let mut out = Vec::new();
        let mut model = 0;
        for ((models, tag), seed0) in study_families(dets, bnns, &control)
            .into_iter()
            .zip(seed0_keys)
        {
            let grids = stage.seed_grids(models, tag);
            for (j, gm) in models.iter().enumerate() {
                for seed in 0..stage.train_seeds {
                    let model_key = match member_of(&grids, gm, seed) {
                        Some((g, i)) => grids[g].keys[i].id.clone(),
                        None => seed0[j].clone(),
                    };
                    let runs = if gm.spec.rho_init().is_some() {
                        sp.runs
                    } else {
                        1
                    };
                    let job = Job {
                        key: study_key(
                            self,
                            (&gm.name, seed, &model_key),
                            &points,
                            inputs.attack_ids,
                            bound,
                        ),
                        also: Vec::new(),
                        memory_mib: None,
                        kind: JobKind::Evaluation,
                        label: format!("strength study of {} at seed {seed}", gm.name),
                        inputs: std::iter::once(model_key)
                            .chain(inputs.attack_ids.iter().cloned())
                            .chain(std::iter::once(study.det0.id.clone()))
                            .collect(),
                        flops: flops::forward(&Arch::new(&[100, 100]), n * runs as f64),
                    };
                    out.push((job, SeedsTask::Study { model, seed }));
                }
                model += 1;
            }
        }
        out
    }

    /// Makes the artifact of one job of the seeds extension (its inputs are cached).
    pub(super) fn run_seeds_task(
        &self,
        dets: &[GridModel],
        bnns: &[GridModel],
        claims: &[ClaimDesc],
        task: SeedsTask,
    ) -> Result<(), ReproduceError> {
        match task {
            SeedsTask::ControlGrid(grid) => {
                let stage: SeedsStage = seeds_stage_keyed(self, &[], Vec::new());
                let (control, _) = control_models(1);
                let grids = stage.seed_grids(std::slice::from_ref(&control), "control");
                if let Some(g) = grids.get(grid) {
                    stage.ensure_grid(g)?;
                }
            }
            SeedsTask::Study { model, seed } => {
                let stage: SeedsStage = seeds_stage_keyed(self, &[], Vec::new());
                measure_one(self, &stage, claims, (model, seed))?;
            }
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
