//! The command line: exit codes and messages a user sees.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn bayes_robust(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bayes-robust"))
        .args(args)
        .env_remove("BAYES_ROBUST_DATA_DIR")
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn data_check_on_real_mnist_reports_checksums_and_exits_zero() {
    let dir = common::real_mnist_dir();
    let o = bayes_robust(&["data", "check", "--data-dir", dir.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(out.matches("SHA-256 ok").count(), 4, "{out}");
    assert!(out.contains("train        50000"), "{out}");
    assert!(
        out.contains("test         10000    980 1135 1032 1010  982  892  958 1028  974 1009"),
        "{out}"
    );
    assert!(out.contains("[0.0000, 2.0238]"));
}

#[test]
fn data_check_fails_on_a_corrupt_folder_and_names_the_file() {
    let d = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(common::fixture_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, d.path().join(f.file_name().unwrap())).unwrap();
    }
    let labels = d.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels, b"not gzip").unwrap();
    let o = bayes_robust(&[
        "data",
        "check",
        "--split",
        "fixture",
        "--no-checksum",
        "--data-dir",
        d.path().to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("t10k-labels-idx1-ubyte.gz"), "{err}");
    // The fixture is not real MNIST: with checksums required, the check fails.
    let o = bayes_robust(&[
        "data",
        "check",
        "--split",
        "fixture",
        "--data-dir",
        common::fixture_dir().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("SHA-256 mismatch"), "{}", text(&o).1);
}

#[test]
fn bad_flags_are_clear_errors() {
    let o = bayes_robust(&["train", "--model", "mlp", "--hidden", "100-x"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("\"100-x\""), "{}", text(&o).1);
    let o = bayes_robust(&[
        "train",
        "--model",
        "mlp",
        "--lambda",
        "-1",
        "--data-dir",
        "/nonexistent",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--lambda"), "{}", text(&o).1);
    let o = bayes_robust(&["--device", "tpu", "data", "check"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("tpu"));
    if !tch::Cuda::is_available() {
        let o = bayes_robust(&["--device", "cuda", "data", "check"]);
        assert!(!o.status.success());
        assert!(text(&o).1.contains("no CUDA device"), "{}", text(&o).1);
    }
    let o = bayes_robust(&["reproduce", "--profile", "huge"]);
    assert!(!o.status.success());
    assert!(
        text(&o)
            .1
            .contains("\"huge\" is not one of paper, seeds, short, quick"),
        "{}",
        text(&o).1
    );
    let o = bayes_robust(&["train", "--model", "mlp", "--data-dir", "/nonexistent"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("/nonexistent"), "{}", text(&o).1);
}

#[test]
fn train_writes_a_checkpoint_and_reports_accuracy() {
    let d = tempfile::tempdir().unwrap();
    let fixture = common::fixture_dir();
    let o = bayes_robust(&[
        "--threads",
        "1",
        "train",
        "--model",
        "bnn",
        "--rho-init",
        "-3",
        "--max-epochs",
        "2",
        "--eval-runs",
        "5",
        "--split",
        "fixture",
        "--no-checksum",
        "--quiet",
        "--data-dir",
        fixture.to_str().unwrap(),
        "--out",
        d.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("test accuracy, one weight draw per pass, 5 passes"),
        "{out}"
    );
    assert!(
        d.path()
            .join("bnn_FC-100-100-10_rho=-3.safetensors")
            .is_file()
    );
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("bnn_FC-100-100-10_rho=-3.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["epochs_run"], 2);
    assert_eq!(meta["model"]["kind"], "bnn");
    assert_eq!(meta["recipe"]["lr"], 1e-3);
}

#[test]
fn fashion_mnist_is_behind_the_dataset_flag() {
    let o = bayes_robust(&["--dataset", "fashion-mnist", "data", "check"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("fashion-mnist"), "{out}");
    assert_eq!(out.matches("SHA-256 ok").count(), 4, "{out}");
    assert!(
        out.contains("test         10000   1000 1000 1000 1000 1000 1000 1000 1000 1000 1000"),
        "{out}"
    );
    let o = bayes_robust(&["--dataset", "fashion", "data", "check"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("fashion-mnist"), "{}", text(&o).1);
    let o = bayes_robust(&[
        "--dataset",
        "fashion-mnist",
        "reproduce",
        "--protocol",
        "code",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("MNIST notebooks"), "{}", text(&o).1);
    // A model trained on it is named after it, and learns it: one epoch of FC-10.
    let d = tempfile::tempdir().unwrap();
    let o = bayes_robust(&[
        "--threads",
        "1",
        "--dataset",
        "fashion-mnist",
        "train",
        "--model",
        "mlp",
        "--hidden",
        "",
        "--max-epochs",
        "1",
        "--quiet",
        "--out",
        d.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let name = "fashion-mnist_mlp_FC-10_lambda=0";
    assert!(
        d.path().join(format!("{name}.safetensors")).is_file(),
        "{out}"
    );
    let accuracy: f64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("test accuracy: ")?
                .strip_suffix('%')?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no test accuracy in {out}"));
    // Chance is 10%; a linear model reaches about 80% within an epoch.
    assert!(accuracy > 60.0, "{out}");
}

#[test]
fn protocol_flags_are_checked() {
    let o = bayes_robust(&["reproduce", "--profile", "quick", "--multiplier-bnn", "1.5"]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("apply to --protocol code"),
        "{}",
        text(&o).1
    );
    let o = bayes_robust(&[
        "reproduce",
        "--profile",
        "quick",
        "--protocol",
        "code",
        "--multiplier-det",
        "-1",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--multiplier-det -1"), "{}", text(&o).1);
    let o = bayes_robust(&["reproduce", "--profile", "quick", "--train-seeds", "0"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("--train-seeds 0"), "{}", text(&o).1);
    let o = bayes_robust(&[
        "reproduce",
        "--profile",
        "quick",
        "--protocol",
        "code",
        "--train-seeds",
        "3",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o)
            .1
            .contains("--train-seeds belongs to the text protocol"),
        "{}",
        text(&o).1
    );
    let o = bayes_robust(&["reproduce", "--protocol", "notebook"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("notebook"), "{}", text(&o).1);
    let d = tempfile::tempdir().unwrap();
    let o = bayes_robust(&[
        "report",
        "--profile",
        "nothing",
        "--protocol",
        "code",
        "--paper-tables",
        d.path().join("absent.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("reports/nothing-code/results.json"),
        "{}",
        text(&o).1
    );
}

#[test]
fn train_with_the_code_protocol_uses_the_notebook_recipe() {
    let d = tempfile::tempdir().unwrap();
    let fixture = common::fixture_dir();
    let o = bayes_robust(&[
        "--threads",
        "1",
        "train",
        "--model",
        "bnn",
        "--protocol",
        "code",
        "--max-epochs",
        "1",
        "--eval-runs",
        "2",
        "--split",
        "fixture",
        "--no-checksum",
        "--quiet",
        "--data-dir",
        fixture.to_str().unwrap(),
        "--out",
        d.path().to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("bnn_FC-100-100-10_rho=-3_code.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["recipe"]["lr"], 1e-5);
    assert_eq!(meta["recipe"]["reduction"], "sum");
    assert_eq!(meta["recipe"]["patience"], serde_json::Value::Null);
}

/// A safetensors file written byte by byte (8-byte little-endian header length, the JSON
/// header, then the f32 data), without the VarStore.
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        data.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

/// The value printed on the line of `out` that starts with `tag`.
fn printed_value(out: &str, tag: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no line {tag:?} in {out}"));
    line[tag.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {tag:?}: {line}"))
}

#[test]
fn eval_reads_a_checkpoint_written_by_hand_in_the_documented_format() {
    let dir = common::real_mnist_dir();
    let d = tempfile::tempdir().unwrap();
    let eval = |checkpoint: &Path, extra: &[&str]| {
        let mut args = vec![
            "--data-dir",
            dir.to_str().unwrap(),
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        bayes_robust(&args)
    };
    // An FC-10 net whose weights are zero and whose bias picks class 3: it scores the
    // share of 3s among the 10,000 test images (1,010, from `data check`).
    let stem = d.path().join("hand-made-mlp");
    let mut bias = vec![0.0f32; 10];
    bias[3] = 1.0;
    write_safetensors(
        &stem.with_extension("safetensors"),
        &[
            ("l0.weight", vec![784, 10], vec![0.0; 7840]),
            ("l0.bias", vec![10], bias),
        ],
    );
    std::fs::write(
        stem.with_extension("json"),
        r#"{"format": 1, "model": {"kind": "mlp", "config": {"arch": {"hidden": []}, "init": "GlorotUniform"}, "lambda": 0.0}}"#,
    )
    .unwrap();
    let o = eval(&stem, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        (printed_value(&out, "test accuracy (%):") - 10.10).abs() < 1e-9,
        "{out}"
    );
    // The same as a BNN FC-10 with μ = 0, ρ = −30 (σ ≈ 1e-13): every draw is that net,
    // with its bias on class 7 (1,028 test images).
    let stem = d.path().join("hand-made-bnn");
    let mut mu_b = vec![0.0f32; 10];
    mu_b[7] = 1.0;
    write_safetensors(
        &stem.with_extension("safetensors"),
        &[
            ("l0.mu_w", vec![784, 10], vec![0.0; 7840]),
            ("l0.rho_w", vec![784, 10], vec![-30.0; 7840]),
            ("l0.mu_b", vec![10], mu_b),
            ("l0.rho_b", vec![10], vec![-30.0; 10]),
        ],
    );
    let bnn = serde_json::json!({"format": 1, "model": {"kind": "bnn", "config": {
        "arch": {"hidden": []}, "prior": {"pi": 0.5, "sigma1": 0.36787944117144233, "sigma2": 0.0009118819655545162},
        "rho_init": -30.0, "mu_init_std": 0.26}}});
    std::fs::write(stem.with_extension("json"), bnn.to_string()).unwrap();
    let o = eval(
        &stem.with_extension("safetensors"),
        &["--runs", "3", "--ensemble", "5", "--ensemble-runs", "2"],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        (printed_value(&out, "test one draw (%):") - 10.28).abs() < 1e-6,
        "{out}"
    );
    assert!(
        (printed_value(&out, "test ensemble of 5 (%):") - 10.28).abs() < 1e-6,
        "{out}"
    );
    // A set that is not one (a checkpoint), or is not there, is an error naming it.
    for (set, says) in [
        (stem.to_str().unwrap().to_owned(), "no tensor `delta`"),
        (format!("{}/no-such-set", dir.display()), "no-such-set"),
    ] {
        let o = eval(&stem, &["--set", &set]);
        let (_, err) = text(&o);
        assert!(!o.status.success(), "--set {set}");
        assert!(err.contains(says), "{err}");
    }
    // A truncated weights file is an error that names it.
    let weights = stem.with_extension("safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let o = eval(&stem, &[]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("hand-made-bnn.safetensors"), "{err}");
}

/// `train --plan quick` writes the quick plan's own artifact (its key), which the plan
/// then counts as cached; a spec the plan does not have is a clear error.
#[test]
fn train_for_a_plan_writes_the_plans_artifact_which_run_reuses() {
    let runs = tempfile::tempdir().unwrap();
    let mnist = common::real_mnist_dir();
    let data = mnist.to_str().unwrap();
    let runs_dir = runs.path().to_str().unwrap();
    let status = || {
        let o = bayes_robust(&[
            "--threads",
            "1",
            "--data-dir",
            data,
            "job",
            "status",
            "--profile",
            "quick",
            "--runs-dir",
            runs_dir,
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        out
    };
    let row = |out: &str| -> String {
        out.lines()
            .find(|l| l.contains("train source/FC-10/lambda=0 |"))
            .unwrap_or_else(|| panic!("no FC-10 source in {out}"))
            .to_owned()
    };
    assert!(row(&status()).contains("| no |"));
    let train = |hidden: &str| {
        bayes_robust(&[
            "--threads",
            "1",
            "--data-dir",
            data,
            "train",
            "--model",
            "mlp",
            "--hidden",
            hidden,
            "--plan",
            "quick",
            "--runs-dir",
            runs_dir,
            "--quiet",
        ])
    };
    let o = train("");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("Computed"), "{out}");
    let after = status();
    assert!(row(&after).contains("| yes |"), "{after}");
    assert_eq!(
        after.lines().filter(|l| l.contains("| yes |")).count(),
        1,
        "only that model"
    );
    let o = train("37");
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("no model of the quick plan is mlp FC-37-10"),
        "{err}"
    );
}
