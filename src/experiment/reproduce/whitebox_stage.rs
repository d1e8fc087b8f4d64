//! The white-box stage: every curve of the profile's [`WhiteboxPlan`] (PGD against each
//! model itself, EOT for a BNN's ensemble), the reruns of the gradient-masking checks and
//! the SPSA checks, each cached under its key ([`keys::whitebox_curve`], [`keys::spsa`]).

use std::time::Instant;

use serde_json::{Value, json};

use super::{GridModel, Pipeline, Ready, ReproduceError, StageReport, WhiteboxCurve, bar};
use crate::data::Split;
use crate::experiment::keys::Key;
use crate::experiment::whitebox::{self, CurveTarget, Target, WhiteboxProfile};
use crate::experiment::whitebox_targets::{GridRef, Role, TargetKind, WhiteboxPlan, every_bnn_ks};
use crate::experiment::{RHO_INITS, TABLE4_RHO};
use crate::model::Arch;

/// The trained models a white-box target can refer to.
pub(super) struct Models<'a> {
    pub dets: &'a [GridModel],
    pub det_ready: &'a [Ready],
    pub bnn_ready: &'a [Ready],
}

impl<'a> Models<'a> {
    fn ready(&self, model: GridRef) -> Result<&'a Ready, ReproduceError> {
        let (dets, bnns): (&'a [Ready], &'a [Ready]) = (self.det_ready, self.bnn_ready);
        model
            .evaluation_index()
            .and_then(|i| dets.iter().chain(bnns).nth(i))
            .ok_or_else(|| ReproduceError::WrongModel {
                key: format!("{model:?}"),
                expected: "a model of the evaluation grid",
            })
    }

    /// The target `kind` of `model`, as the attack code takes it.
    fn target(&self, model: GridRef, kind: TargetKind) -> Result<Target<'a>, ReproduceError> {
        let ready = self.ready(model)?;
        let wrong = || ReproduceError::WrongModel {
            key: ready.key.clone(),
            expected: match kind {
                TargetKind::Deterministic => "a deterministic net",
                _ => "a BNN",
            },
        };
        Target::of(&ready.model, kind).ok_or_else(wrong)
    }
}

/// One white-box artifact of the plan with the model it attacks, ready to make.
pub(super) struct CurveJob<'a> {
    pub key: Key,
    pub flops: f64,
    name: String,
    target: Target<'a>,
    /// What results.json records as the curve's `target`.
    curve_target: CurveTarget,
    profile: WhiteboxProfile,
    what: CurveWhat,
}

enum CurveWhat {
    /// A main curve (`every_bnn` for the other BNNs of the grid).
    Main {
        every_bnn: bool,
    },
    /// A rerun of the curve of target `of`, varying `varies`.
    Rerun {
        of: String,
        varies: String,
    },
    Spsa,
}

/// The profile's white-box plan ([`WhiteboxPlan`]) for the λ grid `dets`.
pub(super) fn plan_of(pipeline: &Pipeline, dets: &[GridModel]) -> WhiteboxPlan {
    let labels: Vec<String> = dets.iter().map(|gm| gm.label.clone()).collect();
    WhiteboxPlan::new(&pipeline.cfg.profile, &labels)
}

/// Every white-box artifact of the profile, in the order results.json lists them: the
/// main curves, the reruns, then the SPSA checks.
pub(super) fn curve_jobs<'a>(
    pipeline: &Pipeline,
    models: &Models<'a>,
) -> Result<Vec<CurveJob<'a>>, ReproduceError> {
    let p = &pipeline.cfg.profile;
    let plan = plan_of(pipeline, models.dets);
    let n = pipeline.test.len().min(p.whitebox.examples);
    let arch = Arch::new(&[100, 100]);
    let key_of = |m: GridRef| {
        models
            .ready(m)
            .map_or_else(|_| String::new(), |r| r.key.clone())
    };
    plan.artifacts(p, &key_of, pipeline.cfg.master_seed)
        .into_iter()
        .map(|a| {
            let t = &plan.targets[a.target];
            let target = models.target(t.model, t.kind)?;
            let curve_target = CurveTarget {
                model_key: models.ready(t.model)?.key.clone(),
                kind: t.kind,
            };
            let (name, what, flops) = match a.role {
                Role::Main(_) => (
                    t.name.clone(),
                    CurveWhat::Main {
                        every_bnn: t.every_bnn,
                    },
                    whitebox::flops(t.kind, &a.profile, n, &arch),
                ),
                Role::Rerun(j) => (
                    plan.reruns[j].name(&plan),
                    CurveWhat::Rerun {
                        of: t.name.clone(),
                        varies: plan.reruns[j].varies.clone(),
                    },
                    whitebox::flops(t.kind, &a.profile, n, &arch),
                ),
                Role::Spsa(_) => {
                    let flops = p.whitebox_checks.as_ref().map_or(0.0, |wc| {
                        whitebox::spsa_flops(t.kind, &a.profile, wc, n, &arch)
                    });
                    (t.name.clone(), CurveWhat::Spsa, flops)
                }
            };
            Ok(CurveJob {
                key: a.key,
                flops,
                name,
                target,
                curve_target,
                profile: a.profile,
                what,
            })
        })
        .collect()
}

impl CurveJob<'_> {
    /// The curve (or SPSA result), from the cache or computed and cached; and whether it
    /// was reused.
    pub(super) fn ensure(
        &self,
        pipeline: &Pipeline,
        split: &Split,
    ) -> Result<(super::Timed<WhiteboxCurve>, bool), ReproduceError> {
        let p = &pipeline.cfg.profile;
        let compute = || -> Value {
            match &self.what {
                CurveWhat::Main { .. } => whitebox::curves(
                    &self.name,
                    &self.target,
                    split,
                    &self.profile,
                    &pipeline.seeds,
                ),
                CurveWhat::Rerun { of, varies } => {
                    let mut curve = whitebox::curves(
                        &self.name,
                        &self.target,
                        split,
                        &self.profile,
                        &pipeline.seeds,
                    );
                    curve["doubles"] = json!(of);
                    curve["varies"] = json!(varies);
                    curve
                }
                CurveWhat::Spsa => match &p.whitebox_checks {
                    Some(wc) => whitebox::spsa_accuracy(
                        &self.name,
                        &self.target,
                        split,
                        &self.profile,
                        wc,
                        &pipeline.seeds,
                    ),
                    None => Value::Null,
                },
            }
        };
        let (c, reused) =
            pipeline.cached(&self.key.id, || Ok(WhiteboxCurve { curve: compute() }))?;
        self.key.write_beside(&pipeline.evals_dir)?;
        Ok((c, reused))
    }
}

/// The stage: every artifact of the plan, the checks computed from them, and the
/// `whitebox` section of results.json.
pub(super) fn run(
    pipeline: &Pipeline,
    models: &Models,
) -> Result<(Value, StageReport), ReproduceError> {
    let t0 = Instant::now();
    let cfg = pipeline.cfg;
    let p = &cfg.profile;
    let wp = &p.whitebox;
    let split = pipeline.test.head(wp.examples);
    let jobs = curve_jobs(pipeline, models)?;
    let progress = bar(jobs.len(), "white-box", cfg.verbose);
    let (mut reused, mut seconds, mut flops) = (0, 0.0, 0.0);
    let (mut curves, mut spsa) = (Vec::new(), Vec::new());
    for job in &jobs {
        progress.set_message(job.name.clone());
        let (c, was_cached) = job.ensure(pipeline, &split)?;
        reused += was_cached as usize;
        seconds += c.seconds;
        flops += job.flops;
        let mut curve = c.value.curve;
        if let Some(obj) = curve.as_object_mut() {
            obj.insert("target".into(), json!(job.curve_target));
        }
        match job.what {
            CurveWhat::Main { every_bnn } => {
                if every_bnn {
                    curve["every_bnn"] = json!(true);
                }
                curves.push(curve);
            }
            CurveWhat::Rerun { .. } => curves.push(curve),
            CurveWhat::Spsa => spsa.push(curve),
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let report = StageReport {
        stage: "whitebox".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: seconds,
        computed: jobs.len() - reused,
        reused,
        flops: Some(flops),
    };
    let mut checks = whitebox::sanity_checks(&curves);
    checks.extend(whitebox::spsa_checks(&curves, &mut spsa));
    let section = json!({
        "note": format!("PGD against each model itself on the first {} test images; accuracy in percent, CI over examples (each averaged over `repeats` fresh passes for a sampled model); the BNN is the Table 3 model{}", split.len(), p.whitebox_every_bnn_eot_k.map_or(String::new(), |k| {
            let ks = |rho| every_bnn_ks(p, rho, k).iter().map(|k| format!("k={k}")).collect::<Vec<_>>();
            let (other, table4) = (ks(RHO_INITS[0]), ks(TABLE4_RHO));
            let listed = match other.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => other.join(""),
            };
            let table4_extra = table4.get(other.len()).map_or(String::new(), |m| format!(" (the Table 4 BNN also {m})"));
            format!(", and every other BNN of the rho_init grid is attacked as one draw, as its ensemble through EOT {listed}{table4_extra}, as its posterior mean and as a frozen sample")
        })),
        "profile": wp, "examples": split.len(), "curves": curves, "checks": checks,
        "spsa": spsa, "check_runs": p.whitebox_checks,
    });
    Ok((section, report))
}
