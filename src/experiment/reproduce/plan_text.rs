//! The text protocol's plan: every model of the grid, the 12 min-norm sets and (with
//! `--whitebox`) every white-box artifact, as jobs with the keys the stages use; and
//! `job run`: one job of that plan, run in this process.
//!
//! The evaluations, the strength axis and the training seeds still run inside
//! `reproduce` after the plan's artifacts exist (they read them from the cache).

use super::whitebox_stage::{Models, curve_jobs, plan_of};
use super::{
    GridModel, Pipeline, ReproduceConfig, ReproduceError, bayesian_models, deterministic_models,
    load_raw, source_models,
};
use crate::experiment::flops;
use crate::experiment::plan::{Job, JobKind, Plan};
use crate::experiment::whitebox_targets::{GridRef, Role};
use crate::model::Arch;
use crate::model::checkpoint::ModelSpec;

/// The grid's models in training order: sources, the λ grid, the ρ_init grid.
struct Grid {
    sources: Vec<GridModel>,
    dets: Vec<GridModel>,
    bnns: Vec<GridModel>,
}

impl Grid {
    fn new() -> Self {
        Self {
            sources: source_models(),
            dets: deterministic_models(),
            bnns: bayesian_models(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &GridModel> {
        self.sources.iter().chain(&self.dets).chain(&self.bnns)
    }
}

/// What runs a job of the text plan.
#[derive(Debug, Clone, Copy)]
enum Task {
    /// The i-th model of the grid in training order.
    Train(usize),
    /// The set of the i-th source.
    Attack(usize),
    /// The i-th white-box artifact.
    Whitebox(usize),
}

impl Pipeline<'_> {
    fn training_work(&self, gm: &GridModel) -> f64 {
        let draws = match gm.spec {
            ModelSpec::Bnn { .. } => self.recipe.val_draws,
            ModelSpec::Mlp { .. } => 1,
        };
        flops::training(
            gm.spec.arch(),
            self.recipe.max_epochs,
            self.splits.train.len(),
            self.splits.validation.len(),
            draws,
        )
    }

    /// The plan and each job's task.
    fn text_plan_tasks(&self) -> (Plan, Vec<Task>) {
        let p = &self.cfg.profile;
        let grid = Grid::new();
        let mut jobs = Vec::new();
        let mut tasks = Vec::new();
        let model_keys: Vec<String> = grid.all().map(|gm| self.model_key(gm)).collect();
        for (i, gm) in grid.all().enumerate() {
            jobs.push(Job {
                key: self.model_key_of(gm),
                kind: JobKind::TrainModel,
                label: format!("train {}", gm.name),
                inputs: Vec::new(),
                flops: self.training_work(gm),
            });
            tasks.push(Task::Train(i));
        }
        let n = self.test.len() as f64;
        for (i, gm) in grid.sources.iter().enumerate() {
            let arch = gm.spec.arch();
            jobs.push(Job {
                key: self.attack_key_of(&gm.label, &model_keys[i], &p.attack),
                kind: JobKind::MinNormSet,
                label: format!("min-norm set against {}", gm.label),
                inputs: vec![model_keys[i].clone()],
                flops: flops::input_gradient_steps(arch, p.attack.steps as f64, n)
                    + flops::forward(arch, 3.0 * n),
            });
            tasks.push(Task::Attack(i));
        }
        if self.cfg.whitebox {
            let n_src = grid.sources.len();
            let key_of = |m: GridRef| {
                m.evaluation_index()
                    .and_then(|i| model_keys.get(n_src + i))
                    .cloned()
                    .unwrap_or_default()
            };
            let plan = plan_of(self, &grid.dets);
            let examples = self.test.len().min(p.whitebox.examples);
            let arch = Arch::new(&[100, 100]);
            for (i, a) in plan
                .artifacts(p, &key_of, self.cfg.master_seed)
                .into_iter()
                .enumerate()
            {
                let t = &plan.targets[a.target];
                let (kind, label, work) = match a.role {
                    Role::Main(_) => (
                        JobKind::WhiteboxCurve,
                        format!("white-box {}", t.name),
                        crate::experiment::whitebox::flops(t.kind, &a.profile, examples, &arch),
                    ),
                    Role::Rerun(j) => (
                        JobKind::WhiteboxRerun,
                        format!("white-box {}", plan.reruns[j].name(&plan)),
                        crate::experiment::whitebox::flops(t.kind, &a.profile, examples, &arch),
                    ),
                    Role::Spsa(_) => (
                        JobKind::Spsa,
                        format!("SPSA {}", t.name),
                        p.whitebox_checks.as_ref().map_or(0.0, |wc| {
                            crate::experiment::whitebox::spsa_flops(
                                t.kind, &a.profile, wc, examples, &arch,
                            )
                        }),
                    ),
                };
                jobs.push(Job {
                    inputs: vec![key_of(t.model)],
                    key: a.key,
                    kind,
                    label,
                    flops: work,
                });
                tasks.push(Task::Whitebox(i));
            }
        }
        let plan = Plan {
            profile: p.name.clone(),
            jobs,
        };
        (plan, tasks)
    }

    /// Runs the task of one job (its inputs are cached).
    fn run_task(&self, task: Task) -> Result<(), ReproduceError> {
        let grid = Grid::new();
        match task {
            Task::Train(i) => {
                if let Some(gm) = grid.all().nth(i) {
                    self.ensure_model(gm)?;
                }
            }
            Task::Attack(i) => {
                let gm = &grid.sources[i];
                let (source, _) = self.ensure_model(gm)?;
                self.ensure_raw_attack(&gm.label, &source, &self.cfg.profile.attack)?;
            }
            Task::Whitebox(i) => {
                let load = |gms: &[GridModel]| -> Result<Vec<super::Ready>, ReproduceError> {
                    gms.iter().map(|gm| Ok(self.ensure_model(gm)?.0)).collect()
                };
                let (det_ready, bnn_ready) = (load(&grid.dets)?, load(&grid.bnns)?);
                let models = Models {
                    dets: &grid.dets,
                    det_ready: &det_ready,
                    bnn_ready: &bnn_ready,
                };
                let split = self.test.head(self.cfg.profile.whitebox.examples);
                if let Some(job) = curve_jobs(self, &models)?.get(i) {
                    job.ensure(self, &split)?;
                }
            }
        }
        Ok(())
    }
}

/// The text protocol's plan for `cfg` (loads the dataset to size the splits).
pub fn text_plan(cfg: &ReproduceConfig) -> Result<Plan, ReproduceError> {
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let (plan, _) = pipeline.text_plan_tasks();
    plan.check_order()?;
    Ok(plan)
}

/// What `job run` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRun {
    Computed,
    /// Its artifact was already complete.
    Cached,
    /// Another live process holds its claim.
    Claimed,
}

/// Runs the job `key` of `cfg`'s text plan in this process: checks that every input
/// artifact is in the runs folder (else [`ReproduceError::MissingInput`], nothing
/// written), claims the job, and makes its artifact.
pub fn run_job(cfg: &ReproduceConfig, key: &str) -> Result<JobRun, ReproduceError> {
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let (plan, tasks) = pipeline.text_plan_tasks();
    let job = plan.job(key)?;
    let index = plan.jobs.iter().position(|j| j.key.id == key).unwrap_or(0);
    if job.is_cached(&cfg.runs_dir) {
        return Ok(JobRun::Cached);
    }
    let missing = plan.missing_inputs(job, &cfg.runs_dir);
    if !missing.is_empty() {
        return Err(ReproduceError::MissingInput {
            job: key.to_owned(),
            missing,
        });
    }
    let dir = crate::experiment::cache::ArtifactDir::new(cfg.runs_dir.join(job.kind.folder()));
    let Some(_claim) = dir.try_claim(key)? else {
        return Ok(JobRun::Claimed);
    };
    pipeline.run_task(tasks[index])?;
    Ok(JobRun::Computed)
}
