//! Property tests of the model math: softplus, the posterior and prior densities, the
//! ELBO's KL estimate and gradient, and SNR pruning.

mod common;

use bayes_robust::model::WeightMode;
use bayes_robust::model::bayes::{self, BayesConfig, BayesMlp, MixturePrior};
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use bayes_robust::model::{Arch, Classifier};
use proptest::prelude::*;
use statrs::distribution::{Continuous, Normal};
use tch::{Device, Kind, Tensor, nn};

use common::strategies;

proptest! {
    #[test]
    fn softplus_is_positive_and_finite(rho in strategies::rho()) {
        let s = bayes::softplus(rho);
        prop_assert!(s > 0.0 && s.is_finite(), "softplus({rho}) = {s}");
    }

    #[test]
    fn softplus_is_strictly_increasing(a in -700.0f64..700.0, d in 1e-3f64..10.0) {
        prop_assert!(bayes::softplus(a + d) > bayes::softplus(a));
    }

    #[test]
    fn softplus_matches_its_asymptotes(rho in 30.0f64..700.0) {
        // ln(1 + e^-ρ) = softplus(−ρ) ≈ e^−ρ: relative to exp for very negative ρ...
        let lo = bayes::softplus(-rho);
        prop_assert!((lo / (-rho).exp() - 1.0).abs() < 1e-12, "softplus(-{rho}) = {lo}");
        // ...and ≈ ρ for large ρ.
        prop_assert!((bayes::softplus(rho) - rho).abs() <= 1e-12 * rho);
    }

    #[test]
    fn softplus_inverse_round_trips(rho in -700.0f64..700.0) {
        let back = bayes::softplus_inv(bayes::softplus(rho));
        prop_assert!((back - rho).abs() <= 1e-9 * rho.abs().max(1.0), "{rho} -> {back}");
    }

    #[test]
    fn tensor_softplus_agrees_with_the_scalar_one(rho in -700.0f64..700.0) {
        let t = Tensor::from_slice(&[rho]).softplus().double_value(&[0]);
        let s = bayes::softplus(rho);
        // libtorch returns ρ itself above ρ = 20 (an absolute error below e^-20).
        prop_assert!(t > 0.0 && (t - s).abs() <= 1e-9 * s.max(1e-300), "{t} vs {s}");
    }

    /// log q(w|μ,σ) written in ε = (w − μ)/σ against statrs' Normal(μ, σ).ln_pdf(w).
    #[test]
    fn log_q_matches_statrs(mu in strategies::weight(), sigma in (-8.0f64..1.0).prop_map(f64::exp), eps in -4.0f64..4.0) {
        let w = mu + sigma * eps;
        let ours = bayes::log_q_at(&Tensor::from_slice(&[eps]), &Tensor::from_slice(&[sigma])).double_value(&[0]);
        let reference = Normal::new(mu, sigma).unwrap().ln_pdf(w);
        prop_assert!((ours - reference).abs() < 1e-6 * reference.abs().max(1.0), "{ours} vs {reference}");
    }

    /// log P(w) under the scale mixture against the mixture built from two statrs
    /// Normals, π·pdf1 + (1−π)·pdf2, where that does not underflow; and finite always.
    #[test]
    fn log_prior_matches_a_mixture_of_statrs_normals(w in strategies::weight()) {
        let prior = MixturePrior::default();
        let n1 = Normal::new(0.0, prior.sigma1).unwrap();
        let n2 = Normal::new(0.0, prior.sigma2).unwrap();
        let density = prior.pi * n1.pdf(w) + (1.0 - prior.pi) * n2.pdf(w);
        let ours = prior.log_prob(&Tensor::from_slice(&[w])).double_value(&[0]);
        prop_assert!(ours.is_finite());
        prop_assert!((ours - density.ln()).abs() < 1e-9 * density.ln().abs().max(1.0), "{ours} vs {}", density.ln());
        prop_assert!((prior.log_prob_scalar(w) - ours).abs() < 1e-9 * ours.abs().max(1.0));
    }

    #[test]
    fn log_prior_never_underflows(w in -1e3f64..1e3) {
        let prior = MixturePrior::default();
        let ours = prior.log_prob(&Tensor::from_slice(&[w])).double_value(&[0]);
        // Far out only the wide component matters: log(π·N(w; 0, σ1²)).
        let wide = prior.pi.ln() + Normal::new(0.0, prior.sigma1).unwrap().ln_pdf(w);
        prop_assert!(ours.is_finite() && ours >= wide - 1e-9 * wide.abs());
    }
}

#[test]
fn the_prior_std_is_the_papers() {
    assert!((MixturePrior::default().std() - 0.2601).abs() < 1e-4);
}

/// With a single-Gaussian "prior" N(0, s²) (a mixture of two equal components), the
/// Monte Carlo E_q[log q − log P] converges to the closed form
/// KL = ln(s/σ) + (σ² + μ²)/(2s²) − ½ per weight.
#[test]
fn the_monte_carlo_kl_converges_to_the_closed_form() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(11);
    let s = 0.3;
    let prior = MixturePrior {
        pi: 0.5,
        sigma1: s,
        sigma2: s,
    };
    let mu = Tensor::from_slice(&[0.1f64, -0.5, 0.0, 0.8]);
    let sigma = Tensor::from_slice(&[0.05f64, 0.2, 0.3, 0.01]);
    let n = 400_000;
    let eps = Tensor::randn([n, 4], (Kind::Double, Device::Cpu));
    let w = &mu + &sigma * &eps;
    let mc = (bayes::log_q_at(&eps, &sigma) - prior.log_prob(&w)).mean_dim(
        [0].as_slice(),
        false,
        Kind::Double,
    );
    let closed =
        (Tensor::from(s) / &sigma).log() + (sigma.square() + mu.square()) / (2.0 * s * s) - 0.5;
    let mc: Vec<f64> = Vec::try_from(&mc).unwrap();
    let closed: Vec<f64> = Vec::try_from(&closed).unwrap();
    for (m, c) in mc.iter().zip(&closed) {
        // MC std of the estimate is below 0.01 for these parameters at n = 400k.
        assert!((m - c).abs() < 0.01, "MC {m} vs closed form {c}");
    }
}

/// A tiny BNN in f64 with frozen ε: the loss
/// L(μ, ρ) = CE(x; μ + softplus(ρ)·ε) + (log q − log P)/M
/// differentiated by autograd against central finite differences.
#[test]
fn the_elbo_gradient_matches_finite_differences() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(3);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let config = BayesConfig {
        arch: Arch::new(&[3]),
        rho_init: -2.0,
        ..BayesConfig::default()
    };
    let bnn = BayesMlp::new(&vs.root(), &config);
    vs.double();
    let x = Tensor::rand([5, 784], (Kind::Double, Device::Cpu)) * 2.0;
    let y = Tensor::from_slice(&[0i64, 3, 9, 1, 3]);
    let loss = |bnn: &BayesMlp| {
        let out = bnn.forward(&x, 1, WeightMode::Frozen(9), true);
        // (tch's cross_entropy_for_logits computes in f32; this stays in f64.)
        let ce = out.logits.squeeze_dim(0).cross_entropy_loss::<Tensor>(
            &y,
            None,
            tch::Reduction::Mean,
            -100,
            0.0,
        );
        ce + out.kl.unwrap().squeeze_dim(0) / 50.0
    };
    let l = loss(&bnn);
    l.backward();
    let layer = &bnn.layers[1];
    for (name, param) in [
        ("mu_w", &layer.mu_w),
        ("rho_w", &layer.rho_w),
        ("mu_b", &layer.mu_b),
        ("rho_b", &layer.rho_b),
    ] {
        let grad = param.grad();
        let flat = param.numel() as i64;
        for idx in [0, flat / 2, flat - 1] {
            let h = 1e-6;
            let at = |delta: f64| {
                tch::no_grad(|| {
                    let _ = param
                        .view(-1)
                        .get(idx)
                        .f_add_(&Tensor::from(delta))
                        .unwrap();
                });
                let v = tch::no_grad(|| loss(&bnn).double_value(&[]));
                tch::no_grad(|| {
                    let _ = param
                        .view(-1)
                        .get(idx)
                        .f_sub_(&Tensor::from(delta))
                        .unwrap();
                });
                v
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            let g = grad.view(-1).double_value(&[idx]);
            assert!(
                (fd - g).abs() < 1e-5 * g.abs().max(1.0),
                "{name}[{idx}]: autograd {g}, finite difference {fd}"
            );
        }
    }
}

fn tiny_bnn(seed: i64, rho_init: f64) -> (nn::VarStore, BayesMlp) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let config = BayesConfig {
        arch: Arch::new(&[6, 5]),
        rho_init,
        ..BayesConfig::default()
    };
    let bnn = BayesMlp::new(&vs.root(), &config);
    (vs, bnn)
}

fn pruned_set(bnn: &BayesMlp) -> Vec<bool> {
    bnn.layers
        .iter()
        .flat_map(|l| match &l.mask_w {
            Some(m) => Vec::<f32>::try_from(m.flatten(0, -1))
                .unwrap()
                .into_iter()
                .map(|v| v == 0.0)
                .collect(),
            None => vec![false; l.mu_w.numel()],
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn pruning_removes_exactly_floor_p_n_and_nests(seed in 0i64..1000, p1 in strategies::prune_rate(), p2 in strategies::prune_rate()) {
        let _g = common::torch_rng_lock();
        let (p1, p2) = (p1.min(p2), p1.max(p2));
        let (_vs, mut bnn) = tiny_bnn(seed, -3.0);
        let n = bnn.config.arch.n_weights();
        let k1 = bnn.prune(p1).unwrap();
        let set1 = pruned_set(&bnn);
        prop_assert_eq!(k1, (p1 * n as f64).floor() as usize);
        prop_assert_eq!(set1.iter().filter(|b| **b).count(), k1);
        let k2 = bnn.prune(p2).unwrap();
        let set2 = pruned_set(&bnn);
        prop_assert_eq!(k2, (p2 * n as f64).floor() as usize);
        for (a, b) in set1.iter().zip(&set2) {
            prop_assert!(!a || *b, "a weight pruned at {} is kept at {}", p1, p2);
        }
        // Pruned weights are those of lowest SNR.
        let snr: Vec<f32> = Vec::try_from(bnn.snr_flat()).unwrap();
        let max_pruned = snr.iter().zip(&set2).filter(|(_, p)| **p).map(|(s, _)| *s).fold(f32::MIN, f32::max);
        let min_kept = snr.iter().zip(&set2).filter(|(_, p)| !**p).map(|(s, _)| *s).fold(f32::MAX, f32::min);
        prop_assert!(max_pruned <= min_kept);
    }

    /// On FC-10 (logits = x·W + b), the input rows 0 and e_i give logits b and W_i + b of
    /// the same draw, so their difference is the drawn W_i exactly where W_i = 0.
    #[test]
    fn pruned_weights_are_zero_in_every_sample(seed in 0i64..1000, p in strategies::prune_rate()) {
        let _g = common::torch_rng_lock();
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut bnn = BayesMlp::new(&vs.root(), &BayesConfig { arch: Arch::new(&[]), rho_init: -2.0, ..BayesConfig::default() });
        let k = bnn.prune(p).unwrap();
        let x = Tensor::cat(&[Tensor::zeros([1, 784], (Kind::Float, Device::Cpu)), Tensor::eye(784, (Kind::Float, Device::Cpu))], 0);
        let pruned = bnn.layers[0].mask_w.as_ref().unwrap().eq(0.0);
        for mode in [WeightMode::Sample, WeightMode::Frozen(3), WeightMode::Mean] {
            let logits = tch::no_grad(|| bnn.forward(&x, 4, mode, false).logits);
            let drawn_w = logits.narrow(1, 1, 784) - logits.narrow(1, 0, 1);
            for draw in 0..4 {
                let w = drawn_w.get(draw);
                prop_assert!(bool::try_from(w.masked_select(&pruned).eq(0.0).all()).unwrap(), "{:?}: a pruned weight is not 0", mode);
                let kept_nonzero = w.masked_select(&pruned.logical_not()).ne(0.0).sum(Kind::Int64).int64_value(&[]);
                prop_assert_eq!(kept_nonzero as usize, 7840 - k, "{:?}: a kept weight is 0", mode);
            }
        }
    }
}

#[test]
fn pruning_at_zero_changes_nothing_and_at_one_zeroes_all_weights() {
    let _g = common::torch_rng_lock();
    let (_vs, mut bnn) = tiny_bnn(5, -3.0);
    let x = Tensor::rand([4, 784], (Kind::Float, Device::Cpu));
    let before = bnn.logits(&x, WeightMode::Frozen(1));
    assert_eq!(bnn.prune(0.0).unwrap(), 0);
    assert!(bnn.logits(&x, WeightMode::Frozen(1)).equal(&before));
    assert_eq!(bnn.prune(1.0).unwrap(), bnn.config.arch.n_weights());
    // With every weight gone the output is the last bias alone, whatever the input.
    let out = bnn.logits(
        &Tensor::rand([4, 784], (Kind::Float, Device::Cpu)),
        WeightMode::Mean,
    );
    let last_bias = bnn
        .layers
        .last()
        .unwrap()
        .mu_b
        .unsqueeze(0)
        .expand([4, 10], false);
    assert!(out.allclose(&last_bias, 1e-6, 1e-6, false));
    assert!(bnn.prune(1.5).is_err() && bnn.prune(-0.1).is_err());
}

#[test]
fn pruning_breaks_ties_by_position() {
    let _g = common::torch_rng_lock();
    let (_vs, mut bnn) = tiny_bnn(1, -3.0);
    // Give every weight the same SNR: the lowest flat indices go first.
    tch::no_grad(|| {
        for l in &bnn.layers {
            let _ = l.mu_w.shallow_clone().fill_(0.5);
        }
    });
    bnn.prune(0.1).unwrap();
    let set = pruned_set(&bnn);
    let k = (0.1 * set.len() as f64).floor() as usize;
    assert!(set[..k].iter().all(|b| *b) && set[k..].iter().all(|b| !*b));
}

#[test]
fn frozen_draws_are_reproducible_and_distinct() {
    let _g = common::torch_rng_lock();
    let (_vs, bnn) = tiny_bnn(2, -2.0);
    let x = Tensor::rand([3, 784], (Kind::Float, Device::Cpu));
    assert!(
        bnn.logits(&x, WeightMode::Frozen(4))
            .equal(&bnn.logits(&x, WeightMode::Frozen(4)))
    );
    assert!(
        !bnn.logits(&x, WeightMode::Frozen(4))
            .equal(&bnn.logits(&x, WeightMode::Frozen(5)))
    );
    assert!(
        !bnn.logits(&x, WeightMode::Sample)
            .equal(&bnn.logits(&x, WeightMode::Sample))
    );
}

/// An ensemble of N draws of a σ = 0 BNN equals the deterministic net with the same
/// weights (eq. 7 collapses to one softmax).
#[test]
fn a_zero_sigma_ensemble_equals_the_deterministic_net() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(8);
    let (_vs, mlp) = common::untrained_mlp(&[7]);
    let (_bvs, bnn) = tiny_bnn(8, -200.0);
    let bnn = BayesMlp {
        config: BayesConfig {
            arch: Arch::new(&[7]),
            ..bnn.config
        },
        layers: {
            let bvs = nn::VarStore::new(Device::Cpu);
            let b = BayesMlp::new(
                &bvs.root(),
                &BayesConfig {
                    arch: Arch::new(&[7]),
                    rho_init: -200.0,
                    ..BayesConfig::default()
                },
            );
            tch::no_grad(|| {
                for (bl, ml) in b.layers.iter().zip(&mlp.layers) {
                    bl.mu_w.shallow_clone().copy_(&ml.weight);
                    bl.mu_b.shallow_clone().copy_(&ml.bias);
                }
            });
            b.layers
        },
    };
    let x = Tensor::rand([16, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let det = tch::no_grad(|| mlp.forward(&x).softmax(-1, Kind::Float));
    let ens = tch::no_grad(|| bnn.ensemble_probs(&x, 25, 10));
    assert!(ens.allclose(&det, 1e-6, 1e-6, false));
    let samples = tch::no_grad(|| bnn.sample_logits(&x, 3));
    assert_eq!(samples.size(), [3, 16, 10]);
}

/// Eq. 6's penalty: Σ_l (1/|l|) Σ w² with |l| the layer's fan-out, biases excluded.
#[test]
fn the_l2_penalty_is_eq_6_with_fan_out() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let mlp = Mlp::new(
        &vs.root(),
        &MlpConfig {
            arch: Arch::new(&[100, 100]),
            ..MlpConfig::default()
        },
    );
    let expected: f64 = mlp
        .layers
        .iter()
        .map(|l| {
            let w: Vec<f32> = Vec::try_from(l.weight.flatten(0, -1)).unwrap();
            w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / l.weight.size()[1] as f64
        })
        .sum();
    let ours = mlp.l2_penalty().double_value(&[]);
    assert!((ours - expected).abs() < 1e-4 * expected);
    assert_eq!(
        mlp.layers
            .iter()
            .map(|l| l.weight.size()[1])
            .collect::<Vec<_>>(),
        [100, 100, 10]
    );
}

/// Images taken in chunks through the same draws give the same logits as one pass over
/// all of them, for the same seed (sampled) or the same id (frozen).
#[test]
fn chunked_and_whole_batch_sampling_agree_for_the_same_seed() {
    let _g = common::torch_rng_lock();
    let (_vs, bnn) = tiny_bnn(4, -2.0);
    let x = Tensor::rand([23, 784], (Kind::Float, Device::Cpu)) * 2.0;
    for chunk in [1, 5, 23, 100] {
        tch::manual_seed(9);
        let whole = bnn.forward(&x, 6, WeightMode::Sample, false).logits;
        tch::manual_seed(9);
        let chunked = bnn.forward_chunked(&x, 6, WeightMode::Sample, chunk);
        assert_eq!(chunked.size(), [6, 23, 10]);
        assert!(whole.allclose(&chunked, 1e-5, 1e-5, false), "chunk {chunk}");
        let frozen = bnn.forward(&x, 3, WeightMode::Frozen(2), false).logits;
        let frozen_chunked = bnn.forward_chunked(&x, 3, WeightMode::Frozen(2), chunk);
        assert!(
            frozen.allclose(&frozen_chunked, 1e-5, 1e-5, false),
            "chunk {chunk}"
        );
    }
    // And the draws really differ between calls without reseeding.
    let again = bnn.forward_chunked(&x, 6, WeightMode::Sample, 5);
    tch::manual_seed(9);
    let first = bnn.forward_chunked(&x, 6, WeightMode::Sample, 5);
    assert!(!again.allclose(&first, 1e-5, 1e-5, false));
}
