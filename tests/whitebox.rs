//! The white-box stage's measures: gradient agreement across weight draws and the
//! gradient-masking checks.

mod common;

use bayes_robust::experiment::whitebox::{gradient_agreement, sanity_checks};
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

fn curve(model: &str, linf: &[f64], l2: &[f64]) -> serde_json::Value {
    let cell = |m: &f64| json!({"mean": m, "ci95": [m - 1.0, m + 1.0], "runs": 100});
    json!({
        "model": model,
        "linf": {"accuracy": linf.iter().map(cell).collect::<Vec<_>>()},
        "l2": {"accuracy": l2.iter().map(cell).collect::<Vec<_>>()},
    })
}

#[test]
fn the_checks_flag_rising_curves_and_attacks_that_never_reach_zero() {
    let curves = [
        curve("sound", &[90.0, 40.0, 1.0], &[90.0, 50.0, 0.0]),
        curve("masked", &[90.0, 40.0, 60.0], &[90.0, 80.0, 30.0]),
        curve("BNN, EOT k=10", &[90.0, 30.0, 2.0], &[90.0, 50.0, 3.0]),
        curve("BNN, EOT k=50", &[90.0, 20.0, 2.0], &[90.0, 50.5, 3.0]),
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
        curve(
            "BNN rho_init=-3, ensemble of 100, EOT k=10",
            &[90.0, 30.0, 2.0],
            &[90.0, 50.0, 3.0],
        ),
        curve(
            "BNN rho_init=-3, ensemble of 100, EOT k=50",
            &[90.0, 30.5, 2.0],
            &[90.0, 50.5, 3.0],
        ),
        curve(
            "BNN rho_init=-2, ensemble of 100, EOT k=10",
            &[80.0, 10.0, 0.0],
            &[80.0, 20.0, 0.0],
        ),
        curve(
            "BNN rho_init=-1.5, ensemble of 100, EOT k=10",
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
