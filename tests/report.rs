//! The report, rendered from a small hand-made results file: every table and figure
//! present, numbers formatted as specified, SVGs that parse with their axis labels, and
//! a clear error for a missing cell.

use std::path::PathBuf;

use bayes_robust::report::{self, ReportError};
use serde_json::{Value, json};

fn paper_tables() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reports/paper_tables.json");
    report::read_json(&path).unwrap()
}

const PARAMETERS: [&str; 4] = ["rho_init", "lambda", "n_samples", "rate_percent"];

/// The paper's tables with every number v replaced by the cell {v − 1, [v − 1.5, v − 0.5], 10}:
/// ours is one point below the paper everywhere, with a half-width of 0.5.
fn as_results(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    (
                        k.clone(),
                        if PARAMETERS.contains(&k.as_str()) {
                            x.clone()
                        } else {
                            as_results(x)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(as_results).collect()),
        Value::Number(n) => {
            let m = n.as_f64().unwrap() - 1.0;
            json!({"mean": m, "ci95": [m - 0.5, m + 0.5], "runs": 10})
        }
        other => other.clone(),
    }
}

fn hand_made_results() -> Value {
    let p = paper_tables();
    let mut r = as_results(&p);
    let o = r.as_object_mut().unwrap();
    o.remove("claims");
    o.insert("perturbation_sets".into(), Value::Array((0..12).map(|i| json!({"source": p["attack_sources"][i], "n": 10000, "mean_distortion": 0.05 + 0.001 * i as f64, "success_rate": 0.99})).collect()));
    o.insert("meta".into(), json!({"profile": {"name": "hand"}, "command": "bayes-robust reproduce --profile hand", "master_seed": 7, "threads": 2, "device": "Cpu",
        "versions": {"bayes_robust": "0.1.0", "tch": "0.26", "libtorch": "2.13.0"}, "n_validation": 10000, "n_test": 10000, "wall_seconds": 12.0,
        "data_checksums": [], "stages": [{"stage": "train", "artifact_seconds": 10.0, "seconds": 10.0, "computed": 23, "reused": 0}]}));
    // What results.json has and the paper's tables lack.
    r["table3_ensemble"]["runs"] = json!([100, 20, 10, 4, 2]);
    r["table4_pruning"]["mode"] = json!("global");
    r["table4_pruning"]["snr_histogram"] = json!({"log10_edges": [-1.0, 0.0, 1.0, 2.0], "counts": [10, 30, 5], "log10_thresholds": [-0.5, 0.0, 0.3, 0.8, 1.2, 1.5]});
    r
}

#[test]
fn the_report_has_every_table_figure_and_formatted_cell() {
    let dir = tempfile::tempdir().unwrap();
    let files = report::render(&hand_made_results(), &paper_tables(), dir.path()).expect("renders");
    let md = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    for heading in [
        "Table 1 — clean accuracy, BNNs",
        "Table 1 — clean accuracy, deterministic",
        "Table 2 — perturbed test accuracy, BNNs",
        "Table 2 — perturbed test accuracy, deterministic",
        "Table 3 — ensembles",
        "Table 4 — SNR pruning",
        "The answer",
        "The claims on the tables' cells (descriptive)",
        "Run metadata",
    ] {
        assert!(md.contains(heading), "no {heading:?}");
    }
    // Table 1, BNN ρ_init = −30, validation: paper 97.51, ours 96.51 ± 0.50.
    assert!(
        md.contains("| validation | 96.51 ± 0.50 / 97.51 (-1.00) |"),
        "{md}"
    );
    assert!(md.contains("| **average** | 80.01 ± 0.50 / 81.01 (-1.00) |"));
    // The computed summary line: every cell is one point low, and the paper lies outside our CI.
    assert!(!md.contains("*our numbers are higher"));
    assert!(md.contains("mean difference -1.00 points (mean |difference| 1.00) over 14 cells; ours is higher in 0 of 14; the paper's value lies inside our 95% CI over weight draws (none for a deterministic net) in 0 of 14"), "{md}");
    // Claims are differences of our cells: best BNN average 82.22 − best det 66.78 = 15.44.
    assert!(
        md.contains("| +15.4 | +15.44 [+14.73, +16.15] | above 0 |"),
        "{md}"
    );
    assert!(md.contains("max 0.0610 | yes"));
    let svgs: Vec<_> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
        .collect();
    assert_eq!(svgs.len(), 6);
    for (file, x_label, y_label) in [
        (
            "accuracy_vs_rho.svg",
            "rho_init (categorical)",
            "accuracy (%)",
        ),
        (
            "per_source.svg",
            "perturbation source (the net that made the set)",
            "accuracy (%)",
        ),
        (
            "ensemble.svg",
            "N, draws averaged (log scale)",
            "perturbed accuracy, average of 12 sets (%)",
        ),
        ("pruning.svg", "pruning rate (%)", "accuracy (%)"),
        ("snr_histogram.svg", "log10 SNR", "weights per bin"),
        ("ours_vs_paper.svg", "paper (%)", "ours (%)"),
    ] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let doc =
            roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{file} is not XML: {e}"));
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_owned())
            .collect();
        assert!(
            texts.iter().any(|t| t == x_label),
            "{file} lacks x label {x_label:?}: {texts:?}"
        );
        assert!(
            texts.iter().any(|t| t == y_label),
            "{file} lacks y label {y_label:?}"
        );
        assert!(
            md.contains(&format!("]({file})")),
            "README does not show {file}"
        );
    }
}

#[test]
fn a_second_datasets_report_has_no_paper_values() {
    let mut r = hand_made_results();
    r["meta"]["dataset"] = json!("fashion-mnist");
    let dir = tempfile::tempdir().unwrap();
    let files = report::render(&r, &paper_tables(), dir.path()).expect("renders");
    let md = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        md.starts_with("# Zhang & Chen (2020)'s protocol on Fashion-MNIST"),
        "{md}"
    );
    // Ours alone in each cell; the same cell as the MNIST test above, without the paper.
    assert!(md.contains("| validation | 96.51 ± 0.50 |"), "{md}");
    assert!(!md.contains("97.51"), "a paper value leaked: {md}");
    assert!(!md.contains("the paper's value lies inside"), "{md}");
    // Claims keep their direction check, with no paper size beside them.
    assert!(
        md.contains("| – (MNIST only) | +15.44 [+14.73, +16.15] | above 0 |"),
        "{md}"
    );
    let folder = dir.path().file_name().unwrap().to_string_lossy();
    assert!(
        md.contains(&format!("`bayes-robust report --dir reports/{folder}`")),
        "{md}"
    );
    assert!(
        !md.contains("hollow squares"),
        "no paper values to overlay: {md}"
    );
    // No paper series in any figure, and no ours-vs-paper figure.
    assert!(files.iter().all(|f| !f.ends_with("ours_vs_paper.svg")));
    assert_eq!(files.len(), 6, "five figures and README.md: {files:?}");
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "svg"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(!text.contains("paper"), "{} names the paper", f.display());
    }
}

#[test]
fn a_missing_cell_is_an_error_naming_it() {
    let mut r = hand_made_results();
    r["table2_perturbed"]["bnn"]["rows"][3]
        .as_array_mut()
        .unwrap()
        .remove(2);
    let dir = tempfile::tempdir().unwrap();
    let err = report::render(&r, &paper_tables(), dir.path()).unwrap_err();
    assert!(
        matches!(err, ReportError::MissingCell(ref p) if p == "/table2_perturbed/bnn/rows/3/6"),
        "{err}"
    );
    let mut r = hand_made_results();
    r["table1_clean"]["deterministic"]["test"][1] = json!(97.6);
    let err = report::render(&r, &paper_tables(), dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("/table1_clean/deterministic/test/1"),
        "{err}"
    );
}

/// The committed short-profile strength run renders its section from the typed results:
/// the claims at every reading (verdicts from the CIs), the figure with the paper's
/// margin and, given a code-protocol run, that protocol's curve beside ours.
#[test]
fn the_strength_section_renders_its_claims_and_figure_from_typed_results() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let results = report::read_json(&root.join("reports/short/results.json")).unwrap();
    let code = report::read_json(&root.join("reports/paper-code/results.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = report::render_with(&results, &paper_tables(), Some(&code), out.path()).unwrap();
    assert!(
        files.iter().any(|f| f.ends_with("strength_margin.svg")),
        "{files:?}"
    );
    let md = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    let section: bayes_robust::experiment::strength::StrengthSection =
        serde_json::from_value(results["strength"].clone()).unwrap();
    for cp in &section.claim_points {
        assert!(
            md.contains(&format!(
                "| {} | {:.4} | ",
                cp.name, cp.point.mean_distortion
            )),
            "{}",
            cp.name
        );
        for c in &cp.claims {
            let word = match bayes_robust::experiment::strength::Verdict::of(&c.ours) {
                bayes_robust::experiment::strength::Verdict::Holds => "(draws-only CI above 0)",
                bayes_robust::experiment::strength::Verdict::Reversed => "(draws-only CI below 0)",
                bayes_robust::experiment::strength::Verdict::Unresolved => {
                    "(draws-only CI spans 0)"
                }
            };
            let row = format!(
                "| {} | {:+.1} | {:+.2} [{:+.2}, {:+.2}] | {word} |",
                c.claim,
                c.paper.unwrap(),
                c.ours.mean,
                c.ours.ci95[0],
                c.ours.ci95[1]
            );
            assert!(md.contains(&row), "missing {row}");
        }
    }
    // The committed run has 5 training seeds: the part across seeds gives each
    // comparison's CIs and verdict, and the figure marks the across-seed margin.
    let seeds = section
        .seeds
        .as_ref()
        .expect("reports/short has a seeds part");
    assert_eq!(seeds.train_seeds, 5);
    for p in &seeds.points {
        for c in &p.comparisons {
            let across = c.across_seeds.unwrap();
            let cell = format!(
                "| {} | {} | {:+.2} [{:+.2}, {:+.2}] |",
                p.name, c.name, across.mean, across.ci95[0], across.ci95[1]
            );
            assert!(md.contains(&cell), "missing {cell}");
        }
    }
    let svg = std::fs::read_to_string(out.path().join("strength_margin.svg")).unwrap();
    assert!(
        svg.contains("across 5 training seeds"),
        "no across-seeds series"
    );
    for label in [
        "authors&apos; code (both × m)",
        "paper&apos;s margin (+15.4)",
        "best BNN − best det. (m)",
        "12-set average mean distortion",
    ] {
        let plain = label.replace("&apos;", "'");
        assert!(
            svg.contains(label) || svg.contains(&plain),
            "no {label:?} in the figure"
        );
    }
}

/// The typed sections of results.json read every committed report that has them and
/// write back exactly the JSON they read (Tables 1–4, the sets and the trained models of
/// either protocol, calibration, the learned σ, the seeds section, the strength section
/// with its seeds part), so that experiment and report share one type and the committed
/// files stay readable.
#[test]
fn typed_sections_round_trip_through_every_committed_results_file() {
    use bayes_robust::experiment::seeds::SeedsSection;
    use bayes_robust::experiment::strength::StrengthSection;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reports");
    use bayes_robust::results::{
        Calibration, CodeModelRow, CodeSweep, Meta, ModelRow, SetRow, Sigmas, Table1, Table2,
        Table3, Table4, Tables, TargetedSetRow,
    };
    fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value, what: &str) {
        let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&serde_json::to_value(&typed).unwrap(), v, "{what}");
    }
    let (mut seeds, mut strength, mut tables) = (0, 0, 0);
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path().join("results.json");
        if !path.exists() {
            continue;
        }
        let r = report::read_json(&path).unwrap();
        let t1: Table1 = serde_json::from_value(r["table1_clean"].clone())
            .unwrap_or_else(|e| panic!("{}: table 1: {e}", path.display()));
        let t2: Table2 = serde_json::from_value(r["table2_perturbed"].clone())
            .unwrap_or_else(|e| panic!("{}: table 2: {e}", path.display()));
        let t3: Table3 = serde_json::from_value(r["table3_ensemble"].clone())
            .unwrap_or_else(|e| panic!("{}: table 3: {e}", path.display()));
        let t4: Table4 = serde_json::from_value(r["table4_pruning"].clone())
            .unwrap_or_else(|e| panic!("{}: table 4: {e}", path.display()));
        assert_eq!(serde_json::to_value(&t1).unwrap(), r["table1_clean"]);
        assert_eq!(serde_json::to_value(&t2).unwrap(), r["table2_perturbed"]);
        assert_eq!(serde_json::to_value(&t3).unwrap(), r["table3_ensemble"]);
        assert_eq!(serde_json::to_value(&t4).unwrap(), r["table4_pruning"]);
        let what = |field: &str| format!("{}: {field}", path.display());
        round_trip::<Sigmas>(&r["sigma"], &what("sigma"));
        round_trip::<Meta>(&r["meta"], &what("meta"));
        let typed: Tables = serde_json::from_value(r.clone()).unwrap();
        for (field, v) in serde_json::to_value(&typed).unwrap().as_object().unwrap() {
            assert_eq!(v, &r[field], "{}", what(field));
        }
        if r["protocol"] == "code" {
            round_trip::<Vec<TargetedSetRow>>(&r["perturbation_sets"], &what("sets"));
            round_trip::<Vec<CodeModelRow>>(&r["models"], &what("models"));
            round_trip::<CodeSweep>(&r["sweep"], &what("sweep"));
        } else {
            round_trip::<Vec<SetRow>>(&r["perturbation_sets"], &what("sets"));
            round_trip::<Vec<ModelRow>>(&r["models"], &what("models"));
            round_trip::<Calibration>(&r["calibration"], &what("calibration"));
        }
        assert_eq!(r["perturbation_sets"].as_array().map(Vec::len), Some(12));
        assert_eq!(t3.rows.len(), 12, "{}", path.display());
        assert_eq!(t4.rows.len(), 12, "{}", path.display());
        assert!(t4.rows.iter().all(|row| row.len() == t4.rate_percent.len()));
        assert_eq!(t2.bnn.rows.len(), 12, "{}", path.display());
        assert!(
            t2.bnn
                .rows
                .iter()
                .all(|row| row.len() == t2.bnn.rho_init.len())
        );
        tables += 1;
        if r["seeds"].is_object() {
            let typed: SeedsSection = serde_json::from_value(r["seeds"].clone())
                .unwrap_or_else(|e| panic!("{}: seeds: {e}", path.display()));
            assert_eq!(
                serde_json::to_value(&typed).unwrap(),
                r["seeds"],
                "{}",
                path.display()
            );
            seeds += 1;
        }
        if r["strength"].is_object() {
            let typed: StrengthSection = serde_json::from_value(r["strength"].clone())
                .unwrap_or_else(|e| panic!("{}: strength: {e}", path.display()));
            let mut back = serde_json::to_value(&typed).unwrap();
            // Files written before a field existed get its default on the way in.
            if r["strength"]["profile"].get("seed_multipliers").is_none() {
                back["profile"]
                    .as_object_mut()
                    .unwrap()
                    .remove("seed_multipliers");
            }
            assert_eq!(back, r["strength"], "{}", path.display());
            strength += 1;
        }
    }
    assert!(
        seeds >= 2,
        "reports/seeds and reports/paper have a seeds section"
    );
    assert!(
        strength >= 2,
        "reports/short and reports/short-seed1 have a strength section"
    );
    // reports/quick is made by the tests and ignored by git, so a clean checkout has six.
    assert!(
        tables >= 6,
        "the six committed reports (paper, paper-code, seeds, short, short-seed1, \
         fashion-mnist-short) have Tables 1 and 2; found {tables}"
    );
}
