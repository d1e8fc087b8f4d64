//! Calibration and detection measures against cases with known answers.

mod common;

use bayes_robust::calibration::{
    auroc, expected_calibration_error, mutual_information, negative_log_likelihood,
    predictive_entropy,
};
use proptest::prelude::*;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use tch::{Kind, Tensor};

/// Uniform in [0, 1).
fn uniform(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A synthetic 10-class predictor with top-class confidence `conf` on class 0 (the
/// rest spread evenly) and labels drawn so that class 0 is right with probability
/// `conf · truth_scale`. `truth_scale = 1` is perfectly calibrated.
fn synthetic(n: usize, truth_scale: f64, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut probs = Vec::with_capacity(n * 10);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let conf = 0.1 + 0.9 * uniform(&mut rng);
        probs.push(conf);
        probs.extend(std::iter::repeat_n((1.0 - conf) / 9.0, 9));
        let right = uniform(&mut rng) < conf * truth_scale;
        labels.push(if right {
            0i64
        } else {
            1 + (rng.next_u64() % 9) as i64
        });
    }
    (
        Tensor::from_slice(&probs).view([n as i64, 10]),
        Tensor::from_slice(&labels),
    )
}

#[test]
fn a_perfectly_calibrated_predictor_has_ece_near_zero() {
    let (probs, labels) = synthetic(200_000, 1.0, 1);
    let ece = expected_calibration_error(&probs, &labels, 15);
    assert!(ece < 0.01, "ECE {ece}");
}

#[test]
fn an_overconfident_predictor_has_ece_of_its_gap() {
    // Right with probability 0.8·conf: the gap is E[0.2·conf] = 0.2 · 0.55 = 0.11.
    let (probs, labels) = synthetic(200_000, 0.8, 2);
    let ece = expected_calibration_error(&probs, &labels, 15);
    assert!((ece - 0.11).abs() < 0.01, "ECE {ece}");
}

#[test]
fn nll_is_minus_the_mean_log_probability_of_the_label() {
    // −(ln 0.5 + ln 0.25) / 2
    let probs = Tensor::from_slice(&[0.5, 0.5, 0.75, 0.25]).view([2, 2]);
    let labels = Tensor::from_slice(&[0i64, 1]);
    let expected = -(0.5f64.ln() + 0.25f64.ln()) / 2.0;
    assert!((negative_log_likelihood(&probs, &labels) - expected).abs() < 1e-12);
}

#[test]
fn auroc_of_identical_distributions_is_a_half_and_of_separated_ones_is_one() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let a: Vec<f64> = (0..20_000).map(|_| uniform(&mut rng)).collect();
    let b: Vec<f64> = (0..20_000).map(|_| uniform(&mut rng)).collect();
    let same = auroc(&a, &b).unwrap();
    assert!((same - 0.5).abs() < 0.01, "AUROC {same}");
    assert_eq!(auroc(&[1.0; 5], &[1.0; 7]), Some(0.5), "all ties");
    let shifted: Vec<f64> = b.iter().map(|v| v + 1.0).collect();
    assert_eq!(auroc(&a, &shifted), Some(1.0));
    assert_eq!(auroc(&shifted, &a), Some(0.0));
    assert_eq!(auroc(&[], &a), None);
    assert_eq!(auroc(&[f64::NAN], &a), None);
}

proptest! {
    /// AUROC equals the pairwise count it is defined by:
    /// (#{s⁺ > s⁻} + ½ #{s⁺ = s⁻}) / (n⁺ n⁻).
    #[test]
    fn auroc_matches_the_pairwise_definition(
        neg in prop::collection::vec(0u8..6, 1..30),
        pos in prop::collection::vec(0u8..6, 1..30),
    ) {
        let neg: Vec<f64> = neg.into_iter().map(f64::from).collect();
        let pos: Vec<f64> = pos.into_iter().map(f64::from).collect();
        let pairs: f64 = pos.iter().flat_map(|p| neg.iter().map(move |n| {
            if p > n { 1.0 } else if p == n { 0.5 } else { 0.0 }
        })).sum();
        let expected = pairs / (pos.len() * neg.len()) as f64;
        prop_assert!((auroc(&neg, &pos).unwrap() - expected).abs() < 1e-12);
    }

    /// Mutual information is ≥ 0, at most the predictive entropy, and 0 when all draws
    /// agree.
    #[test]
    fn mutual_information_is_bounded_by_the_entropy(seed in 0u64..1000, n in 1i64..6) {
        let _g = common::torch_rng_lock();
        tch::manual_seed(seed as i64);
        let draws = Tensor::randn([n, 4, 10], (Kind::Double, tch::Device::Cpu)).softmax(-1, None::<Kind>);
        let mi = mutual_information(&draws);
        let h = predictive_entropy(&draws.mean_dim([0].as_slice(), false, Kind::Double));
        prop_assert!(mi.min().double_value(&[]) >= 0.0);
        prop_assert!((&h - &mi).min().double_value(&[]) >= -1e-12);
        let same = draws.get(0).unsqueeze(0).expand([3, 4, 10], false);
        prop_assert!(mutual_information(&same).abs().max().double_value(&[]) < 1e-12);
    }
}
