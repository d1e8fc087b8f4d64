//! The reproduction as a plan of content-keyed jobs, built whole before any work and
//! then drained (as cargo's job queue is): each [`Job`] names its artifact's [`Key`]
//! (whose preimage is stored beside the artifact), the keys of the artifacts it reads,
//! and the matrix-product work it counts. A job is cached when its artifact is complete
//! in the runs folder. [`drain`] runs the uncached jobs in local worker processes
//! (`bayes-robust job run <key>`), never threads, because libtorch's generator is
//! global to a process; each job seeds itself from its own name, so the artifacts do
//! not depend on the order or the number of workers.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::cache::{ArtifactDir, ArtifactState};
use super::keys::Key;
use crate::model::checkpoint::{CheckpointError, CheckpointPaths};

/// What a job makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Train one model of the grid (a checkpoint).
    TrainModel,
    /// A min-norm attack's perturbations of the test images against one source.
    MinNormSet,
    /// The code protocol's targeted attack on the validation images of one source.
    TargetedSet,
    /// A white-box curve of one target (PGD; EOT for a BNN's ensemble).
    WhiteboxCurve,
    /// A rerun of a white-box curve with one thing of the attack varied.
    WhiteboxRerun,
    /// The gradient-free SPSA check against one target.
    Spsa,
    /// An evaluation on the clean splits and every perturbation set: a λ net's or a
    /// BNN's Tables 1–2 runs, Table 3's ensembles, Table 4's pruning, calibration.
    Evaluation,
}

impl JobKind {
    /// The folder of the runs folder its artifact goes to.
    pub fn folder(self) -> &'static str {
        match self {
            JobKind::TrainModel => "models",
            JobKind::MinNormSet | JobKind::TargetedSet => "attacks",
            JobKind::WhiteboxCurve
            | JobKind::WhiteboxRerun
            | JobKind::Spsa
            | JobKind::Evaluation => "evals",
        }
    }
}

/// One job of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub key: Key,
    /// The other artifacts it makes, of the same kind: the other members of a stacked
    /// grid trained at once (`train::grid`). Empty for every other job.
    pub also: Vec<Key>,
    pub kind: JobKind,
    /// What it is, in words (`train source/FC-10/lambda=0`).
    pub label: String,
    /// The ids of the artifacts it reads (jobs earlier in the plan).
    pub inputs: Vec<String>,
    /// Counted matrix-product FLOPs (training: at the epoch cap, an upper bound).
    pub flops: f64,
    /// Its peak memory in MiB where its kind's default (`slurm::Sizing`) is too small:
    /// a job that holds many perturbation sets at once (the strength sweep).
    pub memory_mib: Option<usize>,
}

impl Job {
    /// The job that trains the models `keys` at once (a stacked grid, or one model): the
    /// first key is its own, the others its [`Job::also`]; None without a key.
    pub fn training(keys: impl IntoIterator<Item = Key>, label: String, flops: f64) -> Option<Job> {
        let mut keys = keys.into_iter();
        Some(Job {
            key: keys.next()?,
            also: keys.collect(),
            kind: JobKind::TrainModel,
            label,
            inputs: Vec::new(),
            flops,
            memory_mib: None,
        })
    }

    /// `--per-example`'s replay of this evaluation under the name `name`: the same inputs
    /// and work, keyed by [`super::keys::per_example_counts`] of `name` and this job's key.
    pub fn per_example_replay(&self, name: &str) -> Job {
        Job {
            key: super::keys::per_example_counts(name, &self.key),
            label: format!("per-example {}", self.label),
            ..self.clone()
        }
    }

    /// Whether its artifact is complete and verified in `runs` (a checkpoint's weights
    /// against its sidecar's hash, an artifact's record and tensors against its
    /// integrity record).
    pub fn is_cached(&self, runs: &Path) -> bool {
        self.state(runs) == ArtifactState::Complete
    }

    /// The ids of the artifacts it makes: its key's, then those of [`Job::also`].
    pub fn outputs(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.key)
            .chain(&self.also)
            .map(|k| k.id.as_str())
    }

    /// Whether it makes the artifact `id`.
    pub fn makes(&self, id: &str) -> bool {
        self.outputs().any(|o| o == id)
    }

    /// Whether its artifacts in `runs` are all complete, one is there but corrupt, or
    /// one is absent.
    pub fn state(&self, runs: &Path) -> ArtifactState {
        let states: Vec<ArtifactState> = self.outputs().map(|id| self.state_of(runs, id)).collect();
        if let Some(corrupt) = states
            .iter()
            .find(|s| matches!(s, ArtifactState::Corrupt(_)))
        {
            return corrupt.clone();
        }
        if states.iter().all(|s| *s == ArtifactState::Complete) {
            ArtifactState::Complete
        } else {
            ArtifactState::Absent
        }
    }

    /// How many of its artifacts are in `runs` (complete or not).
    pub fn outputs_present(&self, runs: &Path) -> usize {
        self.outputs()
            .filter(|id| self.state_of(runs, id) != ArtifactState::Absent)
            .count()
    }

    fn state_of(&self, runs: &Path, id: &str) -> ArtifactState {
        let dir = runs.join(self.kind.folder());
        match self.kind {
            JobKind::TrainModel => {
                let paths = CheckpointPaths::new(&dir.join(id));
                if !paths.sidecar.exists() {
                    ArtifactState::Absent
                } else if let Err(e) =
                    paths.verify().and_then(|()| {
                        paths.weights.exists().then_some(()).ok_or_else(|| {
                            CheckpointError::Missing {
                                path: paths.weights.clone(),
                                what: "weights .safetensors",
                            }
                        })
                    })
                {
                    ArtifactState::Corrupt(e.to_string())
                } else {
                    ArtifactState::Complete
                }
            }
            _ => ArtifactDir::new(dir).state(id),
        }
    }

    /// Removes its artifacts so that they are recomputed (a corrupt one, or the
    /// members of a stacked grid left half made).
    pub fn discard(&self, runs: &Path) -> std::io::Result<()> {
        let dir = runs.join(self.kind.folder());
        for id in self.outputs() {
            match self.kind {
                JobKind::TrainModel => CheckpointPaths::new(&dir.join(id)).remove()?,
                _ => ArtifactDir::new(&dir)
                    .discard(id)
                    .map_err(|e| std::io::Error::other(e.to_string()))?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("plan is out of order: job {job} reads {input}, which no earlier job makes")]
    OutOfOrder { job: String, input: String },
    #[error("no job {key} in the plan of profile {profile} (`bayes-robust plan` lists them)")]
    NoSuchJob { key: String, profile: String },
    #[error("cannot start worker for job {key}: {reason}")]
    Spawn { key: String, reason: String },
    #[error("job {key} failed ({status}); its worker's output is above")]
    JobFailed { key: String, status: String },
}

/// A plan: jobs in dependency order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub profile: String,
    pub jobs: Vec<Job>,
    /// What `run` does in its own process once the jobs are made.
    pub finish: Finish,
}

/// The work `run` does in its own process after the plan's jobs, counted where it is
/// known before they run: the strength axis's claim points and its attacks at a matched
/// κ not planned yet (they wait on the λ = 0 net's sweep row; their part across seeds is
/// not counted). Sizes the Slurm job that assembles results.json.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finish {
    /// Counted matrix-product FLOPs.
    pub flops: f64,
    /// Peak memory in MiB where it holds more than the 3 GiB a results run takes.
    pub memory_mib: Option<usize>,
}

/// What a plan has left, and an estimate of its time.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlanSummary {
    pub jobs: usize,
    pub cached: usize,
    pub to_compute: usize,
    /// Counted FLOPs of the jobs to compute.
    pub flops_left: f64,
    /// flops_left at the sgemm rate (a lower bound on wall time; the stages run at 10–60%
    /// of it, docs/PERFORMANCE.md).
    pub sgemm_bound_seconds: Option<f64>,
}

impl Plan {
    /// Checks that no job reads an artifact no earlier job makes.
    pub fn check_order(&self) -> Result<(), PlanError> {
        let mut made = HashSet::new();
        for job in &self.jobs {
            if let Some(input) = job.inputs.iter().find(|i| !made.contains(*i)) {
                return Err(PlanError::OutOfOrder {
                    job: job.key.id.clone(),
                    input: input.clone(),
                });
            }
            made.extend(job.outputs().map(str::to_owned));
        }
        Ok(())
    }

    /// The job that makes the artifact `key`.
    pub fn job(&self, key: &str) -> Result<&Job, PlanError> {
        Ok(&self.jobs[self.job_index(key)?])
    }

    /// The index of the job that makes the artifact `key`.
    pub fn job_index(&self, key: &str) -> Result<usize, PlanError> {
        self.jobs
            .iter()
            .position(|j| j.makes(key))
            .ok_or_else(|| PlanError::NoSuchJob {
                key: key.to_owned(),
                profile: self.profile.clone(),
            })
    }

    /// The same jobs in another dependency order: Kahn's algorithm that takes, of the
    /// jobs whose inputs are made, the last in plan order first. For tests of order
    /// independence (each job seeds itself from its name, so its artifact must not
    /// depend on it).
    pub fn in_reverse_ready_order(&self) -> Plan {
        let mut left: Vec<&Job> = self.jobs.iter().collect();
        let mut made: HashSet<&str> = HashSet::new();
        let mut jobs = Vec::with_capacity(left.len());
        while let Some(i) = left
            .iter()
            .rposition(|j| j.inputs.iter().all(|k| made.contains(k.as_str())))
        {
            let job = left.remove(i);
            made.extend(job.outputs());
            jobs.push(job.clone());
        }
        jobs.extend(left.into_iter().cloned());
        Plan {
            profile: self.profile.clone(),
            jobs,
            finish: self.finish.clone(),
        }
    }

    /// The index of the job that makes each artifact id.
    pub fn index_of_outputs(&self) -> std::collections::HashMap<&str, usize> {
        self.jobs
            .iter()
            .enumerate()
            .flat_map(|(i, j)| j.outputs().map(move |o| (o, i)))
            .collect()
    }

    /// Which jobs are cached in `runs`, in plan order.
    pub fn cached(&self, runs: &Path) -> Vec<bool> {
        self.jobs.iter().map(|j| j.is_cached(runs)).collect()
    }

    pub fn summary(&self, runs: &Path, sgemm_gflops: Option<f64>) -> PlanSummary {
        let cached = self.cached(runs);
        let flops_left: f64 = self
            .jobs
            .iter()
            .zip(&cached)
            .filter(|(_, c)| !**c)
            .map(|(j, _)| j.flops)
            .sum::<f64>()
            .max(0.0);
        let n_cached = cached.iter().filter(|c| **c).count();
        PlanSummary {
            jobs: self.jobs.len(),
            cached: n_cached,
            to_compute: self.jobs.len() - n_cached,
            flops_left,
            sgemm_bound_seconds: sgemm_gflops.map(|g| flops_left / (g * 1e9)),
        }
    }

    /// The ids of the inputs of `job` that are not cached in `runs`.
    pub fn missing_inputs(&self, job: &Job, runs: &Path) -> Vec<String> {
        job.inputs
            .iter()
            .filter(|i| self.job(i).map_or(true, |j| !j.is_cached(runs)))
            .cloned()
            .collect()
    }
}

impl std::fmt::Display for PlanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} jobs: {} cached, {} to compute ({:.0} GFLOP counted",
            self.jobs,
            self.cached,
            self.to_compute,
            self.flops_left / 1e9
        )?;
        match self.sgemm_bound_seconds {
            Some(s) => write!(
                f,
                "; {} at this machine's sgemm rate, a lower bound on the wall time)",
                human_seconds(s)
            ),
            None => write!(f, ")"),
        }
    }
}

/// Seconds as `3 h 20 min`, `12 min` or `40 s`.
pub fn human_seconds(s: f64) -> String {
    if s >= 3600.0 {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    } else if s >= 60.0 {
        format!("{} min", (s / 60.0).round() as u64)
    } else {
        format!("{s:.0} s")
    }
}

/// The exit status of `job run` when an input artifact is missing (nothing is written).
pub const EXIT_MISSING_INPUT: i32 = 3;
/// The exit status of `job run` when another live process holds the job's claim.
pub const EXIT_CLAIMED: i32 = 75;

/// What [`drain`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainReport {
    pub computed: usize,
    pub already_cached: usize,
    /// Jobs another process was computing when asked, and that were then cached.
    pub left_to_others: usize,
}

/// Drains the plan `make()` builds with `drain`, then builds it again and drains what it
/// added, until a plan adds no job (`jobs` counts a plan's). A plan grows when jobs that
/// depend on a measured value become known: the strength axis's paper-matched claim
/// points, once the λ = 0 net's sweep row is cached. The report adds up the drains; its
/// `already_cached` is the first plan's.
pub fn drain_growing<P, E>(
    mut make: impl FnMut() -> Result<P, E>,
    jobs: impl Fn(&P) -> usize,
    mut drain: impl FnMut(&P) -> Result<DrainReport, E>,
) -> Result<DrainReport, E> {
    let mut plan = make()?;
    let mut total = drain(&plan)?;
    loop {
        let before = jobs(&plan);
        plan = make()?;
        if jobs(&plan) <= before {
            return Ok(total);
        }
        eprintln!(
            "plan: {} more job(s), known now that what they depend on is measured",
            jobs(&plan) - before
        );
        let next = drain(&plan)?;
        total.computed += next.computed;
        total.left_to_others += next.left_to_others;
    }
}

/// Runs every uncached job of `plan` in at most `workers` processes at a time, a job as
/// soon as its inputs are cached: `command(job)` is the worker's command line
/// (`bayes-robust … job run <key> …`). Stops at the first failed job (after the running
/// ones finish) and says which.
pub fn drain(
    plan: &Plan,
    runs: &Path,
    workers: usize,
    command: &dyn Fn(&Job) -> Command,
    progress: &indicatif::ProgressBar,
) -> Result<DrainReport, PlanError> {
    let mut report = DrainReport::default();
    let mut done: Vec<bool> = plan.cached(runs);
    report.already_cached = done.iter().filter(|d| **d).count();
    let index = plan.index_of_outputs();
    let mut running: Vec<(usize, Child)> = Vec::new();
    let mut retry_after: Vec<(usize, Instant)> = Vec::new();
    let mut failure = None;
    loop {
        while failure.is_none() && running.len() < workers.max(1) {
            let now = Instant::now();
            let ready = (0..plan.jobs.len()).find(|&i| {
                !done[i]
                    && !running.iter().any(|(r, _)| *r == i)
                    && !retry_after.iter().any(|(r, t)| *r == i && *t > now)
                    && plan.jobs[i]
                        .inputs
                        .iter()
                        .all(|k| index.get(k.as_str()).is_some_and(|&d| done[d]))
            });
            let Some(i) = ready else { break };
            let job = &plan.jobs[i];
            progress.set_message(job.label.clone());
            let child = command(job).spawn().map_err(|e| PlanError::Spawn {
                key: job.key.id.clone(),
                reason: e.to_string(),
            })?;
            running.push((i, child));
        }
        let waiting = retry_after.iter().any(|(i, _)| !done[*i]);
        if running.is_empty() && (failure.is_some() || !waiting) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut still = Vec::new();
        for (i, mut child) in running {
            match child.try_wait() {
                Ok(None) => still.push((i, child)),
                Ok(Some(status)) if status.success() => {
                    done[i] = true;
                    report.computed += 1;
                    progress.inc(1);
                }
                Ok(Some(status)) if status.code() == Some(EXIT_CLAIMED) => {
                    // Another process computes it: look again in a while (below).
                    retry_after.push((i, Instant::now() + Duration::from_secs(2)));
                }
                Ok(Some(status)) => {
                    failure.get_or_insert(PlanError::JobFailed {
                        key: plan.jobs[i].key.id.clone(),
                        status: status.to_string(),
                    });
                }
                Err(e) => {
                    failure.get_or_insert(PlanError::JobFailed {
                        key: plan.jobs[i].key.id.clone(),
                        status: e.to_string(),
                    });
                }
            }
        }
        running = still;
        for (i, _) in &retry_after {
            if !done[*i] && plan.jobs[*i].is_cached(runs) {
                done[*i] = true;
                report.left_to_others += 1;
            }
        }
        retry_after.retain(|(i, _)| !done[*i]);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
