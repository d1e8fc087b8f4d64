//! Training on the fixture: determinism, learning, early stopping, checkpoints.

mod common;

use std::path::Path;

use bayes_robust::model::checkpoint::{self, CheckpointError, ModelSpec};
use bayes_robust::seed::SeedTree;
use bayes_robust::train::{self, PenalisedMlp, Recipe, TrainOptions, TrainedModel, Trainee};
use tch::Device;

fn recipe(epochs: usize) -> Recipe {
    Recipe {
        max_epochs: epochs,
        ..Recipe::paper(epochs)
    }
}

fn train_on_fixture(
    spec: &ModelSpec,
    recipe: &Recipe,
    master: u64,
    dir: &Path,
) -> (TrainedModel, checkpoint::CheckpointMeta) {
    tch::set_num_threads(1);
    let splits = common::fixture_splits();
    let seeds = SeedTree::new(master).child("test");
    train::train_and_save(
        spec,
        &splits,
        recipe,
        &seeds,
        Device::Cpu,
        &dir.join("model"),
        &TrainOptions::default(),
    )
    .expect("training succeeds")
}

fn same_weights(a: &TrainedModel, b: &TrainedModel) -> bool {
    common::sorted_variables(a)
        .iter()
        .zip(common::sorted_variables(b))
        .all(|((n1, t1), (n2, t2))| *n1 == n2 && t1.equal(&t2))
}

#[test]
fn the_same_seed_trains_bitwise_identical_weights_and_another_does_not() {
    let _g = common::torch_rng_lock();
    for spec in [common::bnn_spec(-3.0), common::mlp_spec(1e-2)] {
        let d = tempfile::tempdir().unwrap();
        let (a, _) = train_on_fixture(&spec, &recipe(2), 1, &d.path().join("a"));
        let (b, _) = train_on_fixture(&spec, &recipe(2), 1, &d.path().join("b"));
        let (c, _) = train_on_fixture(&spec, &recipe(2), 2, &d.path().join("c"));
        assert!(
            same_weights(&a, &b),
            "{}: same seed, different weights",
            spec.describe()
        );
        assert!(
            !same_weights(&a, &c),
            "{}: different seeds, same weights",
            spec.describe()
        );
    }
}

#[test]
fn training_learns_the_fixture() {
    let _g = common::torch_rng_lock();
    let d = tempfile::tempdir().unwrap();
    let (_, mlp) = train_on_fixture(&common::mlp_spec(0.0), &recipe(8), 3, &d.path().join("mlp"));
    // Chance is 10%; the paper's slow recipe reaches about 80% in 8 short epochs.
    assert!(
        mlp.best_validation_accuracy > 0.75,
        "mlp validation {}",
        mlp.best_validation_accuracy
    );
    let (_, bnn) = train_on_fixture(
        &common::bnn_spec(-4.0),
        &recipe(8),
        3,
        &d.path().join("bnn"),
    );
    assert!(
        bnn.best_validation_accuracy > 0.5,
        "bnn validation {}",
        bnn.best_validation_accuracy
    );
    let history: Vec<train::EpochRecord> = serde_json::from_value(bnn.history.clone()).unwrap();
    assert!(
        history.iter().all(|r| r.kl.is_some_and(|k| k > 0.0)),
        "a BNN logs its KL part"
    );
    assert!(history.last().unwrap().loss < history[0].loss, "loss falls");
}

#[test]
fn early_stopping_keeps_the_best_weights() {
    let _g = common::torch_rng_lock();
    let d = tempfile::tempdir().unwrap();
    // lr 0.5 oscillates, so validation accuracy peaks early and patience 2 ends it.
    let r = Recipe {
        lr: 0.5,
        patience: Some(2),
        ..recipe(40)
    };
    let (model, meta) = train_on_fixture(&common::mlp_spec(0.0), &r, 4, d.path());
    assert!(meta.epochs_run < 40, "never stopped");
    assert_eq!(meta.epochs_run, meta.best_epoch + 2);
    let TrainedModel::Mlp { mlp, .. } = &model else {
        panic!("not an mlp")
    };
    let splits = common::fixture_splits();
    let acc = PenalisedMlp { mlp, lambda: 0.0 }.validation_accuracy(&splits.validation, &r);
    assert_eq!(
        acc, meta.best_validation_accuracy,
        "restored weights are not the best epoch's"
    );
}

#[test]
fn a_larger_penalty_gives_smaller_weights() {
    let _g = common::torch_rng_lock();
    let d = tempfile::tempdir().unwrap();
    let norm = |lambda: f64, dir: &str| {
        let r = Recipe {
            lr: 0.05,
            patience: None,
            ..recipe(10)
        };
        let (m, _) = train_on_fixture(&common::mlp_spec(lambda), &r, 5, &d.path().join(dir));
        let TrainedModel::Mlp { mlp, .. } = m else {
            panic!()
        };
        mlp.l2_penalty().double_value(&[])
    };
    assert!(norm(1.0, "strong") < 0.8 * norm(0.0, "none"));
}

#[test]
fn checkpoints_round_trip_and_fail_clearly() {
    let _g = common::torch_rng_lock();
    let d = tempfile::tempdir().unwrap();
    let spec = common::bnn_spec(-3.0);
    let (model, meta) = train_on_fixture(&spec, &recipe(1), 6, d.path());
    let stem = d.path().join("model");
    let (loaded, meta2) = TrainedModel::load(&spec, Device::Cpu, &stem).expect("loads");
    assert_eq!(meta, meta2);
    assert!(same_weights(&model, &loaded));
    assert_eq!(meta.epochs_run, 1);
    assert_eq!(meta.master_seed, 6);

    // Mismatched: another rho_init, or another kind.
    for other in [common::bnn_spec(-2.0), common::mlp_spec(0.0)] {
        match TrainedModel::load(&other, Device::Cpu, &stem) {
            Err(CheckpointError::Mismatch { .. }) => {}
            Err(e) => panic!("expected a mismatch, got {e}"),
            Ok(_) => panic!("a mismatched checkpoint loaded"),
        }
    }
    // Missing.
    match TrainedModel::load(&spec, Device::Cpu, &d.path().join("nothing")) {
        Err(e @ CheckpointError::Missing { .. }) => assert!(e.to_string().contains("nothing.json")),
        Err(e) => panic!("expected missing, got {e}"),
        Ok(_) => panic!("loaded nothing"),
    }
    // Truncated weights: their SHA-256 is not the sidecar's.
    let weights_path = stem.with_extension("safetensors");
    let bytes = std::fs::read(&weights_path).unwrap();
    std::fs::write(&weights_path, &bytes[..bytes.len() / 2]).unwrap();
    match TrainedModel::load(&spec, Device::Cpu, &stem) {
        Err(e @ CheckpointError::Corrupt { .. }) => {
            assert!(e.to_string().contains("model.safetensors"))
        }
        Err(e) => panic!("expected corrupt weights, got {e}"),
        Ok(_) => panic!("truncated weights loaded"),
    }
    // Without a recorded hash (a checkpoint written elsewhere), the same file is still
    // an error naming it, from the reader.
    let sidecar = stem.with_extension("json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("weights_sha256");
    std::fs::write(&sidecar, serde_json::to_vec(&v).unwrap()).unwrap();
    match TrainedModel::load(&spec, Device::Cpu, &stem) {
        Err(e @ CheckpointError::BadWeights { .. }) => {
            assert!(e.to_string().contains("model.safetensors"))
        }
        Err(e) => panic!("expected bad weights, got {e}"),
        Ok(_) => panic!("truncated weights loaded"),
    }
    // Corrupt sidecar.
    std::fs::write(stem.with_extension("json"), b"{ not json").unwrap();
    assert!(matches!(
        TrainedModel::load(&spec, Device::Cpu, &stem),
        Err(CheckpointError::BadSidecar { .. })
    ));
}

/// Every variable of `ours` within 1e-6 of its largest entry in `reference`.
fn assert_variables_close(
    ours: &std::collections::HashMap<String, tch::Tensor>,
    reference: &std::collections::HashMap<String, tch::Tensor>,
    what: &str,
) {
    for (name, r) in reference {
        let gap = (&ours[name] - r).abs().max().double_value(&[]);
        let scale = r.abs().max().double_value(&[]);
        assert!(
            gap <= 1e-6 * scale,
            "{name}: {gap:e} from {what} (scale {scale})"
        );
    }
}

/// SGD at lr 0.05 with the mean loss over 30 minibatches of 16 fixture images.
fn thirty_fixture_batches() -> (
    Recipe,
    bayes_robust::train::LossScale,
    Vec<(tch::Tensor, tch::Tensor)>,
) {
    let splits = common::fixture_splits();
    let recipe = Recipe {
        lr: 0.05,
        ..recipe(1)
    };
    let scale = bayes_robust::train::LossScale {
        reduction: bayes_robust::train::Reduction::Mean,
        n_train: splits.train.len(),
        n_batches: 30,
    };
    let batches = (0..30)
        .map(|i| {
            let idx = tch::Tensor::arange_start(
                (i * 16) % 400,
                (i * 16) % 400 + 16,
                (tch::Kind::Int64, Device::Cpu),
            );
            (
                splits.train.images.index_select(0, &idx),
                splits.train.labels.index_select(0, &idx),
            )
        })
        .collect();
    (recipe, scale, batches)
}

/// `AutogradSgd` (gradients returned by the backward pass, momentum applied by two
/// in-place passes) takes the steps of tch's own SGD with momentum, the reference:
///
/// ```text
/// opt = nn::Sgd { momentum: 0.95, dampening: 0, wd: 0, nesterov: false }.build(vs, lr)
/// opt.backward_step(&loss)   // v ← 0.95·v + g;  p ← p − lr·v
/// ```
///
/// on a penalised FC-20-10 (λ = 0.01, so the penalty's gradient is in it) over 30
/// minibatches of the fixture.
#[test]
fn autograd_sgd_takes_the_steps_of_tchs_sgd() {
    use bayes_robust::train::AutogradSgd;
    use tch::nn::{self, OptimizerConfig};

    let _guard = common::torch_rng_lock();
    let (recipe, scale, batches) = thirty_fixture_batches();
    let net = || {
        tch::manual_seed(3);
        common::untrained_mlp(&[20])
    };

    let (ours_vs, ours) = net();
    let penalised = PenalisedMlp {
        mlp: &ours,
        lambda: 0.01,
    };
    let mut stepper = AutogradSgd::boxed(&penalised, &ours_vs, &recipe, &scale);
    for (x, y) in &batches {
        let _ = stepper.step(x, y);
    }

    let (ref_vs, reference) = net();
    let reference_trainee = PenalisedMlp {
        mlp: &reference,
        lambda: 0.01,
    };
    let mut opt = nn::Sgd {
        momentum: recipe.momentum,
        dampening: 0.0,
        wd: 0.0,
        nesterov: false,
    }
    .build(&ref_vs, recipe.lr)
    .expect("tch SGD");
    for (x, y) in &batches {
        let (loss, _) = reference_trainee.batch_loss(x, y, &scale);
        opt.backward_step(&loss);
    }

    let ours = ours_vs.variables();
    assert_variables_close(&ours, &ref_vs.variables(), "tch's SGD");
    let (_init_vs, init) = net();
    let moved = (&ours["l0.weight"] - &init.layers[0].weight)
        .abs()
        .max()
        .double_value(&[]);
    assert!(
        moved > 1e-3,
        "30 steps barely moved the weights ({moved:e})"
    );
}

/// A penalised MLP's own stepper (`PenalisedSgd`: autograd through the cross-entropy
/// only, eq. 6's gradient 2λ/|l|·w added by hand, the penalty's value from dot
/// products) takes the steps, and records the losses, of autograd through the whole
/// loss, the reference:
///
/// ```text
/// loss = CE(mlp(x), y) + λ · Σ_l (w_l · w_l) / fan_out_l   // Mlp::l2_penalty, differentiated
/// grads = run_backward(loss, params);  AutogradSgd's momentum update
/// ```
///
/// on FC-20-10 over 30 minibatches, at λ = 0 and at λ = 0.5 (the penalty's gradient is
/// then about as large as the cross-entropy's).
#[test]
fn the_penalised_step_equals_autograd_through_the_penalty() {
    use bayes_robust::train::AutogradSgd;

    let _guard = common::torch_rng_lock();
    let (recipe, scale, batches) = thirty_fixture_batches();
    let mut unpenalised: Option<Vec<(String, tch::Tensor)>> = None;
    for lambda in [0.0, 0.5] {
        let run = |by_hand: bool| {
            tch::manual_seed(3);
            let (vs, mlp) = common::untrained_mlp(&[20]);
            let trainee = PenalisedMlp { mlp: &mlp, lambda };
            let mut stepper = if by_hand {
                trainee.stepper(&vs, &recipe, &scale)
            } else {
                AutogradSgd::boxed(&trainee, &vs, &recipe, &scale)
            };
            let losses: Vec<f64> = batches
                .iter()
                .map(|(x, y)| stepper.step(x, y).0.double_value(&[]))
                .collect();
            drop(stepper);
            (losses, vs.variables())
        };
        let ((hand_losses, hand), (auto_losses, auto)) = (run(true), run(false));
        for (step, (h, a)) in hand_losses.iter().zip(&auto_losses).enumerate() {
            assert!(
                (h - a).abs() <= 1e-6 * a.abs(),
                "lambda {lambda}, step {step}: loss {h} by hand, {a} through autograd"
            );
        }
        assert_variables_close(&hand, &auto, &format!("autograd's step at lambda {lambda}"));
        match &unpenalised {
            None => unpenalised = Some(hand.into_iter().collect()),
            Some(free) => {
                let apart = free
                    .iter()
                    .map(|(name, t)| (t - &hand[name]).abs().max().double_value(&[]))
                    .fold(0.0, f64::max);
                assert!(
                    apart > 1e-3,
                    "lambda {lambda} left the weights of lambda 0 ({apart:e})"
                );
            }
        }
    }
}
