//! The executor: one job of a plan run in this process ([`run_one`], what `job run`
//! does), and a whole plan drained in this process ([`drain_here`], what `run` does
//! without `--workers`; [`super::plan::drain`] drains it in worker processes). Both go
//! through the same claim, so processes that share a runs folder compute each job once.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cache::{ArtifactDir, ArtifactState, Claim, ClaimPolicy};
use super::plan::{DrainReport, Job, Plan, PlanError};
use super::stage::ReproduceError;
use crate::fsio::Provenance;

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

/// Runs job `index` of `plan` in this process: checks that every input artifact is in
/// the runs folder and verifies (else [`ReproduceError::MissingInput`], nothing
/// written), claims the job, discards a corrupt or half-made artifact of its outputs,
/// and makes it with `work`. Each outcome is appended to `runs/jobs.log` with this
/// process's provenance.
pub fn run_one(
    plan: &Plan,
    index: usize,
    runs: &Path,
    opts: &JobRunOptions,
    mut work: impl FnMut() -> Result<(), ReproduceError>,
) -> Result<JobRun, ReproduceError> {
    let t0 = Instant::now();
    let job = &plan.jobs[index];
    let key = job.key.id.as_str();
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
                prepare_outputs(job, runs, &opts.claims)?;
                if job.is_cached(runs) {
                    JobRun::Cached
                } else {
                    with_attempts(key, opts.attempts, || {
                        if std::env::var(FAIL_JOB_ENV).is_ok_and(|k| k == key) {
                            return Err(ReproduceError::InjectedFailure {
                                key: key.to_owned(),
                            });
                        }
                        work()
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

/// Under the job's claim: removes the temporaries a killed writer left, and discards
/// its outputs when one is corrupt or, for a stacked grid, when only some are there.
fn prepare_outputs(job: &Job, runs: &Path, claims: &ClaimPolicy) -> Result<(), ReproduceError> {
    let key = &job.key.id;
    let dir = ArtifactDir::new(runs.join(job.kind.folder()));
    let swept: usize = job
        .outputs()
        .map(|id| dir.sweep_temporaries(id, claims))
        .sum();
    if swept > 0 {
        eprintln!("job {key}: removed {swept} temporary file(s) a killed writer left");
    }
    let reason = match job.state(runs) {
        ArtifactState::Corrupt(reason) => Some(format!("a corrupt artifact ({reason})")),
        ArtifactState::Absent if job.outputs_present(runs) > 0 => {
            Some("the members of a grid that was left half made".to_owned())
        }
        _ => None,
    };
    if let Some(reason) = reason {
        eprintln!("job {key}: discarding {reason}");
        job.discard(runs).map_err(|e| ReproduceError::Write {
            path: runs.join(job.kind.folder()).join(key),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// Makes every uncached job of `plan` in this process, in plan order, with
/// `work(index)`. A job another live process has claimed is left to it and looked at
/// again later (as are the jobs that read its artifact); the drain ends when every job
/// is cached. The first failed job's error is returned.
pub fn drain_here(
    plan: &Plan,
    runs: &Path,
    verbose: bool,
    mut work: impl FnMut(usize) -> Result<(), ReproduceError>,
) -> Result<DrainReport, ReproduceError> {
    let mut done = plan.cached(runs);
    let mut report = DrainReport {
        already_cached: done.iter().filter(|d| **d).count(),
        ..DrainReport::default()
    };
    let progress = crate::progress::bar(
        plan.jobs.len() - report.already_cached,
        "   jobs",
        "",
        verbose,
    );
    let index = plan.index_of_outputs();
    let opts = JobRunOptions::default();
    while done.iter().any(|d| !d) {
        let (mut progressed, mut held_elsewhere) = (false, false);
        // The first job of this pass that waits on an input, and that input.
        let mut blocked: Option<(usize, &str)> = None;
        for i in 0..plan.jobs.len() {
            let job = &plan.jobs[i];
            if done[i] {
                continue;
            }
            let waiting = job
                .inputs
                .iter()
                .find(|k| index.get(k.as_str()).is_none_or(|&d| !done[d]));
            if let Some(input) = waiting {
                blocked = blocked.or(Some((i, input)));
                continue;
            }
            progress.set_message(job.label.clone());
            match run_one(plan, i, runs, &opts, || work(i))? {
                JobRun::Computed => report.computed += 1,
                JobRun::Cached => report.left_to_others += 1,
                JobRun::Claimed => {
                    held_elsewhere = true;
                    continue;
                }
            }
            done[i] = true;
            progressed = true;
            progress.inc(1);
        }
        if let (false, false, Some((i, input))) = (progressed, held_elsewhere, blocked) {
            // Nothing ran and nobody else is running anything: a job reads an
            // artifact no job of the plan makes.
            return Err(PlanError::OutOfOrder {
                job: plan.jobs[i].key.id.clone(),
                input: input.to_owned(),
            }
            .into());
        }
        if !progressed {
            progress.set_message("waiting for jobs another process is computing");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    progress.finish_and_clear();
    Ok(report)
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
        std::thread::sleep(Duration::from_secs(1));
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
    let mut wait = Duration::from_secs(1);
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
