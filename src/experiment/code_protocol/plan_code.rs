//! The code protocol's plan: every model it trains (a stacked grid of the trained
//! budget is one job that makes all its members) and the targeted set of every
//! source, as jobs with the keys of [`planned_keys`]; `job run` of one of them; and the
//! in-process drain that `run` does before the evaluations.
//!
//! The evaluations are not jobs: their keys name the noise controls' learned σ, known
//! only after training. `reproduce_code` makes them after the plan's artifacts exist.

use super::{CodeBudget, CodeModel, CodePipeline, Grid, attack_key, model_key};
use crate::data::{ChecksumPolicy, Dataset, RawDataset, SplitSpec};
use crate::experiment::Profile;
use crate::experiment::executor::{self, JobRun, JobRunOptions};
use crate::experiment::flops;
use crate::experiment::plan::{DrainReport, Job, JobKind, Plan};
use crate::experiment::stage::{ReproduceConfig, ReproduceError};
use crate::seed::SeedTree;

/// What runs a job of the code plan.
#[derive(Debug, Clone)]
pub(super) enum CodeTask {
    /// Train the models at these indices of [`Grid::all`] (one, or a stacked grid's
    /// members, trained at once).
    Train(Vec<usize>),
    /// The targeted set of the i-th source.
    Attack(usize),
}

/// Counted FLOPs of training `m` at its epoch cap on the paper's split.
fn training_work(m: &CodeModel) -> f64 {
    flops::training_at_cap(
        &m.spec,
        &m.recipe,
        SplitSpec::PAPER.train,
        SplitSpec::PAPER.validation,
    )
}

/// The plan of the code protocol under `budget`, and each job's task: the models in
/// training order, then the sources' sets.
pub(super) fn plan_tasks(
    profile: &Profile,
    dataset: Dataset,
    master_seed: u64,
    budget: CodeBudget,
) -> (Plan, Vec<CodeTask>) {
    let cp = profile.code.with_budget(budget);
    let grid = Grid::new(&cp, budget);
    let seeds = SeedTree::new(master_seed).child("code");
    let all = grid.all();
    let mut jobs = Vec::new();
    let mut tasks = Vec::new();
    let mut i = 0;
    while i < all.len() {
        let members: Vec<usize> = match &all[i].family {
            Some(f) => (i..all.len())
                .take_while(|&j| all[j].family.as_ref() == Some(f))
                .collect(),
            None => vec![i],
        };
        let mut keys = members
            .iter()
            .map(|&j| model_key(&seeds, dataset, all[j], &grid));
        let key = keys.next().expect("a job makes at least one model");
        let label = match &all[i].family {
            Some(f) => format!("train the {f} grid of {}", members.len()),
            None => format!("train {}", all[i].name),
        };
        jobs.push(Job {
            key,
            also: keys.collect(),
            memory_mib: None,
            kind: JobKind::TrainModel,
            label,
            inputs: Vec::new(),
            flops: members.iter().map(|&j| training_work(all[j])).sum(),
        });
        i += members.len();
        tasks.push(CodeTask::Train(members));
    }
    let n = SplitSpec::PAPER
        .validation
        .min(cp.attack_examples.unwrap_or(usize::MAX));
    for (s, m) in grid.sources.iter().enumerate() {
        let source = model_key(&seeds, dataset, m, &grid).id;
        jobs.push(Job {
            key: attack_key(&cp, &m.label, &source, n),
            also: Vec::new(),
            memory_mib: None,
            kind: JobKind::TargetedSet,
            label: format!("targeted set against {}", m.label),
            inputs: vec![source],
            flops: flops::input_gradient_steps(m.spec.arch(), cp.attack.steps as f64, n as f64),
        });
        tasks.push(CodeTask::Attack(s));
    }
    let plan = Plan {
        profile: format!("{}{}", profile.name, budget.dir_suffix()),
        jobs,
        finish: Default::default(),
    };
    (plan, tasks)
}

/// The code protocol's plan of `cfg` under `budget`.
pub fn code_plan(cfg: &ReproduceConfig, budget: CodeBudget) -> Result<Plan, ReproduceError> {
    let (plan, _) = plan_tasks(&cfg.profile, cfg.dataset, cfg.master_seed, budget);
    plan.check_order()?;
    Ok(plan)
}

impl CodePipeline<'_> {
    /// Makes the artifacts of `task`: trains the models (the first member of a stacked
    /// grid trains them all; the others are then loaded), or loads the source and
    /// makes its set.
    fn run_task(&self, grid: &Grid, task: &CodeTask) -> Result<(), ReproduceError> {
        let all = grid.all();
        match task {
            CodeTask::Train(members) => {
                for &i in members {
                    self.ensure_model(all[i], grid)?;
                }
            }
            CodeTask::Attack(s) => {
                let (source, _) = self.ensure_model(&grid.sources[*s], grid)?;
                self.ensure_attack(&grid.sources[*s].label, &source)?;
            }
        }
        Ok(())
    }
}

/// The pipeline, grid, plan and tasks of `cfg`'s code protocol under `budget`.
fn with_plan<T>(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
    run: impl FnOnce(&CodePipeline, &Grid, &Plan, &[CodeTask]) -> Result<T, ReproduceError>,
) -> Result<T, ReproduceError> {
    let raw = RawDataset::load(&cfg.data_dir, ChecksumPolicy::Require(cfg.dataset))?;
    let pipeline = CodePipeline::new(cfg, budget, &raw)?;
    let grid = Grid::new(&pipeline.cp, budget);
    let (plan, tasks) = plan_tasks(&cfg.profile, cfg.dataset, cfg.master_seed, budget);
    plan.check_order()?;
    run(&pipeline, &grid, &plan, &tasks)
}

/// Runs the job `key` of the code plan in this process ([`executor::run_one`]).
pub fn run_code_job(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
    key: &str,
    opts: &JobRunOptions,
) -> Result<JobRun, ReproduceError> {
    with_plan(cfg, budget, |pipeline, grid, plan, tasks| {
        let index = plan.job_index(key)?;
        executor::run_one(plan, index, &cfg.runs_dir, opts, || {
            pipeline.run_task(grid, &tasks[index])
        })
    })
}

/// Makes every uncached job of the code plan in this process, in plan order
/// ([`executor::drain_here`]).
pub fn run_code_plan(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
) -> Result<DrainReport, ReproduceError> {
    with_plan(cfg, budget, |pipeline, grid, plan, tasks| {
        executor::drain_here(plan, &cfg.runs_dir, cfg.verbose, |i| {
            pipeline.run_task(grid, &tasks[i])
        })
    })
}
