//! The strength axis: budget readings, x + m·r, the min-norm attack's confidence κ, the
//! paper-matched interpolation and the matched-init control's initialisation.

mod common;

use bayes_robust::attack::budget::{at_strength, mean_distortion};
use bayes_robust::attack::{BudgetReading, MinNormAttack, clip_to_box, row_norms};
use bayes_robust::data::{IMAGE_DIM, INPUT_MAX};
use bayes_robust::experiment::strength::{StrengthError, matched_strength};
use bayes_robust::model::bayes::MixturePrior;
use bayes_robust::model::mlp::{Mlp, MlpConfig, MlpInit};
use proptest::prelude::*;
use tch::{Kind, Tensor};

/// Images in the box and perturbations r with x + r in the box, from libtorch's
/// generator seeded with `seed`; `scale` sets r's size.
fn images_and_perturbations(seed: i64, n: i64, scale: f64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let x = Tensor::rand([n, IMAGE_DIM as i64], (Kind::Float, tch::Device::Cpu)) * INPUT_MAX;
    let r = Tensor::randn([n, IMAGE_DIM as i64], (Kind::Float, tch::Device::Cpu)) * scale;
    let r = clip_to_box(&(&x + &r)) - &x;
    (x, r)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn the_set_mean_budget_holds_the_mean_and_leaves_a_set_inside_it_unchanged(
        seed in 0i64..1000, scale in 0.01f64..0.5, bound in 0.02f64..0.2,
    ) {
        let _g = common::torch_rng_lock();
        let (x, r) = images_and_perturbations(seed, 64, scale);
        let before = mean_distortion(&x, &(&x + &r));
        let (held, scaled) = BudgetReading::SetMean.apply(&r, bound);
        let after = mean_distortion(&x, &clip_to_box(&(&x + &held)));
        prop_assert!(after <= bound, "mean {after} above the bound {bound}");
        if before <= bound {
            prop_assert_eq!(scaled, 0.0);
            prop_assert!(held.equal(&r), "a set inside the bound was changed");
        } else {
            prop_assert_eq!(scaled, 1.0);
            // Scaled by one factor, onto the bound.
            prop_assert!((after - bound).abs() < 1e-4 * bound, "{after} vs {bound}");
        }
    }

    #[test]
    fn the_per_example_cap_bounds_every_perturbation(
        seed in 0i64..1000, scale in 0.01f64..0.5, bound in 0.02f64..0.2,
    ) {
        let _g = common::torch_rng_lock();
        let (_, r) = images_and_perturbations(seed, 64, scale);
        let (held, scaled) = BudgetReading::PerExampleCap.apply(&r, bound);
        let rms = row_norms(&held) / (IMAGE_DIM as f64).sqrt();
        prop_assert!(rms.max().double_value(&[]) <= bound * (1.0 + 1e-5));
        let over = (row_norms(&r) / (IMAGE_DIM as f64).sqrt()).gt(bound);
        let expected = over.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
        prop_assert_eq!(scaled, expected);
        // Perturbations inside the cap are untouched.
        let inside = over.logical_not();
        prop_assert!(held.index(&[Some(&inside)]).equal(&r.index(&[Some(&inside)])));
        prop_assert!(BudgetReading::None.apply(&r, bound).0.equal(&r));
    }

    #[test]
    fn every_strength_stays_in_the_box_and_distortion_grows_with_m(
        seed in 0i64..1000, m1 in 0.0f64..10.0, dm in 0.0f64..5.0,
    ) {
        let _g = common::torch_rng_lock();
        let (x, r) = images_and_perturbations(seed, 32, 0.3);
        let (a, b) = (at_strength(&x, &r, m1), at_strength(&x, &r, m1 + dm));
        for t in [&a, &b] {
            prop_assert!(t.min().double_value(&[]) >= 0.0);
            prop_assert!(t.max().double_value(&[]) <= INPUT_MAX);
        }
        prop_assert!(mean_distortion(&x, &a) <= mean_distortion(&x, &b) + 1e-9);
    }
}

#[test]
fn multiplier_zero_is_the_clean_image_and_one_is_the_set_bit_for_bit() {
    let _g = common::torch_rng_lock();
    let (x, r) = images_and_perturbations(7, 128, 0.2);
    assert!(at_strength(&x, &r, 0.0).equal(&x));
    assert!(at_strength(&x, &r, 1.0).equal(&clip_to_box(&(&x + &r))));
}

#[test]
fn a_confident_attack_distorts_more_and_its_successes_clear_the_confidence() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let test = splits.test.head(200);
    let attack = |kappa: f64| MinNormAttack {
        c: 1.0,
        steps: 60,
        lr: 0.02,
        kappa,
        search_rounds: 3,
    };
    let plain = attack(0.0).run(&mlp, &test.images, &test.labels);
    let confident = attack(5.0).run(&mlp, &test.images, &test.labels);
    let (d0, d5) = (plain.mean_distortion(), confident.mean_distortion());
    assert!(d5 > 1.2 * d0, "kappa = 5 distortion {d5} vs kappa = 0 {d0}");
    let margins = tch::no_grad(|| {
        bayes_robust::attack::margin(&mlp.forward(&confident.perturbed), &test.labels)
    });
    // Most perturbations reach the confidence they were asked for (the rest are the
    // last iterate of examples that never did).
    let confident_share = margins
        .lt(-4.99)
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    assert!(confident_share > 0.8, "{confident_share} reached kappa = 5");
    // The same attack at kappa = 0 twice: bit for bit (the cached sets' keys say kappa).
    let again = attack(0.0).run(&mlp, &test.images, &test.labels);
    assert!(again.perturbed.equal(&plain.perturbed));
}

#[test]
fn the_matched_strength_is_bracketed_and_fails_outside_the_measured_range() {
    let curve = [
        (0.0, 0.98),
        (1.0, 0.93),
        (2.0, 0.70),
        (4.0, 0.30),
        (8.0, 0.12),
    ];
    let m = matched_strength("m", &curve, 0.5).unwrap();
    assert_eq!(m.below, [2.0, 0.70]);
    assert_eq!(m.above, [4.0, 0.30]);
    assert!((m.strength - 3.0).abs() < 1e-12, "{}", m.strength);
    // A measured point itself.
    assert!((matched_strength("m", &curve, 0.93).unwrap().strength - 1.0).abs() < 1e-12);
    let err = matched_strength("m", &curve, 0.05).unwrap_err();
    assert!(matches!(err, StrengthError::OutOfRange { .. }));
    let text = err.to_string();
    assert!(
        text.contains("0.0500") && text.contains("[0.1200, 0.9800]") && text.contains("[0, 8]"),
        "{text}"
    );
    assert!(matches!(
        matched_strength("kappa", &curve[..1], 0.9),
        Err(StrengthError::TooFew { n: 1, .. })
    ));
}

#[test]
fn the_matched_init_control_starts_from_the_bnns_mu_initialisation() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(3);
    let std = MixturePrior::default().std();
    assert!((std - 0.2601).abs() < 1e-4, "the prior's std is {std}");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _mlp = Mlp::new(
        &vs.root(),
        &MlpConfig {
            init: MlpInit::TruncatedNormal { std },
            ..MlpConfig::default()
        },
    );
    let all = Tensor::cat(
        &vs.variables()
            .values()
            .map(|t| t.flatten(0, -1))
            .collect::<Vec<_>>(),
        0,
    );
    let max = all.abs().max().double_value(&[]);
    assert!(
        max <= 2.0 * std + 1e-6,
        "max |w| = {max} beyond the 2-std cut"
    );
    assert!(max > 1.9 * std, "max |w| = {max}: not cut at 2 std");
    // A normal truncated at ±2σ has std 0.8796σ.
    let sd = all.std(true).double_value(&[]);
    assert!(
        (sd / std - 0.8796).abs() < 0.01,
        "std {sd} = {} σ",
        sd / std
    );
}
