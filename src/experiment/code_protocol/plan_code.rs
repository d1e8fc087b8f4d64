//! The code protocol's plan: every model it trains (a stacked grid of the trained
//! budget is one job that makes all its members), the targeted set of every source
//! (the keys of [`planned_keys`]), and the evaluations: the training table, each
//! evaluation model's sweep, Tables 3 and 4; `job run` of one of them; and the
//! in-process drain that `run` does before assembling results.json.
//!
//! The two weight-noise controls' sweeps name the learned σ of the ρ_init = −3 BNN in
//! their keys: the plan has them once that BNN is trained (it reads the σ from its
//! checkpoint), and `run` plans again after each drain.

use super::{
    ByRole, CodeBudget, CodeModel, CodePipeline, EvalKeys, EvalSource, Grid, Multipliers,
    NoiseControls, TRAINING_ENSEMBLE_DRAWS, attack_key, code_attack_stage, code_train_stage,
    ensemble_runs, eval_specs, model_key, multiplier_grid, rho_index,
};
use crate::data::{ChecksumPolicy, Dataset, RawDataset, SplitSpec};
use crate::experiment::Profile;
use crate::experiment::executor::{self, JobRun, JobRunOptions};
use crate::experiment::flops;
use crate::experiment::keys::Key;
use crate::experiment::plan::{DrainReport, Job, JobKind, Plan};
use crate::experiment::stage::{ReproduceConfig, ReproduceError};
use crate::experiment::{TABLE3_RHO, TABLE4_RHO};
use crate::model::Arch;
use crate::model::bayes::PruneMode;
use crate::model::checkpoint::CheckpointPaths;
use crate::seed::SeedTree;
use crate::train::TrainedModel;

/// What runs a job of the code plan.
#[derive(Debug, Clone)]
pub(super) enum CodeTask {
    /// Train the models at these indices of [`Grid::all`] (one, or a stacked grid's
    /// members, trained at once).
    Train(Vec<usize>),
    /// The targeted set of the i-th source.
    Attack(usize),
    /// Every trained model's training-table row.
    TrainingRows,
    /// One evaluation model's sweep.
    Sweep(EvalSource),
    /// `--per-example`: one evaluation model's per-example counts on its sweep's splits.
    PerExample(EvalSource),
    Table3,
    Table4,
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
        let keys = members
            .iter()
            .map(|&j| model_key(&seeds, dataset, all[j], &grid));
        let label = match &all[i].family {
            Some(f) => format!("train the {f} grid of {}", members.len()),
            None => format!("train {}", all[i].name),
        };
        let flops = members.iter().map(|&j| training_work(all[j])).sum();
        i += members.len();
        if let Some(job) = Job::training(keys, label, flops) {
            jobs.push(job);
            tasks.push(CodeTask::Train(members));
        }
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

/// The code protocol's plan of `cfg` under `budget` and the evaluation multipliers
/// `mult`: training, attacks, then the evaluations.
pub fn code_plan(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
    mult: Multipliers,
) -> Result<Plan, ReproduceError> {
    let (plan, _) = full_plan_tasks(cfg, budget, mult)?;
    plan.check_order()?;
    Ok(plan)
}

/// [`plan_tasks`] with the evaluation jobs after them.
fn full_plan_tasks(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
    mult: Multipliers,
) -> Result<(Plan, Vec<CodeTask>), ReproduceError> {
    let (mut plan, mut tasks) = plan_tasks(&cfg.profile, cfg.dataset, cfg.master_seed, budget);
    for (job, task) in eval_jobs(cfg, budget, mult, &plan)? {
        plan.jobs.push(job);
        tasks.push(task);
    }
    Ok((plan, tasks))
}

/// The learned σ of the weight-noise controls (per layer, the median σ of the BNN
/// `bnn_key`), from its checkpoint; None until it is trained.
fn planned_sigmas(cfg: &ReproduceConfig, grid: &Grid, bnn_key: &str) -> Option<Vec<f64>> {
    let [models_dir, _, _] = crate::experiment::cache::run_folders(&cfg.runs_dir);
    let stem = models_dir.stem(bnn_key);
    if !CheckpointPaths::new(&stem).exists() {
        return None;
    }
    let spec = &grid.bnns[rho_index(TABLE3_RHO)].spec;
    let (model, _) = TrainedModel::load(spec, cfg.device, &stem).ok()?;
    match model {
        TrainedModel::Bnn { bnn, .. } => Some(NoiseControls::sigmas_of(&bnn)),
        TrainedModel::Mlp { .. } => None,
    }
}

/// The evaluation jobs of the code plan `plan` (its models and sets): the training
/// table, every evaluation model's sweep (the noise controls' once their σ is known),
/// Tables 3 and 4, with the keys the evaluation stage names.
fn eval_jobs(
    cfg: &ReproduceConfig,
    budget: CodeBudget,
    mult: Multipliers,
    plan: &Plan,
) -> Result<Vec<(Job, CodeTask)>, ReproduceError> {
    let p = &cfg.profile;
    let cp = p.code.with_budget(budget);
    let grid = Grid::new(&cp, budget);
    let seeds = SeedTree::new(cfg.master_seed).child("code");
    let all: Vec<String> = grid
        .all()
        .iter()
        .map(|m| model_key(&seeds, cfg.dataset, m, &grid).id)
        .collect();
    let Some(keys): Option<ByRole<String>> = grid.arrange(all.clone()) else {
        return Ok(Vec::new());
    };
    let set_ids: Vec<String> = plan
        .jobs
        .iter()
        .filter(|j| j.kind == JobKind::TargetedSet)
        .map(|j| j.key.id.clone())
        .collect();
    let t3 = keys.bnns[rho_index(TABLE3_RHO)].clone();
    let t4 = keys.bnns[rho_index(TABLE4_RHO)].clone();
    let sigmas = planned_sigmas(cfg, &grid, &t3);
    let ek = EvalKeys { cfg, cp: &cp };
    let ms = multiplier_grid(&cp.multipliers, mult);
    let n_eval = SplitSpec::PAPER
        .validation
        .min(p.eval_examples.unwrap_or(usize::MAX)) as f64;
    let n_set = SplitSpec::PAPER
        .validation
        .min(cp.attack_examples.unwrap_or(usize::MAX)) as f64;
    let arch = Arch::new(&[100, 100]);
    // Forward passes of one model: both clean splits and every set at `per_set`
    // multipliers, `runs` each.
    let passes = |runs: usize, per_set: usize| {
        flops::forward(
            &arch,
            runs as f64 * (2.0 * n_eval + (set_ids.len() * per_set) as f64 * n_set),
        )
    };
    let job = |key: Key, label: String, models: &[String], flops: f64| Job {
        key,
        also: Vec::new(),
        memory_mib: None,
        kind: JobKind::Evaluation,
        label,
        inputs: models.iter().chain(&set_ids).cloned().collect(),
        flops,
    };
    let mut out = Vec::new();
    out.push((
        job(
            ek.training_rows(&all),
            "the training table".into(),
            &all,
            flops::forward(
                &arch,
                TRAINING_ENSEMBLE_DRAWS as f64 * n_eval * grid.bnns.len() as f64,
            ),
        ),
        CodeTask::TrainingRows,
    ));
    let specs = eval_specs(&grid, &keys, sigmas.as_deref())?;
    let sweeps: Vec<(Job, CodeTask)> = specs
        .iter()
        .map(|spec| {
            let runs = cp.runs * spec.inputs.len();
            let sweep = job(
                ek.sweep(&spec.name, &spec.keys, &set_ids, &ms),
                format!("sweep of {}", spec.name),
                &spec.inputs,
                passes(runs, ms.len()),
            );
            (sweep, CodeTask::Sweep(spec.source))
        })
        .collect();
    let replays: Vec<(Job, CodeTask)> = specs
        .iter()
        .zip(&sweeps)
        .filter(|_| cfg.per_example)
        .map(|(spec, (sweep, _))| {
            let replay = sweep.per_example_replay(&spec.name);
            (replay, CodeTask::PerExample(spec.source))
        })
        .collect();
    out.extend(sweeps);
    out.extend(replays);
    let table3: usize = p
        .ensemble_ns
        .iter()
        .map(|&n| n * ensemble_runs(p.ensemble_runs, n))
        .sum();
    out.push((
        job(
            ek.table3(&t3, &set_ids, mult.bnn),
            "Table 3 (ensembles)".into(),
            std::slice::from_ref(&t3),
            passes(table3, 1),
        ),
        CodeTask::Table3,
    ));
    let prune_mode = cfg.prune_mode_or(PruneMode::PerTensor);
    let table4 = p.prune_rates.len() * p.prune_runs * p.prune_ensemble;
    out.push((
        job(
            ek.table4(&t4, &set_ids, mult.bnn, prune_mode),
            "Table 4 (pruning)".into(),
            std::slice::from_ref(&t4),
            passes(table4, 1),
        ),
        CodeTask::Table4,
    ));
    Ok(out)
}

impl CodePipeline<'_> {
    /// Makes the artifacts of `task`: trains the models (the first member of a stacked
    /// grid trains them all; the others are then loaded), or loads the source and
    /// makes its set.
    fn run_task(
        &self,
        grid: &Grid,
        mult: Multipliers,
        task: &CodeTask,
    ) -> Result<(), ReproduceError> {
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
            _ => self.run_eval_task(grid, mult, task)?,
        }
        Ok(())
    }

    /// Makes one evaluation of the plan (its models and sets are cached).
    fn run_eval_task(
        &self,
        grid: &Grid,
        mult: Multipliers,
        task: &CodeTask,
    ) -> Result<(), ReproduceError> {
        let mut stages = Vec::new();
        let trained = code_train_stage(self, grid, &mut stages)?;
        let sets = code_attack_stage(self, grid, &trained.sources, &mut stages)?;
        match task {
            CodeTask::TrainingRows => {
                self.training_rows(&grid.all(), &trained.all())?;
            }
            CodeTask::Sweep(source) | CodeTask::PerExample(source) => {
                let noise = NoiseControls::new(&trained)?;
                let ms = multiplier_grid(&self.cp.multipliers, mult);
                if let Some(e) = super::evaluated_models(grid, &trained, &noise)?
                    .iter()
                    .find(|e| e.source == *source)
                {
                    if matches!(task, CodeTask::Sweep(_)) {
                        self.sweep(&e.name, &e.keys, &e.model, &sets, &ms)?;
                    } else {
                        let _counts = self.per_example_counts(e, &sets, &ms)?;
                    }
                }
            }
            CodeTask::Table3 => {
                self.table3(trained.bnn(TABLE3_RHO), &sets, mult.bnn)?;
            }
            CodeTask::Table4 => {
                let t4 = rho_index(TABLE4_RHO);
                let mode = self.cfg.prune_mode_or(PruneMode::PerTensor);
                self.table4(
                    &grid.bnns[t4].spec,
                    &trained.bnns[t4].key,
                    &sets,
                    mult.bnn,
                    mode,
                )?;
            }
            CodeTask::Train(_) | CodeTask::Attack(_) => {}
        }
        Ok(())
    }
}

/// What a code run is planned for: its configuration, training budget and evaluation
/// multipliers.
#[derive(Clone, Copy)]
pub struct CodeRunSpec<'a> {
    pub cfg: &'a ReproduceConfig,
    pub budget: CodeBudget,
    pub mult: Multipliers,
}

/// Runs the job `key` of the code plan in this process ([`executor::run_one`]).
pub fn run_code_job(
    run: CodeRunSpec,
    key: &str,
    opts: &JobRunOptions,
) -> Result<JobRun, ReproduceError> {
    let cfg = run.cfg;
    let raw = RawDataset::load(&cfg.data_dir, ChecksumPolicy::Require(cfg.dataset))?;
    let pipeline = CodePipeline::new(cfg, run.budget, &raw)?;
    let grid = Grid::new(&pipeline.cp, run.budget);
    let (plan, tasks) = full_plan_tasks(cfg, run.budget, run.mult)?;
    let index = plan.job_index(key)?;
    executor::run_one(&plan, index, &cfg.runs_dir, opts, || {
        pipeline.run_task(&grid, run.mult, &tasks[index])
    })
}

/// Makes every uncached job of the code plan in this process, in plan order
/// ([`executor::drain_here`]), planning again until nothing is added (the noise
/// controls' sweeps, once their σ is trained).
pub fn run_code_plan(run: CodeRunSpec) -> Result<DrainReport, ReproduceError> {
    let cfg = run.cfg;
    let raw = RawDataset::load(&cfg.data_dir, ChecksumPolicy::Require(cfg.dataset))?;
    let pipeline = CodePipeline::new(cfg, run.budget, &raw)?;
    let grid = Grid::new(&pipeline.cp, run.budget);
    crate::experiment::plan::drain_growing(
        || {
            let (plan, tasks) = full_plan_tasks(cfg, run.budget, run.mult)?;
            plan.check_order()?;
            Ok((plan, tasks))
        },
        |(plan, _)| plan.jobs.len(),
        |(plan, tasks)| {
            executor::drain_here(plan, &cfg.runs_dir, cfg.verbose, |i| {
                pipeline.run_task(&grid, run.mult, &tasks[i])
            })
        },
    )
}
