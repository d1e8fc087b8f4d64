//! What a white-box curve of results.json attacks, as a type: its model (a λ net of the
//! grid or a BNN's ρ_init) and how it is attacked ([`TargetKind`]). Read from the
//! curve's typed `target` and the model's `spec` in `models`; results.json files written
//! before curves carried a target are read from the names the experiment gave their
//! curves, here and nowhere else.

use serde_json::Value;

use crate::experiment::whitebox::{CurveTarget, TargetKind};
use crate::model::checkpoint::ModelSpec;
use crate::report::plots::Family;

/// The model of the evaluation grid a curve attacks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CurveModel {
    Deterministic { lambda: f64 },
    Bnn { rho_init: f64 },
}

/// A white-box curve's model, kind, and whether it is a rerun of a masking check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveId {
    pub model: CurveModel,
    pub kind: TargetKind,
    pub rerun: bool,
}

impl CurveId {
    /// The id of curve `c` of results.json `r`; `None` for a curve of neither kind.
    pub fn of(r: &Value, c: &Value) -> Option<Self> {
        let rerun = !c["doubles"].is_null();
        match CurveTarget::of(c) {
            Some(target) => Self::from_target(r, &target, rerun),
            None => Self::from_name(c["model"].as_str()?, rerun),
        }
    }

    fn from_target(r: &Value, target: &CurveTarget, rerun: bool) -> Option<Self> {
        let row = r["models"]
            .as_array()?
            .iter()
            .find(|m| m["key"] == target.model_key.as_str())?;
        let model = match serde_json::from_value::<ModelSpec>(row["spec"].clone()).ok()? {
            ModelSpec::Mlp { lambda, .. } => CurveModel::Deterministic { lambda },
            ModelSpec::Bnn { config } => CurveModel::Bnn {
                rho_init: config.rho_init,
            },
        };
        Some(Self {
            model,
            kind: target.kind,
            rerun,
        })
    }

    /// The names of older results.json: `deterministic lambda=<λ>`, `BNN rho_init=<ρ>,
    /// one draw`, `…, ensemble of N, EOT k=<k>`, `…, posterior mean`, `…, frozen
    /// sample`, a rerun with ` (<what it varies>)` after.
    fn from_name(name: &str, rerun: bool) -> Option<Self> {
        let name = if rerun {
            name.rsplit_once(" (").map_or(name, |(n, _)| n)
        } else {
            name
        };
        if let Some(lambda) = name.strip_prefix("deterministic lambda=") {
            return Some(Self {
                model: CurveModel::Deterministic {
                    lambda: lambda.parse().ok()?,
                },
                kind: TargetKind::Deterministic,
                rerun,
            });
        }
        let (rho, what) = name.strip_prefix("BNN rho_init=")?.split_once(", ")?;
        let kind = match what {
            "one draw" => TargetKind::SingleDraw,
            "posterior mean" => TargetKind::PosteriorMean,
            "frozen sample" => TargetKind::FrozenSample,
            w if w.starts_with("ensemble of") => TargetKind::Ensemble {
                k: w.rsplit_once(", EOT k=")?.1.parse().ok()?,
            },
            _ => return None,
        };
        Some(Self {
            model: CurveModel::Bnn {
                rho_init: rho.parse().ok()?,
            },
            kind,
            rerun,
        })
    }

    pub fn rho_init(&self) -> Option<f64> {
        match self.model {
            CurveModel::Bnn { rho_init } => Some(rho_init),
            CurveModel::Deterministic { .. } => None,
        }
    }

    pub fn is_deterministic(&self) -> bool {
        matches!(self.model, CurveModel::Deterministic { .. })
    }

    /// Its colour: a BNN sampled (one draw, an ensemble), a deterministic net, or a
    /// control (a BNN's posterior mean or frozen sample).
    pub fn family(&self) -> Family {
        match (self.model, self.kind) {
            (CurveModel::Deterministic { .. }, _) => Family::Deterministic,
            (_, TargetKind::PosteriorMean | TargetKind::FrozenSample) => Family::Control,
            _ => Family::Bnn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn older_names_and_typed_targets_give_the_same_id() {
        let r = json!({"models": [
            {"key": "bnn-key", "spec": {"kind": "bnn", "config": crate::model::bayes::BayesConfig::with_rho_init(-2.5)}},
        ]});
        let named = json!({"model": "BNN rho_init=-2.5, ensemble of 100, EOT k=10 (2x steps)", "doubles": "x"});
        let mut typed = named.clone();
        typed["model"] = json!("anything");
        typed["target"] = json!(CurveTarget {
            model_key: "bnn-key".into(),
            kind: TargetKind::Ensemble { k: 10 }
        });
        let want = CurveId {
            model: CurveModel::Bnn { rho_init: -2.5 },
            kind: TargetKind::Ensemble { k: 10 },
            rerun: true,
        };
        assert_eq!(CurveId::of(&r, &named), Some(want));
        assert_eq!(CurveId::of(&r, &typed), Some(want));
        let det = json!({"model": "deterministic lambda=1e-4"});
        assert_eq!(
            CurveId::of(&r, &det).map(|id| id.model),
            Some(CurveModel::Deterministic { lambda: 1e-4 })
        );
        // A typed target whose model is not in `models` is not guessed from its name.
        typed["target"]["model_key"] = json!("elsewhere");
        assert_eq!(CurveId::of(&r, &typed), None);
    }
}
