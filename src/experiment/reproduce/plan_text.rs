//! The text protocol's plan: every model of the grid, the 12 min-norm sets and (with
//! `--whitebox`) every white-box artifact, as jobs with the keys the stages use; and
//! `job run`: one job of that plan, run in this process.
//!
//! With `--train-seeds K` (K > 1) the plan gains the training-seeds extension
//! ([`super::plan_seeds`]), and with `--strength` the strength extension
//! ([`super::plan_strength`]: the controls, the κ > 0 attacks and the sweep). The strength
//! axis's claim points are planned once the λ = 0 net's sweep row is cached. With
//! `--per-example`, each evaluation model's per-example counts are jobs too; `run`
//! stacks them into `per_example.npz` when it assembles the report.

use super::claim_points::ClaimDesc;
use super::plan_seeds::{SeedsInputs, SeedsTask, StudyInputs};
use super::plan_strength::{StrengthPlanInputs, StrengthTask};
use super::whitebox_stage::{Models, curve_jobs, plan_of};
use super::{
    CALIBRATION_RESAMPLES, GridModel, PerturbationSet, Pipeline, ReproduceConfig, ReproduceError,
    TrainedGrid, bayesian_models, deterministic_models, load_raw, source_models,
};
use crate::experiment::{TABLE3_RHO, TABLE4_RHO};
use crate::model::bayes::PruneMode;

use crate::attack::MinNormAttack;
use crate::experiment::executor::{self, JobRun, JobRunOptions};
use crate::experiment::flops;
use crate::experiment::plan::{DrainReport, Finish, Job, JobKind, Plan};
use crate::experiment::whitebox_targets::{GridRef, Role};
use crate::model::Arch;

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
    Eval(EvalTask),
    /// A job of the training-seeds extension.
    Seeds(SeedsTask),
    /// A job of the strength extension.
    Strength(StrengthTask),
}

/// The text plan with what runs each job.
struct TextPlan {
    plan: Plan,
    tasks: Vec<Task>,
    /// The strength axis's claim points known when it was made.
    claims: Vec<ClaimDesc>,
}

/// Which evaluation of the grid a job makes.
#[derive(Debug, Clone, Copy)]
enum EvalTask {
    /// Tables 1–2 of the i-th λ net.
    Det(usize),
    /// Tables 1–2 of the i-th BNN (single-draw runs).
    Bnn(usize),
    /// Table 3: the ensembles of the BNN ρ_init = −3.
    Ensembles,
    /// Table 4: pruning the BNN ρ_init = −2.
    Pruning,
    /// Calibration and detection of the λ nets and the Table 3 BNN.
    Calibration,
    /// `--per-example`: each example's correct-run count of the i-th evaluation model
    /// (the λ nets, then the BNNs).
    PerExample(usize),
    /// `--per-example`: Table 3 replayed per example.
    EnsemblesPerExample,
    /// `--per-example`: Table 4 replayed per example.
    PruningPerExample,
}

impl Pipeline<'_> {
    pub(super) fn training_work(&self, gm: &GridModel) -> f64 {
        flops::training_at_cap(
            &gm.spec,
            &self.recipe,
            self.splits.train.len(),
            self.splits.validation.len(),
        )
    }

    /// The job that trains `gm` (or finds it cached).
    pub(super) fn train_job(&self, gm: &GridModel) -> Job {
        Job {
            also: Vec::new(),
            memory_mib: None,
            key: self.model_key_of(gm),
            kind: JobKind::TrainModel,
            label: format!("train {}", gm.name),
            inputs: Vec::new(),
            flops: self.training_work(gm),
        }
    }

    /// The job that makes `attack`'s min-norm set against the source `gm` (checkpoint
    /// `source_key`).
    pub(super) fn attack_job(
        &self,
        gm: &GridModel,
        source_key: &str,
        attack: &MinNormAttack,
    ) -> Job {
        let (arch, n) = (gm.spec.arch(), self.test.len() as f64);
        let label = if attack.kappa == 0.0 {
            format!("min-norm set against {}", gm.label)
        } else {
            format!("min-norm set against {} (kappa={})", gm.label, attack.kappa)
        };
        Job {
            also: Vec::new(),
            memory_mib: None,
            key: self.attack_key_of(&gm.label, source_key, attack),
            kind: JobKind::MinNormSet,
            label,
            inputs: vec![source_key.to_owned()],
            flops: flops::input_gradient_steps(arch, attack.steps as f64, n)
                + flops::forward(arch, 3.0 * n),
        }
    }

    /// The plan, each job's task and the claim points they index.
    fn text_plan_tasks(&self) -> TextPlan {
        let p = &self.cfg.profile;
        let grid = Grid::new();
        let mut jobs = Vec::new();
        let mut tasks = Vec::new();
        let model_keys: Vec<String> = grid.all().map(|gm| self.model_key(gm)).collect();
        for (i, gm) in grid.all().enumerate() {
            jobs.push(self.train_job(gm));
            tasks.push(Task::Train(i));
        }
        for (i, gm) in grid.sources.iter().enumerate() {
            jobs.push(self.attack_job(gm, &model_keys[i], &p.attack));
            tasks.push(Task::Attack(i));
        }
        let set_ids: Vec<String> = grid
            .sources
            .iter()
            .zip(&model_keys)
            .map(|(gm, k)| self.set_id(&gm.label, &self.attack_key_of(&gm.label, k, &p.attack).id))
            .collect();
        let attack_ids: Vec<String> = jobs
            .iter()
            .filter(|j| j.kind == JobKind::MinNormSet)
            .map(|j| j.key.id.clone())
            .collect();
        for (job, task) in self.eval_jobs(&grid, &model_keys, &set_ids, &attack_ids) {
            jobs.push(job);
            tasks.push(Task::Eval(task));
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
                    also: Vec::new(),
                    memory_mib: None,
                    inputs: vec![key_of(t.model)],
                    key: a.key,
                    kind,
                    label,
                    flops: work,
                });
                tasks.push(Task::Whitebox(i));
            }
        }
        let (n_src, n_det) = (grid.sources.len(), grid.dets.len());
        let mut finish = Finish::default();
        let mut claims = Vec::new();
        let mut study = None;
        if self.cfg.strength {
            let inputs = StrengthPlanInputs {
                source_keys: &model_keys[..n_src],
                det_keys: &model_keys[n_src..n_src + n_det],
                bnn_keys: &model_keys[n_src + n_det..],
                attack_ids: &attack_ids,
            };
            let strength = self.strength_plan(&grid.sources, &grid.dets, &grid.bnns, &inputs);
            for (job, task) in strength.jobs {
                jobs.push(job);
                tasks.push(Task::Strength(task));
            }
            finish = strength.finish;
            claims = strength.claims;
            study = strength.det0.map(|k| (k, strength.control_key));
        }
        if self.cfg.train_seeds() > 1 {
            let inputs = SeedsInputs {
                det_keys: &model_keys[n_src..n_src + n_det],
                bnn_keys: &model_keys[n_src + n_det..],
                set_ids: &set_ids,
                attack_ids: &attack_ids,
            };
            let mut seeds = self.seeds_jobs(&grid.dets, &grid.bnns, &inputs);
            if let Some((det0, control_key)) = &study {
                let study = StudyInputs {
                    control_key,
                    claims: &claims,
                    det0,
                };
                seeds.extend(self.strength_seeds_jobs(&grid.dets, &grid.bnns, &inputs, &study));
            }
            for (job, task) in seeds {
                jobs.push(job);
                tasks.push(Task::Seeds(task));
            }
        }
        let plan = Plan {
            profile: p.name.clone(),
            jobs,
            finish,
        };
        TextPlan {
            plan,
            tasks,
            claims,
        }
    }

    /// `job` with its task, then, with `--per-example`, its replay per example
    /// ([`Job::per_example_replay`] under the name `replay.1`) with the task `replay.0`.
    fn with_replay(
        &self,
        job: Job,
        task: EvalTask,
        replay: (EvalTask, &str),
    ) -> Vec<(Job, EvalTask)> {
        if !self.cfg.per_example {
            return vec![(job, task)];
        }
        let counts = job.per_example_replay(replay.1);
        vec![(job, task), (counts, replay.0)]
    }

    /// The evaluation jobs: each reads its model(s) and every min-norm set.
    fn eval_jobs(
        &self,
        grid: &Grid,
        model_keys: &[String],
        set_ids: &[String],
        attack_ids: &[String],
    ) -> Vec<(Job, EvalTask)> {
        let p = &self.cfg.profile;
        let (n_src, n_det) = (grid.sources.len(), grid.dets.len());
        let det_key = |i: usize| model_keys[n_src + i].clone();
        let bnn_key = |i: usize| model_keys[n_src + n_det + i].clone();
        let (t3, t4) = (
            TrainedGrid::bnn_index(TABLE3_RHO),
            TrainedGrid::bnn_index(TABLE4_RHO),
        );
        let arch = Arch::new(&[100, 100]);
        let n = self.test.len() as f64;
        let splits = (2 + set_ids.len()) as f64;
        let table3: usize = p
            .ensemble_ns
            .iter()
            .map(|&k| k * self.ensemble_runs_for(k))
            .sum();
        let job = |what: &str, models: Vec<String>, label: String, passes: f64| Job {
            also: Vec::new(),
            memory_mib: None,
            key: self.eval_key_of(what, &models.join("+"), set_ids),
            kind: JobKind::Evaluation,
            label,
            inputs: models
                .into_iter()
                .chain(attack_ids.iter().cloned())
                .collect(),
            flops: flops::forward(&arch, passes * n),
        };
        let mut out = Vec::new();
        for (i, gm) in grid.dets.iter().enumerate() {
            let j = job(
                &gm.name,
                vec![det_key(i)],
                format!("evaluate {}", gm.name),
                splits,
            );
            out.push((j, EvalTask::Det(i)));
        }
        for (i, gm) in grid.bnns.iter().enumerate() {
            let passes = splits * p.single_draw_runs as f64;
            let j = job(
                &gm.name,
                vec![bnn_key(i)],
                format!("evaluate {}", gm.name),
                passes,
            );
            out.push((j, EvalTask::Bnn(i)));
        }
        if self.cfg.per_example {
            let counts: Vec<(Job, EvalTask)> = grid
                .dets
                .iter()
                .chain(&grid.bnns)
                .zip(&out)
                .enumerate()
                .map(|(i, (gm, (eval, _)))| {
                    (eval.per_example_replay(&gm.name), EvalTask::PerExample(i))
                })
                .collect();
            out.extend(counts);
        }
        let passes = (set_ids.len() * table3) as f64;
        let j = job(
            "table3",
            vec![bnn_key(t3)],
            "Table 3 (ensembles)".into(),
            passes,
        );
        let replay = (EvalTask::EnsemblesPerExample, "table3");
        out.extend(self.with_replay(j, EvalTask::Ensembles, replay));
        let what = super::per_example::table4_name(self.cfg.prune_mode_or(PruneMode::Global));
        let passes = splits * (p.prune_rates.len() * p.prune_runs * p.prune_ensemble) as f64;
        let j = job(what, vec![bnn_key(t4)], "Table 4 (pruning)".into(), passes);
        out.extend(self.with_replay(j, EvalTask::Pruning, (EvalTask::PruningPerExample, what)));
        let models: Vec<String> = std::iter::once(bnn_key(t3))
            .chain((0..n_det).map(det_key))
            .collect();
        let passes = (1 + set_ids.len()) as f64 * (n_det + p.prune_ensemble) as f64;
        let calibration = format!("calibration+bootstrap{CALIBRATION_RESAMPLES}");
        let mut j = job(&calibration, vec![], "calibration".into(), passes);
        // The key names the models joined with `+`; the inputs list them one by one.
        j.key = self.eval_key_of(&calibration, &models.join("+"), set_ids);
        j.inputs = models
            .into_iter()
            .chain(attack_ids.iter().cloned())
            .collect();
        out.push((j, EvalTask::Calibration));
        out
    }

    /// Every model of the grid, from the cache.
    pub(super) fn load_grid(&self) -> Result<TrainedGrid, ReproduceError> {
        let grid = Grid::new();
        let load = |gms: &[GridModel]| -> Result<Vec<super::Ready>, ReproduceError> {
            gms.iter().map(|gm| Ok(self.ensure_model(gm)?.0)).collect()
        };
        Ok(TrainedGrid {
            source_ready: load(&grid.sources)?,
            det_ready: load(&grid.dets)?,
            bnn_ready: load(&grid.bnns)?,
            sources: grid.sources,
            dets: grid.dets,
            bnns: grid.bnns,
        })
    }

    /// Every model of the grid and the 12 sets, from the cache.
    pub(super) fn load_grid_and_sets(
        &self,
    ) -> Result<(TrainedGrid, Vec<PerturbationSet>), ReproduceError> {
        let trained = self.load_grid()?;
        let sets = trained
            .sources
            .iter()
            .zip(&trained.source_ready)
            .map(|(gm, r)| Ok(self.ensure_attack(&gm.label, r)?.0))
            .collect::<Result<_, ReproduceError>>()?;
        Ok((trained, sets))
    }

    /// Makes one evaluation (its models and sets are cached).
    fn run_eval(&self, task: EvalTask) -> Result<(), ReproduceError> {
        let (mut g, sets) = self.load_grid_and_sets()?;
        match task {
            EvalTask::Det(i) => {
                self.eval_deterministic(&g.dets[i].name, &g.det_ready[i], &sets)?;
            }
            EvalTask::Bnn(i) => {
                self.eval_single_draws(&g.bnns[i].name, &g.bnn_ready[i], &sets)?;
            }
            EvalTask::Ensembles => {
                self.eval_ensembles(&g.bnn_ready[TrainedGrid::bnn_index(TABLE3_RHO)], &sets)?;
            }
            EvalTask::Pruning => {
                let t4 = TrainedGrid::bnn_index(TABLE4_RHO);
                self.eval_pruning(&mut g.bnn_ready[t4], &sets)?;
            }
            EvalTask::Calibration => {
                super::calibration_eval(self, &g, &sets)?;
            }
            EvalTask::PruningPerExample => {
                let t4 = TrainedGrid::bnn_index(TABLE4_RHO);
                let _counts = self.per_example_pruning(&mut g.bnn_ready[t4], &sets)?;
            }
            EvalTask::EnsemblesPerExample => {
                let _arrays = self.per_example_ensembles(g.table3().1, &sets)?;
            }
            EvalTask::PerExample(i) => {
                if let Some(e) = super::per_example::evaluated(&g).get(i) {
                    let _counts = self.per_example_counts(e, &sets)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the task of one job (its inputs are cached); `claims` are its plan's.
    fn run_task(&self, task: Task, claims: &[ClaimDesc]) -> Result<(), ReproduceError> {
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
            Task::Eval(task) => self.run_eval(task)?,
            Task::Seeds(task) => self.run_seeds_task(&grid.dets, &grid.bnns, claims, task)?,
            Task::Strength(task) => self.run_strength_task(&grid.sources, claims, task)?,
        }
        Ok(())
    }
}

/// The text protocol's plan for `cfg` (loads the dataset to size the splits).
pub fn text_plan(cfg: &ReproduceConfig) -> Result<Plan, ReproduceError> {
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let TextPlan { plan, .. } = pipeline.text_plan_tasks();
    plan.check_order()?;
    Ok(plan)
}

/// Runs the job `key` of `cfg`'s text plan in this process ([`executor::run_one`]).
pub fn run_job(
    cfg: &ReproduceConfig,
    key: &str,
    opts: &JobRunOptions,
) -> Result<JobRun, ReproduceError> {
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let t = pipeline.text_plan_tasks();
    let index = t.plan.job_index(key)?;
    executor::run_one(&t.plan, index, &cfg.runs_dir, opts, || {
        pipeline.run_task(t.tasks[index], &t.claims)
    })
}

/// Makes every uncached job of `cfg`'s text plan in this process, in plan order
/// ([`executor::drain_here`]), planning again until nothing is added
/// ([`crate::experiment::plan::drain_growing`]): what `run` does without `--workers`.
pub fn run_plan(cfg: &ReproduceConfig) -> Result<DrainReport, ReproduceError> {
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    crate::experiment::plan::drain_growing(
        || {
            let t = pipeline.text_plan_tasks();
            t.plan.check_order()?;
            Ok(t)
        },
        |t| t.plan.jobs.len(),
        |t| {
            executor::drain_here(&t.plan, &cfg.runs_dir, cfg.verbose, |i| {
                pipeline.run_task(t.tasks[i], &t.claims)
            })
        },
    )
}
