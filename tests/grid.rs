//! Stacked-grid training against training one by one (issue 6): the same member seeds
//! give the same weights where the weight noise has no effect, members stop early on
//! their own, and BNN members are equal in distribution to one-by-one BNNs.

mod common;

use bayes_robust::model::checkpoint::ModelSpec;
use bayes_robust::seed::SeedTree;
use bayes_robust::train::grid::{GridMember, fit_grid};
use bayes_robust::train::{
    self, PenalisedMlp, Recipe, TrainOptions, TrainOutcome, TrainedModel, Trainee,
};
use statrs::distribution::{ContinuousCDF, StudentsT};
use tch::Device;

fn member(spec: ModelSpec, name: &str) -> GridMember {
    GridMember {
        spec,
        seeds: SeedTree::new(7).child(name),
    }
}

/// The one-by-one path: `train::fit` on a model initialised from the member's seeds.
fn alone(m: &GridMember, recipe: &Recipe) -> (TrainedModel, TrainOutcome) {
    let splits = common::fixture_splits();
    let model = TrainedModel::init(&m.spec, Device::Cpu, &m.seeds);
    let outcome = match &model {
        TrainedModel::Mlp { vs, mlp, lambda } => train::fit(
            vs,
            &PenalisedMlp {
                mlp,
                lambda: *lambda,
            },
            &splits,
            recipe,
            &m.seeds,
            &TrainOptions::default(),
        ),
        TrainedModel::Bnn { vs, bnn } => {
            train::fit(vs, bnn, &splits, recipe, &m.seeds, &TrainOptions::default())
        }
    }
    .expect("one-by-one training");
    (model, outcome)
}

fn stacked(members: &[GridMember], recipe: &Recipe) -> Vec<(TrainedModel, TrainOutcome)> {
    fit_grid(
        members,
        &common::fixture_splits(),
        recipe,
        &SeedTree::new(7).child("grid"),
        Device::Cpu,
        &TrainOptions::default(),
    )
    .expect("grid training")
}

/// Largest |a − b| over every variable of two models with the same layout.
fn max_difference(a: &TrainedModel, b: &TrainedModel) -> f64 {
    common::sorted_variables(a)
        .iter()
        .zip(common::sorted_variables(b))
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, &nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn fixed_epochs(epochs: usize, lr: f64) -> Recipe {
    Recipe {
        lr,
        patience: None,
        ..Recipe::paper(epochs)
    }
}

#[test]
fn a_lambda_grid_matches_one_by_one_training() {
    let _guard = common::torch_rng_lock();
    tch::set_num_threads(1);
    let recipe = fixed_epochs(4, 0.05);
    let members = vec![
        member(common::mlp_spec(0.0), "det/lambda=0"),
        member(common::mlp_spec(1e-2), "det/lambda=1e-2"),
        member(common::mlp_spec(1.0), "det/lambda=1"),
    ];
    let grid = stacked(&members, &recipe);
    for (m, (model, outcome)) in members.iter().zip(&grid) {
        let (reference, ref_outcome) = alone(m, &recipe);
        let diff = max_difference(model, &reference);
        // Only float rounding separates a batched product from a plain one.
        assert!(
            diff < 1e-4,
            "{}: weights differ by {diff}",
            m.spec.describe()
        );
        assert_eq!(outcome.epochs_run, ref_outcome.epochs_run);
        for (a, b) in outcome.history.iter().zip(&ref_outcome.history) {
            assert!(
                (a.loss - b.loss).abs() < 1e-4,
                "loss {} vs {}",
                a.loss,
                b.loss
            );
            assert!((a.validation_accuracy - b.validation_accuracy).abs() < 1e-2);
        }
    }
    // The penalty is each member's own: a larger λ ends with smaller weights.
    let norm = |m: &TrainedModel| {
        common::sorted_variables(m)
            .iter()
            .filter(|(n, _)| n.ends_with("weight"))
            .map(|(_, t)| t.square().sum(tch::Kind::Double).double_value(&[]))
            .sum::<f64>()
    };
    assert!(norm(&grid[2].0) < norm(&grid[1].0) && norm(&grid[1].0) < norm(&grid[0].0));
}

#[test]
fn a_noise_free_bnn_grid_matches_one_by_one_training() {
    // ρ = −30 gives σ ≈ 1e-13: the draws are μ to float precision, so the grid's noise
    // stream, the one thing it does not share with one-by-one training, has no effect.
    // The prior's σ2 = e^-7 spike gives μ near 0 a curvature of about 1/(σ2² n_train):
    // lr 1e-3 keeps SGD stable there, where a larger step turns float rounding chaotic.
    let _guard = common::torch_rng_lock();
    tch::set_num_threads(1);
    let recipe = fixed_epochs(3, 1e-3);
    let members = vec![
        member(common::bnn_spec(-30.0), "bnn/a"),
        member(common::bnn_spec(-30.0), "bnn/b"),
    ];
    let grid = stacked(&members, &recipe);
    for (m, (model, outcome)) in members.iter().zip(&grid) {
        let (reference, ref_outcome) = alone(m, &recipe);
        let diff = max_difference(model, &reference);
        assert!(diff < 1e-4, "weights differ by {diff}");
        for (a, b) in outcome.history.iter().zip(&ref_outcome.history) {
            assert!((a.validation_accuracy - b.validation_accuracy).abs() < 1e-2);
        }
    }
    // Different member seeds: different initialisation and data order.
    assert!(max_difference(&grid[0].0, &grid[1].0) > 1e-2);
}

#[test]
fn each_member_stops_early_on_its_own_and_keeps_its_best_weights() {
    let _guard = common::torch_rng_lock();
    tch::set_num_threads(1);
    let splits = common::fixture_splits();
    let recipe = Recipe {
        lr: 0.2,
        patience: Some(1),
        ..Recipe::paper(12)
    };
    let members = vec![
        member(common::mlp_spec(0.0), "det/a"),
        member(common::mlp_spec(1.0), "det/b"),
        member(common::mlp_spec(1e-4), "det/c"),
    ];
    let grid = stacked(&members, &recipe);
    let mut stops = Vec::new();
    for (model, outcome) in &grid {
        let accs: Vec<f64> = outcome
            .history
            .iter()
            .map(|r| r.validation_accuracy)
            .collect();
        let best = accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let first_best = accs.iter().position(|a| *a == best).unwrap() + 1;
        assert_eq!(outcome.best_epoch, first_best);
        assert_eq!(outcome.best_validation_accuracy, best);
        // Patience 1: it stops the epoch after its last improvement, or at the end.
        assert!(outcome.epochs_run == first_best + 1 || outcome.epochs_run == 12);
        // The weights it returns are those of its best epoch.
        let TrainedModel::Mlp { mlp, lambda, .. } = model else {
            panic!("an MLP")
        };
        let again = PenalisedMlp {
            mlp,
            lambda: *lambda,
        }
        .validation_accuracy(&splits.validation, &recipe);
        assert!((again - best).abs() < 1e-6, "{again} vs {best}");
        stops.push(outcome.epochs_run);
    }
    assert!(
        stops.iter().any(|s| *s != stops[0]),
        "members stopped together ({stops:?}): the test does not exercise per-member stopping"
    );
}

/// Two-sided p-value of Welch's t-test.
fn welch_p(a: &[f64], b: &[f64]) -> f64 {
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
            n,
        )
    };
    let ((ma, va, na), (mb, vb, nb)) = (stats(a), stats(b));
    let se2 = va / na + vb / nb;
    let t = (ma - mb) / se2.sqrt();
    let df = se2.powi(2) / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    2.0 * (1.0 - StudentsT::new(0.0, 1.0, df).unwrap().cdf(t.abs()))
}

#[test]
fn bnn_members_are_equal_in_distribution_to_one_by_one_bnns() {
    // With σ = softplus(−3) the noise matters and the streams differ, so compare the
    // distributions over 8 seeds of the final ELBO loss (whose KL part would show any
    // mis-weighting of the stacked KL) and validation accuracy.
    let _guard = common::torch_rng_lock();
    tch::set_num_threads(1);
    let recipe = fixed_epochs(3, 0.05);
    let members: Vec<GridMember> = (0..8)
        .map(|s| member(common::bnn_spec(-3.0), &format!("bnn/seed={s}")))
        .collect();
    let grid = stacked(&members, &recipe);
    let last = |o: &TrainOutcome| o.history.last().cloned().unwrap();
    let (mut g_loss, mut g_acc, mut a_loss, mut a_acc) = (vec![], vec![], vec![], vec![]);
    for (m, (_, outcome)) in members.iter().zip(&grid) {
        let (_, reference) = alone(m, &recipe);
        g_loss.push(last(outcome).loss);
        g_acc.push(last(outcome).validation_accuracy);
        a_loss.push(last(&reference).loss);
        a_acc.push(last(&reference).validation_accuracy);
    }
    let (p_loss, p_acc) = (welch_p(&g_loss, &a_loss), welch_p(&g_acc, &a_acc));
    assert!(
        p_loss > 0.01 && p_acc > 0.01,
        "grid {g_loss:?} {g_acc:?} vs alone {a_loss:?} {a_acc:?}: p = {p_loss}, {p_acc}"
    );
}

#[test]
fn a_mixed_grid_is_refused_naming_the_member() {
    let members = vec![
        member(common::mlp_spec(0.0), "a"),
        member(common::bnn_spec(-3.0), "b"),
    ];
    let err = fit_grid(
        &members,
        &common::fixture_splits(),
        &fixed_epochs(1, 0.05),
        &SeedTree::new(1),
        Device::Cpu,
        &TrainOptions::default(),
    )
    .err()
    .expect("a mixed grid fails")
    .to_string();
    assert!(err.contains("member 1") && err.contains("bnn"), "{err}");
}
