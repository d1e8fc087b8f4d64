//! The quick plan on a real single-node Slurm cluster (issue 22), started by this test
//! on this machine: Debian's `munged`, `slurmctld` and `slurmd` (bookworm: 22.05.8), as
//! root, without systemd, each stopped by its PID at the end. Where Slurm cannot start
//! (not root, not installed, a locked-down container) the test says so and is skipped;
//! with `BAYES_ROBUST_REQUIRE_SLURM=1` (set by scripts/test.sh where setup installed
//! Slurm as root) it fails instead.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bayes_robust::experiment::cache::INTEGRITY;
use bayes_robust::experiment::plan::{Job, JobKind, Plan};
use bayes_robust::experiment::reproduce::{FAIL_JOB_ENV, JOBS_LOG, JobLogLine, text_plan};
use serde_json::Value;

/// A single-node cluster in a private folder; [`Drop`] stops its daemons by PID and
/// removes what it made.
struct SlurmCluster {
    dir: tempfile::TempDir,
    daemons: Vec<(&'static str, Child)>,
    /// `/etc/slurm/slurm.conf`, when this test made it (a link to its config).
    etc_conf: Option<PathBuf>,
}

impl SlurmCluster {
    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A command with this cluster's config (`sbatch`, `squeue`, the submission script).
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        c
    }

    fn start() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root: slurmd must run as root here".into());
        }
        for bin in ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo"] {
            if !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Err(format!(
                    "{bin} is not installed (scripts/setup.sh installs slurmctld, slurmd, slurm-client and munge with apt-get)"
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("br-slurm-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let p = dir.path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        for sub in ["state", "spool"] {
            std::fs::create_dir(p.join(sub)).map_err(|e| e.to_string())?;
        }
        let key: Vec<u8> = (0..1024).map(|_| rand::random::<u8>()).collect();
        std::fs::write(p.join("munge.key"), key).map_err(|e| e.to_string())?;
        std::fs::set_permissions(p.join("munge.key"), std::fs::Permissions::from_mode(0o400))
            .map_err(|e| e.to_string())?;
        let host = bayes_robust::fsio::hostname();
        let (ctld_port, d_port) = (free_port()?, free_port()?);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let conf = format!(
            "# bayes-robust test cluster\n\
             ClusterName=brtest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
             AuthType=auth/munge\nCredType=cred/munge\nAuthInfo=socket={d}/munge.sock\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nDefMemPerCPU=1024\n\
             ReturnToService=2\nMinJobAge=3600\n\
             JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n\
             NodeName={host} CPUs={cpus} RealMemory=12000 State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            d = p.display()
        );
        std::fs::write(p.join("slurm.conf"), conf).map_err(|e| e.to_string())?;
        let mut cluster = SlurmCluster {
            dir,
            daemons: Vec::new(),
            etc_conf: None,
        };
        // Jobs read /etc/slurm/slurm.conf (srun inside a job ignores SLURM_CONF).
        let etc = PathBuf::from("/etc/slurm/slurm.conf");
        if !etc.exists() && std::fs::create_dir_all("/etc/slurm").is_ok() {
            if std::os::unix::fs::symlink(cluster.conf(), &etc).is_ok() {
                cluster.etc_conf = Some(etc);
            }
        } else if etc.exists() {
            eprintln!(
                "note: /etc/slurm/slurm.conf exists and is not this test's; jobs get SLURM_CONF"
            );
        }
        let d = cluster.dir.path().to_owned();
        let conf = cluster.conf();
        cluster.spawn(
            "munged",
            Command::new("munged").args([
                "-F".into(),
                "-f".into(),
                format!("--socket={}/munge.sock", d.display()),
                format!("--key-file={}/munge.key", d.display()),
                format!("--log-file={}/munged.log", d.display()),
                format!("--pid-file={}/munged.pid", d.display()),
                format!("--seed-file={}/munged.seed", d.display()),
            ]),
        )?;
        cluster.wait_for(|| d.join("munge.sock").exists(), "munged's socket")?;
        cluster.spawn(
            "slurmctld",
            Command::new("slurmctld").arg("-D").arg("-f").arg(&conf),
        )?;
        cluster.spawn(
            "slurmd",
            Command::new("slurmd").arg("-D").arg("-f").arg(&conf),
        )?;
        cluster.wait_for(
            || {
                cluster
                    .command("sinfo")
                    .args(["-h", "-o", "%T"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle")
            },
            "an idle node",
        )?;
        Ok(cluster)
    }

    fn spawn(&mut self, name: &'static str, cmd: &mut Command) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.out")))
            .map_err(|e| e.to_string())?;
        let child = cmd
            .env("SLURM_CONF", self.conf())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.daemons.push((name, child));
        Ok(())
    }

    /// Waits up to 30 s for `ready`; on timeout, the daemons' logs say why.
    fn wait_for(&self, ready: impl Fn() -> bool, what: &str) -> Result<(), String> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if ready() {
                eprintln!("slurm: {what} after {:.1} s", t0.elapsed().as_secs_f64());
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut logs = String::new();
        for name in [
            "munged.out",
            "slurmctld.out",
            "slurmd.out",
            "slurmctld.log",
            "slurmd.log",
        ] {
            if let Ok(t) = std::fs::read_to_string(self.dir.path().join(name)) {
                let tail: Vec<&str> = t.lines().rev().take(5).collect();
                logs += &format!(
                    "\n--- {name}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Err(format!("no {what} within 30 s{logs}"))
    }

    /// Waits until the queue is empty (every job ended or was cancelled).
    fn wait_until_drained(&self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            let out = self
                .command("squeue")
                .args(["-h", "-o", "%i %T %r"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && text.trim().is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "the queue did not drain in {limit:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The state of a job Slurm still remembers (`COMPLETED`, `FAILED`, `CANCELLED`…).
    fn job_state(&self, id: &str) -> String {
        let out = self
            .command("scontrol")
            .args(["show", "job", id])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("JobState="))
            .unwrap_or("UNKNOWN")
            .to_owned()
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for (_, child) in self.daemons.iter_mut().rev() {
            // SAFETY: kill with a PID this test spawned and has not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if t0.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(etc) = &self.etc_conf {
            let _ = std::fs::remove_file(etc);
        }
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn cluster_or_skip() -> Option<SlurmCluster> {
    match SlurmCluster::start() {
        Ok(c) => Some(c),
        Err(reason) if std::env::var_os("BAYES_ROBUST_REQUIRE_SLURM").is_some() => {
            panic!("Slurm is required here (BAYES_ROBUST_REQUIRE_SLURM) but cannot start: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: the Slurm test cannot start a cluster here: {reason}");
            None
        }
    }
}

const SEED: &str = "20201218";

/// `bayes-robust` with the quick profile's flags around `args`.
fn bayes_robust(data: &Path, runs: &Path, out: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bayes-robust"));
    c.args(["--seed", SEED, "--threads", "1"])
        .arg("--data-dir")
        .arg(data);
    c.args(args);
    c.args(["--profile", "quick", "--quiet"]);
    c.arg("--runs-dir").arg(runs).arg("--out-dir").arg(out);
    c
}

fn output_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The job ids a submission script's run printed and the `submit` lines it holds.
fn submitted_jobs(script: &str) -> usize {
    script.lines().filter(|l| l.contains(" job run ")).count()
}

/// results.json without what differs between runs of the same artifacts: wall times
/// (`seconds`, `*_seconds`) and the run's metadata (command, host, folders).
fn comparable(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("meta");
    }
    strip_times(v)
}

fn strip_times(mut v: Value) -> Value {
    match &mut v {
        Value::Object(m) => {
            m.retain(|k, _| k != "seconds" && !k.ends_with("_seconds"));
            for x in m.values_mut() {
                *x = strip_times(x.take());
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| *x = strip_times(x.take())),
        _ => {}
    }
    v
}

/// The JSON pointers (at most 10) where `a` and `b` differ.
fn differences(a: &Value, b: &Value, at: &str) -> Vec<String> {
    let mut out = Vec::new();
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                out.extend(differences(va, vb, &format!("{at}/{k}")));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                out.extend(differences(va, vb, &format!("{at}/{i}")));
            }
        }
        _ if a != b => out.push(format!("{at}: {a} vs {b}")),
        _ => {}
    }
    out.truncate(10);
    out
}

fn read_log(runs: &Path) -> Vec<JobLogLine> {
    std::fs::read_to_string(runs.join(JOBS_LOG))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Who made each artifact, by its record's integrity field or checkpoint sidecar.
fn made_by(runs: &Path, job: &Job) -> Option<String> {
    let path = runs
        .join(job.kind.folder())
        .join(format!("{}.json", job.key.id));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let by = match job.kind {
        JobKind::TrainModel => &v["made_by"],
        _ => &v[INTEGRITY]["made_by"],
    };
    by["slurm_job_id"].as_str().map(str::to_owned)
}

/// Temporary files and claims left in the runs folder.
fn leftovers(runs: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for kind in ["models", "attacks", "evals"] {
        for e in std::fs::read_dir(runs.join(kind))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') {
                out.push(format!("{kind}/{n}"));
            }
        }
    }
    out
}

/// The tails of the Slurm logs of `jobs` (for a failure's message).
fn slurm_logs(runs: &Path, jobs: &[&Job]) -> String {
    jobs.iter()
        .map(|j| {
            let name = bayes_robust::experiment::slurm::job_name("quick", &j.key.id);
            let log = std::fs::read_to_string(runs.join("slurm-logs").join(format!("{name}.out")))
                .unwrap_or_else(|e| format!("(no log: {e})"));
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            format!(
                "\n--- {}\n{}",
                j.label,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect()
}

fn quick_plan(runs: &Path) -> Plan {
    text_plan(&common::quick_config(runs, runs, 1)).unwrap()
}

#[test]
fn the_quick_plan_runs_on_a_real_slurm_cluster_once_per_key_and_resumes_after_a_failure() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let data = common::real_mnist_dir();
    let work = tempfile::tempdir().unwrap();
    let (runs, out) = (work.path().join("runs"), work.path().join("out"));
    let plan = quick_plan(&runs);
    // The source whose training fails (both tries) in the first two submissions.
    let failing = plan
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::TrainModel)
        .unwrap()
        .clone();
    // Its dependants, direct and through other jobs (its set, and every evaluation).
    let mut downstream = std::collections::HashSet::from([failing.key.id.clone()]);
    let dependants: Vec<&Job> = plan
        .jobs
        .iter()
        .filter(|j| {
            let hit = j.inputs.iter().any(|i| downstream.contains(i));
            if hit {
                downstream.insert(j.key.id.clone());
            }
            hit
        })
        .collect();
    assert!(!dependants.is_empty());

    // Two overlapping submissions of the whole plan, each emitted before either runs.
    let emit = |extra: &[&str]| -> String {
        let mut args = vec!["plan", "--emit", "slurm", "--cpus-per-job", "1"];
        args.extend_from_slice(extra);
        output_ok(&mut bayes_robust(&data, &runs, &out, &args))
    };
    let script = emit(&["--sbatch-args", "--comment=bayes-robust-test"]);
    assert_eq!(submitted_jobs(&script), plan.jobs.len());
    assert!(script.contains("--kill-on-invalid-dep=yes") && script.contains("--requeue"));
    assert!(
        script.contains("--comment=bayes-robust-test"),
        "--sbatch-args pass through"
    );
    assert!(script.contains(&format!("--job-name=br-quick-{}", failing.key.id)));
    let script_path = work.path().join("submit.sh");
    std::fs::write(&script_path, &script).unwrap();
    let t0 = Instant::now();
    for _ in 0..2 {
        let printed = output_ok(
            cluster
                .command("bash")
                .arg(&script_path)
                .env(FAIL_JOB_ENV, &failing.key.id),
        );
        assert!(printed.contains("submitted"), "{printed}");
    }
    cluster.wait_until_drained(Duration::from_secs(900));
    eprintln!(
        "two submissions drained in {:.0} s",
        t0.elapsed().as_secs_f64()
    );

    // The failed job's artifact and its dependants' are absent (cancelled), nothing
    // partial is left, and everything else is verified.
    assert!(!failing.is_cached(&runs));
    for j in &dependants {
        assert!(!j.is_cached(&runs), "{} ran without its input", j.label);
        let name = bayes_robust::experiment::slurm::job_name("quick", &j.key.id);
        assert!(
            !runs.join("slurm-logs").join(format!("{name}.out")).exists(),
            "{} was started, not cancelled: {}",
            j.label,
            slurm_logs(&runs, &[j])
        );
    }
    assert!(
        leftovers(&runs).is_empty(),
        "left behind: {:?}",
        leftovers(&runs)
    );
    let missing: Vec<&Job> = plan.jobs.iter().filter(|j| !j.is_cached(&runs)).collect();
    assert_eq!(
        missing.len(),
        1 + dependants.len(),
        "only the failure and its dependants are missing; missing: {}",
        slurm_logs(&runs, &missing)
    );
    assert!(
        !out.join("results.json").exists(),
        "the results run was cancelled"
    );

    // Resubmitting submits only the missing keys, and then finishes.
    let again = emit(&[]);
    assert_eq!(submitted_jobs(&again), missing.len());
    std::fs::write(&script_path, &again).unwrap();
    output_ok(cluster.command("bash").arg(&script_path));
    cluster.wait_until_drained(Duration::from_secs(600));
    for j in &plan.jobs {
        assert!(j.is_cached(&runs), "{} is not a verified artifact", j.label);
    }
    assert!(
        leftovers(&runs).is_empty(),
        "left behind: {:?}",
        leftovers(&runs)
    );

    // Each key was computed exactly once, by the Slurm job its record names.
    let log = read_log(&runs);
    let mut computed: HashMap<&str, Vec<&JobLogLine>> = HashMap::new();
    for line in log.iter().filter(|l| l.outcome == "computed") {
        computed.entry(line.key.as_str()).or_default().push(line);
    }
    for j in &plan.jobs {
        let by = computed.get(j.key.id.as_str()).map_or(&[][..], |v| &v[..]);
        assert_eq!(by.len(), 1, "{} computed {} times", j.label, by.len());
        let id = by[0].by.slurm_job_id.clone();
        assert!(id.is_some(), "computed outside Slurm");
        assert_eq!(
            made_by(&runs, j),
            id,
            "{}: the record names its job",
            j.label
        );
        if let Some(id) = &id {
            assert_eq!(cluster.job_state(id), "COMPLETED");
        }
    }
    let states: BTreeMap<String, usize> = log.iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.outcome.clone()).or_default() += 1;
        m
    });
    eprintln!("job runs by outcome: {states:?}");

    // results.json, assembled by the last Slurm job, is the in-process run's.
    let slurm: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let (ref_runs, ref_out) = (work.path().join("ref-runs"), work.path().join("ref-out"));
    output_ok(&mut bayes_robust(&data, &ref_runs, &ref_out, &["run"]));
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(ref_out.join("results.json")).unwrap())
            .unwrap();
    let diff = differences(&comparable(slurm), &comparable(reference), "");
    assert!(
        diff.is_empty(),
        "results.json differs between Slurm and the in-process run at {diff:?}"
    );
}

/// A plan of four jobs: two trainings (the second cached) and an attack on each.
fn toy_plan() -> (Plan, Vec<bool>) {
    use bayes_robust::experiment::keys::Key;
    let job = |name: &str, kind, inputs: &[&Key]| Job {
        key: Key::new(name, serde_json::json!({ "name": name })),
        also: Vec::new(),
        memory_mib: None,
        kind,
        label: name.to_owned(),
        inputs: inputs.iter().map(|k| k.id.clone()).collect(),
        flops: 6e12,
    };
    let a = job("train a", JobKind::TrainModel, &[]);
    let b = job("attack a", JobKind::MinNormSet, &[&a.key]);
    let c = job("train c", JobKind::TrainModel, &[]);
    let d = job("attack c", JobKind::MinNormSet, &[&c.key]);
    let plan = Plan {
        profile: "toy".into(),
        jobs: vec![a, b, c, d],
        finish: Default::default(),
    };
    (plan, vec![false, false, true, false])
}

/// The submission script, run against a stand-in `sbatch` that records each call's
/// arguments (one per line, NUL-separated) and prints the next job id.
#[test]
fn the_submission_script_depends_only_on_jobs_it_submitted_and_quotes_its_commands() {
    use bayes_robust::experiment::slurm::{Sizing, SlurmCommands, job_name, slurm_script};
    let (plan, cached) = toy_plan();
    let d = tempfile::tempdir().unwrap();
    let cmd = SlurmCommands {
        exe: PathBuf::from("/shared/bin/bayes robust"),
        workdir: d.path().to_owned(),
        global: vec![
            "--seed".into(),
            "7".into(),
            "--data-dir".into(),
            "data/it's".into(),
        ],
        run_flags: vec!["--profile".into(), "toy".into()],
        sbatch_args: vec!["--partition=cpu".into()],
        attempts: 3,
        log_dir: d.path().join("logs"),
    };
    let sizing = Sizing {
        cpus: 4,
        sgemm_gflops: 100.0,
    };
    let script = slurm_script(&plan, &cached, &sizing, &cmd);
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let calls = d.path().join("calls");
    std::fs::write(
        bin.join("sbatch"),
        format!(
            "#!/usr/bin/env bash\nn=$(( $(ls {c} 2>/dev/null | wc -l) + 1 ))\nmkdir -p {c}\nprintf '%s\\0' \"$@\" > {c}/$n\necho \"$((1000 + n));cluster\"\n",
            c = calls.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("sbatch"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let call = |n: usize| -> Vec<String> {
        std::fs::read(calls.join(n.to_string()))
            .unwrap()
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let flag = |args: &[String], name: &str| -> String {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {args:?}"))
            .to_owned()
    };
    // Jobs a, b and d are submitted (c is cached), then the results run: ids 1001–1004.
    assert_eq!(std::fs::read_dir(&calls).unwrap().count(), 4);
    let (a, b, dd, results) = (call(1), call(2), call(3), call(4));
    assert_eq!(
        flag(&a, "--job-name"),
        job_name("toy", &plan.jobs[0].key.id)
    );
    assert_eq!(flag(&a, "--dependency"), "singleton");
    assert_eq!(flag(&b, "--dependency"), "afterok:1001,singleton");
    assert_eq!(
        flag(&dd, "--dependency"),
        "singleton",
        "a cached input is no dependency"
    );
    assert_eq!(
        flag(&results, "--dependency"),
        "afterok:1001:1002:1003,singleton"
    );
    for args in [&a, &b, &dd, &results] {
        for f in [
            "--parsable",
            "--requeue",
            "--open-mode=append",
            "--kill-on-invalid-dep=yes",
            "--partition=cpu",
        ] {
            assert!(args.contains(&f.to_string()), "{f} missing in {args:?}");
        }
    }
    assert_eq!(a[a.iter().position(|x| x == "-c").unwrap() + 1], "4");
    assert_eq!(flag(&a, "--mem"), "2048M");
    // 6e12 FLOP at 100 GFLOP/s is 60 s; 20 times that is 20 minutes.
    assert_eq!(flag(&a, "--time"), "20");
    // The wrapped command reaches the job's shell intact, $SLURM_CPUS_PER_TASK unexpanded.
    let wrap = flag(&b, "--wrap");
    assert_eq!(
        wrap,
        format!(
            "exec '/shared/bin/bayes robust' --seed 7 --data-dir 'data/it'\\''s' --threads \"$SLURM_CPUS_PER_TASK\" job run {} --profile toy --quiet --wait --attempts 3",
            plan.jobs[1].key.id
        )
    );
    assert!(flag(&results, "--wrap").contains(" run --profile toy --quiet"));
}

#[test]
fn the_plan_as_json_lists_each_jobs_inputs_outputs_resources_and_cache_state() {
    use bayes_robust::experiment::slurm::{Sizing, plan_json};
    let (plan, cached) = toy_plan();
    let v = plan_json(
        &plan,
        &cached,
        &Sizing {
            cpus: 2,
            sgemm_gflops: 50.0,
        },
    );
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    assert_eq!(v["profile"], "toy");
    assert_eq!(jobs[1]["kind"], "min_norm_set");
    assert_eq!(jobs[1]["inputs"][0], plan.jobs[0].key.id.as_str());
    assert_eq!(
        jobs[1]["outputs"][0],
        format!("attacks/{}.safetensors", plan.jobs[1].key.id).as_str()
    );
    assert_eq!(jobs[2]["cached"], true);
    assert_eq!(jobs[0]["cpus"], 2);
    assert_eq!(jobs[0]["time_minutes"], 40);
    assert_eq!(jobs[3]["command"][3], plan.jobs[3].key.id.as_str());
}
