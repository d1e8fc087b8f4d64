//! The authors' code protocol: the targeted attack, kept sets and multipliers,
//! per-tensor pruning, the weight-noise control, and the quick profile end to end.

mod common;

use bayes_robust::attack::{Differentiable, TargetedAttack};
use bayes_robust::data::{INPUT_MAX, Split};
use bayes_robust::eval::{self, EvalChunks};
use bayes_robust::experiment::Profile;
use bayes_robust::experiment::code_protocol::{
    CodeBudget, CodePerExampleIndex, CodeProfile, CodeRunSpec, Evaluated, KeptSet, Multipliers,
    SweepRole, TrainingRow, code_plan, planned_keys, reproduce_code, run_code_plan, training_plan,
};
use bayes_robust::experiment::plan::JobKind;
use bayes_robust::experiment::reproduce::ReproduceConfig;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp, PruneMode};
use bayes_robust::model::{Arch, WeightMode};
use bayes_robust::report::margin::role_of;
use proptest::prelude::*;
use serde_json::Value;
use tch::{Device, Kind, Tensor, nn};

fn attack(steps: usize) -> TargetedAttack {
    TargetedAttack {
        steps,
        ..TargetedAttack::default()
    }
}

/// Accuracies equal up to f32 rounding (a float mean against an integer count).
fn assert_close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    assert!(
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6),
        "{a:?} vs {b:?}"
    );
}

fn first(split: &Split, n: usize) -> Split {
    split.head(n)
}

#[test]
fn the_targeted_attack_stays_in_its_clip_range_and_its_kept_examples_fool_the_source() {
    let (_vs, mlp, splits) = common::fixture_mlp();
    let split = first(&splits.validation, 100);
    let a = attack(150);
    let out = a.run(&mlp, &split.images, &split.labels);
    let (lo, hi) = (a.lo, a.hi);
    // lo ≤ r ≤ 2.03 − x for every pixel of every example, kept or not (f32 slack).
    let below = out.delta.lt(lo - 1e-9).any().int64_value(&[]);
    let above = (&out.delta + &split.images)
        .gt(hi + 1e-6)
        .any()
        .int64_value(&[]);
    assert_eq!((below, above), (0, 0), "r left [{lo}, {hi} − x]");
    assert!(
        hi > INPUT_MAX,
        "the notebook's upper bound lies just above the box"
    );

    let kept = out.success.sum(Kind::Int64).int64_value(&[]);
    assert!(
        kept >= 50,
        "the attack should succeed on most examples: {kept}/100"
    );
    // Every kept example is classified as its (wrong) target by the source.
    let pred = mlp.logits(&(&split.images + &out.delta)).argmax(-1, false);
    let ok = pred
        .eq_tensor(&out.target)
        .logical_and(&out.target.ne_tensor(&split.labels));
    let agree = ok.eq_tensor(&out.success).all().int64_value(&[]);
    assert_eq!(agree, 1, "success must mean: prediction = target ≠ label");
    // The reported norms are those of the chosen r.
    let norms = bayes_robust::attack::row_norms(&out.delta);
    assert!(norms.allclose(&out.norms, 1e-5, 1e-6, false));

    // On the kept set the source is always wrong at m = 1, and m = 0 is clean accuracy
    // on exactly the kept examples.
    let set = KeptSet::keep("fixture", &split, &out.delta, &out.success);
    assert_eq!(set.kept() as i64, kept);
    let chunks = EvalChunks::default();
    assert_eq!(eval::accuracy(&mlp, &set.at(1.0), chunks), 0.0);
    let idx = out.success.nonzero().squeeze_dim(1);
    let clean_kept = Split {
        images: split.images.index_select(0, &idx),
        labels: split.labels.index_select(0, &idx),
    };
    assert_eq!(
        Evaluated::Det(&mlp).accuracies(&set.at(0.0), 1, chunks),
        vec![eval::accuracy(&mlp, &clean_kept, chunks)]
    );
    assert!(eval::accuracy(&mlp, &clean_kept, chunks) > 0.5);
}

#[test]
fn a_zero_multiplier_gives_clean_accuracy_for_a_sampled_model_too() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let split = first(&splits.validation, 60);
    let out = attack(30).run(&mlp, &split.images, &split.labels);
    let set = KeptSet::keep("fixture", &split, &out.delta, &out.success);
    let idx = out.success.nonzero().squeeze_dim(1);
    let clean_kept = Split {
        images: split.images.index_select(0, &idx),
        labels: split.labels.index_select(0, &idx),
    };
    let noisy = BayesMlp::from_mlp(&mlp, &[0.05, 0.05, 0.05]);
    let chunks = EvalChunks::default();
    tch::manual_seed(7);
    let at_zero = Evaluated::Draws(&noisy).accuracies(&set.at(0.0), 5, chunks);
    tch::manual_seed(7);
    let clean = Evaluated::Draws(&noisy).accuracies(&clean_kept, 5, chunks);
    assert_eq!(at_zero, clean);
}

#[test]
fn a_bnn_with_zero_sigma_and_a_deterministic_nets_weights_scores_the_same() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let chunks = EvalChunks::default();
    let det = eval::accuracy(&mlp, &splits.validation, chunks);
    let copy = BayesMlp::from_mlp(&mlp, &[0.0, 0.0, 0.0]);
    tch::manual_seed(3);
    let draws = eval::single_draw_accuracies(&copy, &splits.validation, 4, chunks);
    assert_close(&draws, &[det; 4]);
    for mode in [WeightMode::Mean, WeightMode::Frozen(0)] {
        assert_close(
            &Evaluated::Mode(&copy, mode).accuracies(&splits.validation, 1, chunks),
            &[det],
        );
    }
    // The noise is really applied when σ > 0.
    let noisy = BayesMlp::from_mlp(&mlp, &[0.5, 0.5, 0.5]);
    let noisy_acc = eval::single_draw_accuracies(&noisy, &splits.validation, 4, chunks);
    assert!(
        noisy_acc.iter().all(|a| *a < det - 0.1),
        "{noisy_acc:?} vs {det}"
    );
}

#[test]
fn a_deep_ensemble_of_one_net_is_that_net() {
    let (_vs, mlp, splits) = common::fixture_mlp();
    let chunks = EvalChunks::default();
    assert_close(
        &Evaluated::DeepEnsemble(vec![&mlp, &mlp]).accuracies(&splits.validation, 1, chunks),
        &[eval::accuracy(&mlp, &splits.validation, chunks)],
    );
}

/// A small BNN (784-7-10) with random μ and ρ so that SNRs are distinct.
fn small_bnn(seed: i64) -> (nn::VarStore, BayesMlp) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(
        &vs.root(),
        &BayesConfig {
            arch: Arch::new(&[7]),
            ..BayesConfig::default()
        },
    );
    tch::no_grad(|| {
        for l in &bnn.layers {
            for rho in [&l.rho_w, &l.rho_b] {
                rho.shallow_clone().copy_(&(rho.randn_like() - 3.0));
            }
        }
    });
    (vs, bnn)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Each tensor loses exactly ⌊p·n_t⌋ entries (at most n_t − 1), and they are its
    /// entries of lowest SNR; the global ranking of the paper's text prunes differently.
    #[test]
    fn per_tensor_pruning_prunes_floor_p_n_in_every_tensor(rate in 0.0f64..0.99, seed in 0i64..1000) {
        let _g = common::torch_rng_lock();
        let (_vs, mut bnn) = small_bnn(seed);
        let counts = bnn.prune_per_tensor(rate).unwrap();
        let mut i = 0;
        for l in &bnn.layers {
            for (mu, sigma, mask) in [
                (&l.mu_w, l.sigma_w(), l.mask_w.as_ref().unwrap()),
                (&l.mu_b, l.sigma_b(), l.mask_b.as_ref().unwrap()),
            ] {
                let n = mu.numel();
                let expected = ((rate * n as f64).floor() as usize).min(n - 1);
                let zeros = (n as i64 - mask.sum(Kind::Int64).int64_value(&[])) as usize;
                prop_assert_eq!(counts[i], expected);
                prop_assert_eq!(zeros, expected);
                if expected > 0 {
                    let snr = (mu.abs() / sigma).flatten(0, -1);
                    let m = mask.flatten(0, -1).to_kind(Kind::Bool);
                    let worst_kept = snr.masked_select(&m).min().double_value(&[]);
                    let best_pruned = snr.masked_select(&m.logical_not()).max().double_value(&[]);
                    prop_assert!(best_pruned <= worst_kept);
                }
                i += 1;
            }
        }
        // Pruned weights and biases are exactly zero in every draw: a fully pruned-but-one
        // net still runs, and unpruning restores the unmasked net.
        let x = Tensor::rand([3, 784], (Kind::Float, Device::Cpu));
        let _ = bnn.forward(&x, 2, WeightMode::Sample, true);
        bnn.unprune();
        prop_assert!(bnn.layers.iter().all(|l| l.mask_w.is_none() && l.mask_b.is_none()));
    }
}

#[test]
fn a_pruned_entry_is_zero_in_every_draw() {
    let _g = common::torch_rng_lock();
    let (_vs, mut bnn) = small_bnn(5);
    // All but one entry of every tensor pruned: the last layer keeps one weight and one
    // bias entry, so at most two of the ten logit columns can be non-zero.
    bnn.prune_per_tensor(1.0).unwrap();
    let last = bnn.layers.last().unwrap();
    let kept_b = last
        .mask_b
        .as_ref()
        .unwrap()
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert_eq!(kept_b, 1);
    let x = Tensor::zeros([4, 784], (Kind::Float, Device::Cpu));
    // Sampled draws (σ ≈ 0.05–0.3 here): unmasked noise would make every column non-zero.
    tch::manual_seed(1);
    let logits = bnn.forward(&x, 50, WeightMode::Sample, false).logits;
    let nonzero_cols = logits
        .abs()
        .sum_dim_intlist([0, 1].as_slice(), false, None::<Kind>)
        .gt(0.0)
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(
        nonzero_cols <= 2,
        "at most the kept bias and the kept weight's column"
    );
}

#[test]
fn the_quick_code_protocol_runs_end_to_end_and_resumes() {
    let _g = common::torch_rng_lock();
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = common::quick_config(runs.path(), out.path(), 2);
    tch::set_num_threads(2);
    // The plan (every model and targeted set, the training table, each evaluation
    // model's sweep, Tables 3 and 4) drained in this process, as `run` does first; its
    // outputs are the planned keys. The two weight-noise controls' sweeps name the
    // learned σ: the plan has them once the BNN they take it from is trained.
    let run = CodeRunSpec {
        cfg: &cfg,
        budget: CodeBudget::AsWritten,
        mult: Multipliers::CODE,
    };
    let before = code_plan(&cfg, CodeBudget::AsWritten, Multipliers::CODE).unwrap();
    before.check_order().unwrap();
    assert_eq!(before.jobs.len(), 38 + 31);
    let drained = run_code_plan(run).unwrap();
    let plan = code_plan(&cfg, CodeBudget::AsWritten, Multipliers::CODE).unwrap();
    assert_eq!(
        plan.jobs.len(),
        before.jobs.len() + 2,
        "the noise controls' sweeps"
    );
    assert_eq!(drained.computed, plan.jobs.len());
    assert!(plan.jobs.iter().all(|j| j.is_cached(runs.path())));
    let first = reproduce_code(&cfg, Multipliers::CODE, CodeBudget::AsWritten)
        .expect("the code protocol runs");
    let computed = |v: &Value| -> Vec<u64> {
        v["meta"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["computed"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        computed(&first),
        [0, 0, 0],
        "every evaluation is a job of the plan"
    );
    // Every model and attack made is a planned key, with its preimage beside it.
    let planned: Vec<String> = planned_keys(
        &cfg.profile,
        cfg.dataset,
        cfg.master_seed,
        CodeBudget::AsWritten,
    )
    .into_iter()
    .map(|k| k.id)
    .collect();
    let planned_evals: Vec<&str> = plan
        .jobs
        .iter()
        .filter(|j| j.kind == JobKind::Evaluation)
        .map(|j| j.key.id.as_str())
        .collect();
    assert_eq!(planned_evals.len(), 33);
    for id in &planned_evals {
        let preimage = runs.path().join("evals").join(format!("{id}.key.json"));
        assert!(preimage.exists(), "{id}");
    }
    for folder in ["models", "attacks"] {
        let made: Vec<String> = std::fs::read_dir(runs.path().join(folder))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                (!id.ends_with(".key")).then(|| id.to_owned())
            })
            .collect();
        assert!(!made.is_empty(), "{folder}");
        for id in &made {
            assert!(planned.contains(id), "{folder}/{id} is not planned");
            assert!(
                runs.path()
                    .join(folder)
                    .join(format!("{id}.key.json"))
                    .exists(),
                "{id}"
            );
        }
    }
    assert_eq!(first["protocol"], "code");
    let sets = first["perturbation_sets"].as_array().unwrap();
    assert_eq!(sets.len(), 12);
    for s in sets {
        let (n, attacked) = (s["n"].as_u64().unwrap(), s["n_attacked"].as_u64().unwrap());
        assert!(n <= attacked && attacked == 200, "{s}");
    }
    let ms: Vec<f64> = serde_json::from_value(first["sweep"]["multipliers"].clone()).unwrap();
    assert!(ms.contains(&1.5) && ms.contains(&3.0) && ms.contains(&0.0));
    let models = first["sweep"]["models"].as_array().unwrap();
    // 7 BNNs, 4 λ nets, 5 controls, and the posterior mean and a frozen draw of each BNN.
    assert_eq!(models.len(), 7 + 4 + 5 + 14);
    // Every row carries its typed role, once each, and its group is the role's; the
    // report reads the same role from the name of a row without one (older files).
    let mut roles: Vec<SweepRole> = Vec::new();
    for m in models {
        let role: SweepRole = serde_json::from_value(m["role"].clone()).unwrap();
        assert_eq!(m["group"], role.group(), "{}", m["name"]);
        assert!(!roles.contains(&role), "{role:?} twice");
        roles.push(role);
        let mut older = m.clone();
        older.as_object_mut().unwrap().remove("role");
        let older: bayes_robust::results::SweepRow = serde_json::from_value(older).unwrap();
        assert_eq!(role_of(&older), Some(role), "{}", m["name"]);
    }
    assert_eq!(roles[0], SweepRole::Bnn { rho_init: -30.0 });
    assert!(roles.contains(&SweepRole::DeepEnsemble { members: 2 }));
    // Table 2 is the sweep at the group's multiplier.
    let (i15, i3) = (
        ms.iter().position(|m| *m == 1.5).unwrap(),
        ms.iter().position(|m| *m == 3.0).unwrap(),
    );
    assert_eq!(
        first["table2_perturbed"]["bnn"]["rows"][4][2],
        models[2]["sets"][4][i15]
    );
    assert_eq!(
        first["table2_perturbed"]["deterministic"]["rows"][7][1],
        models[8]["sets"][7][i3]
    );
    // Learned σ quantiles per BNN and layer, increasing in the quantile.
    for b in first["sigma"]["bnns"].as_array().unwrap() {
        for layer in b["layers"].as_array().unwrap() {
            let q: Vec<f64> = serde_json::from_value(layer.clone()).unwrap();
            assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
        }
    }
    let pruned = first["table4_pruning"]["pruned_per_tensor"]
        .as_array()
        .unwrap();
    assert_eq!(pruned.len(), 6);
    assert_eq!(
        pruned[0].as_array().unwrap().len(),
        6,
        "w and b of three layers"
    );

    // Its report, and the margin section of a text report beside it (here the code
    // results stand in for the text protocol's: the section needs only their tables).
    let paper: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/paper_tables.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let files = bayes_robust::report::render(&first, &paper, out.path()).unwrap();
    assert!(
        files.iter().any(|f| f.ends_with("multiplier_sweep.svg")),
        "{files:?}"
    );
    // The perturbation grid's examples: each λ = 0 source's first kept examples, x' =
    // x + r as attacked, fooling the source (the attack kept only its successes).
    let ex = bayes_robust::experiment::examples::PerturbationExamples::read(out.path())
        .unwrap()
        .expect("the code run wrote its examples");
    assert_eq!(ex.protocol, "code");
    assert_eq!(ex.sets.len(), 3);
    for set in &ex.sets {
        assert!(set.source.ends_with("(lambda=0)"), "{}", set.source);
        for e in &set.examples {
            assert_ne!(
                e.perturbed_prediction, e.label,
                "{}: a kept example fools its source",
                set.source
            );
            let l2 = e
                .perturbed
                .iter()
                .zip(&e.clean)
                .map(|(p, c)| ((p - c) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!((l2 - e.l2).abs() < 1e-4, "{l2} vs {}", e.l2);
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("perturbations.svg")),
        "{files:?}"
    );
    let readme = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    for heading in [
        "targeted attack, failures dropped",
        "Controls at the BNNs' multiplier",
        "Multiplier sweep",
        "Learned weight σ",
    ] {
        assert!(readme.contains(heading), "code report lacks {heading:?}");
    }
    let text_dir = tempfile::tempdir().unwrap();
    let mut as_text = first.clone();
    as_text["protocol"] = Value::Null;
    bayes_robust::report::render_with(&as_text, &paper, Some(&first), text_dir.path()).unwrap();
    let readme = std::fs::read_to_string(text_dir.path().join("README.md")).unwrap();
    for needle in [
        "Where does the margin come from?",
        "(b) authors' code, BNN ×1.5 vs deterministic ×3",
        "(c) authors' code, both ×1.5",
        "(d) BNN rho_init=-30",
        "What the numbers say",
    ] {
        assert!(readme.contains(needle), "margin section lacks {needle:?}");
    }

    let second = reproduce_code(&cfg, Multipliers::CODE, CodeBudget::AsWritten).unwrap();
    assert_eq!(computed(&second), [0, 0, 0]);
    assert_eq!(first["sweep"], second["sweep"]);
    assert_eq!(first["table4_pruning"], second["table4_pruning"]);
    assert_eq!(first["per_example_files"], serde_json::json!([]));

    // Every trained model's validation curve, as its checkpoint recorded it, and the
    // report's training-curve figure with the controls in a panel of their own.
    let rows = first["models"].as_array().unwrap();
    for m in rows {
        let curve = m["validation_curve"].as_array().unwrap();
        assert_eq!(
            curve.len() as u64,
            m["epochs_run"].as_u64().unwrap(),
            "{}",
            m["name"]
        );
        let best = m["best_epoch"].as_u64().unwrap() as usize;
        assert_eq!(
            curve[best - 1],
            m["final_validation_accuracy"],
            "{}",
            m["name"]
        );
    }
    let controls = rows.iter().filter(|m| m["group"] == "control").count();
    assert_eq!(controls, 1 + cfg.profile.code.ensemble_members);
    assert!(
        files.iter().any(|f| f.ends_with("training_curves.svg")),
        "{files:?}"
    );
    let curves = std::fs::read_to_string(out.path().join("training_curves.svg")).unwrap();
    let texts = common::svg_texts(&curves);
    for needle in [
        "controls FC-100-100-10 (BNN recipe)",
        "BNN's init",
        "Glorot init 1",
    ] {
        assert!(
            texts.iter().any(|t| t == needle),
            "no {needle:?}: {texts:?}"
        );
    }

    // `--per-example` on the same cache adds one counts job per sweep and nothing else;
    // its files reproduce every sweep cell and each set's success and distortion.
    let pe_out = tempfile::tempdir().unwrap();
    let pe_cfg = ReproduceConfig {
        out_dir: pe_out.path().to_owned(),
        per_example: true,
        ..cfg.clone()
    };
    let pe_plan = code_plan(&pe_cfg, CodeBudget::AsWritten, Multipliers::CODE).unwrap();
    assert_eq!(pe_plan.jobs.len(), plan.jobs.len() + models.len());
    let drained = run_code_plan(CodeRunSpec {
        cfg: &pe_cfg,
        ..run
    })
    .unwrap();
    assert_eq!(drained.computed, models.len());
    let with = reproduce_code(&pe_cfg, Multipliers::CODE, CodeBudget::AsWritten).unwrap();
    assert_eq!(with["sweep"], first["sweep"]);
    assert_code_per_example(&with, pe_out.path());

    // The trained-to-accuracy variant on the same cache: every model is new (stacked
    // grids, longer budgets), so are its sets and evaluations; nothing of the
    // as-written run is recomputed or changed.
    let trained_out = tempfile::tempdir().unwrap();
    let trained_cfg = ReproduceConfig {
        out_dir: trained_out.path().to_owned(),
        ..cfg.clone()
    };
    // Its plan trains each stacked grid as one job that makes all its members.
    let trained_plan = code_plan(
        &trained_cfg,
        CodeBudget::TrainedToAccuracy,
        Multipliers::CODE,
    )
    .unwrap();
    let outputs = trained_plan.jobs.iter().flat_map(|j| j.outputs()).count();
    assert_eq!(outputs, 26 + 12 + 31);
    assert_eq!(
        trained_plan.jobs.len(),
        6 + 12 + 31,
        "3 source grids, λ, BNN, controls; the sets; the evaluations but the noise controls'"
    );
    let drained = run_code_plan(CodeRunSpec {
        cfg: &trained_cfg,
        budget: CodeBudget::TrainedToAccuracy,
        mult: Multipliers::CODE,
    })
    .unwrap();
    assert_eq!(drained.computed, trained_plan.jobs.len() + 2);
    let trained = reproduce_code(
        &trained_cfg,
        Multipliers::CODE,
        CodeBudget::TrainedToAccuracy,
    )
    .unwrap();
    assert_eq!(computed(&trained), [0, 0, 0]);
    assert_eq!(trained["budget"], "trained-to-accuracy");
    let budget = &cfg.profile.code.trained;
    let rows: Vec<TrainingRow> =
        serde_json::from_value(trained["training"]["models"].clone()).unwrap();
    assert_eq!(rows.len(), 26);
    for r in &rows {
        assert!(
            r.epochs_run <= r.max_epochs && r.best_epoch <= r.epochs_run,
            "{r:?}"
        );
        assert!((0.0..=100.0).contains(&r.test), "{r:?}");
        if r.name.starts_with("bnn/") {
            assert_eq!(
                (r.epochs_run, r.test_draws),
                (budget.bnn_epochs, 100),
                "{r:?}"
            );
        }
        if r.name.starts_with("det/") {
            assert_eq!(r.max_epochs, budget.det_epochs, "{r:?}");
        }
    }
    let as_written_rows: Vec<TrainingRow> =
        serde_json::from_value(first["training"]["models"].clone()).unwrap();
    assert!(as_written_rows.iter().all(|r| !r.stopped_early()));
    let again = reproduce_code(&cfg, Multipliers::CODE, CodeBudget::AsWritten).unwrap();
    assert_eq!(computed(&again), [0, 0, 0]);
    assert_eq!(first["sweep"], again["sweep"]);

    // The text report's margin section with both variants side by side, and the
    // trained variant's own report with its training table.
    let both = tempfile::tempdir().unwrap();
    bayes_robust::report::render_with_variants(&as_text, &paper, &[&first, &trained], both.path())
        .unwrap();
    let readme = std::fs::read_to_string(both.path().join("README.md")).unwrap();
    for needle in [
        "paper / text / code, as written / code, trained to accuracy",
        "| comparison | code, as written | code, trained to accuracy |",
        "**Authors' code, trained to accuracy**",
        "Training the models as far as the authors' were changes the code protocol's margin by",
    ] {
        assert!(readme.contains(needle), "margin section lacks {needle:?}");
    }
    bayes_robust::report::render(&trained, &paper, trained_out.path()).unwrap();
    let readme = std::fs::read_to_string(trained_out.path().join("README.md")).unwrap();
    for needle in [
        "## Training budget and accuracy reached",
        "Budget trained to accuracy",
        "| bnn/rho=-2 |",
        "against the notebooks' printed 98.18%",
    ] {
        assert!(readme.contains(needle), "trained report lacks {needle:?}");
    }
}

/// A code run's per-example files reproduce every sweep cell (Tables 1–2 among them),
/// each set's kept count and mean distortion; docs/per_example_code.py (the project
/// venv's numpy) gets results.json's Table 2 cell and best-BNN margin.
fn assert_code_per_example(r: &Value, dir: &std::path::Path) {
    assert_eq!(
        r["per_example_files"],
        serde_json::json!(["per_example.npz", "per_example.json"])
    );
    let index: CodePerExampleIndex =
        serde_json::from_str(&std::fs::read_to_string(dir.join("per_example.json")).unwrap())
            .unwrap();
    let arrays = Tensor::read_npz(dir.join("per_example.npz")).unwrap();
    let get = |name: &str| {
        arrays
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in per_example.npz"))
            .1
            .to_kind(Kind::Double)
    };
    let (correct, runs) = (get("correct"), get("runs"));
    let sweep = r["sweep"]["models"].as_array().unwrap();
    let ms: Vec<f64> = serde_json::from_value(r["sweep"]["multipliers"].clone()).unwrap();
    assert_eq!(index.models.len(), sweep.len());
    assert_eq!(index.splits.len(), 2 + 12 * ms.len());
    let columns = index.splits.last().unwrap().end as i64;
    assert_eq!(correct.size(), [sweep.len() as i64, columns]);
    assert_eq!(get("labels").size(), [columns]);
    for (m, (e, row)) in index.models.iter().zip(sweep).enumerate() {
        assert_eq!(e.name, row["name"].as_str().unwrap());
        let runs_m = runs.double_value(&[m as i64]);
        for s in &index.splits {
            let cols = correct
                .get(m as i64)
                .narrow(0, s.start as i64, (s.end - s.start) as i64);
            let ours = 100.0 * cols.mean(Kind::Double).double_value(&[]) / runs_m;
            let cell = match (s.set, s.multiplier) {
                (Some(k), Some(mult)) => {
                    let mi = ms.iter().position(|x| *x == mult).unwrap();
                    &row["sets"][k][mi]
                }
                _ => &row[format!("clean_{}", s.name)],
            };
            let want = cell["mean"].as_f64().unwrap();
            assert!(
                (ours - want).abs() < 1e-4,
                "{} {}: {ours} vs {want}",
                e.name,
                s.name
            );
        }
    }
    let (success, rms) = (get("set_success"), get("set_rms"));
    for (k, set) in r["perturbation_sets"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let kept = success.get(k as i64);
        assert_eq!(
            kept.sum(Kind::Double).double_value(&[]),
            set["n"].as_f64().unwrap()
        );
        let mean = (rms.get(k as i64) * &kept)
            .sum(Kind::Double)
            .double_value(&[])
            / set["n"].as_f64().unwrap();
        let want = set["mean_distortion"].as_f64().unwrap();
        assert!((mean - want).abs() < 1e-5, "{set}: {mean} vs {want}");
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    common::assert_python_example(r, root, "docs/per_example_code.py", dir);
}

/// The trained-to-accuracy variant changes the training budgets and nothing else: the
/// same models (names, specs, order), the same recipes but for epochs and patience,
/// and the same attack and evaluation budget.
#[test]
fn the_trained_variant_differs_from_the_as_written_one_only_in_training_budgets() {
    for cp in [CodeProfile::paper(), CodeProfile::quick()] {
        let written = training_plan(&cp, CodeBudget::AsWritten);
        let trained = training_plan(&cp, CodeBudget::TrainedToAccuracy);
        assert_eq!(written.len(), trained.len());
        for (w, t) in written.iter().zip(&trained) {
            assert_eq!((&w.name, &w.label, &w.spec), (&t.name, &t.label, &t.spec));
            let reset = bayes_robust::train::Recipe {
                max_epochs: w.recipe.max_epochs,
                patience: w.recipe.patience,
                ..t.recipe.clone()
            };
            assert_eq!(reset, w.recipe, "{}", w.name);
            assert!(t.recipe.max_epochs >= w.recipe.max_epochs, "{}", w.name);
            assert!(w.family.is_none() && t.family.is_some(), "{}", w.name);
        }
        // Non-Bayesian nets stop on validation; BNNs and controls run their loop.
        for t in &trained {
            let det_recipe = t.recipe.batch_size == cp.det_batch;
            assert_eq!(t.recipe.patience.is_some(), det_recipe, "{}", t.name);
        }
        assert_eq!(
            trained[trained.len() - 1].recipe.max_epochs,
            cp.trained.bnn_epochs
        );
        let t = cp.with_budget(CodeBudget::TrainedToAccuracy);
        let reset = CodeProfile {
            source_epochs: cp.source_epochs.clone(),
            det_epochs: cp.det_epochs,
            det_patience: cp.det_patience,
            bnn_epochs: cp.bnn_epochs,
            ..t.clone()
        };
        assert_eq!(reset, cp, "only the training budgets may differ");
        assert_ne!(t, cp);
    }
}

#[test]
fn prune_modes_differ_in_what_they_rank_together() {
    let _g = common::torch_rng_lock();
    let (_vs, mut bnn) = small_bnn(11);
    let n_weights: usize = bnn.layers.iter().map(|l| l.mu_w.numel()).sum();
    let global = bnn.prune_with(PruneMode::Global, 0.5).unwrap();
    assert_eq!(
        global,
        n_weights / 2,
        "global: ⌊p·n⌋ over all weight matrices"
    );
    assert!(
        bnn.layers.iter().all(|l| l.mask_b.is_none()),
        "global keeps biases"
    );
    let per_tensor = bnn.prune_with(PruneMode::PerTensor, 0.5).unwrap();
    let expected: usize = bnn
        .layers
        .iter()
        .flat_map(|l| [l.mu_w.numel() / 2, l.mu_b.numel() / 2])
        .sum();
    assert_eq!(per_tensor, expected);
    // The last layer (7·10 weights) loses exactly half its weights per tensor, which
    // the global ranking only does by chance.
    let last = bnn.layers.last().unwrap();
    let kept = last
        .mask_w
        .as_ref()
        .unwrap()
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert_eq!(kept, 35);
}

/// The code protocol's model and attack keys of the paper and quick profiles, both
/// budgets, against `fixtures/golden-keys/code-plans.txt` (made from the code before the
/// keys moved into `experiment::keys`); `BAYES_ROBUST_BLESS_KEYS=1` rewrites it. The
/// committed reports/paper-code models are all in today's paper plan.
#[test]
fn the_code_protocols_model_and_attack_keys_keep_their_golden_ids() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let golden = root.join("fixtures/golden-keys/code-plans.txt");
    let mut ours = String::new();
    let mut paper_as_written = Vec::new();
    for profile in ["paper", "quick"] {
        for budget in [CodeBudget::AsWritten, CodeBudget::TrainedToAccuracy] {
            let p = Profile::by_name(profile).unwrap();
            for k in planned_keys(&p, bayes_robust::data::Dataset::Mnist, 20201218, budget) {
                ours += &format!("{profile}{} {}\n", budget.dir_suffix(), k.id);
                if profile == "paper" && budget == CodeBudget::AsWritten {
                    paper_as_written.push(k.id);
                }
            }
        }
    }
    if std::env::var_os("BAYES_ROBUST_BLESS_KEYS").is_some() {
        std::fs::write(&golden, &ours).unwrap();
    }
    let expected =
        std::fs::read_to_string(&golden).unwrap_or_else(|e| panic!("{}: {e}", golden.display()));
    assert_eq!(ours, expected, "the code protocol's keys changed");
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("reports/paper-code/results.json")).unwrap(),
    )
    .unwrap();
    let models = committed["models"].as_array().unwrap();
    assert!(models.len() > 20);
    for m in models {
        let key = m["key"].as_str().unwrap();
        assert!(
            paper_as_written.iter().any(|k| k == key),
            "{key} is not in the paper plan"
        );
    }
}

/// The evaluation multipliers name the evaluations' keys (so `run --workers` passes them
/// to every worker), and nothing else: the models and targeted sets are the same.
#[test]
fn the_multipliers_change_the_evaluations_keys_only() {
    let runs = tempfile::tempdir().unwrap();
    let cfg = common::quick_config(runs.path(), runs.path(), 1);
    let ids = |mult: Multipliers, kind: JobKind| -> Vec<String> {
        code_plan(&cfg, CodeBudget::AsWritten, mult)
            .unwrap()
            .jobs
            .iter()
            .filter(|j| j.kind == kind)
            .map(|j| j.key.id.clone())
            .collect()
    };
    let other = Multipliers { bnn: 2.5, det: 5.0 };
    for kind in [JobKind::TrainModel, JobKind::TargetedSet] {
        assert_eq!(ids(Multipliers::CODE, kind), ids(other, kind));
    }
    let (code, moved) = (
        ids(Multipliers::CODE, JobKind::Evaluation),
        ids(other, JobKind::Evaluation),
    );
    assert_eq!(code.len(), moved.len());
    // The training table does not depend on them; every sweep (whose grid gains 2.5
    // and 5) and Tables 3 and 4 (at the BNNs' multiplier) do.
    let same: Vec<&String> = code.iter().filter(|k| moved.contains(k)).collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert!(same[0].starts_with("code-training-accuracy"));
    // The text protocol's ×1 for both is already in the quick sweep's grid: only Tables
    // 3 and 4 move.
    let text = ids(Multipliers::TEXT, JobKind::Evaluation);
    assert_eq!(code.iter().filter(|k| !text.contains(k)).count(), 2);
}
