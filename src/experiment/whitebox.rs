//! White-box robustness (beyond the paper): PGD run against each evaluation model
//! itself, a BNN's sampled decision rule included (through [`Eot`]), with robust
//! accuracy vs ε curves, the gradient agreement across weight draws, and sanity checks
//! that catch gradient masking (Athalye, Carlini & Wagner 2018; Carlini et al. 2019).

use serde_json::{Value, json};
use tch::{Kind, Tensor};

use crate::attack::{
    AttackLoss, BnnPass, Differentiable, Eot, Norm, PgdBudgets, Spsa, input_gradient, margin,
};
use crate::data::{INPUT_MAX, Split};
use crate::model::WeightMode;
use crate::model::bayes::BayesMlp;
use crate::model::mlp::Mlp;
use crate::seed::SeedTree;
use crate::stats::MeanCi;

/// How much white-box work to do.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WhiteboxProfile {
    /// The first this many test images are attacked.
    pub examples: usize,
    /// L∞ budgets in [0, 1] pixel units (converted to the (0, 2) input scale).
    pub linf_eps_pixels: Vec<f64>,
    /// L2 budgets in input units.
    pub l2_eps: Vec<f64>,
    pub steps: usize,
    pub restarts: usize,
    /// Step size as a fraction of ε (Madry et al.: 2.5 ε / steps).
    pub rel_step: f64,
    /// EOT sample counts k for attacks on the BNN's ensemble.
    pub eot_ks: Vec<usize>,
    /// Restarts for EOT attacks with k > 1 (each step costs k passes).
    pub eot_restarts: usize,
    /// Draws of the deployed ensemble (eq. 7) a perturbation is judged by.
    pub deployed_draws: usize,
    /// Fresh evaluations of a stochastic model per perturbed input.
    pub eval_repeats: usize,
    /// Weight draws for the gradient agreement.
    pub agreement_draws: usize,
}

impl WhiteboxProfile {
    /// 100 steps, 5 restarts, 8 budgets per norm on 1,000 test images; EOT with k > 1
    /// runs one restart (a k = 50 step costs 50 passes).
    pub fn paper() -> Self {
        Self {
            examples: 1000,
            linf_eps_pixels: vec![0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4],
            l2_eps: vec![0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0],
            steps: 100,
            restarts: 5,
            rel_step: 0.025,
            eot_ks: vec![1, 10, 50],
            eot_restarts: 1,
            deployed_draws: 100,
            eval_repeats: 5,
            agreement_draws: 20,
        }
    }

    /// The paper budget's attack (100 steps, 5 restarts, the same budgets) on 500 test
    /// images, with EOT k ∈ {1, 10}: the short profile's.
    pub fn short() -> Self {
        Self {
            examples: 500,
            eot_ks: vec![1, 10],
            ..Self::paper()
        }
    }

    pub fn quick() -> Self {
        Self {
            examples: 200,
            linf_eps_pixels: vec![0.0, 0.1, 0.3],
            l2_eps: vec![0.0, 1.0, 3.0],
            steps: 10,
            restarts: 1,
            rel_step: 0.25,
            eot_ks: vec![1, 5],
            eot_restarts: 1,
            deployed_draws: 20,
            eval_repeats: 2,
            agreement_draws: 5,
        }
    }

    fn budgets(&self, norm: Norm, restarts: usize) -> PgdBudgets {
        let eps = match norm {
            Norm::Linf => self.linf_eps_pixels.iter().map(|e| e * INPUT_MAX).collect(),
            Norm::L2 => self.l2_eps.clone(),
        };
        PgdBudgets {
            norm,
            eps,
            rel_step: self.rel_step,
            steps: self.steps,
            restarts,
            loss: AttackLoss::CrossEntropy,
        }
    }
}

/// Extra white-box runs that test the main curves for gradient masking: the BNN's
/// single draw attacked with twice the steps, and a gradient-free attack (SPSA).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WhiteboxChecks {
    /// Rerun the BNN's single draw with twice the steps (restarts unchanged).
    pub doubled: bool,
    /// The L∞ budget (one of the profile's, [0, 1] pixel units) where SPSA meets PGD.
    pub spsa_eps_pixels: f64,
    pub spsa_steps: usize,
    pub spsa_samples: usize,
    /// Finite-difference step and Adam learning rate, in [0, 1] pixel units.
    pub spsa_delta_pixels: f64,
    pub spsa_lr_pixels: f64,
    /// Weight draws per SPSA query of the BNN's ensemble.
    pub spsa_eot_k: usize,
}

impl WhiteboxChecks {
    /// SPSA with Uesato et al.'s (2018) δ = lr = 0.01, 100 steps of 32 directions, at
    /// ε = 0.05 where PGD leaves the nets 15–45% accuracy; 5 draws per ensemble query.
    pub fn paper() -> Self {
        Self {
            doubled: true,
            spsa_eps_pixels: 0.05,
            spsa_steps: 100,
            spsa_samples: 32,
            spsa_delta_pixels: 0.01,
            spsa_lr_pixels: 0.01,
            spsa_eot_k: 5,
        }
    }

    pub fn quick() -> Self {
        Self {
            doubled: true,
            spsa_eps_pixels: 0.1,
            spsa_steps: 10,
            spsa_samples: 8,
            spsa_delta_pixels: 0.01,
            spsa_lr_pixels: 0.02,
            spsa_eot_k: 2,
        }
    }

    fn spsa(&self) -> Spsa {
        Spsa {
            eps: self.spsa_eps_pixels * INPUT_MAX,
            steps: self.spsa_steps,
            samples: self.spsa_samples,
            delta: self.spsa_delta_pixels * INPUT_MAX,
            lr: self.spsa_lr_pixels * INPUT_MAX,
        }
    }
}

impl WhiteboxProfile {
    /// This profile with twice the steps.
    pub fn doubled(&self) -> Self {
        Self {
            steps: 2 * self.steps,
            ..self.clone()
        }
    }
}

/// SPSA against `target` (the deterministic net itself; a BNN's ensemble through EOT
/// over `spsa_eot_k` draws per query) at the checks' L∞ budget, judged like the PGD
/// curves; accuracy in percent with a CI over examples.
pub fn spsa_accuracy(
    name: &str,
    target: &Target,
    split: &Split,
    profile: &WhiteboxProfile,
    checks: &WhiteboxChecks,
    seeds: &SeedTree,
) -> Value {
    let (attacked, deployed) = target.models(profile);
    let queried = match *target {
        Target::Ensemble { bnn, .. } => Model::Eot(Eot {
            bnn,
            k: checks.spsa_eot_k,
        }),
        _ => attacked,
    };
    let repeats = if target.stochastic() {
        profile.eval_repeats
    } else {
        1
    };
    seeds.seed_torch(&format!("whitebox/{name}/spsa"));
    let attack = checks.spsa();
    let outcome = attack.run(&queried, &split.images, &split.labels);
    json!({
        "model": name,
        "eps_pixels": checks.spsa_eps_pixels,
        "accuracy": robust_accuracy(&deployed, &outcome.perturbed, &split.labels, repeats),
        "attack": attack,
        "eot_k": matches!(target, Target::Ensemble { .. }).then_some(checks.spsa_eot_k),
    })
}

/// Counted matrix-product FLOPs of [`spsa_accuracy`].
pub fn spsa_flops(
    target: TargetKind,
    profile: &WhiteboxProfile,
    checks: &WhiteboxChecks,
    examples: usize,
    arch: &crate::model::Arch,
) -> f64 {
    let (k, deployed) = match target {
        TargetKind::Ensemble { .. } => (
            checks.spsa_eot_k,
            profile.deployed_draws * profile.eval_repeats,
        ),
        _ => (1, 1),
    };
    let queries = (checks.spsa_steps * (2 * checks.spsa_samples + 1) * k + deployed) as f64;
    super::flops::forward(arch, queries * examples as f64)
}

/// Which model a curve (or an SPSA result) attacks and how: what pairs a curve with
/// its reruns, its SPSA result and the BNN's other EOT curves, never its name. Stored
/// in results.json as each curve's `target`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CurveTarget {
    /// The cache key of the attacked model.
    pub model_key: String,
    #[serde(flatten)]
    pub kind: TargetKind,
}

impl CurveTarget {
    /// The target of `curve` (its `target` field), if it has one.
    pub fn of(curve: &Value) -> Option<Self> {
        serde_json::from_value(curve.get("target")?.clone()).ok()
    }
}

/// Whether `curve` is a rerun of a masking check (it names the curve it `doubles`).
fn is_rerun(curve: &Value) -> bool {
    !curve["doubles"].is_null()
}

/// The main curve (not a rerun) of `target`.
fn main_curve<'a>(curves: &'a [Value], target: &CurveTarget) -> Option<&'a Value> {
    curves
        .iter()
        .find(|c| !is_rerun(c) && CurveTarget::of(c).as_ref() == Some(target))
}

/// PGD's L∞ accuracy against `target` at `eps_pixels`, from its main curve.
fn pgd_at(curves: &[Value], target: &CurveTarget, eps_pixels: f64) -> Option<MeanCi> {
    let curve = main_curve(curves, target)?;
    let eps: Vec<f64> = serde_json::from_value(curve["linf"]["eps_pixels"].clone()).ok()?;
    let i = eps.iter().position(|e| (e - eps_pixels).abs() < 1e-12)?;
    serde_json::from_value(curve["linf"]["accuracy"][i].clone()).ok()
}

/// Each SPSA result with PGD's accuracy at its budget beside it (`pgd_accuracy`),
/// and the gradient-free check: SPSA must not beat PGD by more than their CIs (if it
/// does, PGD's gradients are masked).
pub fn spsa_checks(curves: &[Value], spsa: &mut [Value]) -> Vec<Check> {
    spsa.iter_mut()
        .filter_map(|s| {
            let model = s["model"].as_str()?.to_owned();
            let eps = s["eps_pixels"].as_f64()?;
            let pgd = pgd_at(curves, &CurveTarget::of(s)?, eps)?;
            s["pgd_accuracy"] = json!(pgd);
            let gf: MeanCi = serde_json::from_value(s["accuracy"].clone()).ok()?;
            let slack = pgd.half_width().max(gf.half_width());
            Some(Check {
                model,
                check: format!("linf: gradient-free SPSA not stronger than PGD at ε={eps}"),
                passed: gf.mean >= pgd.mean - slack,
                detail: format!(
                    "SPSA {:.1}% vs PGD {:.1}% (CI half-width {slack:.1})",
                    gf.mean, pgd.mean
                ),
            })
        })
        .collect()
}

/// What is attacked and how its decision is made.
pub enum Target<'a> {
    /// A deterministic net.
    Deterministic(&'a Mlp),
    /// A BNN with one fresh weight draw per pass, attacked and judged that way.
    SingleDraw(&'a BayesMlp),
    /// A BNN deployed as its ensemble of `deployed_draws`, attacked through EOT over k.
    Ensemble { bnn: &'a BayesMlp, k: usize },
    /// A BNN run with its posterior means.
    PosteriorMean(&'a BayesMlp),
    /// A BNN with one weight sample fixed for good.
    FrozenSample(&'a BayesMlp),
}

impl<'a> Target<'a> {
    /// `model` attacked as `kind`, or `None` where the kind does not fit the model (a
    /// BNN kind of a deterministic net, or the reverse).
    pub fn of(model: &'a crate::train::TrainedModel, kind: TargetKind) -> Option<Self> {
        use crate::train::TrainedModel::{Bnn, Mlp};
        Some(match (kind, model) {
            (TargetKind::Deterministic, Mlp { mlp, .. }) => Target::Deterministic(mlp),
            (TargetKind::SingleDraw, Bnn { bnn, .. }) => Target::SingleDraw(bnn),
            (TargetKind::Ensemble { k }, Bnn { bnn, .. }) => Target::Ensemble { bnn, k },
            (TargetKind::PosteriorMean, Bnn { bnn, .. }) => Target::PosteriorMean(bnn),
            (TargetKind::FrozenSample, Bnn { bnn, .. }) => Target::FrozenSample(bnn),
            _ => return None,
        })
    }
}

/// A [`Target`]'s attacked model and deployed model as one differentiable dispatch.
enum Model<'a> {
    Mlp(&'a Mlp),
    Pass(BnnPass<'a>),
    Eot(Eot<'a>),
}

impl Differentiable for Model<'_> {
    fn logits(&self, x: &Tensor) -> Tensor {
        match self {
            Model::Mlp(m) => m.logits(x),
            Model::Pass(p) => p.logits(x),
            Model::Eot(e) => e.logits(x),
        }
    }
}

impl<'a> Target<'a> {
    fn models(&self, profile: &WhiteboxProfile) -> (Model<'a>, Model<'a>) {
        let pass = |bnn: &'a BayesMlp, mode| Model::Pass(BnnPass { bnn, mode });
        match *self {
            Target::Deterministic(m) => (Model::Mlp(m), Model::Mlp(m)),
            Target::SingleDraw(b) => (pass(b, WeightMode::Sample), pass(b, WeightMode::Sample)),
            Target::Ensemble { bnn, k } => (
                Model::Eot(Eot { bnn, k }),
                Model::Eot(Eot {
                    bnn,
                    k: profile.deployed_draws,
                }),
            ),
            Target::PosteriorMean(b) => (pass(b, WeightMode::Mean), pass(b, WeightMode::Mean)),
            Target::FrozenSample(b) => (
                pass(b, WeightMode::Frozen(0)),
                pass(b, WeightMode::Frozen(0)),
            ),
        }
    }

    fn stochastic(&self) -> bool {
        self.kind().stochastic()
    }

    fn restarts(&self, profile: &WhiteboxProfile) -> usize {
        self.kind().restarts(profile)
    }

    /// What kind of target this is, without its model.
    pub fn kind(&self) -> TargetKind {
        match self {
            Target::Deterministic(_) => TargetKind::Deterministic,
            Target::SingleDraw(_) => TargetKind::SingleDraw,
            Target::Ensemble { k, .. } => TargetKind::Ensemble { k: *k },
            Target::PosteriorMean(_) => TargetKind::PosteriorMean,
            Target::FrozenSample(_) => TargetKind::FrozenSample,
        }
    }
}

/// How a [`Target`]'s model is attacked and judged, without the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetKind {
    Deterministic,
    SingleDraw,
    /// The deployed ensemble, attacked through EOT over `k` draws.
    Ensemble {
        k: usize,
    },
    PosteriorMean,
    FrozenSample,
}

impl TargetKind {
    /// Whether each pass draws fresh weights (so judging repeats it).
    pub fn stochastic(self) -> bool {
        matches!(self, TargetKind::SingleDraw | TargetKind::Ensemble { .. })
    }

    /// PGD restarts per budget (EOT with k > 1 runs `eot_restarts`).
    pub fn restarts(self, profile: &WhiteboxProfile) -> usize {
        match self {
            TargetKind::Ensemble { k } if k > 1 => profile.eot_restarts,
            _ => profile.restarts,
        }
    }
}

/// Counted matrix-product FLOPs of [`curves`] for `target` on `examples` images: every
/// budget's restarts of PGD through the attacked model (k draws for EOT), the judging
/// passes through the deployed model, and the gradient agreement.
pub fn flops(
    target: TargetKind,
    profile: &WhiteboxProfile,
    examples: usize,
    arch: &crate::model::Arch,
) -> f64 {
    use super::flops::{forward, input_gradient_steps};
    let (attacked_draws, deployed_draws) = match target {
        TargetKind::Ensemble { k } => (k, profile.deployed_draws),
        _ => (1, 1),
    };
    let repeats = if target.stochastic() {
        profile.eval_repeats
    } else {
        1
    };
    let budgets = (profile.linf_eps_pixels.len() + profile.l2_eps.len()) as f64;
    let n = examples as f64;
    let attack = budgets
        * input_gradient_steps(
            arch,
            (target.restarts(profile) * profile.steps) as f64,
            n * attacked_draws as f64,
        );
    let judge = budgets * forward(arch, n * (repeats * deployed_draws) as f64);
    let agreement = if target.stochastic() {
        input_gradient_steps(arch, 1.0, n * profile.agreement_draws as f64)
    } else {
        0.0
    };
    attack + judge + agreement
}

/// Percent accuracy of `model` on `x`, per example averaged over `repeats` fresh
/// passes, as mean and Student-t CI over the examples.
fn robust_accuracy(model: &impl Differentiable, x: &Tensor, y: &Tensor, repeats: usize) -> MeanCi {
    tch::no_grad(|| {
        let mut correct = Tensor::zeros([x.size()[0]], (Kind::Double, x.device()));
        for _ in 0..repeats.max(1) {
            correct += margin(&model.logits(x), y).gt(0.0).to_kind(Kind::Double);
        }
        let per_example: Vec<f64> =
            Vec::try_from(correct / repeats.max(1) as f64).unwrap_or_default();
        MeanCi::from_values(&per_example)
            .map(|m| m.scaled(100.0))
            .unwrap_or(MeanCi {
                mean: f64::NAN,
                ci95: [f64::NAN, f64::NAN],
                runs: 0,
            })
    })
}

/// ‖E_w ∇ₓL‖ / E_w ‖∇ₓL‖ of the cross-entropy over `draws` weight draws, averaged over
/// examples: 1 when every draw's input gradient points the same way, near 0 when
/// they cancel (the signature of gradients an attacker cannot use one draw at a time).
pub fn gradient_agreement(bnn: &BayesMlp, x: &Tensor, y: &Tensor, draws: usize) -> f64 {
    let k = draws.max(1) as i64;
    let xs = x
        .unsqueeze(0)
        .expand([k, -1, -1], false)
        .contiguous()
        .detach()
        .set_requires_grad(true);
    let logits = bnn
        .forward(&xs, k as usize, WeightMode::Sample, false)
        .logits;
    let loss = logits.view([-1, 10]).cross_entropy_loss::<Tensor>(
        &y.repeat([k]),
        None,
        tch::Reduction::Sum,
        -100,
        0.0,
    );
    let g = input_gradient(&loss, &xs); // [k, B, 784]
    tch::no_grad(|| {
        let mean_norm = g
            .mean_dim([0].as_slice(), false, None::<Kind>)
            .norm_scalaropt_dim(2, [-1].as_slice(), false);
        let norm_mean = g.norm_scalaropt_dim(2, [-1].as_slice(), false).mean_dim(
            [0].as_slice(),
            false,
            None::<Kind>,
        );
        (mean_norm / norm_mean.clamp_min(1e-30))
            .mean(Kind::Double)
            .double_value(&[])
    })
}

/// One target's curves: per norm, the budgets, robust accuracy per budget (percent,
/// CI over examples) and the attack's success rate against the attacked model.
pub fn curves(
    name: &str,
    target: &Target,
    split: &Split,
    profile: &WhiteboxProfile,
    seeds: &SeedTree,
) -> Value {
    let (attacked, deployed) = target.models(profile);
    let repeats = if target.stochastic() {
        profile.eval_repeats
    } else {
        1
    };
    let (x, y) = (&split.images, &split.labels);
    let mut per_norm = serde_json::Map::new();
    for norm in [Norm::Linf, Norm::L2] {
        seeds.seed_torch(&format!("whitebox/{name}/{norm:?}"));
        let budgets = profile.budgets(norm, target.restarts(profile));
        let outcomes = budgets.run(&attacked, x, y);
        let accuracy: Vec<MeanCi> = outcomes
            .iter()
            .map(|o| robust_accuracy(&deployed, &o.perturbed, y, repeats))
            .collect();
        per_norm.insert(
            format!("{norm:?}").to_lowercase(),
            json!({
                "eps": budgets.eps,
                "eps_pixels": match norm { Norm::Linf => json!(profile.linf_eps_pixels), Norm::L2 => Value::Null },
                "accuracy": accuracy,
                "attack_success": outcomes.iter().map(|o| o.success_rate()).collect::<Vec<_>>(),
                "attack": budgets,
            }),
        );
    }
    let agreement = match target {
        Target::SingleDraw(b) | Target::Ensemble { bnn: b, .. } => {
            seeds.seed_torch(&format!("whitebox/{name}/agreement"));
            json!(gradient_agreement(b, x, y, profile.agreement_draws))
        }
        _ => Value::Null,
    };
    let mut out = json!({ "model": name, "repeats": repeats, "gradient_agreement": agreement });
    if let Some(obj) = out.as_object_mut() {
        obj.extend(per_norm);
    }
    out
}

/// Whether two accuracy curves agree at every budget within the larger CI half-width,
/// with the largest change and how many budgets exceed their CI.
fn agree_within_ci(a: &Value, b: &Value) -> (bool, String) {
    let a: Vec<MeanCi> = serde_json::from_value(a.clone()).unwrap_or_default();
    let b: Vec<MeanCi> = serde_json::from_value(b.clone()).unwrap_or_default();
    let changes: Vec<(f64, f64)> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x.mean - y.mean).abs(), x.half_width().max(y.half_width())))
        .collect();
    let passed = changes.iter().all(|(d, h)| d <= h);
    let beyond = changes.iter().filter(|(d, h)| d > h).count();
    let (d, h) = changes
        .iter()
        .copied()
        .max_by(|x, y| x.0.total_cmp(&y.0))
        .unwrap_or((0.0, 0.0));
    (
        passed,
        format!(
            "largest change {d:.1} points (CI half-width there {h:.1}); {beyond} of {} budgets beyond their CI",
            changes.len()
        ),
    )
}

/// A named sanity check and whether it passed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub model: String,
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// The gradient-masking checks computable from the curves: accuracy does not rise
/// with ε beyond its CI; the largest budget brings accuracy to about 0 (≤ 5%; for
/// the frozen weight sample this is the check that it falls like a deterministic net);
/// the two largest EOT sample counts agree within their CIs.
pub fn sanity_checks(curves: &[Value]) -> Vec<Check> {
    let mut checks = Vec::new();
    for c in curves {
        let model = c["model"].as_str().unwrap_or("?").to_owned();
        for norm in ["linf", "l2"] {
            let acc: Vec<MeanCi> =
                serde_json::from_value(c[norm]["accuracy"].clone()).unwrap_or_default();
            let rises: Vec<String> = acc
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w[1].mean > w[0].mean + w[0].half_width().max(w[1].half_width()))
                .map(|(i, w)| {
                    format!(
                        "budget {} -> {}: {:.1} -> {:.1}",
                        i,
                        i + 1,
                        w[0].mean,
                        w[1].mean
                    )
                })
                .collect();
            checks.push(Check {
                model: model.clone(),
                check: format!("{norm}: accuracy non-increasing in ε"),
                passed: rises.is_empty(),
                detail: if rises.is_empty() {
                    "within CIs".into()
                } else {
                    rises.join("; ")
                },
            });
            if let Some(last) = acc.last() {
                checks.push(Check {
                    model: model.clone(),
                    check: format!("{norm}: largest ε reaches about 0% (≤ 5%)"),
                    passed: last.mean <= 5.0,
                    detail: format!("{:.1}% at the largest ε", last.mean),
                });
            }
        }
    }
    // Twice the steps should not change the result beyond its CI (else the attack had
    // not converged).
    for c in curves.iter().filter(|c| is_rerun(c)) {
        let Some(base) = CurveTarget::of(c).and_then(|t| main_curve(curves, &t)) else {
            continue;
        };
        // What the rerun changed (curves made before `varies` existed doubled the steps).
        let what = c["varies"].as_str().unwrap_or("twice the steps");
        for norm in ["linf", "l2"] {
            let (passed, detail) = agree_within_ci(&base[norm]["accuracy"], &c[norm]["accuracy"]);
            checks.push(Check {
                model: c["model"].as_str().unwrap_or("?").to_owned(),
                check: format!("{norm}: {what} change accuracy by less than its CI"),
                passed,
                detail,
            });
        }
    }
    // More EOT samples should not change the result beyond its CI (else the attack
    // has not converged on the ensemble's expected gradient): per BNN, its two EOT
    // curves with the most samples, the BNNs in the order of their first EOT curve.
    let mut eot: Vec<(String, usize, &Value)> = curves
        .iter()
        .filter(|c| !is_rerun(c))
        .filter_map(|c| match CurveTarget::of(c)? {
            CurveTarget {
                model_key,
                kind: TargetKind::Ensemble { k },
            } => Some((model_key, k, c)),
            _ => None,
        })
        .collect();
    let mut bnns: Vec<String> = Vec::new();
    for (key, ..) in &eot {
        if !bnns.contains(key) {
            bnns.push(key.clone());
        }
    }
    eot.sort_by_key(|e| e.1);
    for bnn in &bnns {
        let of_bnn: Vec<&Value> = eot.iter().filter(|e| e.0 == *bnn).map(|e| e.2).collect();
        let [.., fewer, more] = of_bnn.as_slice() else {
            continue;
        };
        for norm in ["linf", "l2"] {
            let (passed, detail) =
                agree_within_ci(&fewer[norm]["accuracy"], &more[norm]["accuracy"]);
            checks.push(Check {
                model: format!(
                    "{} vs {}",
                    fewer["model"].as_str().unwrap_or("?"),
                    more["model"].as_str().unwrap_or("?")
                ),
                check: format!("{norm}: more EOT samples change accuracy by less than its CI"),
                passed,
                detail,
            });
        }
    }
    checks
}
