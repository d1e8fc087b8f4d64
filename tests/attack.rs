//! Attacks on a fixture-trained MLP: they lower accuracy, respect their budgets and
//! the input box, trade norm against c as eq. 5 says, and touch no parameter gradient.

mod common;

use bayes_robust::attack::{
    AttackLoss, BnnPass, Differentiable, Eot, MinNormAttack, Norm, Pgd, PgdBudgets, margin,
};
use bayes_robust::data::INPUT_MAX;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use bayes_robust::model::{Arch, WeightMode};
use tch::{Device, Kind, Tensor, nn};

/// An untrained FC-20-10 net (seed libtorch first).
fn small_mlp() -> (nn::VarStore, Mlp) {
    common::untrained_mlp(&[20])
}

/// The min-norm attack of these tests: 150 Adam steps at lr 0.01, κ = 0.
fn min_norm(c: f64, search_rounds: usize) -> MinNormAttack {
    MinNormAttack {
        c,
        steps: 150,
        lr: 0.01,
        kappa: 0.0,
        search_rounds,
    }
}

fn accuracy(model: &impl Differentiable, x: &Tensor, y: &Tensor) -> f64 {
    tch::no_grad(|| {
        margin(&model.logits(x), y)
            .gt(0.0)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    })
}

fn in_box(x: &Tensor) -> bool {
    x.min().double_value(&[]) >= 0.0 && x.max().double_value(&[]) <= INPUT_MAX + 1e-6
}

#[test]
fn the_min_norm_attack_flips_the_source_and_its_distortion_falls_as_c_grows() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let (x, y) = (&splits.test.images, &splits.test.labels);
    let clean = accuracy(&mlp, x, y);
    assert!(clean > 0.8, "fixture model accuracy {clean}");
    let small_c = min_norm(0.02, 0).run(&mlp, x, y);
    let large_c = min_norm(0.5, 0).run(&mlp, x, y);
    for out in [&small_c, &large_c] {
        assert!(in_box(&out.perturbed));
        let adv = accuracy(&mlp, &out.perturbed, y);
        assert!(
            adv < 0.1,
            "the attack leaves accuracy at {adv}, distortion {}",
            out.mean_distortion()
        );
        // success is exactly "misclassified by the source".
        let wrong = margin(&mlp.forward(&out.perturbed), y).lt(0.0);
        assert!(wrong.equal(&out.success));
        let norms = (&out.perturbed - x)
            .square()
            .sum_dim_intlist([1].as_slice(), false, None::<Kind>)
            .sqrt();
        assert!(norms.allclose(&out.norms, 1e-5, 1e-5, false));
    }
    let (d_small, d_large) = (small_c.mean_distortion(), large_c.mean_distortion());
    assert!(
        d_large < d_small,
        "distortion {d_large} at c = 0.5 is not below {d_small} at c = 0.02"
    );
    assert!(
        d_large < 0.1,
        "the paper keeps distortion below 0.10; got {d_large}"
    );
    // Too large a fixed c never crosses the boundary; the per-example search does.
    let fixed = min_norm(20.0, 0).run(&mlp, x, y);
    let searched = min_norm(20.0, 5).run(&mlp, x, y);
    assert!(
        searched.success_rate() > fixed.success_rate() + 0.2,
        "search {} vs fixed {}",
        searched.success_rate(),
        fixed.success_rate()
    );
}

/// The min-norm attack as first written, everything through autograd and Adam out of
/// place (the reference the hand-written gradient and in-place Adam must reproduce):
///
/// ```text
/// adv = clamp(x + r, 0, 255/126);  δ = adv − x;  n = √(Σ δ² + 1e-12)
/// loss = Σ_i c_i n_i + max(margin_i, −κ);  g = ∂loss/∂r (autograd)
/// m = β1 m + (1 − β1) g;  v = β2 v + (1 − β2) g²
/// r = r − lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + 1e-8)
/// ```
///
/// with the best δ per example whose margin is below −κ, c quartered after each round
/// for an example that never got there. Returns the final perturbed inputs.
fn reference_min_norm(attack: &MinNormAttack, model: &Mlp, x: &Tensor, y: &Tensor) -> Tensor {
    let (beta1, beta2): (f64, f64) = (0.9, 0.999);
    let rows = |t: &Tensor| {
        t.square()
            .sum_dim_intlist([1].as_slice(), false, None::<Kind>)
    };
    let mut r = x.zeros_like();
    let (mut m, mut v) = (x.zeros_like(), x.zeros_like());
    let mut best = x.zeros_like();
    let mut best_norm = Tensor::full([x.size()[0]], f64::INFINITY, (Kind::Float, Device::Cpu));
    let mut last = x.zeros_like();
    let mut c = Tensor::full([x.size()[0]], attack.c, (Kind::Float, Device::Cpu));
    let round = attack.steps.div_ceil(attack.search_rounds);
    for t in 1..=attack.steps {
        let r_var = r.detach().set_requires_grad(true);
        let adv = (x + &r_var).clamp(0.0, INPUT_MAX);
        let delta = &adv - x;
        let norm = (rows(&delta) + 1e-12).sqrt();
        let mg = margin(&model.forward(&adv), y);
        let loss = (&norm * &c + mg.clamp_min(-attack.kappa)).sum(Kind::Float);
        let g = Tensor::run_backward(&[loss], &[&r_var], false, false).remove(0);
        tch::no_grad(|| {
            let (delta, norm) = (delta.detach(), norm.detach());
            let better = mg
                .detach()
                .lt(-attack.kappa)
                .logical_and(&norm.lt_tensor(&best_norm));
            best = delta.where_self(&better.unsqueeze(1), &best);
            best_norm = norm.where_self(&better, &best_norm);
            last = delta;
            m = &m * beta1 + &g * (1.0 - beta1);
            v = &v * beta2 + g.square() * (1.0 - beta2);
            let m_hat = &m / (1.0 - beta1.powi(t as i32));
            let v_hat = &v / (1.0 - beta2.powi(t as i32));
            r = r.detach() - m_hat / (v_hat.sqrt() + 1e-8) * attack.lr;
            if t % round == 0 {
                c = (&c * 0.25).where_self(&best_norm.isinf(), &c);
            }
        });
    }
    tch::no_grad(|| {
        let adv = (x + &r).clamp(0.0, INPUT_MAX);
        let delta = &adv - x;
        let norm = rows(&delta).sqrt();
        let better = margin(&model.forward(&adv), y)
            .lt(-attack.kappa)
            .logical_and(&norm.lt_tensor(&best_norm));
        best = delta.where_self(&better.unsqueeze(1), &best);
        best_norm = norm.where_self(&better, &best_norm);
        let chosen = best.where_self(&best_norm.isfinite().unsqueeze(1), &delta);
        (x + chosen).clamp(0.0, INPUT_MAX)
    })
}

#[test]
fn the_min_norm_attack_equals_its_autograd_reference() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let (x, y) = (&splits.test.images, &splits.test.labels);
    for (c, kappa) in [(0.05, 0.0), (5.0, 0.5)] {
        let attack = MinNormAttack {
            c,
            steps: 40,
            lr: 0.01,
            kappa,
            search_rounds: 4,
        };
        let ours = attack.run(&mlp, x, y).perturbed;
        let reference = reference_min_norm(&attack, &mlp, x, y);
        let gap = (&ours - &reference).abs().max().double_value(&[]);
        assert!(
            gap < 1e-4,
            "c = {c}: the attack is {gap} from the reference"
        );
        let moved = (&reference - x).abs().max().double_value(&[]);
        assert!(
            moved > 0.05,
            "c = {c}: the reference barely moved ({moved})"
        );
    }
}

#[test]
fn pgd_respects_its_budget_and_the_box_and_fgsm_is_weaker() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let (x, y) = (&splits.test.images, &splits.test.labels);
    tch::manual_seed(0);
    let eps = 0.1 * 255.0 / 126.0;
    let linf = Pgd {
        norm: Norm::Linf,
        eps,
        step: eps / 4.0,
        steps: 20,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    }
    .run(&mlp, x, y);
    let d = &linf.perturbed - x;
    assert!(d.abs().max().double_value(&[]) <= eps + 1e-5);
    assert!(in_box(&linf.perturbed));
    let l2 = Pgd {
        norm: Norm::L2,
        eps: 1.5,
        step: 0.3,
        steps: 20,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    }
    .run(&mlp, x, y);
    assert!(l2.norms.max().double_value(&[]) <= 1.5 + 1e-4);
    assert!(in_box(&l2.perturbed));
    let fgsm = Pgd::fgsm(eps).run(&mlp, x, y);
    let (clean, a_fgsm, a_pgd) = (
        accuracy(&mlp, x, y),
        accuracy(&mlp, &fgsm.perturbed, y),
        accuracy(&mlp, &linf.perturbed, y),
    );
    assert!(
        a_pgd <= a_fgsm && a_fgsm < clean,
        "clean {clean}, fgsm {a_fgsm}, pgd {a_pgd}"
    );
    // An undefended MLP under L∞ PGD at ε = 0.3 in [0, 1] pixel units falls below 5%.
    let eps3 = 0.3 * 255.0 / 126.0;
    let strong = Pgd {
        norm: Norm::Linf,
        eps: eps3,
        step: eps3 / 10.0,
        steps: 40,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    }
    .run(&mlp, x, y);
    assert!(accuracy(&mlp, &strong.perturbed, y) < 0.05);
}

#[test]
fn attacks_leave_parameter_gradients_undefined() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(2);
    let (vs, mlp) = small_mlp();
    let bvs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(
        &bvs.root(),
        &BayesConfig {
            arch: Arch::new(&[20]),
            ..BayesConfig::default()
        },
    );
    let x = Tensor::rand([8, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    let _ = MinNormAttack {
        steps: 3,
        ..MinNormAttack::default()
    }
    .run(&mlp, &x, &y);
    let _ = Pgd::fgsm(0.1).run(&mlp, &x, &y);
    let _ = Pgd::fgsm(0.1).run(
        &BnnPass {
            bnn: &bnn,
            mode: WeightMode::Sample,
        },
        &x,
        &y,
    );
    let _ = PgdBudgets {
        norm: Norm::L2,
        eps: vec![0.5],
        rel_step: 0.5,
        steps: 2,
        restarts: 2,
        loss: AttackLoss::Margin,
    }
    .run(&Eot { bnn: &bnn, k: 3 }, &x, &y);
    for (name, v) in vs.variables().into_iter().chain(bvs.variables()) {
        assert!(!v.grad().defined(), "{name} has a gradient after an attack");
    }
}

#[test]
fn a_zero_budget_changes_nothing() {
    let _g = common::torch_rng_lock();
    tch::manual_seed(3);
    let (_vs, mlp) = small_mlp();
    let x = Tensor::rand([8, 784], (Kind::Float, Device::Cpu));
    let y = Tensor::zeros([8], (Kind::Int64, Device::Cpu));
    let out = Pgd {
        norm: Norm::Linf,
        eps: 0.0,
        step: 0.1,
        steps: 5,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    }
    .run(&mlp, &x, &y);
    assert!(out.perturbed.equal(&x));
}

/// A BNN with σ = 0 (ρ = −200 underflows softplus to 0 in f32) whose means are the
/// weights of `mlp`.
fn zero_sigma_copy(mlp: &Mlp, arch: Arch) -> (nn::VarStore, BayesMlp) {
    let bvs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(
        &bvs.root(),
        &BayesConfig {
            arch,
            rho_init: -200.0,
            ..BayesConfig::default()
        },
    );
    tch::no_grad(|| {
        for (bl, ml) in bnn.layers.iter().zip(&mlp.layers) {
            bl.mu_w.shallow_clone().copy_(&ml.weight);
            bl.mu_b.shallow_clone().copy_(&ml.bias);
        }
    });
    (bvs, bnn)
}

/// EOT over k draws of a σ = 0 BNN is the deterministic net: the same probabilities,
/// and PGD against it finds the same perturbations.
#[test]
fn eot_of_a_zero_sigma_bnn_is_the_deterministic_net() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let (_bvs, bnn) = zero_sigma_copy(&mlp, MlpConfig::default().arch);
    let (x, y) = (
        &splits.test.images.narrow(0, 0, 200),
        &splits.test.labels.narrow(0, 0, 200),
    );
    for k in [1, 10] {
        let eot = Eot { bnn: &bnn, k };
        let p_eot = tch::no_grad(|| eot.logits(x).exp());
        let p_det = tch::no_grad(|| mlp.forward(x).softmax(-1, Kind::Float));
        assert!(p_eot.allclose(&p_det, 1e-5, 1e-6, false), "k = {k}");
        // The margin on EOT's log-probabilities is the logit margin (the normaliser
        // cancels), so PGD on it takes the same steps. Cross-entropy saturates on
        // confident examples, where f32 rounding picks the L2 step's direction, so
        // only its success rate is compared.
        for (loss, same_steps) in [
            (AttackLoss::Margin, true),
            (AttackLoss::CrossEntropy, false),
        ] {
            let budgets = PgdBudgets {
                norm: Norm::L2,
                eps: vec![0.5, 1.5],
                rel_step: 0.25,
                steps: 10,
                restarts: 1,
                loss,
            };
            let on_eot = budgets.run(&eot, x, y);
            let on_det = budgets.run(&mlp, x, y);
            for (a, b) in on_eot.iter().zip(&on_det) {
                let rates = (a.success_rate(), b.success_rate());
                assert!(
                    (rates.0 - rates.1).abs() <= 0.01,
                    "k = {k}, {loss:?}: {rates:?}"
                );
                if same_steps {
                    let diff = (&a.perturbed - &b.perturbed).abs().max().double_value(&[]);
                    assert!(diff < 1e-3, "k = {k}: max difference {diff}");
                    assert!(a.success.equal(&b.success), "k = {k}");
                }
            }
        }
    }
}

/// Robust accuracy at ε = 0 is the clean accuracy; it does not rise with ε; every
/// perturbation stays in its ball and the box; restarts never lose a success.
#[test]
fn pgd_budgets_start_at_clean_accuracy_and_fall_with_the_budget() {
    let _g = common::torch_rng_lock();
    let (_vs, mlp, splits) = common::fixture_mlp();
    let (x, y) = (&splits.test.images, &splits.test.labels);
    tch::manual_seed(5);
    let to_input = 255.0 / 126.0;
    for (norm, eps) in [
        (
            Norm::Linf,
            vec![0.0, 0.02 * to_input, 0.05 * to_input, 0.1 * to_input],
        ),
        (Norm::L2, vec![0.0, 0.5, 1.0, 2.0]),
    ] {
        for loss in [AttackLoss::CrossEntropy, AttackLoss::Margin] {
            let budgets = PgdBudgets {
                norm,
                eps: eps.clone(),
                rel_step: 0.25,
                steps: 10,
                restarts: 2,
                loss,
            };
            let outcomes = budgets.run(&mlp, x, y);
            let robust: Vec<f64> = outcomes.iter().map(|o| 1.0 - o.success_rate()).collect();
            let clean = accuracy(&mlp, x, y);
            assert!(
                (robust[0] - clean).abs() < 1e-6,
                "{norm:?} {loss:?}: {} vs {clean}",
                robust[0]
            );
            assert!(
                robust.windows(2).all(|w| w[1] <= w[0]),
                "{norm:?} {loss:?}: {robust:?}"
            );
            assert!(robust[3] < robust[0] - 0.2, "{norm:?} {loss:?}: {robust:?}");
            for (o, e) in outcomes.iter().zip(&eps) {
                assert!(in_box(&o.perturbed));
                let d = &o.perturbed - x;
                let size = match norm {
                    Norm::Linf => d.abs().max().double_value(&[]),
                    Norm::L2 => o.norms.max().double_value(&[]),
                };
                assert!(size <= e + 1e-4, "{norm:?} ε {e}: {size}");
            }
            // One restart of the same budget is never stronger than two.
            let single = PgdBudgets {
                restarts: 1,
                ..budgets.clone()
            }
            .run(&mlp, x, y);
            let two = outcomes[2].success_rate();
            assert!(single[2].success_rate() <= two + 0.02, "{norm:?} {loss:?}");
        }
    }
}

#[test]
fn spsa_stays_in_its_ball_lowers_accuracy_without_gradients_and_is_not_stronger_than_pgd() {
    use bayes_robust::attack::Spsa;
    let _g = common::torch_rng_lock();
    let (vs, mlp, splits) = common::fixture_mlp();
    let (x, y) = (
        &splits.test.images.narrow(0, 0, 200),
        &splits.test.labels.narrow(0, 0, 200),
    );
    // Training left zeroed gradients behind; SPSA must not add to them.
    for (_, mut v) in vs.variables() {
        v.zero_grad();
    }
    tch::manual_seed(0);
    let eps = 0.1 * INPUT_MAX;
    let spsa = Spsa {
        eps,
        steps: 40,
        samples: 16,
        delta: 0.01 * INPUT_MAX,
        lr: 0.01 * INPUT_MAX,
    }
    .run(&mlp, x, y);
    assert!((&spsa.perturbed - x).abs().max().double_value(&[]) <= eps + 1e-5);
    assert!(in_box(&spsa.perturbed));
    // It never differentiates the model: no parameter gains a gradient.
    for (name, v) in vs.variables() {
        let g = v.grad();
        assert!(
            !g.defined() || g.abs().max().double_value(&[]) == 0.0,
            "{name} has a gradient"
        );
    }
    let pgd = Pgd {
        norm: Norm::Linf,
        eps,
        step: eps / 4.0,
        steps: 20,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    }
    .run(&mlp, x, y);
    let (clean, a_spsa, a_pgd) = (
        accuracy(&mlp, x, y),
        accuracy(&mlp, &spsa.perturbed, y),
        accuracy(&mlp, &pgd.perturbed, y),
    );
    // Finite differences find the same weakness, less sharply than the true gradient.
    assert!(a_spsa < clean - 0.2, "clean {clean}, spsa {a_spsa}");
    assert!(a_spsa + 0.05 >= a_pgd, "spsa {a_spsa} beats pgd {a_pgd}");
}
