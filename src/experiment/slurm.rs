//! A plan handed to Slurm (`bayes-robust plan --emit slurm`) or to any other engine
//! (`--emit json`). The harness does not schedule across machines itself: the script
//! submits one `sbatch --parsable` per job that is not cached yet, each
//! `bayes-robust job run <key>`, with Slurm dependencies on the ids of its uncached
//! inputs that the same script submitted (never on an id from an earlier submission,
//! which Slurm may have forgotten and would then silently drop). `job run` checks every
//! input artifact itself, so a wrong dependency can never let a job read a missing
//! file. Resubmitting the same plan submits only what is still missing.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::plan::{Finish, Job, JobKind, Plan};

/// What a job asks Slurm for.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Resources {
    pub cpus: usize,
    pub mem_mib: usize,
    pub time_minutes: u64,
}

/// How jobs are sized from their counted work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sizing {
    pub cpus: usize,
    /// Matrix-product rate (GFLOP/s) of `cpus` cores of a node; the stages run at
    /// 10–60% of it (docs/PERFORMANCE.md).
    pub sgemm_gflops: f64,
}

impl Sizing {
    /// `--time`: 20 × the job's counted work at the sgemm rate (the slowest stage runs at
    /// a tenth of it, and twice that again for a slower node), at least 10 minutes.
    /// `--mem`: the dataset and libtorch (2 GiB), plus 1 GiB for a white-box job's
    /// batched EOT draws, 2 GiB for an evaluation's perturbation sets, or the job's own
    /// estimate where it is larger ([`Job::memory_mib`]).
    pub fn resources(&self, job: &Job) -> Resources {
        let seconds = 20.0 * job.flops / (self.sgemm_gflops.max(1e-3) * 1e9);
        let by_kind = match job.kind {
            JobKind::TrainModel | JobKind::MinNormSet | JobKind::TargetedSet => 2048,
            JobKind::WhiteboxCurve | JobKind::WhiteboxRerun | JobKind::Spsa => 3072,
            // The clean splits and every perturbation set in memory.
            JobKind::Evaluation => 4096,
        };
        let mem_mib = job.memory_mib.unwrap_or(0).max(by_kind);
        Resources {
            cpus: self.cpus.max(1),
            mem_mib,
            time_minutes: ((seconds / 60.0).ceil() as u64).max(10),
        }
    }

    /// The results run's: 3 GiB and an hour to read the cache and assemble results.json,
    /// or more for the plan's [`Finish`] work (the same 20 × its counted work).
    pub fn finishing(&self, finish: &Finish) -> Resources {
        let seconds = 20.0 * finish.flops / (self.sgemm_gflops.max(1e-3) * 1e9);
        Resources {
            cpus: self.cpus.max(1),
            mem_mib: finish.memory_mib.unwrap_or(0).max(3072),
            time_minutes: 60 + (seconds / 60.0).ceil() as u64,
        }
    }
}

/// The files a job's artifact consists of, relative to the runs folder.
pub fn outputs(job: &Job) -> Vec<PathBuf> {
    let exts: &[&str] = match job.kind {
        JobKind::TrainModel | JobKind::MinNormSet | JobKind::TargetedSet => {
            &["safetensors", "json"]
        }
        JobKind::WhiteboxCurve | JobKind::WhiteboxRerun | JobKind::Spsa | JobKind::Evaluation => {
            &["json"]
        }
    };
    job.outputs()
        .flat_map(|id| {
            let stem = PathBuf::from(job.kind.folder()).join(id);
            exts.iter()
                .map(move |ext| PathBuf::from(format!("{}.{ext}", stem.display())))
        })
        .collect()
}

/// The plan as data, for Snakemake, Ray or any other engine: per job its key, kind,
/// inputs, outputs, resources and whether it is cached.
pub fn plan_json(plan: &Plan, cached: &[bool], sizing: &Sizing) -> Value {
    let jobs: Vec<Value> = plan
        .jobs
        .iter()
        .zip(cached)
        .map(|(job, c)| {
            let r = sizing.resources(job);
            json!({
                "key": job.key.id, "kind": job.kind, "label": job.label,
                "inputs": job.inputs, "outputs": outputs(job),
                "cpus": r.cpus, "mem_mib": r.mem_mib, "time_minutes": r.time_minutes,
                "gflop": job.flops / 1e9, "cached": c,
                "command": ["bayes-robust", "job", "run", &job.key.id],
            })
        })
        .collect();
    json!({ "profile": plan.profile, "jobs": jobs })
}

/// What the submission script runs: the binary and the arguments around `job run <key>`
/// and the final `run` (which assembles results.json from the cache).
#[derive(Debug, Clone)]
pub struct SlurmCommands {
    /// Absolute path of the binary on the shared filesystem.
    pub exe: PathBuf,
    /// The working folder of every job (`--chdir`), where relative paths resolve.
    pub workdir: PathBuf,
    /// Global flags (before the subcommand).
    pub global: Vec<String>,
    /// Run flags (profile, runs folder, …), after `job run <key>` and after `run`.
    pub run_flags: Vec<String>,
    /// Extra `sbatch` arguments, passed through.
    pub sbatch_args: Vec<String>,
    /// Tries of each job inside `job run` (`--attempts`).
    pub attempts: u32,
    /// Where Slurm writes each job's output (`<name>.out`).
    pub log_dir: PathBuf,
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The Slurm job name of a job: `br-<profile>-<key>`.
pub fn job_name(profile: &str, key: &str) -> String {
    format!("br-{profile}-{key}")
}

/// The bash script that submits every uncached job of `plan` (and last, the `run` that
/// assembles results.json), each job depending on its uncached inputs' ids with
/// `afterok` and on `singleton`, with `--kill-on-invalid-dep=yes`, `--requeue` and
/// `--open-mode=append`.
pub fn slurm_script(plan: &Plan, cached: &[bool], sizing: &Sizing, cmd: &SlurmCommands) -> String {
    let exe = shell_quote(&cmd.exe.to_string_lossy());
    let global = quoted(&cmd.global);
    let mut run_flags = cmd.run_flags.clone();
    if !run_flags.iter().any(|f| f == "--quiet") {
        run_flags.push("--quiet".into());
    }
    let flags = quoted(&run_flags);
    let threads = "--threads \"$SLURM_CPUS_PER_TASK\"";
    let to_submit = cached.iter().filter(|c| !**c).count();
    let mut s = format!(
        "#!/usr/bin/env bash\n\
         # Submits the {to_submit} uncached job(s) of the plan of profile {profile} ({total} jobs) to\n\
         # Slurm, then the run that assembles results.json. Made by `bayes-robust plan --emit slurm`;\n\
         # emit and run it again after a failure: it submits only what is still missing.\n\
         set -euo pipefail\n\
         LOGS={logs}\n\
         mkdir -p \"$LOGS\"\n\
         submit() {{ sbatch --parsable \"$@\" | cut -d';' -f1; }}\n\
         COMMON=(--requeue --open-mode=append --kill-on-invalid-dep=yes --chdir={workdir}{extra})\n",
        profile = plan.profile,
        total = plan.jobs.len(),
        logs = shell_quote(&cmd.log_dir.to_string_lossy()),
        workdir = shell_quote(&cmd.workdir.to_string_lossy()),
        extra = if cmd.sbatch_args.is_empty() {
            String::new()
        } else {
            format!(" {}", quoted(&cmd.sbatch_args))
        },
    );
    let mut var_of: HashMap<&str, String> = HashMap::new();
    for (i, (job, c)) in plan.jobs.iter().zip(cached).enumerate() {
        if *c {
            continue;
        }
        let r = sizing.resources(job);
        let var = format!("j{i}");
        let deps: Vec<String> = job
            .inputs
            .iter()
            .filter_map(|k| var_of.get(k.as_str()))
            .map(|v| format!("${{{v}}}"))
            .collect();
        let wrap = format!(
            "exec {exe} {global} {threads} job run {key} {flags} --wait --attempts {attempts}",
            key = job.key.id,
            attempts = cmd.attempts.max(1),
        );
        s += &format!(
            "{var}=$(submit \"${{COMMON[@]}}\" --job-name={name} -c {cpus} --mem={mem}M --time={time} --output=\"$LOGS/%x.out\" --dependency={dep} --wrap={wrap})\n",
            name = job_name(&plan.profile, &job.key.id),
            cpus = r.cpus,
            mem = r.mem_mib,
            time = r.time_minutes,
            dep = dependency(&deps),
            wrap = shell_quote(&wrap),
        );
        for id in job.outputs() {
            var_of.insert(id, var.clone());
        }
    }
    let mut all: Vec<String> = var_of.values().map(|v| format!("${{{v}}}")).collect();
    all.sort();
    all.dedup();
    let results = format!("exec {exe} {global} {threads} run {flags}");
    let r = sizing.finishing(&plan.finish);
    s += &format!(
        "results=$(submit \"${{COMMON[@]}}\" --job-name={name} -c {cpus} --mem={mem}M --time={time} --output=\"$LOGS/%x.out\" --dependency={dep} --wrap={wrap})\n\
         echo \"submitted {to_submit} job(s) and the results run (Slurm job $results)\"\n",
        name = job_name(&plan.profile, "results"),
        cpus = r.cpus,
        mem = r.mem_mib,
        time = r.time_minutes,
        dep = dependency(&all),
        wrap = shell_quote(&results),
    );
    s
}

/// `afterok:<ids>,singleton`, or `singleton` alone.
fn dependency(ids: &[String]) -> String {
    if ids.is_empty() {
        "singleton".to_owned()
    } else {
        format!("afterok:{},singleton", ids.join(":"))
    }
}
