//! The white-box stage's measures: gradient agreement across weight draws and the
//! gradient-masking checks.

mod common;

use bayes_robust::experiment::whitebox::{
    CurveTarget, TargetKind, gradient_agreement, sanity_checks, spsa_checks,
};
use bayes_robust::model::Arch;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use serde_json::json;
use tch::{Device, Kind, Tensor, nn};

fn bnn(rho_init: f64) -> (nn::VarStore, BayesMlp) {
    let vs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(
        &vs.root(),
        &BayesConfig {
            arch: Arch::new(&[30]),
            rho_init,
            ..BayesConfig::default()
        },
    );
    (vs, bnn)
}

#[test]
fn draws_of_a_zero_sigma_bnn_agree_fully_and_noisy_draws_do_not() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(11);
    let x = Tensor::rand([64, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let (_a, exact) = bnn(-200.0);
    let same = gradient_agreement(&exact, &x, &y, 8);
    assert!((same - 1.0).abs() < 1e-5, "σ = 0: {same}");
    let (_b, noisy) = bnn(2.0);
    let spread = gradient_agreement(&noisy, &x, &y, 8);
    assert!(spread < 0.9, "σ = softplus(2): {spread}");
    assert!(spread > 0.0);
}

fn cell(m: &f64) -> serde_json::Value {
    json!({"mean": m, "ci95": [m - 1.0, m + 1.0], "runs": 100})
}

/// A curve named `model` against the model keyed `key`, attacked as `kind`.
fn target_curve(
    model: &str,
    key: &str,
    kind: TargetKind,
    linf: &[f64],
    l2: &[f64],
) -> serde_json::Value {
    json!({
        "model": model,
        "target": CurveTarget { model_key: key.into(), kind },
        "linf": {"accuracy": linf.iter().map(cell).collect::<Vec<_>>(), "eps_pixels": [0.0, 8.0, 255.0]},
        "l2": {"accuracy": l2.iter().map(cell).collect::<Vec<_>>()},
    })
}

/// A deterministic net's curve (its model key is its name).
fn curve(model: &str, linf: &[f64], l2: &[f64]) -> serde_json::Value {
    target_curve(model, model, TargetKind::Deterministic, linf, l2)
}

/// The curve of BNN `key`'s ensemble attacked through EOT over `k` draws.
fn eot_curve(model: &str, key: &str, k: usize, linf: &[f64], l2: &[f64]) -> serde_json::Value {
    target_curve(model, key, TargetKind::Ensemble { k }, linf, l2)
}

#[test]
fn the_checks_flag_rising_curves_and_attacks_that_never_reach_zero() {
    let curves = [
        curve("sound", &[90.0, 40.0, 1.0], &[90.0, 50.0, 0.0]),
        curve("masked", &[90.0, 40.0, 60.0], &[90.0, 80.0, 30.0]),
        eot_curve(
            "BNN, EOT k=10",
            "bnn",
            10,
            &[90.0, 30.0, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        eot_curve(
            "BNN, EOT k=50",
            "bnn",
            50,
            &[90.0, 20.0, 2.0],
            &[90.0, 50.5, 3.0],
        ),
    ];
    let checks = sanity_checks(&curves);
    let failed: Vec<(String, String)> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| (c.model.clone(), c.check.clone()))
        .collect();
    let failed_models: Vec<&str> = failed.iter().map(|(m, _)| m.as_str()).collect();
    assert!(!failed_models.contains(&"sound"), "{failed:?}");
    // masked: L∞ rises (40 → 60) and neither norm reaches 5%.
    assert_eq!(
        failed_models.iter().filter(|m| **m == "masked").count(),
        3,
        "{failed:?}"
    );
    // k = 10 vs 50: L∞ differs by 10 points at one budget (CI ±1), L2 agrees.
    let eot: Vec<&(String, String)> = failed.iter().filter(|(m, _)| m.contains(" vs ")).collect();
    assert_eq!(eot.len(), 1, "{failed:?}");
    assert!(eot[0].1.starts_with("linf"));
}

#[test]
fn more_eot_samples_are_compared_within_each_bnn_only() {
    // The Table 3 BNN has k = 10 and 50; two other BNNs have k = 10 only, with curves
    // far from each other and from it. Comparing across BNNs would fail.
    let curves = [
        eot_curve(
            "BNN rho_init=-3, ensemble of 100, EOT k=10",
            "bnn_rho=-3",
            10,
            &[90.0, 30.0, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        eot_curve(
            "BNN rho_init=-3, ensemble of 100, EOT k=50",
            "bnn_rho=-3",
            50,
            &[90.0, 30.5, 2.0],
            &[90.0, 50.5, 3.0],
        ),
        eot_curve(
            "BNN rho_init=-2, ensemble of 100, EOT k=10",
            "bnn_rho=-2",
            10,
            &[80.0, 10.0, 0.0],
            &[80.0, 20.0, 0.0],
        ),
        eot_curve(
            "BNN rho_init=-1.5, ensemble of 100, EOT k=10",
            "bnn_rho=-1.5",
            10,
            &[60.0, 40.0, 4.0],
            &[60.0, 45.0, 4.0],
        ),
    ];
    let eot: Vec<_> = sanity_checks(&curves)
        .into_iter()
        .filter(|c| c.check.contains("more EOT samples"))
        .collect();
    assert_eq!(eot.len(), 2, "one per norm, for the ρ_init = −3 BNN alone");
    for c in &eot {
        assert_eq!(
            c.model,
            "BNN rho_init=-3, ensemble of 100, EOT k=10 vs BNN rho_init=-3, ensemble of 100, EOT k=50"
        );
        assert!(c.passed, "{}", c.detail);
    }
}

#[test]
fn curves_are_paired_by_their_target_not_by_their_name() {
    // The EOT curves are listed most samples first and named alike across BNNs; a
    // deterministic curve whose name looks like an EOT curve is not one.
    let curves = [
        eot_curve(
            "b, EOT k=50",
            "bnn_b",
            50,
            &[90.0, 20.0, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        eot_curve(
            "a, EOT k=50",
            "bnn_a",
            50,
            &[90.0, 30.0, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        eot_curve(
            "b, EOT k=10",
            "bnn_b",
            10,
            &[90.0, 20.5, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        eot_curve(
            "a, EOT k=10",
            "bnn_a",
            10,
            &[90.0, 30.5, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        curve("det, EOT k=3", &[90.0, 60.0, 0.0], &[90.0, 70.0, 0.0]),
    ];
    let eot: Vec<String> = sanity_checks(&curves)
        .into_iter()
        .filter(|c| c.check.starts_with("linf: more EOT samples"))
        .map(|c| c.model)
        .collect();
    assert_eq!(
        eot,
        ["b, EOT k=10 vs b, EOT k=50", "a, EOT k=10 vs a, EOT k=50"]
    );
}

#[test]
fn a_rerun_is_judged_against_the_main_curve_of_its_own_target() {
    // A rerun names the curve it doubles, but is paired through its target: two
    // targets share a name here and only the second matches the rerun.
    let mut rerun = curve(
        "net (twice the steps)",
        &[90.0, 10.0, 0.0],
        &[90.0, 20.0, 0.0],
    );
    rerun["target"] = json!(CurveTarget {
        model_key: "net-2".into(),
        kind: TargetKind::Deterministic
    });
    rerun["doubles"] = json!("net");
    let mut far = curve("net", &[90.0, 60.0, 0.0], &[90.0, 70.0, 0.0]);
    far["target"] = json!(CurveTarget {
        model_key: "net-1".into(),
        kind: TargetKind::Deterministic
    });
    let mut close = curve("net", &[90.0, 10.5, 0.0], &[90.0, 20.5, 0.0]);
    close["target"] = json!(CurveTarget {
        model_key: "net-2".into(),
        kind: TargetKind::Deterministic
    });
    let checks = sanity_checks(&[far, close, rerun]);
    let reruns: Vec<_> = checks
        .iter()
        .filter(|c| c.check.contains("twice the steps"))
        .collect();
    assert_eq!(reruns.len(), 2, "{checks:?}");
    assert!(reruns.iter().all(|c| c.passed), "{reruns:?}");
}

#[test]
fn spsa_is_compared_with_pgd_on_the_same_target() {
    let pgd = [
        eot_curve(
            "bnn, EOT k=10",
            "bnn",
            10,
            &[90.0, 40.0, 0.0],
            &[90.0, 50.0, 0.0],
        ),
        target_curve(
            "bnn, one draw",
            "bnn",
            TargetKind::SingleDraw,
            &[90.0, 5.0, 0.0],
            &[90.0, 5.0, 0.0],
        ),
    ];
    let spsa = |accuracy: f64| {
        json!({
            "model": "bnn, EOT k=10", "eps_pixels": 8.0, "accuracy": cell(&accuracy),
            "target": CurveTarget { model_key: "bnn".into(), kind: TargetKind::Ensemble { k: 10 } },
        })
    };
    let mut results = [spsa(39.5), spsa(20.0)];
    let checks = spsa_checks(&pgd, &mut results);
    assert_eq!(checks.len(), 2);
    assert!(checks[0].passed, "{:?}", checks[0]);
    assert!(
        !checks[1].passed,
        "SPSA 20% beats PGD's 40%: {:?}",
        checks[1]
    );
    assert_eq!(results[0]["pgd_accuracy"]["mean"], json!(40.0));
}
