//! The cache with concurrent writers on several hosts (issue 22): private temporary
//! names, first writer wins, integrity records verified on read, claims judged by
//! their heartbeat across hosts.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use bayes_robust::experiment::cache::{
    ArtifactDir, ArtifactState, ClaimPolicy, ClaimRecord, INTEGRITY,
};
use bayes_robust::fsio::{self, Provenance};
use serde_json::{Value, json};
use tch::Tensor;

fn host(name: &str, pid: u32) -> Provenance {
    Provenance {
        host: name.to_owned(),
        pid,
        slurm_job_id: None,
    }
}

/// Every file in `dir` whose name starts with a dot (temporaries, claims).
fn hidden_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = at.min(bytes.len() - 1);
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn two_writers_on_different_hosts_with_the_same_pid_never_share_a_temporary_name() {
    let target = Path::new("/runs/models/m-0123.json");
    let (a, b) = (host("node-a", 4242), host("node-b", 4242));
    let names: Vec<_> = (0..50)
        .flat_map(|_| [fsio::private_tmp(target, &a), fsio::private_tmp(target, &b)])
        .collect();
    let distinct: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), names.len());
    for n in &names {
        let name = n.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(".m-0123.json.tmp."), "{name}");
        assert!(name.contains(".4242.") && name.ends_with(".json"), "{name}");
    }
    assert!(names[0].to_string_lossy().contains("node-a"));
    assert!(names[1].to_string_lossy().contains("node-b"));
}

#[test]
fn racing_writers_of_one_key_leave_one_complete_artifact_the_first_one() {
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let writers = 8;
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let t = Tensor::full([64, 64], w as f64, (tch::Kind::Float, tch::Device::Cpu));
                dir.write_with_tensors("k", &[("x", &t)], &json!({"writer": w}))
                    .unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(dir.state("k"), ArtifactState::Complete);
    let record: Value = dir.read_json("k").unwrap().unwrap();
    let w = record["writer"].as_f64().unwrap();
    let tensors = dir.read_tensors("k").unwrap();
    let x = &tensors[0].1;
    assert_eq!(
        x.min().double_value(&[]),
        w,
        "the tensors are the record's writer's"
    );
    assert_eq!(x.max().double_value(&[]), w);
    assert!(
        hidden_files(d.path()).is_empty(),
        "no temporary left: {:?}",
        hidden_files(d.path())
    );
    // A later writer finds the key taken and leaves it as it is.
    let t = Tensor::full([64, 64], 99.0, (tch::Kind::Float, tch::Device::Cpu));
    dir.write_with_tensors("k", &[("x", &t)], &json!({"writer": 99}))
        .unwrap();
    let again: Value = dir.read_json("k").unwrap().unwrap();
    assert_eq!(again["writer"].as_f64(), Some(w));
}

#[test]
fn a_flipped_byte_in_a_cached_payload_or_record_is_detected_and_named() {
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let t = Tensor::arange(1000, (tch::Kind::Float, tch::Device::Cpu));
    dir.write_with_tensors("set", &[("delta", &t)], &json!({"n": 1000, "mean": 0.25}))
        .unwrap();
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("set.json")).unwrap()).unwrap();
    let integrity = &record[INTEGRITY];
    assert_eq!(
        integrity["payload_sha256"].as_str().unwrap(),
        fsio::sha256_file(&d.path().join("set.safetensors")).unwrap()
    );
    assert_eq!(
        integrity["made_by"]["pid"].as_u64(),
        Some(std::process::id() as u64)
    );

    let payload = d.path().join("set.safetensors");
    flip_byte(&payload, 2000);
    let err = dir.read_tensors("set").unwrap_err().to_string();
    assert!(
        err.contains("set.safetensors") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(matches!(dir.state("set"), ArtifactState::Corrupt(_)));
    // Truncated: the same.
    let bytes = std::fs::read(&payload).unwrap();
    std::fs::write(&payload, &bytes[..bytes.len() / 2]).unwrap();
    assert!(dir.read_tensors("set").is_err());

    // A changed digit in the record itself (still valid JSON) is caught by its hash.
    dir.write_json("ev", &json!({"accuracy": 0.9731, "n": 10000}))
        .unwrap();
    let path = d.path().join("ev.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("0.9731", "0.9831")).unwrap();
    let err = dir.read_json::<Value>("ev").unwrap_err().to_string();
    assert!(err.contains("ev.json") && err.contains("SHA-256"), "{err}");
    dir.discard("ev").unwrap();
    assert_eq!(dir.state("ev"), ArtifactState::Absent);
}

#[test]
fn a_flipped_byte_in_a_checkpoint_is_an_error_naming_its_weights() {
    use bayes_robust::model::checkpoint::{self, CheckpointPaths};
    use bayes_robust::model::mlp::MlpConfig;
    use bayes_robust::model::{Arch, checkpoint::ModelSpec};
    let d = tempfile::tempdir().unwrap();
    let spec = ModelSpec::Mlp {
        config: MlpConfig {
            arch: Arch::new(&[10]),
            ..Default::default()
        },
        lambda: 0.0,
    };
    let seeds = bayes_robust::seed::SeedTree::new(1);
    let model = bayes_robust::train::TrainedModel::init(&spec, tch::Device::Cpu, &seeds);
    let meta = checkpoint::CheckpointMeta {
        format: checkpoint::CHECKPOINT_FORMAT,
        crate_version: String::new(),
        model: spec.clone(),
        master_seed: 1,
        seed_name: String::new(),
        epochs_run: 0,
        best_epoch: 0,
        best_validation_accuracy: 0.0,
        wall_seconds: 0.0,
        recipe: Value::Null,
        history: Value::Null,
        weights_sha256: None,
        made_by: None,
    };
    let stem = d.path().join("m");
    let paths = checkpoint::save(model.vs(), &meta, &stem).unwrap();
    let written = checkpoint::read_meta(&stem).unwrap();
    assert_eq!(
        written.weights_sha256.as_deref(),
        Some(fsio::sha256_file(&paths.weights).unwrap().as_str())
    );
    assert!(CheckpointPaths::new(&stem).exists());
    let (loaded, _) = bayes_robust::train::TrainedModel::load(&spec, tch::Device::Cpu, &stem)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        common::sorted_variables(&loaded).len(),
        common::sorted_variables(&model).len()
    );
    flip_byte(&paths.weights, 600);
    assert!(!CheckpointPaths::new(&stem).exists());
    let err = match bayes_robust::train::TrainedModel::load(&spec, tch::Device::Cpu, &stem) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a corrupt checkpoint loaded"),
    };
    assert!(
        err.contains("m.safetensors") && err.contains("SHA-256"),
        "{err}"
    );
    // A new save replaces the corrupt checkpoint.
    checkpoint::save(model.vs(), &meta, &stem).unwrap();
    assert!(CheckpointPaths::new(&stem).exists());
    assert!(hidden_files(d.path()).is_empty());
}

/// Writes a claim of `owner` for `key` whose heartbeat is `age` old.
fn forge_claim(dir: &Path, key: &str, owner: &Provenance, age: Duration) {
    let path = dir.join(format!(".{key}.claim"));
    let record = ClaimRecord {
        owner: owner.clone(),
        nonce: "forged".into(),
    };
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn a_claim_of_another_host_is_taken_over_only_after_its_heartbeat_expires() {
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let me = Provenance::here();
    let policy = ClaimPolicy {
        heartbeat: Duration::from_millis(100),
        expiry: Duration::from_secs(3),
    };
    // Another node's claim, with a process id that does not exist here: live while its
    // heartbeat is fresh (this host's /proc says nothing about another host).
    let other = host("another-node", 999_999);
    forge_claim(d.path(), "k", &other, Duration::from_secs(1));
    assert!(dir.try_claim_as("k", &me, &policy).unwrap().is_none());
    forge_claim(d.path(), "k", &other, Duration::from_secs(5));
    let claim = dir.try_claim_as("k", &me, &policy).unwrap();
    assert!(claim.is_some(), "an expired heartbeat is stale");
    let record: ClaimRecord =
        serde_json::from_str(&std::fs::read_to_string(d.path().join(".k.claim")).unwrap()).unwrap();
    assert_eq!(record.owner, me);
    drop(claim);
    assert!(!d.path().join(".k.claim").exists(), "released");

    // The same process id on this host, dead: stale at once.
    forge_claim(d.path(), "j", &host(&me.host, 999_999), Duration::ZERO);
    assert!(dir.try_claim_as("j", &me, &policy).unwrap().is_some());
}

#[test]
fn a_held_claim_keeps_its_heartbeat_so_other_hosts_never_take_it() {
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let policy = ClaimPolicy {
        heartbeat: Duration::from_millis(100),
        expiry: Duration::from_millis(800),
    };
    let a = host("node-a", 7);
    let b = host("node-b", 7);
    let held = dir.try_claim_as("k", &a, &policy).unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        dir.try_claim_as("k", &b, &policy).unwrap().is_none(),
        "the heartbeat kept node-a's claim live past its expiry"
    );
    let age = SystemTime::now()
        .duration_since(std::fs::metadata(held.path()).unwrap().modified().unwrap())
        .unwrap();
    assert!(age < policy.expiry, "heartbeat {age:?} old");
    drop(held);
    assert!(dir.try_claim_as("k", &b, &policy).unwrap().is_some());
}

#[test]
fn a_killed_writers_temporaries_are_swept_and_a_live_writers_are_not() {
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let me = Provenance::here();
    let dead = host(&me.host, 999_999);
    let target = d.path().join("k.safetensors");
    let (of_dead, of_me, of_other_key, of_dotted_key) = (
        fsio::private_tmp(&target, &dead),
        fsio::private_tmp(&target, &me),
        fsio::private_tmp(&d.path().join("kk.json"), &dead),
        fsio::private_tmp(&d.path().join("k.5-0a.json"), &dead),
    );
    for p in [&of_dead, &of_me, &of_other_key, &of_dotted_key] {
        std::fs::write(p, b"half").unwrap();
    }
    assert_eq!(dir.sweep_temporaries("k", &ClaimPolicy::default()), 1);
    assert!(!of_dead.exists() && of_me.exists());
    assert!(
        of_other_key.exists() && of_dotted_key.exists(),
        "other keys' are left"
    );
}
