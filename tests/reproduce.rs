//! The quick profile end to end on real MNIST: every cell of Tables 1–4, in the shape
//! of paper_tables.json, and a second run that recomputes nothing.

mod common;

use std::path::{Path, PathBuf};

use bayes_robust::data::Dataset;
use bayes_robust::experiment::Profile;
use bayes_robust::experiment::cache;
use bayes_robust::experiment::plan::{EXIT_MISSING_INPUT, Job, JobKind, Plan, drain};
use bayes_robust::experiment::reproduce::{ReproduceConfig, reproduce, run_plan, text_plan};
use common::printed;
use serde_json::Value;

/// `<stem>.json` and the `correct` array of `<stem>.npz` in `dir`.
fn counts_file(dir: &Path, stem: &str) -> (Value, tch::Tensor) {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap())
            .unwrap();
    let arrays = tch::Tensor::read_npz(dir.join(format!("{stem}.npz"))).unwrap();
    let correct = arrays
        .iter()
        .find(|(n, _)| n == "correct")
        .unwrap_or_else(|| panic!("no correct in {stem}.npz"))
        .1
        .to_kind(tch::Kind::Double);
    (index, correct)
}

/// A model's 12-set average in percent from its per-image counts of correct runs
/// summed over the sets (`runs` = sets × draws of them per image).
fn set_average(counts: &tch::Tensor, runs: f64) -> f64 {
    100.0 * counts.mean(tch::Kind::Double).double_value(&[]) / runs
}

/// The per-seed per-example counts reproduce every model's 12-set average at every
/// training seed of results.json's seeds section, and the verdicts read them.
fn assert_per_example_seeds(r: &Value, dir: &Path) {
    let (index, correct) = counts_file(dir, "per_example_seeds");
    let k = r["seeds"]["train_seeds"].as_u64().unwrap() as i64;
    let rows = r["seeds"]["models"].as_array().unwrap();
    assert_eq!(
        correct.size(),
        vec![k, rows.len() as i64, index["n"].as_i64().unwrap()]
    );
    let sets = index["sets"].as_f64().unwrap();
    for (m, row) in rows.iter().enumerate() {
        let draws = index["draws"][m].as_f64().unwrap();
        for s in 0..k {
            let want = row["per_seed"][s as usize]["sets_average"]["mean"]
                .as_f64()
                .unwrap();
            let got = set_average(&correct.get(s).get(m as i64), sets * draws);
            assert!(
                (got - want).abs() < 1e-4,
                "model {m} seed {s}: {got} vs {want}"
            );
        }
    }
    let seeds = bayes_robust::verdicts::per_example_file::read_seed_scores(dir)
        .unwrap()
        .expect("the verdicts read per_example_seeds");
    assert_eq!(seeds.seeds() as i64, k);
}

/// The strength study's per-example counts reproduce every model's set average at every
/// study point and seed of results.json's `strength.seeds`, and the verdicts read them.
fn assert_per_example_strength(r: &Value, dir: &Path) {
    let (index, correct) = counts_file(dir, "per_example_strength");
    let seeds = &r["strength"]["seeds"];
    let rows = seeds["models"].as_array().unwrap();
    let points = seeds["points"].as_array().unwrap();
    let k = seeds["train_seeds"].as_i64().unwrap();
    assert_eq!(
        correct.size(),
        vec![
            points.len() as i64,
            k,
            rows.len() as i64,
            index["n"].as_i64().unwrap()
        ]
    );
    let sets = index["sets"].as_f64().unwrap();
    for (p, point) in points.iter().enumerate() {
        assert_eq!(index["points"][p]["name"], point["name"]);
        for (m, row) in rows.iter().enumerate() {
            assert_eq!(index["models"][m], row["name"]);
            let draws = index["draws"][m].as_f64().unwrap();
            for s in 0..k {
                let want = row["average"][p][s as usize]["mean"].as_f64().unwrap();
                let got = set_average(&correct.get(p as i64).get(s).get(m as i64), sets * draws);
                assert!(
                    (got - want).abs() < 1e-3,
                    "point {p} model {m} seed {s}: {got} vs {want}"
                );
            }
        }
    }
    let study = bayes_robust::verdicts::per_example_file::read_study_scores(dir, 0.10)
        .unwrap()
        .expect("the verdicts read per_example_strength");
    assert_eq!(study.len(), points.len());
}

/// The per-example files reproduce every Table 1–2 cell they cover and each set's
/// distortion and success; the Python example (docs/per_example.py, the project venv's
/// numpy) gets results.json's numbers.
fn assert_per_example(r: &Value, root: &Path, dir: &Path) {
    assert_eq!(
        r["per_example_files"],
        serde_json::json!([
            "per_example.npz",
            "per_example.json",
            "per_example_seeds.npz",
            "per_example_seeds.json",
            "per_example_strength.npz",
            "per_example_strength.json"
        ])
    );
    assert_per_example_seeds(r, dir);
    assert_per_example_strength(r, dir);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("per_example.json")).unwrap())
            .unwrap();
    let arrays = tch::Tensor::read_npz(dir.join("per_example.npz")).unwrap();
    let get = |name: &str| {
        arrays
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in per_example.npz"))
            .1
            .to_kind(tch::Kind::Double)
    };
    let (correct, runs) = (get("correct"), get("runs"));
    let models = index["models"].as_array().unwrap();
    assert_eq!(models.len(), 11);
    assert_eq!(correct.size(), [11, 14, 500]);
    for (m, e) in models.iter().enumerate() {
        let (group, j) = (
            e["group"].as_str().unwrap(),
            e["index"].as_u64().unwrap() as usize,
        );
        let runs_m = runs.double_value(&[m as i64]);
        for s in 0..14 {
            let ours = 100.0
                * correct
                    .get(m as i64)
                    .get(s)
                    .mean(tch::Kind::Double)
                    .double_value(&[])
                / runs_m;
            let cell = match s {
                0 => &r["table1_clean"][group]["validation"][j],
                1 => &r["table1_clean"][group]["test"][j],
                k => &r["table2_perturbed"][group]["rows"][k as usize - 2][j],
            };
            let want = cell["mean"].as_f64().unwrap();
            assert!(
                (ours - want).abs() < 1e-4,
                "{} split {s}: {ours} vs {want}",
                e["name"]
            );
        }
    }
    let (rms, fooled) = (get("set_rms"), get("set_fooled"));
    for (k, set) in r["perturbation_sets"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let k = k as i64;
        let d = rms.get(k).mean(tch::Kind::Double).double_value(&[]);
        let f = fooled.get(k).mean(tch::Kind::Double).double_value(&[]);
        assert!(
            (d - set["mean_distortion"].as_f64().unwrap()).abs() < 1e-5,
            "{set}"
        );
        assert!(
            (f - set["success_rate"].as_f64().unwrap()).abs() < 1e-9,
            "{set}"
        );
    }

    assert_ensembles_per_example(r, &index, &get);
    assert_pruning_per_example(r, &index, &get("pruning_correct"));
    common::assert_python_example(r, root, "docs/per_example.py", dir);
}

/// Table 3 from the per-example files: every cell is the mean of its correct-run
/// counts, and the largest ensemble's stored first run agrees with its counts (an
/// example it classifies correctly has a count of at least 1; one it misses, at most
/// runs − 1).
fn assert_ensembles_per_example(r: &Value, index: &Value, get: &dyn Fn(&str) -> tch::Tensor) {
    let (correct, runs, probs) = (
        get("ensemble_correct"),
        get("ensemble_runs"),
        get("ensemble_probs"),
    );
    let ns: Vec<usize> = serde_json::from_value(index["ensemble"]["n_samples"].clone()).unwrap();
    assert_eq!(index["ensemble"]["model"], "bnn/rho=-3");
    assert_eq!(
        r["table3_ensemble"]["n_samples"],
        serde_json::json!(ns),
        "Table 3's N"
    );
    let rows = r["table3_ensemble"]["rows"].as_array().unwrap();
    assert_eq!(correct.size(), [ns.len() as i64, rows.len() as i64, 500]);
    for (k, row) in rows.iter().enumerate() {
        for j in 0..ns.len() {
            let runs_j = runs.double_value(&[j as i64]);
            let ours = 100.0
                * correct
                    .get(j as i64)
                    .get(k as i64)
                    .mean(tch::Kind::Double)
                    .double_value(&[])
                / runs_j;
            let want = row[j]["mean"].as_f64().unwrap();
            assert!(
                (ours - want).abs() < 1e-4,
                "set {k} N={}: {ours} vs {want}",
                ns[j]
            );
        }
    }
    let last = ns.len() as i64 - 1;
    let runs_last = runs.double_value(&[last]);
    let labels = get("labels").to_kind(tch::Kind::Int64);
    assert_eq!(probs.size()[2], 10);
    let sums = probs.sum_dim_intlist([2].as_slice(), false, tch::Kind::Double);
    assert!(
        (sums - 1.0).abs().max().double_value(&[]) < 1e-2,
        "probabilities sum to 1"
    );
    let first_run = probs
        .argmax(-1, false)
        .eq_tensor(&labels.unsqueeze(0))
        .to_kind(tch::Kind::Double);
    let counts = correct.get(last);
    let consistent = counts
        .ge_tensor(&first_run)
        .logical_and(&counts.le_tensor(&(&first_run + (runs_last - 1.0))));
    // f16 keeps about 3 decimals: where the top two classes were closer than that the
    // stored probabilities may tie, and argmax picks the lower class.
    let (top, _) = probs.topk(2, -1, true, true);
    let clear = (top.select(-1, 0) - top.select(-1, 1)).gt(2e-3);
    let wrong = clear.logical_and(&consistent.logical_not());
    assert_eq!(
        wrong.sum(tch::Kind::Int64).int64_value(&[]),
        0,
        "the first run's predictions against the counts"
    );
    assert!(
        clear
            .to_kind(tch::Kind::Double)
            .mean(tch::Kind::Double)
            .double_value(&[])
            > 0.9,
        "most predictions are clear of f16's resolution"
    );
}

/// Table 4 from the per-example files: every cell (clean validation and test, each set,
/// at each pruning rate) is the mean of its correct-run counts.
fn assert_pruning_per_example(r: &Value, index: &Value, correct: &tch::Tensor) {
    let t4 = &r["table4_pruning"];
    let runs = index["pruning"]["runs"].as_f64().unwrap();
    let rates = t4["rate_percent"].as_array().unwrap().len();
    assert_eq!(index["pruning"]["model"], "bnn/rho=-2");
    assert_eq!(index["pruning"]["mode"], t4["mode"]);
    assert_eq!(correct.size(), [rates as i64, 14, 500]);
    for rate in 0..rates {
        for s in 0..14 {
            let ours = 100.0
                * correct
                    .get(rate as i64)
                    .get(s)
                    .mean(tch::Kind::Double)
                    .double_value(&[])
                / runs;
            let cell = match s {
                0 => &t4["clean_validation"][rate],
                1 => &t4["clean_test"][rate],
                k => &t4["rows"][k as usize - 2][rate],
            };
            let want = cell["mean"].as_f64().unwrap();
            assert!(
                (ours - want).abs() < 1e-4,
                "rate {rate} split {s}: {ours} vs {want}"
            );
        }
    }
}

/// Keys whose values are parameters of the grid, not results.
const PARAMETERS: [&str; 4] = ["rho_init", "lambda", "n_samples", "rate_percent"];

/// Every number of the paper's tables has a `{mean, ci95, runs}` cell in ours, at the
/// same path, whose interval contains its mean.
fn assert_same_shape(paper: &Value, ours: &Value, path: &str) {
    match paper {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "note" || k == "source" {
                    continue;
                }
                let o = ours
                    .get(k)
                    .unwrap_or_else(|| panic!("results.json lacks {path}/{k}"));
                if PARAMETERS.contains(&k.as_str()) {
                    let numbers = |x: &Value| {
                        x.as_array()
                            .map(|a| a.iter().map(|n| n.as_f64()).collect::<Vec<_>>())
                    };
                    assert_eq!(
                        numbers(v),
                        numbers(o),
                        "{path}/{k} differs from the paper's grid"
                    );
                } else {
                    assert_same_shape(v, o, &format!("{path}/{k}"));
                }
            }
        }
        Value::Array(items) => {
            let o = ours
                .as_array()
                .unwrap_or_else(|| panic!("{path} is not a list in results.json"));
            assert_eq!(
                items.len(),
                o.len(),
                "{path} has {} entries, the paper {}",
                o.len(),
                items.len()
            );
            for (i, (p, q)) in items.iter().zip(o).enumerate() {
                assert_same_shape(p, q, &format!("{path}/{i}"));
            }
        }
        Value::Number(_) => {
            let mean = ours["mean"]
                .as_f64()
                .unwrap_or_else(|| panic!("{path} is not a {{mean, ci95, runs}} cell: {ours}"));
            let (lo, hi) = (
                ours["ci95"][0].as_f64().unwrap(),
                ours["ci95"][1].as_f64().unwrap(),
            );
            assert!(
                lo <= mean + 1e-9 && mean <= hi + 1e-9,
                "{path}: CI [{lo}, {hi}] does not contain {mean}"
            );
            assert!(ours["runs"].as_u64().unwrap() >= 1);
            assert!(
                (0.0..=100.0).contains(&mean),
                "{path}: {mean} is not a percentage"
            );
        }
        Value::String(_) => assert!(ours.is_string(), "{path}"),
        _ => {}
    }
}

/// The strength sweep's models in the quick profile: 4 λ nets, 7 BNNs × one draw,
/// posterior mean and frozen sample, the matched-init control, the deep ensemble. Each
/// is one plan job over the whole sweep.
const SWEEP_MODELS: usize = 4 + 7 * 3 + 2;

/// The claim points' evaluation jobs in the quick profile: at each of three claim
/// points (set-mean budget, paper-matched m and κ) the sweep's models and the two BNN
/// ensembles. The plan has them once the λ = 0 net's sweep row is cached, so the
/// strength stage computes none of its own.
const CLAIM_EVALS: usize = 3 * (SWEEP_MODELS + 2);

/// The strength axis across training seeds (issue 19, item 5): the paper-matched m and
/// the quick profile's m = 1 and 2, each with the three headline comparisons at both
/// seeds. At m = 1, seed 0, a deterministic net's set average is Table 2's; a paired
/// bootstrap's mean is the margin itself (the same images, averaged the other way).
fn assert_strength_across_seeds(r: &Value) {
    use bayes_robust::experiment::strength::{Family, SeedsAtStrength, StrengthSection};
    let s: StrengthSection = serde_json::from_value(r["strength"].clone()).expect("typed");
    let seeds: SeedsAtStrength = s.seeds.expect("a seeds part with --train-seeds 2");
    assert_eq!(seeds.train_seeds, 2);
    let names: Vec<&str> = seeds.points.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["paper-matched difficulty (multiplier m)", "m=1", "m=2"]
    );
    let matched = s.claim_points.iter().find(|c| c.name == names[0]).unwrap();
    assert_eq!(seeds.points[0].strengths, matched.point.strengths);
    // 4 λ nets, 7 BNNs, the matched-init control.
    assert_eq!(seeds.models.len(), 12);
    // The index of the point m = 1 (after the paper-matched one).
    let m1 = 1;
    for (i, m) in seeds
        .models
        .iter()
        .filter(|m| m.family == Family::Deterministic)
        .enumerate()
    {
        let table2 = r["table2_perturbed"]["deterministic"]["average"][i]["mean"]
            .as_f64()
            .unwrap();
        let ours = m.average[m1][0].mean;
        assert!(
            (table2 - ours).abs() < 1e-6,
            "{}: {table2} vs {ours}",
            m.label
        );
        assert_ne!(
            m.average[m1][0], m.average[m1][1],
            "{}: seed 1 is its own",
            m.label
        );
    }
    for p in &seeds.points {
        assert_eq!(p.comparisons.len(), 3, "{}", p.name);
        for c in &p.comparisons {
            assert_eq!(c.per_seed.len(), 2);
            let (across, both) = (c.across_seeds.unwrap(), c.seeds_and_images.unwrap());
            assert_eq!(across.runs, 2);
            // Both CIs estimate the same mean margin, from either side of the pairing.
            assert!(
                (both.mean - across.mean).abs() < 1e-3,
                "{both:?} vs {across:?}"
            );
            assert_eq!(
                c.verdict,
                Some(
                    bayes_robust::experiment::strength::SeedComparison::verdict_of(
                        &across,
                        Some(&both)
                    )
                )
            );
            for m in &c.per_seed {
                let boot = m.paired_bootstrap.unwrap();
                assert!(
                    (boot.mean - m.over_draws.mean).abs() < 1e-3,
                    "{} {}: {boot:?} vs {:?}",
                    p.name,
                    c.name,
                    m.over_draws
                );
                assert!(boot.ci95[0] <= boot.mean && boot.mean <= boot.ci95[1]);
            }
        }
    }
}

/// The strength axis against the tables it must agree with.
fn assert_strength_axis(r: &Value) {
    use bayes_robust::attack::BudgetReading;
    use bayes_robust::experiment::strength::{Family, Strength, StrengthSection};
    let s: StrengthSection = serde_json::from_value(r["strength"].clone()).expect("typed");
    let point = |st: Strength| {
        s.points
            .iter()
            .position(|p| p.strengths.iter().all(|x| *x == st))
            .unwrap_or_else(|| panic!("no point {}", st.label()))
    };
    let cap = |kappa, m| Strength {
        reading: BudgetReading::PerExampleCap,
        kappa,
        m,
    };
    let (zero, one) = (point(cap(0.0, 0.0)), point(Strength::TABLE2));
    let table2 = &r["table2_perturbed"];
    let dets: Vec<_> = s
        .models
        .iter()
        .filter(|m| m.family == Family::Deterministic)
        .collect();
    let bnns: Vec<_> = s
        .models
        .iter()
        .filter(|m| m.family == Family::BnnDraw)
        .collect();
    assert_eq!((dets.len(), bnns.len()), (4, 7));
    for (i, d) in dets.iter().enumerate() {
        let clean = r["table1_clean"]["deterministic"]["test"][i]["mean"]
            .as_f64()
            .unwrap();
        for set in 0..12 {
            // m = 0 is the clean test set; m = 1 is Table 2's set, bit for bit.
            assert_eq!(d.cells[zero][set].mean, clean, "{} m=0 set {set}", d.label);
            let t2 = table2["deterministic"]["rows"][set][i]["mean"]
                .as_f64()
                .unwrap();
            assert_eq!(d.cells[one][set].mean, t2, "{} m=1 set {set}", d.label);
        }
    }
    // A BNN's single draws at m = 1 are Table 2's runs (same seeds and run count).
    for (j, b) in bnns.iter().enumerate() {
        for set in 0..12 {
            let t2: bayes_robust::stats::MeanCi =
                serde_json::from_value(table2["bnn"]["rows"][set][j].clone()).unwrap();
            assert_eq!(b.cells[one][set], t2, "{} m=1 set {set}", b.label);
        }
    }
    // Distortion grows with m and with κ; every set-mean point is inside the bound.
    let ms: Vec<f64> = s.profile.multipliers.clone();
    let d: Vec<f64> = ms
        .iter()
        .map(|&m| s.points[point(cap(0.0, m))].mean_distortion)
        .collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]), "{d:?}");
    assert_eq!(d[0], 0.0);
    let k5 = s.points[point(cap(s.profile.kappas[0], 1.0))].mean_distortion;
    assert!(
        k5 > d[ms.iter().position(|&m| m == 1.0).unwrap()],
        "kappa adds no distortion"
    );
    let set_mean = &s.points[point(Strength {
        reading: BudgetReading::SetMean,
        kappa: 0.0,
        m: 1.0,
    })];
    assert!(
        set_mean.sets.iter().all(|x| x.mean_distortion <= s.bound),
        "{set_mean:?}"
    );
    assert_eq!(s.comparisons.len(), 3);
    assert_eq!(s.claim_points.len(), 3);
    for cp in &s.claim_points {
        assert_eq!(cp.claims.len(), 4, "{}", cp.name);
        assert_eq!(cp.models.len(), 29, "{}", cp.name);
    }
}

/// The perturbation grid shows the stored perturbations: `perturbation_examples.json`
/// holds the first test images of each λ = 0 source's set exactly as the cached attack
/// and the distortion budget make them, and `perturbations.svg` draws those pixels.
fn assert_perturbation_grid(runs: &Path, dir: &Path) {
    use bayes_robust::attack::{BudgetReading, clip_to_box};
    use bayes_robust::data::{ChecksumPolicy, RawDataset, SplitSpec, Splits};
    use bayes_robust::experiment::examples::{EXAMPLES_PER_SET, PerturbationExamples};
    let ex = PerturbationExamples::read(dir)
        .unwrap()
        .expect("the run wrote its examples");
    assert_eq!(ex.protocol, "text");
    let sources: Vec<&str> = ex.sets.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(
        sources,
        [
            "FC-10 (lambda=0)",
            "FC-200-200-10 (lambda=0)",
            "FC-1200-1200-10 (lambda=0)"
        ]
    );
    let profile = Profile::quick();
    let raw = RawDataset::load(&common::real_mnist_dir(), ChecksumPolicy::Skip).unwrap();
    let test = Splits::from_raw(&raw, SplitSpec::PAPER).unwrap().test;
    let x = test.images.narrow(0, 0, EXAMPLES_PER_SET as i64);
    let attack = serde_json::to_value(&profile.attack).unwrap();
    let attacks = runs.join("attacks");
    let svg = std::fs::read_to_string(dir.join("perturbations.svg")).unwrap();
    let images = common::svg_png_images(&svg);
    assert_eq!(
        images.len(),
        3 * 3 * EXAMPLES_PER_SET,
        "clean, x' and r per set and row"
    );
    for (g, set) in ex.sets.iter().enumerate() {
        // The cached attack of this source with the profile's own attack.
        let stem = std::fs::read_dir(&attacks)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .find(|p| {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
                v["source"] == set.source.as_str() && v["attack"] == attack
            })
            .unwrap_or_else(|| panic!("no cached attack of {}", set.source));
        let tensors = tch::Tensor::read_safetensors(stem.with_extension("safetensors")).unwrap();
        let delta = &tensors.iter().find(|(n, _)| n == "delta").unwrap().1;
        let (capped, _) =
            BudgetReading::PerExampleCap.apply(delta, profile.max_rms_distortion.unwrap());
        let stored = clip_to_box(&(&x + capped.narrow(0, 0, EXAMPLES_PER_SET as i64)));
        let stored: Vec<Vec<f32>> = Vec::try_from(&stored).unwrap();
        let clean: Vec<Vec<f32>> = Vec::try_from(&x).unwrap();
        assert_eq!(set.examples.len(), EXAMPLES_PER_SET);
        for (i, e) in set.examples.iter().enumerate() {
            assert_eq!(e.clean, clean[i], "{}: clean image {i}", set.source);
            let worst = e
                .perturbed
                .iter()
                .zip(&stored[i])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst < 1e-6,
                "{}: x' of example {i} differs by {worst}",
                set.source
            );
            let (w, pixels) = &images[i * 9 + g * 3 + 1];
            assert_eq!(*w, 28);
            for (p, v) in pixels.iter().zip(&stored[i]) {
                let grey = common::grey(*v);
                assert_eq!(
                    *p,
                    [grey, grey, grey],
                    "{}: drawn pixel of example {i}",
                    set.source
                );
            }
        }
    }
}

/// Every model's training curve is in results.json, ending at its epochs run, and the
/// figure names each part of the grid.
fn assert_training_curves(r: &Value, dir: &Path) {
    for m in r["models"].as_array().unwrap() {
        let curve = m["validation_curve"].as_array().unwrap();
        assert_eq!(curve.len() as u64, m["epochs_run"].as_u64().unwrap(), "{m}");
        let best = m["best_epoch"].as_u64().unwrap() as usize;
        let at_best = curve[best - 1].as_f64().unwrap();
        assert!((at_best - m["best_validation_accuracy"].as_f64().unwrap()).abs() < 1e-6);
    }
    let svg = std::fs::read_to_string(dir.join("training_curves.svg")).unwrap();
    let texts = common::svg_texts(&svg);
    for panel in [
        "sources FC-10",
        "sources FC-1200-1200-10",
        "deterministic FC-100-100-10",
        "BNNs FC-100-100-10",
    ] {
        assert!(texts.iter().any(|t| t == panel), "no panel {panel}");
    }
}

/// Every artifact key of a finished run, as `<kind>/<key>` for each complete artifact
/// (its JSON sidecar) under `models/`, `attacks/` and `evals/`, sorted.
pub fn artifact_keys(runs: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for kind in ["models", "attacks", "evals"] {
        let Ok(dir) = std::fs::read_dir(runs.join(kind)) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".json")
                && !name.starts_with('.')
                && !stem.ends_with(".key")
            {
                keys.push(format!("{kind}/{stem}"));
            }
        }
    }
    keys.sort();
    keys
}

/// The artifacts of `runs` whose keys name a measured value, so differ between CPUs:
/// the paper-matched points (an m or a κ off the profile's grid, interpolated from the
/// λ = 0 net's measured accuracies) and every artifact whose preimage names one of them.
fn measured_keys(runs: &Path, profile: &Profile) -> std::collections::BTreeSet<String> {
    let sp = &profile.strength;
    let grid_m: Vec<f64> = sp
        .multipliers
        .iter()
        .chain(&sp.seed_multipliers)
        .copied()
        .collect();
    let grid_kappa: Vec<f64> = std::iter::once(0.0)
        .chain(sp.kappas.iter().copied())
        .collect();
    let on = |grid: &[f64], x: f64| grid.iter().any(|g| (g - x).abs() < 1e-12);
    // Per artifact: whether it names an off-grid value, and every string it holds.
    fn walk(v: &Value, key: &str, off: &mut dyn FnMut(&str, f64), strings: &mut Vec<String>) {
        match v {
            Value::Number(n) => off(key, n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => strings.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, off, strings)),
            Value::Object(o) => o.iter().for_each(|(k, x)| walk(x, k, off, strings)),
            _ => {}
        }
    }
    let mut nodes = Vec::new();
    for kind in ["attacks", "evals"] {
        let Ok(dir) = std::fs::read_dir(runs.join(kind)) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".key.json") else {
                continue;
            };
            let pre: Value =
                serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
            let mut measured = false;
            let mut strings = Vec::new();
            walk(
                &pre["config"],
                "",
                &mut |k, x| {
                    measured |=
                        (k == "m" && !on(&grid_m, x)) || (k == "kappa" && !on(&grid_kappa, x))
                },
                &mut strings,
            );
            nodes.push((format!("{kind}/{stem}"), stem.to_owned(), measured, strings));
        }
    }
    let mut measured: std::collections::BTreeSet<String> =
        nodes.iter().filter(|n| n.2).map(|n| n.1.clone()).collect();
    loop {
        let before = measured.len();
        for (_, stem, _, strings) in &nodes {
            if strings
                .iter()
                .any(|s| measured.iter().any(|m| s.contains(m.as_str())))
            {
                measured.insert(stem.clone());
            }
        }
        if measured.len() == before {
            break;
        }
    }
    nodes
        .into_iter()
        .filter(|n| measured.contains(&n.1))
        .map(|n| n.0)
        .collect()
}

/// The quick run's keys against the golden list `fixtures/golden-keys/quick.txt`, made
/// from the code before the plan-of-jobs redesign (issue 21): a change of any key (hours
/// of reruns on the paper profile) fails here. `BAYES_ROBUST_BLESS_KEYS=1` rewrites the
/// list, for a change of key that is meant. Keys that name a measured value (the
/// paper-matched points, [`measured_keys`]) differ between CPUs (libtorch's kernels
/// round differently, docs/FIDELITY.md "Across machines"): every other key must be in
/// the list, and the measured ones may differ only one for one.
fn assert_golden_keys(runs: &Path, root: &Path, profile: &Profile) {
    let golden = root.join("fixtures/golden-keys/quick.txt");
    let ours = artifact_keys(runs).join("\n") + "\n";
    if std::env::var_os("BAYES_ROBUST_BLESS_KEYS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &ours).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    let (ours, expected): (Vec<&str>, Vec<&str>) =
        (ours.lines().collect(), expected.lines().collect());
    let measured = measured_keys(runs, profile);
    let missing: Vec<_> = expected.iter().filter(|k| !ours.contains(k)).collect();
    let new: Vec<_> = ours.iter().filter(|k| !expected.contains(k)).collect();
    let new_stable: Vec<_> = new.iter().filter(|k| !measured.contains(***k)).collect();
    assert!(
        new_stable.is_empty() && missing.len() == new.len(),
        "cache keys changed: {} golden keys not made ({missing:?}), {} keys not in the golden list ({new:?}), {} of them naming no measured value ({new_stable:?})",
        missing.len(),
        new.len(),
        new_stable.len()
    );
    assert!(
        measured.len() > 10,
        "only {} measured keys found",
        measured.len()
    );
}

/// A JSON value without its wall times (`seconds`, `wall_seconds`) and who wrote it
/// (`made_by`, the cache's `_integrity` record), anywhere.
fn without_times(mut v: Value) -> Value {
    match &mut v {
        Value::Object(m) => {
            m.remove("seconds");
            m.remove("wall_seconds");
            m.remove("made_by");
            m.remove(cache::INTEGRITY);
            for x in m.values_mut() {
                *x = without_times(x.take());
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = without_times(x.take());
            }
        }
        _ => {}
    }
    v
}

/// Every artifact of `plan` is the same in both runs folders: tensors bit for bit,
/// records and curves up to wall times.
fn assert_same_artifacts(plan: &Plan, a: &Path, b: &Path) {
    for job in &plan.jobs {
        for id in job.outputs() {
            let stem = |root: &Path| root.join(job.kind.folder()).join(id);
            let read_json = |root: &Path| -> Value {
                let path = PathBuf::from(format!("{}.json", stem(root).display()));
                serde_json::from_str(
                    &std::fs::read_to_string(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
                )
                .unwrap()
            };
            assert_eq!(
                without_times(read_json(a)),
                without_times(read_json(b)),
                "{} ({id})",
                job.label
            );
            if matches!(job.kind, JobKind::TrainModel | JobKind::MinNormSet) {
                let bytes = |root: &Path| {
                    std::fs::read(format!("{}.safetensors", stem(root).display())).unwrap()
                };
                assert!(bytes(a) == bytes(b), "{} ({id}): tensors differ", job.label);
            }
        }
    }
}

/// The plan of a cached run: in dependency order, nothing to compute, every job's key
/// one the run made, and each key's preimage stored beside its artifact, hashing to it.
fn assert_plan_of_cached_run(cfg: &ReproduceConfig) -> Plan {
    let plan = text_plan(cfg).unwrap();
    plan.check_order().unwrap();
    let summary = plan.summary(&cfg.runs_dir, None);
    assert_eq!(
        summary.to_compute, 0,
        "a dry run of a cached run computes nothing"
    );
    let made = artifact_keys(&cfg.runs_dir);
    for job in &plan.jobs {
        for out in job.outputs() {
            let id = format!("{}/{out}", job.kind.folder());
            assert!(made.contains(&id), "{id} is not an artifact of the run");
            let preimage = cfg
                .runs_dir
                .join(job.kind.folder())
                .join(format!("{out}.key.json"));
            let v: Value =
                serde_json::from_str(&std::fs::read_to_string(&preimage).unwrap()).unwrap();
            assert_eq!(cache::key(v["name"].as_str().unwrap(), &v["config"]), out);
        }
    }
    let kinds = |k: JobKind| plan.jobs.iter().filter(|j| j.kind == k).count();
    // The grid's 23 models, the strength axis's 2 controls (the matched-init net, the
    // deep ensemble's second member), seed 1 of the 4 λ nets and of the 7 BNNs as
    // two stacked grids (quick: 2 training seeds), and seed 1 of the matched-init net.
    assert_eq!(kinds(JobKind::TrainModel), 23 + 2 + 2 + 1);
    let grids: Vec<usize> = plan
        .jobs
        .iter()
        .filter(|j| !j.also.is_empty())
        .map(|j| j.outputs().count())
        .collect();
    assert_eq!(grids, [4, 7]);
    // The 12 sets, the 12 at the quick profile's one κ > 0, and at most one per source
    // at its paper-matched κ (none where that κ rounds to one already made).
    let sets = kinds(JobKind::MinNormSet);
    assert!((24..=36).contains(&sets), "{sets} min-norm sets");
    assert_eq!(
        kinds(JobKind::Evaluation),
        14 + 11 + 2 + SWEEP_MODELS + CLAIM_EVALS + 2 * 11 + 2 * 12,
        "4 λ nets, 7 BNNs, Tables 3 and 4, calibration; the 11 models' per-example counts and Tables 3's and 4's; the strength sweep's models; the claim points'; the 11 at both seeds; the strength study's 12 at both seeds"
    );
    plan
}

/// The plan drained by 2 worker processes (`bayes-robust job run`), in another job order,
/// into an empty runs folder makes the same artifacts as the in-process run (one
/// process, plan order).
fn assert_workers_make_the_same_artifacts(cfg: &ReproduceConfig, plan: &Plan) {
    let runs = tempfile::tempdir().unwrap();
    let command_in = |job: &Job, dir: &Path| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_bayes-robust"));
        c.args([
            "--seed",
            &cfg.master_seed.to_string(),
            "--threads",
            &cfg.threads.to_string(),
        ]);
        c.arg("--data-dir").arg(&cfg.data_dir);
        c.args([
            "job",
            "run",
            &job.key.id,
            "--quiet",
            "--profile",
            "quick",
            "--whitebox",
            "--strength",
        ]);
        c.args(cfg.per_example.then_some("--per-example"));
        c.arg("--runs-dir").arg(dir);
        c
    };
    let command = |job: &Job| command_in(job, runs.path());
    // Another job order than the in-process run's: of the jobs whose inputs are made,
    // the last first (the min-norm sets and white-box jobs before the grid's other
    // trainings).
    let reordered = plan.in_reverse_ready_order();
    reordered.check_order().unwrap();
    assert_ne!(
        reordered.jobs.iter().map(|j| &j.key.id).collect::<Vec<_>>(),
        plan.jobs.iter().map(|j| &j.key.id).collect::<Vec<_>>()
    );
    let report = drain(
        &reordered,
        runs.path(),
        2,
        &command,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(report.computed, plan.jobs.len());
    assert_same_artifacts(plan, &cfg.runs_dir, runs.path());
    // `job run` of a job whose input is missing fails with its own status, writes nothing.
    let empty = tempfile::tempdir().unwrap();
    let attack = plan
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::MinNormSet)
        .unwrap();
    let out = command_in(attack, empty.path()).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(EXIT_MISSING_INPUT),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&attack.inputs[0]));
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// `bayes-robust attack` on a source's checkpoint, with the quick profile's settings,
/// makes the plan's perturbation set for that source bit for bit.
fn assert_attack_of_a_checkpoint_gives_the_plans_set(cfg: &ReproduceConfig, plan: &Plan) {
    let set = plan
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::MinNormSet)
        .expect("a min-norm set");
    let source = cfg.runs_dir.join("models").join(&set.inputs[0]);
    let out = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bayes-robust"))
        .args(["--threads", &cfg.threads.to_string(), "--seed"])
        .arg(cfg.master_seed.to_string())
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .args(["attack", "--profile", "quick", "--checkpoint"])
        .arg(&source)
        .arg("--out")
        .arg(out.path().join("set"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = cache::ArtifactDir::new(out.path());
    let ours: Value = dir.read_json("set").unwrap().unwrap();
    let plans: Value = cache::ArtifactDir::new(cfg.runs_dir.join("attacks"))
        .read_json(&set.key.id)
        .unwrap()
        .unwrap();
    for field in ["n", "mean_distortion", "success_rate", "attack"] {
        assert_eq!(ours[field], plans[field], "{}: {field}", set.label);
    }
    assert!(
        (printed(&text, "mean distortion:")[0] - plans["mean_distortion"].as_f64().unwrap()).abs()
            < 1e-6
    );
    let tensor = |d: &cache::ArtifactDir, key: &str| {
        d.read_tensors(key)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "delta")
            .unwrap()
            .1
    };
    let plan_dir = cache::ArtifactDir::new(cfg.runs_dir.join("attacks"));
    assert!(
        tensor(&dir, "set").equal(&tensor(&plan_dir, &set.key.id)),
        "{}: the perturbations differ",
        set.label
    );
}

/// `bayes-robust whitebox` on a deterministic net's checkpoint, under its plan target's
/// name, gives the plan's curve for it.
fn assert_whitebox_of_a_checkpoint_gives_the_plans_curve(cfg: &ReproduceConfig, plan: &Plan) {
    let job = plan
        .jobs
        .iter()
        .find(|j| {
            j.kind == JobKind::WhiteboxCurve && j.label.starts_with("white-box deterministic")
        })
        .unwrap_or_else(|| panic!("no deterministic white-box curve in the plan"));
    assert_eq!(
        job.key.config["profile"],
        serde_json::to_value(&Profile::quick().whitebox).unwrap(),
        "a main curve runs the profile's white-box settings"
    );
    let target = job.key.config["target"].as_str().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_bayes-robust"))
        .args(["--threads", &cfg.threads.to_string(), "--seed"])
        .arg(cfg.master_seed.to_string())
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .args([
            "whitebox",
            "--profile",
            "quick",
            "--name",
            target,
            "--checkpoint",
        ])
        .arg(cfg.runs_dir.join("models").join(&job.inputs[0]))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours: Value = serde_json::from_slice(&o.stdout).unwrap();
    let plans: Value = cache::ArtifactDir::new(cfg.runs_dir.join("evals"))
        .read_json(&job.key.id)
        .unwrap()
        .unwrap();
    assert_eq!(
        without_times(ours),
        without_times(plans["curve"].clone()),
        "{}",
        job.label
    );
}

/// `bayes-robust eval` on the λ = 0 net's checkpoint gives its Table 1 cells.
fn assert_eval_of_a_checkpoint_gives_table_1(cfg: &ReproduceConfig, plan: &Plan, r: &Value) {
    let job = plan
        .jobs
        .iter()
        .find(|j| j.label == "train det/lambda=0")
        .expect("the λ = 0 net's training job");
    let stem = cfg.runs_dir.join("models").join(&job.key.id);
    // The first source's min-norm set as the plan made it (raw, before the cap).
    let set = plan
        .jobs
        .iter()
        .find(|j| j.kind == JobKind::MinNormSet)
        .expect("a min-norm set");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bayes-robust"))
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .args(["eval", "--examples", "500", "--checkpoint"])
        .arg(&stem)
        .arg("--set")
        .arg(
            cfg.runs_dir
                .join("attacks")
                .join(format!("{}.json", set.key.id)),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for split in ["validation", "test"] {
        let ours = printed(&text, &format!("{split} accuracy (%):"))[0];
        let table = r["table1_clean"]["deterministic"][split][0]["mean"]
            .as_f64()
            .unwrap();
        assert!(
            (ours - table).abs() < 0.006,
            "{split}: eval {ours} against Table 1 {table}"
        );
    }
    // On the set, under the plan's per-example cap at m = 1: Table 2's cell of the
    // λ = 0 net on that set.
    assert!(
        set.label
            .ends_with(r["attack_sources"][0].as_str().unwrap())
    );
    let ours = printed(&text, &format!("set {} accuracy (%):", set.key.id))[0];
    let table = r["table2_perturbed"]["deterministic"]["rows"][0][0]["mean"]
        .as_f64()
        .unwrap();
    assert!(
        (ours - table).abs() < 0.006,
        "set: eval {ours} against Table 2 {table}"
    );
}

#[test]
fn the_quick_profile_reproduces_every_cell_and_resumes_without_recomputing() {
    let _g = common::torch_rng_lock();
    let runs = tempfile::tempdir().unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = ReproduceConfig {
        profile: Profile::quick(),
        master_seed: 20201218,
        device: tch::Device::Cpu,
        threads: 2,
        dataset: Dataset::Mnist,
        data_dir: common::real_mnist_dir(),
        runs_dir: runs.path().to_owned(),
        out_dir: root.join("reports/quick"),
        verbose: false,
        whitebox: true,
        strength: true,
        per_example: true,
        prune_mode: None,
        train_seeds: None,
    };
    tch::set_num_threads(2);
    // The executor makes every job of the plan in this process (what `run` does
    // first); assembling the results then reuses all of it.
    let drained = run_plan(&cfg).expect("the quick plan drains");
    let n_jobs = text_plan(&cfg).unwrap().jobs.len();
    assert_eq!((drained.computed, drained.already_cached), (n_jobs, 0));
    let computed = |v: &Value| -> Vec<u64> {
        v["meta"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["computed"].as_u64().unwrap())
            .collect()
    };
    let first = reproduce(&cfg).expect("the quick profile runs");
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("reports/quick/results.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(first, written, "results.json holds what reproduce returned");

    let paper: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("reports/paper_tables.json")).unwrap(),
    )
    .unwrap();
    let mut paper_tables = paper.clone();
    paper_tables.as_object_mut().unwrap().remove("claims");
    assert_same_shape(&paper_tables, &first, "");
    assert_eq!(first["attack_sources"], paper["attack_sources"]);

    let sets = first["perturbation_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 12);
    for s in sets {
        let d = s["mean_distortion"].as_f64().unwrap();
        assert!(d < 0.10, "{}: distortion {d}", s["source"]);
        assert_eq!(s["n"], 500);
    }
    assert_eq!(
        computed(&first),
        [0; 7],
        "every computation is a job of the plan"
    );
    assert_strength_axis(&first);
    assert_per_example(&first, &root, &root.join("reports/quick"));
    for stage in first["meta"]["stages"].as_array().unwrap() {
        assert!(stage["flops"].as_f64().unwrap() > 0.0, "{stage}");
    }
    assert!(first["meta"]["sgemm_gflops"].as_f64().unwrap() > 0.0);
    // Training seeds: seed 0 is the main run's model, so a deterministic net's seed-0
    // set average is Table 2's cell; seed 1 is a model of its own.
    let seeds = &first["seeds"];
    assert_eq!(seeds["train_seeds"], 2);
    let rows = seeds["models"].as_array().unwrap();
    assert_eq!(rows.len(), 11, "four deterministic nets and seven BNNs");
    for (i, row) in rows.iter().take(4).enumerate() {
        let table2 = first["table2_perturbed"]["deterministic"]["average"][i]["mean"]
            .as_f64()
            .unwrap();
        let seed0 = row["per_seed"][0]["sets_average"]["mean"].as_f64().unwrap();
        assert!((table2 - seed0).abs() < 1e-9, "{table2} vs {seed0}");
        assert_ne!(
            row["per_seed"][0]["model_key"],
            row["per_seed"][1]["model_key"]
        );
        assert_ne!(
            row["per_seed"][0]["sets_average"],
            row["per_seed"][1]["sets_average"]
        );
    }
    let margins = seeds["margin"]["per_seed"].as_array().unwrap();
    assert_eq!(margins.len(), 2);
    for m in margins {
        let boot = &m["paired_bootstrap"];
        let (lo, hi) = (
            boot["ci95"][0].as_f64().unwrap(),
            boot["ci95"][1].as_f64().unwrap(),
        );
        let margin = m["margin"].as_f64().unwrap();
        assert!(lo <= margin && margin <= hi, "{m}");
    }
    assert_strength_across_seeds(&first);
    let wb = &first["whitebox"];
    // Nine targets, the same five for each of the six other BNNs (one draw, ensemble
    // through EOT k = 1 and 5, posterior mean, frozen sample), the BNN's single draw
    // again with twice the steps and with twice the restarts (the quick profile's EOT
    // already has the single draw's one restart), and the Table 4 BNN's ensemble with
    // twice the steps; SPSA against the λ = 0 net, the Table 3 BNN's first ensemble
    // and the EOT k = 5 ensemble of each other BNN.
    let curves = wb["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 42);
    assert!(
        curves
            .iter()
            .any(|c| c["model"] == "BNN rho_init=-2, ensemble of 20, EOT k=5 (2x steps)")
    );
    for rho in ["-30", "-10", "-4", "-2.5", "-2", "-1.5"] {
        for kind in [
            "one draw",
            "ensemble of 20, EOT k=1",
            "ensemble of 20, EOT k=5",
            "posterior mean",
            "frozen sample",
        ] {
            let name = format!("BNN rho_init={rho}, {kind}");
            let c = curves
                .iter()
                .find(|c| c["model"] == name.as_str())
                .unwrap_or_else(|| panic!("no curve {name}"));
            assert_eq!(c["every_bnn"], true, "{name}");
        }
    }
    assert!(curves.iter().filter(|c| c["every_bnn"] == true).count() == 30);
    // The EOT check compares k = 1 with k = 5 within each of the seven BNNs, per norm.
    let eot_checks: Vec<&Value> = wb["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"].as_str().unwrap().contains("more EOT samples"))
        .collect();
    assert_eq!(eot_checks.len(), 14);
    for c in eot_checks {
        let (a, b) = c["model"].as_str().unwrap().split_once(" vs ").unwrap();
        assert_eq!(a.split(", ").next(), b.split(", ").next(), "{c}");
    }
    let spsa = wb["spsa"].as_array().unwrap();
    assert_eq!(spsa.len(), 8);
    for rho in ["-30", "-10", "-4", "-2.5", "-2", "-1.5"] {
        let name = format!("BNN rho_init={rho}, ensemble of 20, EOT k=5");
        assert!(
            spsa.iter().any(|s| s["model"] == name.as_str()),
            "no SPSA on {name}"
        );
    }
    let check_names: Vec<&str> = wb["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for wanted in [
        "twice the steps change accuracy",
        "twice the restarts (2 instead of 1) change accuracy",
        "gradient-free SPSA",
        "more EOT samples",
    ] {
        assert!(
            check_names.iter().any(|c| c.contains(wanted)),
            "no {wanted:?} check"
        );
    }
    assert!(!wb["checks"].as_array().unwrap().is_empty());
    let calibration = first["calibration"]["rows"].as_array().unwrap();
    assert_eq!(calibration.len(), 5, "four deterministic nets and the BNN");
    for row in calibration {
        assert_eq!(row["sets_ece"].as_array().unwrap().len(), 12);
        let ece = row["clean_ece"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&ece), "{row}");
        // Bootstrap intervals over the test images: ordered, and a mean's (the NLL's)
        // holds its own point estimate.
        let ci = |field: &str| -> [f64; 2] {
            let a = row[field]
                .as_array()
                .unwrap_or_else(|| panic!("{field}: {row}"));
            [a[0].as_f64().unwrap(), a[1].as_f64().unwrap()]
        };
        for field in [
            "clean_ece_ci",
            "clean_nll_ci",
            "sets_ece_mean_ci",
            "sets_nll_mean_ci",
            "sets_auroc_entropy_mean_ci",
        ] {
            let [lo, hi] = ci(field);
            assert!(lo <= hi && lo.is_finite(), "{field}: {row}");
        }
        let [lo, hi] = ci("clean_nll_ci");
        let nll = row["clean_nll"].as_f64().unwrap();
        assert!(lo <= nll && nll <= hi && lo < hi, "{row}");
    }
    assert!(calibration[4]["sets_auroc_mi"].is_array());
    assert!(calibration[4]["sets_auroc_mi_mean_ci"].is_array());
    assert!(calibration[0]["sets_auroc_mi"].is_null());
    assert!(calibration[0]["sets_auroc_mi_mean_ci"].is_null());

    // The report renders from it (what `bayes-robust reproduce` does at the end).
    let files = bayes_robust::report::render(&written, &paper, &root.join("reports/quick"))
        .expect("the report renders");
    assert_eq!(
        files.len(),
        17,
        "verdicts.json, six figures, the perturbation grid, the training curves, five white-box figures, the seeds figure, the strength figure and README.md: {files:?}"
    );
    assert_perturbation_grid(runs.path(), &root.join("reports/quick"));
    assert_golden_keys(runs.path(), &root, &cfg.profile);
    let plan = assert_plan_of_cached_run(&cfg);
    assert_workers_make_the_same_artifacts(&cfg, &plan);
    assert_eval_of_a_checkpoint_gives_table_1(&cfg, &plan, &first);
    assert_attack_of_a_checkpoint_gives_the_plans_set(&cfg, &plan);
    assert_whitebox_of_a_checkpoint_gives_the_plans_curve(&cfg, &plan);
    assert_training_curves(&written, &root.join("reports/quick"));
    let readme = std::fs::read_to_string(root.join("reports/quick/README.md")).unwrap();
    for heading in [
        "calibration and detection",
        "white-box attacks on each model itself",
        "Gradient-masking checks",
        "White-box against transfer",
        "several training seeds",
        "The margin per seed, paired on the same test images",
        "counted GFLOP",
        "A gradient-free attack (SPSA)",
        "Every BNN of the ρ_init grid",
        "Every target of each BNN at L2",
        "Attack strength: the paper's question along the knobs it depends on",
        "The paper's claims at each reading of its difficulty",
        "paper-matched difficulty (multiplier m)",
    ] {
        assert!(readme.contains(heading), "README lacks {heading:?}");
    }
    // Only the Table 3 BNN's ensemble has a transfer value (Table 3) to compare with.
    let transfer = readme
        .split("### White-box against transfer")
        .nth(1)
        .unwrap()
        .split("###")
        .next()
        .unwrap();
    assert!(
        transfer.contains("| BNN rho_init=-2, one draw |"),
        "{transfer}"
    );
    assert!(
        !transfer.contains("| BNN rho_init=-2, ensemble"),
        "{transfer}"
    );
    assert!(
        transfer.contains("| BNN rho_init=-3, ensemble of 20, EOT k=5 |"),
        "{transfer}"
    );
    // Calibration rows carry bootstrap intervals.
    assert!(readme.contains("Clean columns: value [95% CI]"));

    // The same flags again: everything is reused and the numbers are identical.
    let second = reproduce(&cfg).expect("the rerun runs");
    assert_eq!(computed(&second), [0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(first["seeds"], second["seeds"]);
    assert_eq!(first["whitebox"], second["whitebox"]);
    assert_eq!(first["table2_perturbed"], second["table2_perturbed"]);
    assert_eq!(first["table4_pruning"], second["table4_pruning"]);
}

#[test]
fn a_changed_config_changes_the_cache_key() {
    let base = serde_json::json!({"attack": Profile::quick().attack, "n": 500});
    let mut other = Profile::quick().attack;
    other.steps += 1;
    let changed = serde_json::json!({"attack": other, "n": 500});
    assert_eq!(cache::key("set", &base), cache::key("set", &base.clone()));
    assert_ne!(cache::key("set", &base), cache::key("set", &changed));
    assert!(cache::key("FC-10 (lambda=0)", &base).starts_with("FC-10__lambda=0_-"));
}

#[test]
fn an_interrupted_artifact_is_not_trusted() {
    use bayes_robust::experiment::cache::ArtifactDir;
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    // A temp file left by a killed run is not an artifact.
    std::fs::write(d.path().join(".k.tmp123"), b"{\"half").unwrap();
    assert!(dir.read_json::<Value>("k").unwrap().is_none());
    // A corrupt sidecar is an error that says how to recover, not a silent success.
    std::fs::write(d.path().join("k.json"), b"{\"half").unwrap();
    let err = dir.read_json::<Value>("k").unwrap_err().to_string();
    assert!(err.contains("k.json") && err.contains("delete it"), "{err}");
}

#[test]
fn keys_with_dots_keep_their_whole_name() {
    use bayes_robust::experiment::cache::ArtifactDir;
    let d = tempfile::tempdir().unwrap();
    let dir = ArtifactDir::new(d.path());
    let (a, b) = (
        cache::key("bnn/rho=-2.5", &serde_json::json!({"x": 1})),
        cache::key("bnn/rho=-2.5", &serde_json::json!({"x": 2})),
    );
    dir.write_json(&a, &serde_json::json!({"v": "a"})).unwrap();
    assert!(d.path().join(format!("{a}.json")).exists());
    assert!(
        dir.read_json::<Value>(&b).unwrap().is_none(),
        "another config must not find a's artifact"
    );
    assert_eq!(dir.read_json::<Value>(&a).unwrap().unwrap()["v"], "a");
}

#[test]
fn more_training_seeds_extend_the_seed_blocks_of_fewer() {
    use bayes_robust::experiment::seeds::seed_blocks;
    assert_eq!(seed_blocks(1), Vec::<std::ops::Range<usize>>::new());
    assert_eq!(seed_blocks(2), vec![1..2]);
    assert_eq!(seed_blocks(3), vec![1..3]);
    assert_eq!(seed_blocks(4), vec![1..3, 3..4]);
    assert_eq!(seed_blocks(5), vec![1..3, 3..5]);
    // Every seed 1..K once, in order.
    for k in 1..12 {
        let seeds: Vec<usize> = seed_blocks(k).into_iter().flatten().collect();
        assert_eq!(seeds, (1..k).collect::<Vec<_>>(), "K = {k}");
    }
}

#[test]
fn the_seeds_profile_is_the_paper_profile_with_five_seeds_and_its_cache() {
    let seeds = Profile::seeds();
    assert_eq!(seeds.train_seeds, 5);
    assert_eq!(seeds.runs_folder(), "paper");
    assert_eq!(
        Profile {
            name: "paper".into(),
            train_seeds: 3,
            ..seeds.clone()
        },
        Profile::paper()
    );
    assert_eq!(Profile::paper().runs_folder(), "paper");
    assert_eq!(Profile::short().runs_folder(), "short");
    // A seeds profile with another number changed is not the paper's protocol any more.
    let changed = Profile {
        max_epochs: 10,
        ..seeds
    };
    assert_eq!(changed.runs_folder(), "seeds");
}

/// `old` equals `new` on every field `old` has, at every depth (fields added since are
/// new).
fn assert_subset(old: &Value, new: &Value, what: &str) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                assert_subset(v, n.get(k).unwrap_or(&Value::Null), &format!("{what}.{k}"));
            }
        }
        _ => assert_eq!(old, new, "{what} changed since the report was made"),
    }
}

/// Each committed report's profile is the profile its name gives today: a profile feeds
/// most cache keys, so a change to one (say a test-speed change to `quick` leaking into
/// `short`) would silently orphan that report's cache. The short reports are compared
/// field for field (fields their run did not have yet are new); the paper-profile
/// reports, made at different times, on the fields that feed the text protocol's model,
/// set and evaluation keys.
#[test]
fn every_committed_reports_profile_is_the_named_profile_of_today() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let keyed = [
        "max_epochs",
        "attack",
        "attack_chunk",
        "eval_examples",
        "single_draw_runs",
        "ensemble_ns",
        "ensemble_runs",
        "prune_rates",
        "prune_ensemble",
        "prune_runs",
        "max_rms_distortion",
        "whitebox",
    ];
    for dir in [
        "paper",
        "seeds",
        "short",
        "short-seed1",
        "fashion-mnist-short",
        "paper-code",
    ] {
        let path = root.join("reports").join(dir).join("results.json");
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let committed = r["meta"]["profile"].as_object().unwrap();
        let name = committed["name"].as_str().unwrap();
        let today = serde_json::to_value(Profile::by_name(name).unwrap()).unwrap();
        // Fields the report's run did not have yet are new; every field it has must
        // be today's.
        for (field, value) in committed {
            if !dir.contains("short") && !keyed.contains(&field.as_str()) {
                continue;
            }
            assert_subset(
                value,
                &today[field],
                &format!("{}: profile {name}'s {field}", path.display()),
            );
        }
    }
}

/// A configuration for building `profile`'s plan on real MNIST, with no runs folder.
fn plan_only_config(profile: Profile, whitebox: bool, strength: bool) -> ReproduceConfig {
    ReproduceConfig {
        profile,
        master_seed: 20201218,
        device: tch::Device::Cpu,
        threads: 2,
        dataset: Dataset::Mnist,
        data_dir: common::real_mnist_dir(),
        runs_dir: PathBuf::from("/nonexistent/runs"),
        out_dir: PathBuf::from("/nonexistent/reports"),
        verbose: false,
        whitebox,
        strength,
        per_example: false,
        prune_mode: None,
        train_seeds: None,
    }
}

/// The plans of the paper (and seeds) and short profiles keep their keys:
/// `fixtures/golden-keys/{paper,short}-plan.txt` list every job's key (with
/// `--whitebox`). Every model key the committed reports' results.json record (made by
/// earlier code on other machines) is among them, and every job of the short plan
/// without white-box is an artifact of the short run that made `reports/short/`
/// (`fixtures/golden-keys/short.txt`, its runs folder's listing).
#[test]
fn the_committed_profiles_plans_keep_their_golden_keys() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let golden = |f: &str| -> Vec<String> {
        std::fs::read_to_string(root.join("fixtures/golden-keys").join(f))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let plan_with = |profile: Profile, whitebox: bool, strength: bool| -> Plan {
        text_plan(&plan_only_config(profile, whitebox, strength)).unwrap()
    };
    let plan_of = |profile: Profile, whitebox: bool| plan_with(profile, whitebox, false);
    let ids = |plan: Plan| -> Vec<String> { plan.jobs.iter().map(|j| j.key.id.clone()).collect() };
    let plan_ids = |profile: Profile, whitebox: bool| -> Vec<String> {
        plan_of(profile, whitebox)
            .jobs
            .iter()
            .map(|j| j.key.id.clone())
            .collect()
    };
    let paper = plan_ids(Profile::paper(), true);
    assert_eq!(paper, golden("paper-plan.txt"));
    // The seeds profile's plan is the paper's with seeds 3 and 4 added: it shares the
    // paper's cache.
    let seeds_plan = plan_of(Profile::seeds(), true);
    assert!(
        paper
            .iter()
            .all(|k| seeds_plan.jobs.iter().any(|j| &j.key.id == k)),
        "seeds shares the paper's cache"
    );
    // The training seeds' stacked grids are jobs with every member as an output: the
    // committed runs' seed models (made before they were jobs) are all planned.
    for dir in ["paper", "seeds"] {
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("reports").join(dir).join("results.json")).unwrap(),
        )
        .unwrap();
        for m in r["seeds"]["models"].as_array().unwrap() {
            for s in m["per_seed"].as_array().unwrap() {
                let key = s["model_key"].as_str().unwrap();
                assert!(
                    seeds_plan.job(key).is_ok(),
                    "reports/{dir}: seed model {key} is not planned"
                );
            }
        }
    }
    assert_eq!(plan_ids(Profile::short(), true), golden("short-plan.txt"));
    // The strength extension's jobs (controls, κ > 0 attacks, the sweep, the set-mean
    // claim point's 27 models and 2 ensembles) keep the keys the strength stage gave
    // them before they were jobs: the short run made them all.
    let short_run: Vec<String> = golden("short.txt");
    let short_strength = ids(plan_with(Profile::short(), false, true));
    assert_eq!(short_strength.len(), 117 + 29);
    for id in short_strength {
        assert!(
            short_run.iter().any(|k| k.ends_with(&format!("/{id}"))),
            "{id} is not an artifact of the short run"
        );
    }
    // The paper plan with --strength: the plan above, then the strength extension's
    // jobs (`paper-strength-jobs.txt`), then the training seeds'.
    let with_strength = ids(plan_with(Profile::paper(), true, true));
    let strength_jobs: Vec<String> = with_strength
        .iter()
        .filter(|k| !paper.contains(k))
        .cloned()
        .collect();
    let bless = std::env::var_os("BAYES_ROBUST_BLESS_KEYS").is_some();
    let strength_golden = root.join("fixtures/golden-keys/paper-strength-jobs.txt");
    if bless {
        std::fs::write(&strength_golden, strength_jobs.join("\n") + "\n").unwrap();
    }
    assert_eq!(strength_jobs, golden("paper-strength-jobs.txt"));
    assert_eq!(with_strength.len(), paper.len() + strength_jobs.len());
    for (dir, plan) in [
        ("paper", &paper),
        ("seeds", &paper),
        ("short", &golden("short-plan.txt")),
    ] {
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(root.join("reports").join(dir).join("results.json")).unwrap(),
        )
        .unwrap();
        for m in r["models"].as_array().unwrap() {
            let key = m["key"].as_str().unwrap();
            assert!(
                plan.iter().any(|k| k == key),
                "reports/{dir}: model key {key} left the plan"
            );
        }
    }
}

/// Each job of the paper plan's strength sweep holds every κ's 12 sets under both
/// readings (and one κ's raw attacks) at once: it asks Slurm for that memory on top of
/// the dataset and libtorch, where the kind's 4 GiB would be killed; the other jobs keep
/// their kind's, and the results run is sized for the claim points it makes.
#[test]
fn the_strength_sweep_asks_slurm_for_the_memory_its_sets_take() {
    use bayes_robust::experiment::slurm::Sizing;
    let cfg = plan_only_config(Profile::paper(), false, true);
    let plan = text_plan(&cfg).unwrap();
    let sizing = Sizing {
        cpus: 2,
        sgemm_gflops: 100.0,
    };
    let sweep: Vec<&Job> = plan
        .jobs
        .iter()
        .filter(|j| j.label.starts_with("strength sweep of "))
        .collect();
    assert_eq!(sweep.len(), 27);
    // (2 readings × 4 κ + 1) × 12 sets of 10,000 test images × 784 floats.
    let sets_mib = ((2 * 4 + 1) * 12 * 10_000 * 784 * 4u64) as f64 / (1u64 << 20) as f64;
    for job in sweep {
        assert_eq!(
            sizing.resources(job).mem_mib,
            3072 + sets_mib.ceil() as usize,
            "{}",
            job.label
        );
    }
    for job in plan.jobs.iter().filter(|j| j.memory_mib.is_none()) {
        assert!(sizing.resources(job).mem_mib <= 4096, "{}", job.label);
    }
    // The results run then makes the claim points in its own process: the sweep's sets,
    // the Table 2 sets and a matched κ's, and more than the hour a results run gets.
    let set_mib = (10_000 * 784 * 4) as f64 / (1u64 << 20) as f64;
    let results = sizing.finishing(&plan.finish);
    assert_eq!(
        results.mem_mib,
        3072 + sets_mib.ceil() as usize + (24.0 * set_mib).ceil() as usize
    );
    assert!(results.time_minutes > 60, "{results:?}");
    let plain = text_plan(&ReproduceConfig {
        strength: false,
        ..cfg
    })
    .unwrap();
    let results = sizing.finishing(&plain.finish);
    assert_eq!((results.mem_mib, results.time_minutes), (3072, 60));
}

/// The flags each local worker of `run --workers N` gets (and the recorded command
/// records): every one that adds jobs or changes keys, each only where it is not the
/// profile's default, so that a worker builds its parent's plan.
#[test]
fn a_workers_flags_are_the_ones_that_shape_its_parents_plan() {
    use bayes_robust::model::bayes::PruneMode;
    let ids = |cfg: &ReproduceConfig| -> Vec<String> {
        text_plan(cfg)
            .unwrap()
            .jobs
            .iter()
            .map(|j| j.key.id.clone())
            .collect()
    };
    let mut cfg = plan_only_config(Profile::short(), false, false);
    cfg.train_seeds = Some(Profile::short().train_seeds);
    cfg.prune_mode = Some(PruneMode::Global);
    assert!(cfg.plan_flags().is_empty(), "{:?}", cfg.plan_flags());
    let plain = ids(&cfg);
    cfg.whitebox = true;
    cfg.strength = true;
    cfg.per_example = true;
    cfg.prune_mode = Some(PruneMode::PerTensor);
    cfg.train_seeds = Some(3);
    assert_eq!(
        cfg.plan_flags(),
        [
            "--whitebox",
            "--strength",
            "--per-example",
            "--pruning",
            "per-tensor",
            "--train-seeds",
            "3"
        ]
    );
    let shaped = ids(&cfg);
    for (what, without) in [
        (
            "white-box",
            ReproduceConfig {
                whitebox: false,
                ..cfg.clone()
            },
        ),
        (
            "strength",
            ReproduceConfig {
                strength: false,
                ..cfg.clone()
            },
        ),
        (
            "per-example",
            ReproduceConfig {
                per_example: false,
                ..cfg.clone()
            },
        ),
        (
            "pruning",
            ReproduceConfig {
                prune_mode: None,
                ..cfg.clone()
            },
        ),
        (
            "seeds",
            ReproduceConfig {
                train_seeds: None,
                ..cfg.clone()
            },
        ),
    ] {
        assert_ne!(ids(&without), shaped, "{what} changes the plan");
    }
    assert_ne!(plain, shaped);
}

#[test]
fn the_recorded_command_names_folders_that_are_not_the_defaults() {
    use bayes_robust::experiment::stage::default_folders;
    let [runs, out] = default_folders(&Profile::quick(), Dataset::Mnist, "");
    assert_eq!(runs, Path::new("runs/quick"));
    assert_eq!(out, Path::new("reports/quick"));
    let cfg = common::quick_config(&runs, &out, 1);
    assert_eq!(cfg.folder_flags(""), "");
    // The code protocol's defaults carry its suffix: the text folders are not its own.
    assert_eq!(
        cfg.folder_flags("-code"),
        " --runs-dir runs/quick --out-dir reports/quick"
    );
    let moved = common::quick_config(Path::new("/tmp/r"), &out, 1);
    assert_eq!(moved.folder_flags(""), " --runs-dir /tmp/r");
    let [fm_runs, _] = default_folders(&Profile::seeds(), Dataset::FashionMnist, "-code");
    assert_eq!(fm_runs, Path::new("runs/fashion-mnist-paper-code"));
}
