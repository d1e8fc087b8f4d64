//! The text protocol's plan: every model of the grid, the 12 min-norm sets and (with
//! `--whitebox`) every white-box artifact, as jobs with the keys the stages use; and
//! `job run`: one job of that plan, run in this process.
//!
//! The evaluations, the strength axis and the training seeds still run inside
//! `reproduce` after the plan's artifacts exist (they read them from the cache).

use super::whitebox_stage::{Models, curve_jobs, plan_of};
use super::{
    CALIBRATION_RESAMPLES, GridModel, PerturbationSet, Pipeline, ReproduceConfig, ReproduceError,
    TrainedGrid, bayesian_models, deterministic_models, load_raw, source_models,
};
use crate::experiment::{TABLE3_RHO, TABLE4_RHO};
use crate::model::bayes::PruneMode;
use std::path::Path;

use crate::experiment::cache::{ArtifactDir, ArtifactState, Claim, ClaimPolicy};
use crate::experiment::flops;
use crate::experiment::plan::{Job, JobKind, Plan};
use crate::experiment::whitebox_targets::{GridRef, Role};
use crate::fsio::Provenance;
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
    Eval(EvalTask),
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
        let passes = (set_ids.len() * table3) as f64;
        let j = job(
            "table3",
            vec![bnn_key(t3)],
            "Table 3 (ensembles)".into(),
            passes,
        );
        out.push((j, EvalTask::Ensembles));
        let what = match self.cfg.prune_mode_or(PruneMode::Global) {
            PruneMode::Global => "table4",
            PruneMode::PerTensor => "table4-per-tensor",
        };
        let passes = splits * (p.prune_rates.len() * p.prune_runs * p.prune_ensemble) as f64;
        let j = job(what, vec![bnn_key(t4)], "Table 4 (pruning)".into(), passes);
        out.push((j, EvalTask::Pruning));
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

    /// Every model of the grid and the 12 sets, from the cache.
    fn load_grid_and_sets(&self) -> Result<(TrainedGrid, Vec<PerturbationSet>), ReproduceError> {
        let grid = Grid::new();
        let load = |gms: &[GridModel]| -> Result<Vec<super::Ready>, ReproduceError> {
            gms.iter().map(|gm| Ok(self.ensure_model(gm)?.0)).collect()
        };
        let trained = TrainedGrid {
            source_ready: load(&grid.sources)?,
            det_ready: load(&grid.dets)?,
            bnn_ready: load(&grid.bnns)?,
            sources: grid.sources,
            dets: grid.dets,
            bnns: grid.bnns,
        };
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
        }
        Ok(())
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
            Task::Eval(task) => self.run_eval(task)?,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRun {
    Computed,
    /// Its artifact was already complete (or another process completed it while this
    /// one waited for its claim).
    Cached,
    /// Another live process holds its claim (and `wait` was not asked).
    Claimed,
}

/// How `job run` goes about its job.
#[derive(Debug, Clone, Copy)]
pub struct JobRunOptions {
    /// While another live process holds the job's claim, wait for it to finish (or for
    /// its claim to go stale) instead of returning [`JobRun::Claimed`].
    pub wait: bool,
    /// Tries of the job's work before its error is returned (Slurm never retries).
    pub attempts: u32,
    pub claims: ClaimPolicy,
}

impl Default for JobRunOptions {
    fn default() -> Self {
        Self {
            wait: false,
            attempts: 1,
            claims: ClaimPolicy::default(),
        }
    }
}

/// The environment variable that makes `job run` of the named key fail on each try
/// before it writes anything: fault injection for the executor's tests.
pub const FAIL_JOB_ENV: &str = "BAYES_ROBUST_FAIL_JOB";

/// The runs folder's log of `job run` outcomes, one JSON line per job run.
pub const JOBS_LOG: &str = "jobs.log";

/// Runs the job `key` of `cfg`'s text plan in this process: checks that every input
/// artifact is in the runs folder and verifies (else [`ReproduceError::MissingInput`],
/// nothing written), claims the job, discards a corrupt artifact of its key, and makes
/// it. Each outcome is appended to `runs/jobs.log` with this process's provenance.
pub fn run_job(
    cfg: &ReproduceConfig,
    key: &str,
    opts: &JobRunOptions,
) -> Result<JobRun, ReproduceError> {
    let t0 = std::time::Instant::now();
    let raw = load_raw(cfg)?;
    let pipeline = Pipeline::new(cfg, &raw)?;
    let (plan, tasks) = pipeline.text_plan_tasks();
    let job = plan.job(key)?;
    let index = plan.jobs.iter().position(|j| j.key.id == key).unwrap_or(0);
    let runs = &cfg.runs_dir;
    let outcome = if job.is_cached(runs) {
        JobRun::Cached
    } else {
        let missing = plan.missing_inputs(job, runs);
        if !missing.is_empty() {
            return Err(ReproduceError::MissingInput {
                job: key.to_owned(),
                missing,
            });
        }
        match claim_job(job, runs, opts)? {
            Claimed::Ours(_claim) => {
                let dir = ArtifactDir::new(runs.join(job.kind.folder()));
                let swept = dir.sweep_temporaries(key, &opts.claims);
                if swept > 0 {
                    eprintln!("job {key}: removed {swept} temporary file(s) a killed writer left");
                }
                if let ArtifactState::Corrupt(reason) = job.state(runs) {
                    eprintln!("job {key}: discarding a corrupt artifact ({reason})");
                    job.discard(runs).map_err(|e| ReproduceError::Write {
                        path: runs.join(job.kind.folder()).join(key),
                        reason: e.to_string(),
                    })?;
                }
                if job.is_cached(runs) {
                    JobRun::Cached
                } else {
                    with_attempts(key, opts.attempts, || {
                        if std::env::var(FAIL_JOB_ENV).is_ok_and(|k| k == key) {
                            return Err(ReproduceError::InjectedFailure {
                                key: key.to_owned(),
                            });
                        }
                        pipeline.run_task(tasks[index])
                    })?;
                    JobRun::Computed
                }
            }
            Claimed::Finished => JobRun::Cached,
            Claimed::Elsewhere => JobRun::Claimed,
        }
    };
    log_outcome(runs, key, outcome, t0.elapsed().as_secs_f64())?;
    Ok(outcome)
}

/// What claiming a job came to.
enum Claimed {
    Ours(Claim),
    /// Another process held it and finished it while we waited.
    Finished,
    /// Another live process holds it (we did not wait).
    Elsewhere,
}

fn claim_job(job: &Job, runs: &Path, opts: &JobRunOptions) -> Result<Claimed, ReproduceError> {
    let dir = ArtifactDir::new(runs.join(job.kind.folder()));
    let me = Provenance::here();
    loop {
        if let Some(claim) = dir.try_claim_as(&job.key.id, &me, &opts.claims)? {
            return Ok(Claimed::Ours(claim));
        }
        if !opts.wait {
            return Ok(Claimed::Elsewhere);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        if job.is_cached(runs) {
            return Ok(Claimed::Finished);
        }
    }
}

/// Runs `work` up to `attempts` times, waiting 1 s, 2 s, 4 s… between tries.
fn with_attempts(
    key: &str,
    attempts: u32,
    mut work: impl FnMut() -> Result<(), ReproduceError>,
) -> Result<(), ReproduceError> {
    let mut wait = std::time::Duration::from_secs(1);
    for attempt in 1..=attempts.max(1) {
        match work() {
            Ok(()) => return Ok(()),
            Err(e) if attempt < attempts => {
                eprintln!(
                    "job {key}: try {attempt} of {attempts} failed ({e}); trying again in {wait:?}"
                );
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One line of `runs/jobs.log`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobLogLine {
    pub key: String,
    pub outcome: String,
    pub seconds: f64,
    pub by: Provenance,
}

/// Appends one line to `runs/jobs.log` (a single `write` of an `O_APPEND` file, so lines
/// of concurrent processes do not interleave).
fn log_outcome(
    runs: &Path,
    key: &str,
    outcome: JobRun,
    seconds: f64,
) -> Result<(), ReproduceError> {
    use std::io::Write;
    let path = runs.join(JOBS_LOG);
    let err = |reason: String| ReproduceError::Write {
        path: path.clone(),
        reason,
    };
    let line = JobLogLine {
        key: key.to_owned(),
        outcome: serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        seconds,
        by: Provenance::here(),
    };
    let mut bytes = serde_json::to_vec(&line).map_err(|e| err(e.to_string()))?;
    bytes.push(b'\n');
    std::fs::create_dir_all(runs).map_err(|e| err(e.to_string()))?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes))
        .map_err(|e| err(e.to_string()))
}
