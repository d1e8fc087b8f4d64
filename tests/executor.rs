//! The in-process executor (`experiment::executor`): a plan drained in this process in
//! dependency order, a job another live process has claimed left to it and taken up
//! once released, a stale claim taken over, a stacked grid's job (several outputs)
//! cached only when all its members are, and remade whole when half made.

use std::cell::RefCell;
use std::path::Path;

use bayes_robust::experiment::cache::{ArtifactDir, ArtifactState};
use bayes_robust::experiment::executor::{self, JobRun, JobRunOptions};
use bayes_robust::experiment::keys::Key;
use bayes_robust::experiment::plan::{Job, JobKind, Plan};
use bayes_robust::experiment::reproduce::ReproduceError;
use serde_json::json;

fn key(name: &str) -> Key {
    Key::new(name, json!({ "name": name }))
}

fn job(name: &str, also: &[&str], inputs: &[&Job]) -> Job {
    Job {
        key: key(name),
        also: also.iter().map(|n| key(n)).collect(),
        memory_mib: None,
        kind: JobKind::Evaluation,
        label: name.to_owned(),
        inputs: inputs
            .iter()
            .flat_map(|j| j.outputs().map(str::to_owned).collect::<Vec<_>>())
            .collect(),
        flops: 1.0,
    }
}

fn evals(runs: &Path) -> ArtifactDir {
    ArtifactDir::new(runs.join("evals"))
}

/// Writes every output of `job` (the work of a test job), after checking that its
/// inputs are cached.
fn make(plan: &Plan, job: &Job, runs: &Path) -> Result<(), ReproduceError> {
    assert!(plan.missing_inputs(job, runs).is_empty(), "{}", job.label);
    for id in job.outputs() {
        evals(runs).write_json(id, &json!({ "made": id }))?;
    }
    Ok(())
}

/// The pid of a process that has exited (its claim is stale).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_plan_is_drained_here_in_dependency_order_and_a_second_drain_computes_nothing() {
    let runs = tempfile::tempdir().unwrap();
    let a = job("a", &["a2"], &[]);
    let b = job("b", &[], &[&a]);
    let c = job("c", &[], &[&a, &b]);
    // Listed out of order: c reads b, which comes after it; the drain still makes b
    // first.
    let plan = Plan {
        profile: "test".into(),
        jobs: vec![a, c, b],
        finish: Default::default(),
    };
    let order = RefCell::new(Vec::new());
    let report = executor::drain_here(&plan, runs.path(), false, |i| {
        order.borrow_mut().push(plan.jobs[i].label.clone());
        make(&plan, &plan.jobs[i], runs.path())
    })
    .unwrap();
    assert_eq!(report.computed, 3);
    assert_eq!(order.into_inner(), ["a", "b", "c"]);
    assert!(plan.jobs.iter().all(|j| j.is_cached(runs.path())));
    let again = executor::drain_here(&plan, runs.path(), false, |_| {
        panic!("a cached plan computes nothing")
    })
    .unwrap();
    assert_eq!((again.computed, again.already_cached), (0, 3));
    // Every run is in jobs.log.
    let log = std::fs::read_to_string(runs.path().join(executor::JOBS_LOG)).unwrap();
    assert_eq!(log.lines().count(), 3);
}

#[test]
fn a_claimed_job_is_left_to_its_live_owner_and_a_stale_claim_is_taken_over() {
    let runs = tempfile::tempdir().unwrap();
    let (a, b, c) = (job("a", &[], &[]), job("b", &[], &[]), job("c", &[], &[]));
    let d = job("d", &[], &[&b]);
    let plan = Plan {
        profile: "test".into(),
        jobs: vec![a, b, c, d],
        finish: Default::default(),
    };
    let dir = evals(runs.path());
    // b is held by a live process (this one, through a claim of its own), c by a dead one.
    let held = dir.try_claim(&plan.jobs[1].key.id).unwrap().unwrap();
    std::fs::write(
        dir.root.join(format!(".{}.claim", plan.jobs[2].key.id)),
        dead_pid().to_string(),
    )
    .unwrap();
    // One pass: b is left to its owner (and d, which reads it, waits).
    let opts = JobRunOptions::default();
    let outcome = executor::run_one(&plan, 1, runs.path(), &opts, unreachable_work).unwrap();
    assert_eq!(outcome, JobRun::Claimed);
    let outcome = executor::run_one(&plan, 2, runs.path(), &opts, || {
        make(&plan, &plan.jobs[2], runs.path())
    })
    .unwrap();
    assert_eq!(outcome, JobRun::Computed, "a stale claim is taken over");
    // The owner finishes b and releases its claim while the drain waits.
    let owner = std::thread::spawn({
        let runs = runs.path().to_owned();
        let b = plan.jobs[1].clone();
        move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            evals(&runs)
                .write_json(&b.key.id, &json!({ "made": "by its owner" }))
                .unwrap();
            drop(held);
        }
    });
    let made_here = RefCell::new(Vec::new());
    let report = executor::drain_here(&plan, runs.path(), false, |i| {
        made_here.borrow_mut().push(plan.jobs[i].label.clone());
        make(&plan, &plan.jobs[i], runs.path())
    })
    .unwrap();
    owner.join().unwrap();
    assert_eq!(made_here.into_inner(), ["a", "d"]);
    assert_eq!(
        (
            report.computed,
            report.already_cached,
            report.left_to_others
        ),
        (2, 1, 1)
    );
    let b: serde_json::Value = dir.read_json(&plan.jobs[1].key.id).unwrap().unwrap();
    assert_eq!(b["made"], "by its owner");
    assert!(
        std::fs::read_dir(&dir.root).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".claim")),
        "every claim is released"
    );
}

fn unreachable_work() -> Result<(), ReproduceError> {
    panic!("a job claimed elsewhere is not run here")
}

#[test]
fn a_job_with_several_outputs_is_cached_only_whole_and_remade_whole() {
    let runs = tempfile::tempdir().unwrap();
    let grid = job("grid", &["member1", "member2"], &[]);
    let reader = job("reader", &[], &[&grid]);
    assert_eq!(reader.inputs.len(), 3);
    let plan = Plan {
        profile: "test".into(),
        jobs: vec![grid, reader],
        finish: Default::default(),
    };
    plan.check_order().unwrap();
    assert_eq!(plan.job(&plan.jobs[0].also[1].id).unwrap().label, "grid");
    let dir = evals(runs.path());
    // A grid left half made: one member there.
    dir.write_json(
        &plan.jobs[0].also[0].id,
        &json!({ "made": "before the kill" }),
    )
    .unwrap();
    assert_eq!(plan.jobs[0].state(runs.path()), ArtifactState::Absent);
    let seen_before_work = RefCell::new(Vec::new());
    executor::drain_here(&plan, runs.path(), false, |i| {
        let job = &plan.jobs[i];
        seen_before_work.borrow_mut().push(
            job.outputs()
                .filter(|id| dir.state(id) != ArtifactState::Absent)
                .count(),
        );
        make(&plan, job, runs.path())
    })
    .unwrap();
    assert_eq!(
        seen_before_work.into_inner(),
        [0, 0],
        "the half-made grid is discarded before it is made again"
    );
    let member: serde_json::Value = dir.read_json(&plan.jobs[0].also[0].id).unwrap().unwrap();
    assert_eq!(member["made"], plan.jobs[0].also[0].id);
    // A corrupt member makes the whole job corrupt.
    let id = &plan.jobs[0].also[1].id;
    let path = dir.root.join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&format!("\"{id}\"")));
    std::fs::write(&path, text.replace(&format!("\"{id}\""), "\"tampered\"")).unwrap();
    assert!(matches!(
        plan.jobs[0].state(runs.path()),
        ArtifactState::Corrupt(_)
    ));
}

#[test]
fn a_job_reading_an_artifact_no_job_makes_is_an_error_not_a_hang() {
    let runs = tempfile::tempdir().unwrap();
    let mut orphan = job("orphan", &[], &[]);
    orphan.inputs = vec!["made-by-nobody".into()];
    let plan = Plan {
        profile: "test".into(),
        jobs: vec![job("a", &[], &[]), orphan],
        finish: Default::default(),
    };
    let err = executor::drain_here(&plan, runs.path(), false, |i| {
        make(&plan, &plan.jobs[i], runs.path())
    })
    .unwrap_err();
    assert!(err.to_string().contains("made-by-nobody"), "{err}");
    assert!(plan.jobs[0].is_cached(runs.path()), "what could run ran");
}
