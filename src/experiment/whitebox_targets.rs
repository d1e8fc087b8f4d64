//! Which white-box curves a profile makes, as data: every target (a model of the grid
//! attacked one way), the reruns of the gradient-masking checks (one thing of the attack
//! varied) and the SPSA checks, each chosen by its model and kind, never by its name.
//! The names are the ones results.json and the cache keys have always used.

use super::keys::{self, Key};
pub use super::whitebox::TargetKind;
use super::whitebox::WhiteboxProfile;
use super::{Profile, RHO_INITS, TABLE3_RHO, TABLE4_RHO};

/// Which model of the grid a target attacks.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "group", content = "at", rename_all = "snake_case")]
pub enum GridRef {
    /// The i-th deterministic net of the λ grid.
    Deterministic(usize),
    /// The BNN with this ρ_init.
    Bnn(f64),
}

impl GridRef {
    /// Its position among the evaluation models: the λ grid (in [`super::LAMBDAS`]
    /// order), then the ρ_init grid (in [`RHO_INITS`] order); `None` for a ρ_init
    /// outside the grid.
    pub fn evaluation_index(self) -> Option<usize> {
        match self {
            GridRef::Deterministic(i) => Some(i),
            GridRef::Bnn(rho) => RHO_INITS
                .iter()
                .position(|r| *r == rho)
                .map(|i| super::LAMBDAS.len() + i),
        }
    }
}

/// One white-box target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    pub name: String,
    pub model: GridRef,
    pub kind: TargetKind,
    /// One of the other BNNs of the ρ_init grid (`whitebox_every_bnn_eot_k`).
    pub every_bnn: bool,
}

/// A rerun of target `target` (an index into the targets) with `profile`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerun {
    pub target: usize,
    pub profile: WhiteboxProfile,
    /// Appended to the target's name: `<name> (<label>)`.
    pub label: String,
    /// What the rerun varies, in words.
    pub varies: String,
}

/// Everything the white-box stage makes under one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct WhiteboxPlan {
    pub targets: Vec<TargetSpec>,
    pub reruns: Vec<Rerun>,
    /// Targets met by SPSA (indices into the targets).
    pub spsa: Vec<usize>,
}

impl Rerun {
    pub fn name(&self, plan: &WhiteboxPlan) -> String {
        format!("{} ({})", plan.targets[self.target].name, self.label)
    }
}

/// The BNNs (other than the Table 3 one) that get the Table 4 BNN's extra runs.
fn checked(p: &Profile, rho: f64) -> bool {
    rho == TABLE4_RHO || p.whitebox_every_bnn_checks
}

/// The EOT sample counts of another BNN's ensemble, fewest first (the EOT check
/// compares the last two). The largest k of the main profile checks that k has
/// converged for a wider posterior than the Table 3 BNN's.
pub fn every_bnn_ks(p: &Profile, rho: f64, k: usize) -> Vec<usize> {
    let mut ks = if k > 1 { vec![1, k] } else { vec![k] };
    if let Some(&most) = p.whitebox.eot_ks.iter().max()
        && checked(p, rho)
        && most > k
    {
        ks.push(most);
    }
    ks
}

/// One BNN's targets: one draw, its ensemble through EOT with each of `ks`, its
/// posterior mean and a frozen sample.
fn bnn_targets(rho: f64, ks: &[usize], wp: &WhiteboxProfile, every_bnn: bool) -> Vec<TargetSpec> {
    let b = format!("BNN rho_init={rho}");
    let spec = |name: String, kind| TargetSpec {
        name,
        model: GridRef::Bnn(rho),
        kind,
        every_bnn,
    };
    let mut out = vec![spec(format!("{b}, one draw"), TargetKind::SingleDraw)];
    for &k in ks {
        out.push(spec(
            format!("{b}, ensemble of {}, EOT k={k}", wp.deployed_draws),
            TargetKind::Ensemble { k },
        ));
    }
    out.push(spec(
        format!("{b}, posterior mean"),
        TargetKind::PosteriorMean,
    ));
    out.push(spec(
        format!("{b}, frozen sample"),
        TargetKind::FrozenSample,
    ));
    out
}

impl WhiteboxPlan {
    /// The targets: the deterministic λ nets (named by their labels), the Table 3 BNN
    /// with every EOT k of the profile, then every other BNN of the ρ_init grid.
    pub fn new(p: &Profile, det_labels: &[String]) -> Self {
        let wp = &p.whitebox;
        let mut targets: Vec<TargetSpec> = det_labels
            .iter()
            .enumerate()
            .map(|(i, label)| TargetSpec {
                name: format!("deterministic {label}"),
                model: GridRef::Deterministic(i),
                kind: TargetKind::Deterministic,
                every_bnn: false,
            })
            .collect();
        targets.extend(bnn_targets(TABLE3_RHO, &wp.eot_ks, wp, false));
        if let Some(k) = p.whitebox_every_bnn_eot_k {
            for &rho in RHO_INITS.iter().filter(|&&r| r != TABLE3_RHO) {
                targets.extend(bnn_targets(rho, &every_bnn_ks(p, rho, k), wp, true));
            }
        }
        let mut plan = Self {
            targets,
            reruns: Vec::new(),
            spsa: Vec::new(),
        };
        plan.reruns = plan.masking_reruns(p);
        plan.spsa = plan.spsa_targets(p);
        plan
    }

    fn find(&self, model: GridRef, kind: TargetKind) -> Option<usize> {
        self.targets
            .iter()
            .position(|t| t.model == model && t.kind == kind)
    }

    /// The EOT k ensembles of the other BNNs that get the Table 4 BNN's checks.
    fn checked_ensembles(&self, p: &Profile) -> Vec<usize> {
        let Some(k) = p.whitebox_every_bnn_eot_k else {
            return Vec::new();
        };
        RHO_INITS
            .iter()
            .filter(|&&rho| rho != TABLE3_RHO && checked(p, rho))
            .filter_map(|&rho| self.find(GridRef::Bnn(rho), TargetKind::Ensemble { k }))
            .collect()
    }

    /// Twice the steps for the Table 3 BNN's single draw and the Table 4 BNN's EOT k
    /// ensemble; twice the restarts for the single draw, and the single draw's restarts
    /// for the Table 3 BNN's first EOT ensemble with k > 1.
    fn masking_reruns(&self, p: &Profile) -> Vec<Rerun> {
        let wp = &p.whitebox;
        let one_draw = self.find(GridRef::Bnn(TABLE3_RHO), TargetKind::SingleDraw);
        let mut out = Vec::new();
        if p.whitebox_checks.as_ref().is_some_and(|wc| wc.doubled) {
            let table4 = self
                .checked_ensembles(p)
                .into_iter()
                .find(|&i| self.targets[i].model == GridRef::Bnn(TABLE4_RHO));
            for target in one_draw.into_iter().chain(table4) {
                out.push(Rerun {
                    target,
                    profile: wp.doubled(),
                    label: "2x steps".into(),
                    varies: "twice the steps".into(),
                });
            }
        }
        if p.whitebox_restart_checks {
            if let Some(target) = one_draw {
                out.push(Rerun {
                    target,
                    profile: WhiteboxProfile {
                        restarts: 2 * wp.restarts,
                        ..wp.clone()
                    },
                    label: "2x restarts".into(),
                    varies: format!(
                        "twice the restarts ({} instead of {})",
                        2 * wp.restarts,
                        wp.restarts
                    ),
                });
            }
            let eot = self.targets.iter().position(|t| {
                t.model == GridRef::Bnn(TABLE3_RHO)
                    && matches!(t.kind, TargetKind::Ensemble { k } if k > 1)
            });
            // (Nothing to vary when EOT already runs the single draw's restarts.)
            if let Some(target) = eot.filter(|_| wp.eot_restarts != wp.restarts) {
                out.push(Rerun {
                    target,
                    profile: WhiteboxProfile {
                        eot_restarts: wp.restarts,
                        ..wp.clone()
                    },
                    label: format!("{} restarts", wp.restarts),
                    varies: format!("{} restarts instead of {}", wp.restarts, wp.eot_restarts),
                });
            }
        }
        out
    }

    /// SPSA against the λ = 0 net, the Table 3 BNN's first ensemble and the checked
    /// ensembles of the other BNNs.
    fn spsa_targets(&self, p: &Profile) -> Vec<usize> {
        if p.whitebox_checks.is_none() {
            return Vec::new();
        }
        let det0 = self.find(GridRef::Deterministic(0), TargetKind::Deterministic);
        let ensemble = self
            .targets
            .iter()
            .position(|t| matches!(t.kind, TargetKind::Ensemble { .. }));
        det0.into_iter()
            .chain(ensemble)
            .chain(self.checked_ensembles(p))
            .collect()
    }
}

/// What one white-box artifact of the plan is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    /// The curve of target i.
    Main(usize),
    /// Rerun i of the masking checks.
    Rerun(usize),
    /// The SPSA check against target i.
    Spsa(usize),
}

/// One white-box artifact: its key, its role, and the target it attacks.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    pub key: Key,
    pub role: Role,
    /// The index of the target attacked.
    pub target: usize,
    /// The attack's budget.
    pub profile: WhiteboxProfile,
}

impl WhiteboxPlan {
    /// Every artifact, in the order results.json lists them (main curves, reruns, SPSA),
    /// keyed by the key of the model each attacks (`model_key`).
    pub fn artifacts(
        &self,
        p: &Profile,
        model_key: &dyn Fn(GridRef) -> String,
        master_seed: u64,
    ) -> Vec<Artifact> {
        let wp = &p.whitebox;
        let mut out: Vec<Artifact> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| Artifact {
                key: keys::whitebox_curve(&t.name, &t.name, &model_key(t.model), wp, master_seed),
                role: Role::Main(i),
                target: i,
                profile: wp.clone(),
            })
            .collect();
        out.extend(self.reruns.iter().enumerate().map(|(j, r)| {
            let t = &self.targets[r.target];
            Artifact {
                key: keys::whitebox_curve(
                    &r.name(self),
                    &t.name,
                    &model_key(t.model),
                    &r.profile,
                    master_seed,
                ),
                role: Role::Rerun(j),
                target: r.target,
                profile: r.profile.clone(),
            }
        }));
        if let Some(wc) = &p.whitebox_checks {
            out.extend(self.spsa.iter().map(|&i| {
                let t = &self.targets[i];
                Artifact {
                    key: keys::spsa(&t.name, &model_key(t.model), wp, wc, master_seed),
                    role: Role::Spsa(i),
                    target: i,
                    profile: wp.clone(),
                }
            }));
        }
        out
    }
}
