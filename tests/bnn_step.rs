//! The hand-differentiated Bayes-by-Backprop step (`train::bnn_step`, issue 6) against
//! autograd, the reference computation:
//!
//! ```text
//! torch.manual_seed(s); loss = ce(f(x; μ + softplus(ρ)·ε)) + kl_weight·Σ(log q − log P)
//! loss.backward()   # μ.grad, ρ.grad
//! ```
//!
//! for the same ε (same generator seed and draw order), and a seeded `fit` through the
//! hand step against `fit` through autograd and tch's SGD.

mod common;

use bayes_robust::data::Split;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use bayes_robust::seed::SeedTree;
use bayes_robust::train::bnn_step::{BnnElbo, BnnSgd, MomentumSgd, draw_noise, stack_of_one};
use bayes_robust::train::{self, LossScale, Recipe, Reduction, TrainOptions, Trainee};
use proptest::prelude::*;
use tch::{Device, Kind, Tensor, nn};

fn variables(bnn: &BayesMlp) -> Vec<&Tensor> {
    bnn.layers
        .iter()
        .flat_map(|l| [&l.mu_w, &l.rho_w, &l.mu_b, &l.rho_b])
        .collect()
}

/// max |a − b| / max(max |b|, tiny): the gap relative to the reference's scale.
fn relative_gap(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.reshape([-1]).to_kind(Kind::Double);
    let b = b.reshape([-1]).to_kind(Kind::Double);
    let gap = (&a - &b).abs().max().double_value(&[]);
    gap / b.abs().max().double_value(&[]).max(1e-30)
}

fn scale(reduction: Reduction) -> LossScale {
    LossScale {
        reduction,
        n_train: 50_000,
        n_batches: 391,
    }
}

/// Loss, KL part and every gradient of the hand step, against autograd on the same draw.
fn check_against_autograd(rho_init: f64, reduction: Reduction, seed: i64) {
    let _guard = common::torch_rng_lock();
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(&vs.root(), &BayesConfig::with_rho_init(rho_init));
    let x = Tensor::rand([64, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let scale = scale(reduction);

    tch::manual_seed(seed + 1);
    let (loss, kl) = bnn.batch_loss(&x, &y, &scale);
    loss.backward();
    tch::manual_seed(seed + 1);
    let params = stack_of_one(&bnn);
    let noise = draw_noise(&params);
    let (hand, grads) = BnnElbo::new(&bnn.config.prior, &scale, Device::Cpu)
        .loss_and_gradients(&params, &noise, &x, &y);

    let loss_gap = relative_gap(&hand.loss, &loss.unsqueeze(0));
    assert!(loss_gap < 1e-5, "ρ_init {rho_init}: loss gap {loss_gap:e}");
    let kl = kl.expect("a BNN loss has a KL part");
    let kl_gap = relative_gap(&hand.kl_part, &kl.unsqueeze(0));
    assert!(kl_gap < 1e-4, "ρ_init {rho_init}: KL gap {kl_gap:e}");
    for (i, (var, grad)) in variables(&bnn).into_iter().zip(&grads).enumerate() {
        let reference = var.grad();
        let gap = relative_gap(&grad.view_as(&reference), &reference);
        assert!(
            gap < 1e-4,
            "ρ_init {rho_init}, {reduction:?}: gradient {i} (layer {}, {}) differs by {gap:e} of its scale",
            i / 4,
            ["μ_w", "ρ_w", "μ_b", "ρ_b"][i % 4]
        );
    }
}

#[test]
fn hand_gradients_equal_autograd_at_the_paper_rho_inits() {
    for rho in [-30.0, -10.0, -4.0, -3.0, -2.5, -2.0, -1.5] {
        check_against_autograd(rho, Reduction::Mean, 11);
    }
    check_against_autograd(-3.0, Reduction::Sum, 12);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn hand_gradients_equal_autograd(rho in -12.0f64..1.0, sum in any::<bool>(), seed in 0i64..10_000) {
        let reduction = if sum { Reduction::Sum } else { Reduction::Mean };
        check_against_autograd(rho, reduction, seed);
    }
}

/// A stack of two members gives each member the gradient it has alone.
#[test]
fn stacked_members_get_their_own_gradients() {
    let _guard = common::torch_rng_lock();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let bnns = [
        BayesMlp::new(&vs.root().sub("a"), &BayesConfig::with_rho_init(-3.0)),
        BayesMlp::new(&vs.root().sub("b"), &BayesConfig::with_rho_init(-2.0)),
    ];
    let x = Tensor::rand([2, 32, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [2, 32], (Kind::Int64, Device::Cpu));
    let scale = scale(Reduction::Mean);
    let elbo = BnnElbo::new(&bnns[0].config.prior, &scale, Device::Cpu);
    let params: Vec<Tensor> = stack_of_one(&bnns[0])
        .iter()
        .zip(stack_of_one(&bnns[1]).iter())
        .map(|(a, b)| Tensor::cat(&[a, b], 0))
        .collect();
    // The stack draws its ε in another order than two members alone, so the draws are
    // made noise-free (ρ = −30, σ ≈ 1e-13) and the KL's −½Σε² is left out (cross-entropy
    // only): what remains does not depend on ε.
    tch::no_grad(|| {
        for rho in params.iter().skip(1).step_by(2) {
            let _ = rho.shallow_clone().fill_(-30.0);
        }
    });
    let (together, grads) = elbo.loss_and_gradients(&params, &draw_noise(&params), &x, &y);
    for (m, bnn) in bnns.iter().enumerate() {
        let own: Vec<Tensor> = params
            .iter()
            .map(|p| p.get(m as i64).unsqueeze(0))
            .collect();
        let (alone, own_grads) =
            elbo.loss_and_gradients(&own, &draw_noise(&own), &x.get(m as i64), &y.get(m as i64));
        let ce = |l: &bayes_robust::train::bnn_step::StepLosses, row: i64| {
            (&l.loss - &l.kl_part).get(row)
        };
        let gap = relative_gap(&ce(&together, m as i64), &ce(&alone, 0));
        assert!(gap < 1e-5, "member {m}: cross-entropy gap {gap:e}");
        for (i, (g, o)) in grads.iter().zip(&own_grads).enumerate() {
            let gap = relative_gap(&g.get(m as i64), &o.get(0));
            assert!(
                gap < 1e-4,
                "member {m} ({:?}): gradient {i} gap {gap:e}",
                bnn.config.rho_init
            );
        }
    }
}

/// `Trainee` for a BNN that keeps the default (autograd + tch SGD) step.
struct ThroughAutograd<'a>(&'a BayesMlp);

impl Trainee for ThroughAutograd<'_> {
    fn batch_loss(&self, x: &Tensor, y: &Tensor, scale: &LossScale) -> (Tensor, Option<Tensor>) {
        self.0.batch_loss(x, y, scale)
    }
    fn validation_accuracy(&self, split: &Split, recipe: &Recipe) -> f64 {
        self.0.validation_accuracy(split, recipe)
    }
}

/// Two seeded epochs of `fit` through the hand step and through autograd +
/// `AutogradSgd` (which takes tch's SGD steps: `tests/train.rs`) end at the same weights
/// (up to float rounding) and the same epoch records.
#[test]
fn fit_through_the_hand_step_follows_autograd() {
    let _guard = common::torch_rng_lock();
    let splits = common::fixture_splits();
    let recipe = Recipe {
        patience: None,
        ..Recipe::paper(2)
    };
    let seeds = SeedTree::new(5).child("bnn");
    let run = |hand: bool| {
        tch::manual_seed(9);
        let vs = nn::VarStore::new(Device::Cpu);
        let bnn = BayesMlp::new(&vs.root(), &BayesConfig::with_rho_init(-3.0));
        let outcome = if hand {
            train::fit(
                &vs,
                &bnn,
                &splits,
                &recipe,
                &seeds,
                &TrainOptions::default(),
            )
        } else {
            train::fit(
                &vs,
                &ThroughAutograd(&bnn),
                &splits,
                &recipe,
                &seeds,
                &TrainOptions::default(),
            )
        }
        .expect("training");
        (vs, bnn, outcome)
    };
    let (_vs_h, hand, hand_out) = run(true);
    let (_vs_a, auto, auto_out) = run(false);
    for (h, a) in variables(&hand).into_iter().zip(variables(&auto)) {
        let gap = relative_gap(h, a);
        assert!(gap < 1e-3, "weights differ by {gap:e} of their scale");
    }
    // Training moved the weights (the comparison is not between two initialisations).
    let moved = {
        tch::manual_seed(9);
        let vs = nn::VarStore::new(Device::Cpu);
        let init = BayesMlp::new(&vs.root(), &BayesConfig::with_rho_init(-3.0));
        relative_gap(&init.layers[0].mu_w, &hand.layers[0].mu_w)
    };
    assert!(
        moved > 1e-3,
        "two epochs left μ at its initial value ({moved:e})"
    );
    for (h, a) in hand_out.history.iter().zip(&auto_out.history) {
        assert!(
            (h.loss - a.loss).abs() < 1e-4 * a.loss.abs(),
            "epoch {}: loss {} vs {}",
            h.epoch,
            h.loss,
            a.loss
        );
        let (hk, ak) = (h.kl.expect("kl"), a.kl.expect("kl"));
        assert!(
            (hk - ak).abs() < 1e-4 * ak.abs(),
            "epoch {}: kl {hk} vs {ak}",
            h.epoch
        );
        assert!((h.validation_accuracy - a.validation_accuracy).abs() < 0.01);
    }
}

/// One SGD step moves every variable against its gradient.
#[test]
fn bnn_sgd_step_updates_every_variable() {
    let _guard = common::torch_rng_lock();
    tch::manual_seed(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(&vs.root(), &BayesConfig::with_rho_init(-3.0));
    let before: Vec<Tensor> = variables(&bnn).iter().map(|v| v.detach().copy()).collect();
    let x = Tensor::rand([32, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [32], (Kind::Int64, Device::Cpu));
    let params = stack_of_one(&bnn);
    let mut buffers: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
    let sgd = BnnSgd {
        elbo: BnnElbo::new(&bnn.config.prior, &scale(Reduction::Mean), Device::Cpu),
        sgd: MomentumSgd::new(0.1, 0.9, Device::Cpu),
    };
    let losses = sgd.step(&params, &mut buffers, &draw_noise(&params), &x, &y);
    assert!(losses.loss.double_value(&[0]).is_finite());
    for (i, (b, v)) in before.iter().zip(variables(&bnn)).enumerate() {
        let change = (v - b).abs().max().double_value(&[]);
        assert!(change > 0.0, "variable {i} did not move");
        assert!(buffers[i].is_some(), "variable {i} has no momentum buffer");
    }
}
