//! The strength stage of `reproduce --strength` (see [`crate::experiment::strength`]):
//! the extra min-norm attacks at κ > 0, the controls, every evaluation model at every
//! strength, and the claim points.

use std::time::Instant;

use serde_json::Value;
use tch::Tensor;

use super::claim_points::{ClaimDesc, claim_descs};
use super::{
    GridModel, Pipeline, Ready, ReproduceError, StageReport, Timed, TrainedGrid, bnn_of, mlp_of,
    per_run_set_average,
};
use crate::attack::budget::at_strength;
use crate::attack::{AttackOutcome, BudgetReading, MinNormAttack};
use crate::data::{Dataset, Split};
use crate::eval;
use crate::experiment::code_protocol::Evaluated;
use crate::experiment::keys;
use crate::experiment::strength::{
    ClaimAt, ClaimPoint, Family, ModelRow, SetAtStrength, Strength, StrengthPoint, StrengthProfile,
    StrengthSection, Verdict, best_at, comparisons, sweep,
};
use crate::experiment::{TABLE3_RHO, TABLE4_RHO};
use crate::model::bayes::{MixturePrior, PruneMode};
use crate::model::checkpoint::ModelSpec;
use crate::model::mlp::{MlpConfig, MlpInit};
use crate::model::{Arch, WeightMode};
use crate::stats::MeanCi;

/// The paper's numbers (the λ = 0 column of Table 2 and the claims' sizes).
const PAPER_TABLES: &str = include_str!("../../../reports/paper_tables.json");

/// What the stage works on: the grid's trained models.
pub(in crate::experiment) struct StrengthInputs<'r> {
    pub sources: &'r [GridModel],
    pub source_ready: &'r [Ready],
    pub dets: &'r [GridModel],
    pub det_ready: &'r [Ready],
    pub bnns: &'r [GridModel],
    pub bnn_ready: &'r mut [Ready],
}

/// The text-protocol controls: a deterministic FC-100-100-10 from the BNN's μ
/// initialisation, and the deep ensemble's members after the first (the λ = 0 net).
pub(super) fn control_models(members: usize) -> (GridModel, Vec<GridModel>) {
    let fc100 = |init| ModelSpec::Mlp {
        config: MlpConfig {
            arch: Arch::new(&[100, 100]),
            init,
        },
        lambda: 0.0,
    };
    let matched = GridModel {
        name: "control/text/bnn-init".into(),
        label: "deterministic, BNN mu init".into(),
        spec: fc100(MlpInit::TruncatedNormal {
            std: MixturePrior::default().std(),
        }),
    };
    let rest = (1..members.max(1))
        .map(|i| GridModel {
            name: format!("control/text/member={i}"),
            label: format!("deep ensemble member {i}"),
            spec: fc100(MlpInit::GlorotUniform),
        })
        .collect();
    (matched, rest)
}

/// A model under evaluation, its cache identity and how it is measured.
struct EvalModel<'m> {
    name: String,
    label: String,
    family: Family,
    rho_init: Option<f64>,
    lambda: Option<f64>,
    key: String,
    evaluated: Evaluated<'m>,
}

/// The 12 held perturbation sets of one (reading, κ): r per source, the attack keys and
/// the fraction of each set the reading scaled down.
struct HeldSets {
    reading: BudgetReading,
    kappa: f64,
    /// Made for this set alone (a paper-matched κ): the other slots repeat it.
    only: Option<usize>,
    keys: Vec<String>,
    r: Vec<Tensor>,
    scaled: Vec<f64>,
}

/// Per set: which held sets and multiplier make it.
struct PointSpec {
    name: String,
    /// (index into the held sets, m) per set.
    per_set: Vec<(usize, f64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct StrengthEval {
    /// `cells[point][set]`: run accuracies in [0, 1].
    pub cells: Vec<Vec<Vec<f64>>>,
}

struct Stage<'p, 'a> {
    pipeline: &'p Pipeline<'a>,
    profile: StrengthProfile,
    bound: f64,
    labels: Vec<String>,
    held: Vec<HeldSets>,
    seconds: f64,
    reused: usize,
    computed: usize,
}

impl<'p, 'a> Stage<'p, 'a> {
    /// A stage holding no sets yet, on the sets of `sources`; `seconds` starts its
    /// artifact time.
    fn new(pipeline: &'p Pipeline<'a>, sources: &[GridModel], seconds: f64) -> Self {
        let cfg = pipeline.cfg;
        Stage {
            pipeline,
            profile: cfg.profile.strength.clone(),
            bound: cfg.profile.max_rms_distortion.unwrap_or(0.10),
            labels: sources.iter().map(|g| g.label.clone()).collect(),
            held: Vec::new(),
            seconds,
            reused: 0,
            computed: 0,
        }
    }
}

impl Stage<'_, '_> {
    /// The held sets and multiplier of each set of a claim point: the sets of every
    /// source held at its (reading, κ) where they are, else that source's set alone,
    /// from its cached (or, at a matched κ, made) min-norm attack.
    fn resolve(
        &mut self,
        desc: &ClaimDesc,
        sources: &[GridModel],
        source_ready: &[Ready],
    ) -> Result<PointSpec, ReproduceError> {
        let n = sources.len();
        let mut per_set = Vec::new();
        for (i, s) in desc.per_set.iter().enumerate() {
            let alone = self
                .held
                .iter()
                .position(|h| h.only == Some(i) && h.reading == s.reading && h.kappa == s.kappa);
            let h = match self.held_index(s.reading, s.kappa).or(alone) {
                Some(h) => h,
                None => {
                    let attack = MinNormAttack {
                        kappa: s.kappa,
                        ..self.pipeline.cfg.profile.attack.clone()
                    };
                    let raw = self.pipeline.ensure_raw_attack(
                        &sources[i].label,
                        &source_ready[i],
                        &attack,
                    )?;
                    if s.kappa != 0.0 {
                        self.seconds += raw.record.seconds;
                    }
                    let (held, scaled) = s.reading.apply(&raw.delta, self.bound);
                    self.held.push(HeldSets {
                        reading: s.reading,
                        kappa: s.kappa,
                        only: Some(i),
                        keys: vec![raw.key.clone(); n],
                        r: (0..n).map(|_| held.shallow_clone()).collect(),
                        scaled: vec![scaled; n],
                    });
                    self.held.len() - 1
                }
            };
            per_set.push((h, s.m));
        }
        Ok(PointSpec {
            name: desc.name.clone(),
            per_set,
        })
    }

    fn held_index(&self, reading: BudgetReading, kappa: f64) -> Option<usize> {
        self.held
            .iter()
            .position(|h| h.only.is_none() && h.reading == reading && h.kappa == kappa)
    }

    fn images(&self, set: usize, (h, m): (usize, f64)) -> Split {
        let x = &self.pipeline.test.images;
        Split {
            images: at_strength(x, &self.held[h].r[set], m),
            labels: self.pipeline.test.labels.shallow_clone(),
        }
    }

    fn strength_of(&self, (h, m): (usize, f64)) -> Strength {
        Strength {
            reading: self.held[h].reading,
            kappa: self.held[h].kappa,
            m,
        }
    }

    /// The sets of a point and how each did against its source.
    fn point(&self, spec: &PointSpec, sources: &[Ready]) -> Result<StrengthPoint, ReproduceError> {
        let x = &self.pipeline.test.images;
        let sources: Vec<_> = sources.iter().map(mlp_of).collect::<Result<_, _>>()?;
        let sets: Vec<SetAtStrength> = spec
            .per_set
            .iter()
            .enumerate()
            .map(|(i, &hm)| {
                let split = self.images(i, hm);
                let outcome = AttackOutcome::evaluate(
                    sources[i],
                    x,
                    &split.labels,
                    split.images.shallow_clone(),
                );
                SetAtStrength {
                    source: self.labels[i].clone(),
                    mean_distortion: outcome.mean_distortion(),
                    success_rate: outcome.success_rate(),
                    scaled_fraction: if hm.1 == 0.0 {
                        0.0
                    } else {
                        self.held[hm.0].scaled[i]
                    },
                }
            })
            .collect();
        let mean = sets.iter().map(|s| s.mean_distortion).sum::<f64>() / sets.len().max(1) as f64;
        Ok(StrengthPoint {
            name: spec.name.clone(),
            strengths: spec
                .per_set
                .iter()
                .map(|&hm| self.strength_of(hm))
                .collect(),
            sets,
            mean_distortion: mean,
        })
    }

    /// Per point, per set, what a strength evaluation's key names of it.
    fn point_keys(&self, points: &[PointSpec]) -> Vec<Vec<Value>> {
        points
            .iter()
            .map(|p| {
                p.per_set
                    .iter()
                    .enumerate()
                    .map(|(i, &(h, m))| {
                        let held = &self.held[h];
                        keys::strength_set(&held.keys[i], held.reading, self.bound, m)
                    })
                    .collect()
            })
            .collect()
    }

    /// The libtorch seed name of one cell: Table 2's own for its sets (so a sampled
    /// model's runs there are Table 2's first runs), else one of the strength axis's.
    fn seed_name(&self, model: &str, set: usize, hm: (usize, f64)) -> String {
        if self.strength_of(hm) == Strength::TABLE2 {
            format!("eval/{model}/{}", self.labels[set])
        } else {
            let s = self.strength_of(hm);
            format!("strength/{model}/{}/{}", s.label(), self.labels[set])
        }
    }

    /// One model at every point, cached.
    fn evaluate(
        &mut self,
        model: &EvalModel,
        points: &[PointSpec],
        runs: usize,
    ) -> Result<ModelRow, ReproduceError> {
        let p = self.pipeline;
        let key = keys::strength_eval(
            &model.name,
            &model.key,
            &self.point_keys(points),
            runs,
            p.test.len(),
            p.seeds.master(),
        );
        let (timed, reused): (Timed<StrengthEval>, bool) = p.cached_keyed(&key, || {
            let cells = points
                .iter()
                .map(|spec| {
                    spec.per_set
                        .iter()
                        .enumerate()
                        .map(|(i, &hm)| {
                            let split = self.images(i, hm);
                            p.seeds.seed_torch(&self.seed_name(&model.name, i, hm));
                            model.evaluated.accuracies(&split, runs, p.chunks)
                        })
                        .collect()
                })
                .collect();
            Ok(StrengthEval { cells })
        })?;
        self.seconds += timed.seconds;
        if reused {
            self.reused += 1;
        } else {
            self.computed += 1;
        }
        Ok(row_of(model, &timed.value.cells))
    }
}

pub(super) fn pct(runs: &[f64]) -> MeanCi {
    eval::summarize_percent(runs).unwrap_or(MeanCi {
        mean: f64::NAN,
        ci95: [f64::NAN; 2],
        runs: 0,
    })
}

fn row_of(model: &EvalModel, cells: &[Vec<Vec<f64>>]) -> ModelRow {
    ModelRow {
        name: model.name.clone(),
        label: model.label.clone(),
        family: model.family,
        rho_init: model.rho_init,
        lambda: model.lambda,
        cells: cells
            .iter()
            .map(|sets| sets.iter().map(|r| pct(r)).collect())
            .collect(),
        average: cells
            .iter()
            .map(|sets| pct(&per_run_set_average(sets)))
            .collect(),
    }
}

/// The paper's λ = 0 column of Table 2 (fractions) where our run is compared with it:
/// on MNIST, with one cell per source of ours.
pub(super) fn paper_column_for(cfg: &super::ReproduceConfig, sources: usize) -> Option<Vec<f64>> {
    let (column, _) = paper_reference();
    (cfg.dataset == Dataset::Mnist && column.len() == sources).then_some(column)
}

/// The paper's λ = 0 column of Table 2 (fractions) and its four claims' sizes.
fn paper_reference() -> (Vec<f64>, [Option<f64>; 4]) {
    let v: serde_json::Value = serde_json::from_str(PAPER_TABLES).unwrap_or_default();
    let col = v
        .pointer("/table2_perturbed/deterministic/rows")
        .and_then(|r| r.as_array())
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.get(0).and_then(|x| x.as_f64()))
                .map(|x| x / 100.0)
                .collect()
        })
        .unwrap_or_default();
    let claim = |k: &str| v.pointer(&format!("/claims/{k}")).and_then(|x| x.as_f64());
    (
        col,
        [
            claim("bnn_over_deterministic_average_margin_points"),
            claim("ensemble100_over_single_points"),
            claim("ensemble100_over_best_deterministic_points"),
            claim("pruned75_over_best_deterministic_points"),
        ],
    )
}

/// The controls trained for the stage: the matched-init net and the deep ensemble's
/// members after the first.
struct Controls {
    matched_gm: GridModel,
    matched: Ready,
    members: Vec<Ready>,
}

fn train_controls(pipeline: &Pipeline, sp: &StrengthProfile) -> Result<Controls, ReproduceError> {
    let (matched_gm, member_gms) = control_models(sp.ensemble_members);
    let progress = super::bar(1 + member_gms.len(), "controls", pipeline.cfg.verbose);
    let (matched, _) = pipeline.ensure_model(&matched_gm)?;
    progress.inc(1);
    let mut members = Vec::new();
    for gm in &member_gms {
        progress.set_message(gm.name.clone());
        members.push(pipeline.ensure_model(gm)?.0);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(Controls {
        matched_gm,
        matched,
        members,
    })
}

/// The label of a grid model's row under `family`: `deterministic lambda=0`, `BNN
/// rho_init=-3, one draw` (posterior mean, frozen sample); other families, the model's own.
pub(super) fn row_label(gm: &GridModel, family: Family) -> String {
    let bnn = |what: &str| format!("BNN {}, {what}", gm.label);
    match family {
        Family::Deterministic => format!("deterministic {}", gm.label),
        Family::BnnDraw => bnn("one draw"),
        Family::BnnMean => bnn("posterior mean"),
        Family::BnnFrozen => bnn("frozen sample"),
        _ => gm.label.clone(),
    }
}

/// Where a model of the sweep gets its weights.
#[derive(Debug, Clone, Copy)]
enum SweepSource {
    /// The i-th λ net.
    Det(usize),
    /// The i-th BNN, evaluated as one draw, posterior mean or frozen sample.
    Bnn(usize),
    /// The matched-init control.
    Matched,
    /// The deep ensemble: the λ = 0 net and the control members.
    DeepEnsemble,
}

/// A model of the sweep before its weights are loaded: its row's identity, the
/// checkpoints it reads and where they come from.
pub(super) struct SweepModel {
    pub name: String,
    label: String,
    family: Family,
    rho_init: Option<f64>,
    lambda: Option<f64>,
    /// Every checkpoint it reads (a deep ensemble's members one by one).
    pub inputs: Vec<String>,
    source: SweepSource,
}

/// The checkpoints' keys of the sweep's models.
pub(super) struct SweepKeys<'k> {
    pub dets: &'k [String],
    pub bnns: &'k [String],
    pub matched: &'k str,
    /// The deep ensemble's members after the first (the λ = 0 net, `dets[0]`).
    pub members: &'k [String],
}

/// Every model the stage evaluates at every strength: the λ nets, each BNN as one draw,
/// posterior mean and frozen sample, the matched-init control and the deep ensemble.
pub(super) fn sweep_models(
    dets: &[GridModel],
    bnns: &[GridModel],
    matched: &GridModel,
    keys: &SweepKeys,
) -> Vec<SweepModel> {
    let mut models = Vec::new();
    for (i, (gm, key)) in dets.iter().zip(keys.dets).enumerate() {
        models.push(SweepModel {
            name: gm.name.clone(),
            label: row_label(gm, Family::Deterministic),
            family: Family::Deterministic,
            rho_init: None,
            lambda: gm.spec.lambda(),
            inputs: vec![key.clone()],
            source: SweepSource::Det(i),
        });
    }
    for (i, (gm, key)) in bnns.iter().zip(keys.bnns).enumerate() {
        for (family, suffix) in [
            (Family::BnnDraw, ""),
            (Family::BnnMean, "/mean"),
            (Family::BnnFrozen, "/frozen"),
        ] {
            models.push(SweepModel {
                name: format!("{}{suffix}", gm.name),
                label: row_label(gm, family),
                family,
                rho_init: gm.spec.rho_init(),
                lambda: None,
                inputs: vec![key.clone()],
                source: SweepSource::Bnn(i),
            });
        }
    }
    models.push(SweepModel {
        name: matched.name.clone(),
        label: matched.label.clone(),
        family: Family::MatchedInit,
        rho_init: None,
        lambda: Some(0.0),
        inputs: vec![keys.matched.to_owned()],
        source: SweepSource::Matched,
    });
    let members: Vec<String> = keys
        .dets
        .iter()
        .take(1)
        .chain(keys.members)
        .cloned()
        .collect();
    models.push(SweepModel {
        name: format!("control/text/deep-ensemble={}", members.len()),
        label: format!(
            "deep ensemble of {} deterministic nets (lambda=0)",
            members.len()
        ),
        family: Family::DeepEnsemble,
        rho_init: None,
        lambda: Some(0.0),
        inputs: members,
        source: SweepSource::DeepEnsemble,
    });
    models
}

impl SweepModel {
    /// The key its evaluations name: its checkpoint's, a deep ensemble's members' joined
    /// with `+`.
    pub(super) fn key(&self) -> String {
        self.inputs.join("+")
    }

    /// Forward passes of one cell (one set at one point) with `runs` single-draw runs.
    pub(super) fn passes_per_cell(&self, runs: usize) -> usize {
        match (self.source, self.family) {
            (SweepSource::Bnn(_), Family::BnnDraw) => runs,
            (SweepSource::DeepEnsemble, _) => self.inputs.len(),
            _ => 1,
        }
    }

    /// The model with its weights among the loaded grid and controls.
    fn loaded<'m>(
        &self,
        det_ready: &'m [Ready],
        bnn_ready: &'m [Ready],
        controls: &'m Controls,
    ) -> Result<EvalModel<'m>, ReproduceError> {
        let evaluated = match self.source {
            SweepSource::Det(i) => Evaluated::Det(mlp_of(&det_ready[i])?),
            SweepSource::Bnn(i) => {
                let bnn = bnn_of(&bnn_ready[i])?;
                match self.family {
                    Family::BnnMean => Evaluated::Mode(bnn, WeightMode::Mean),
                    Family::BnnFrozen => Evaluated::Mode(bnn, WeightMode::Frozen(0)),
                    _ => Evaluated::Draws(bnn),
                }
            }
            SweepSource::Matched => Evaluated::Det(mlp_of(&controls.matched)?),
            SweepSource::DeepEnsemble => Evaluated::DeepEnsemble(
                det_ready
                    .iter()
                    .take(1)
                    .chain(&controls.members)
                    .map(mlp_of)
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(EvalModel {
            name: self.name.clone(),
            label: self.label.clone(),
            family: self.family,
            rho_init: self.rho_init,
            lambda: self.lambda,
            key: self.key(),
            evaluated,
        })
    }
}

/// The loaded sweep models of the grid and the controls.
fn eval_models<'m>(
    dets: &[GridModel],
    bnns: &[GridModel],
    det_ready: &'m [Ready],
    bnn_ready: &'m [Ready],
    controls: &'m Controls,
) -> Result<Vec<EvalModel<'m>>, ReproduceError> {
    let key = |r: &Ready| r.key.clone();
    let det_keys: Vec<String> = det_ready.iter().map(key).collect();
    let bnn_keys: Vec<String> = bnn_ready.iter().map(key).collect();
    let member_keys: Vec<String> = controls.members.iter().map(key).collect();
    let keys = SweepKeys {
        dets: &det_keys,
        bnns: &bnn_keys,
        matched: &controls.matched.key,
        members: &member_keys,
    };
    sweep_models(dets, bnns, &controls.matched_gm, &keys)
        .iter()
        .map(|m| m.loaded(det_ready, bnn_ready, controls))
        .collect()
}

/// The loaded sweep models of a loaded grid and the controls.
fn grid_eval_models<'m>(
    grid: &'m TrainedGrid,
    controls: &'m Controls,
) -> Result<Vec<EvalModel<'m>>, ReproduceError> {
    eval_models(
        &grid.dets,
        &grid.bnns,
        &grid.det_ready,
        &grid.bnn_ready,
        controls,
    )
}

/// Counted FLOPs of the stage: forward passes of the sweep and the κ > 0 attacks.
fn stage_flops(
    pipeline: &Pipeline,
    sources: &[GridModel],
    points: usize,
    n_models: usize,
    bnns: usize,
) -> f64 {
    let cfg = pipeline.cfg;
    let sp = &cfg.profile.strength;
    let n = pipeline.test.len() as f64;
    let passes = (points * sources.len()) as f64 * (n_models + bnns * sp.runs) as f64;
    let attacks: f64 = sources
        .iter()
        .map(|gm| {
            crate::experiment::flops::input_gradient_steps(
                gm.spec.arch(),
                cfg.profile.attack.steps as f64,
                n,
            )
        })
        .sum::<f64>()
        * sp.kappas.len() as f64;
    crate::experiment::flops::forward(&Arch::new(&[100, 100]), passes * n) + attacks
}

/// Runs the stage: the section of results.json and the stage's report.
pub(in crate::experiment) fn run(
    pipeline: &Pipeline,
    inputs: StrengthInputs,
) -> Result<(StrengthSection, StageReport), ReproduceError> {
    let t0 = Instant::now();
    let cfg = pipeline.cfg;
    let sp = cfg.profile.strength.clone();
    let verbose = cfg.verbose;
    let controls = train_controls(pipeline, &sp)?;
    // Wall times when made, as every stage reports them: the controls' training here,
    // then the attacks and evaluations.
    let seconds = std::iter::once(&controls.matched)
        .chain(&controls.members)
        .map(|r| r.meta.wall_seconds)
        .sum();
    let (mut stage, specs) = prepared(pipeline, inputs.sources, inputs.source_ready, seconds)?;
    let bound = stage.bound;
    let models = eval_models(
        inputs.dets,
        inputs.bnns,
        inputs.det_ready,
        inputs.bnn_ready,
        &controls,
    )?;
    let points: Vec<StrengthPoint> = specs
        .iter()
        .map(|s| stage.point(s, inputs.source_ready))
        .collect::<Result<_, _>>()?;
    let progress = super::bar(models.len(), "strength", verbose);
    let mut rows = Vec::new();
    for m in &models {
        progress.set_message(m.name.clone());
        rows.push(stage.evaluate(m, &specs, sp.runs)?);
        progress.inc(1);
    }
    progress.finish_and_clear();

    // The claim points: every model, then (pruning a BNN in place, once the rows that
    // borrow it are done) the two ensembles.
    let (_, paper_claims) = paper_reference();
    let paper_det0 = paper_column_for(cfg, inputs.sources.len());
    let compare = paper_det0.is_some();
    let det0: Vec<Vec<f64>> = rows[0]
        .cells
        .iter()
        .map(|sets| sets.iter().map(|c| c.mean / 100.0).collect())
        .collect();
    let descs = claim_descs(&sp, &stage.labels, Some(&det0), paper_det0.as_deref());
    let mut claims = Vec::new();
    for d in descs {
        let spec = stage.resolve(&d, inputs.sources, inputs.source_ready)?;
        claims.push((d, spec));
    }
    let progress = super::bar(claims.len() * (models.len() + 2), "claims", verbose);
    let mut claim_rows = Vec::new();
    for (d, spec) in &claims {
        let mut point_rows = Vec::new();
        for m in &models {
            progress.set_message(format!("{}: {}", d.name, m.name));
            point_rows.push(stage.evaluate(m, std::slice::from_ref(spec), sp.matched_runs)?);
            progress.inc(1);
        }
        claim_rows.push(point_rows);
    }
    let n_models = models.len();
    drop(models);
    let mut claim_points = Vec::new();
    for ((d, spec), mut point_rows) in claims.into_iter().zip(claim_rows) {
        for which in 0..ENSEMBLES.len() {
            point_rows.extend(ensemble_row(
                &mut stage,
                &spec,
                &mut *inputs.bnn_ready,
                inputs.bnns,
                which,
            )?);
            progress.inc(1);
        }
        claim_points.push(ClaimPoint {
            point: stage.point(&spec, inputs.source_ready)?,
            name: d.name,
            axis: d.axis,
            matched: d.matched,
            comparisons: comparisons(&point_rows, 1),
            claims: claims_at(&point_rows, &paper_claims, compare),
            models: point_rows,
        });
    }
    progress.finish_and_clear();

    let report = StageReport {
        stage: "strength".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: stage.seconds,
        computed: stage.computed,
        reused: stage.reused,
        flops: Some(stage_flops(
            pipeline,
            inputs.sources,
            points.len(),
            n_models,
            inputs.bnns.len(),
        )),
    };
    let section = StrengthSection {
        note: format!(
            "Every model on the 12 text-protocol sets at every strength: budget reading (bound {bound} RMS per pixel), attack confidence kappa (m = 1) and evaluation multiplier m of x + m r clipped to the box (kappa = 0); {} single-draw runs per BNN cell in the sweep, {} at the claim points; percent, 95% CI over runs; margins' CIs combined in quadrature.",
            sp.runs, sp.matched_runs
        ),
        comparisons: comparisons(&rows, points.len()),
        profile: sp,
        bound,
        points,
        models: rows,
        claim_points,
        seeds: None,
    };
    Ok((section, report))
}

/// The stage with the sets of every κ (0, the attack stage's, and the profile's) held
/// under every reading, and the sweep's points; `seconds` starts its artifact time.
fn prepared<'p, 'a>(
    pipeline: &'p Pipeline<'a>,
    sources: &[GridModel],
    source_ready: &[Ready],
    seconds: f64,
) -> Result<(Stage<'p, 'a>, Vec<PointSpec>), ReproduceError> {
    let cfg = pipeline.cfg;
    let sp = cfg.profile.strength.clone();
    let kappas: Vec<f64> = std::iter::once(0.0)
        .chain(sp.kappas.iter().copied())
        .collect();
    let mut stage = Stage::new(pipeline, sources, seconds);
    let progress = super::bar(kappas.len() * sources.len(), "kappa", cfg.verbose);
    for &kappa in &kappas {
        let attack = MinNormAttack {
            kappa,
            ..cfg.profile.attack.clone()
        };
        hold(&mut stage, sources, source_ready, &attack, &progress)?;
    }
    progress.finish_and_clear();
    let specs: Vec<PointSpec> = sweep(&sp)
        .iter()
        .filter_map(|s| {
            let h = stage.held_index(s.reading, s.kappa)?;
            Some(PointSpec {
                name: s.label(),
                per_set: vec![(h, s.m); sources.len()],
            })
        })
        .collect();
    Ok((stage, specs))
}

/// One job of the plan's strength extension: the `index`-th model of [`sweep_models`]
/// at every point of the sweep (its checkpoints and the raw attacks are cached).
pub(super) fn sweep_eval(
    pipeline: &Pipeline,
    grid: &TrainedGrid,
    index: usize,
) -> Result<(), ReproduceError> {
    let sp = &pipeline.cfg.profile.strength;
    let controls = train_controls(pipeline, sp)?;
    let (mut stage, specs) = prepared(pipeline, &grid.sources, &grid.source_ready, 0.0)?;
    let models = grid_eval_models(grid, &controls)?;
    if let Some(model) = models.get(index) {
        stage.evaluate(model, &specs, sp.runs)?;
    }
    Ok(())
}

/// The 12 sets of one attack (`attack.kappa`), held under every reading of the profile.
fn hold(
    stage: &mut Stage,
    sources: &[GridModel],
    source_ready: &[Ready],
    attack: &MinNormAttack,
    progress: &indicatif::ProgressBar,
) -> Result<(), ReproduceError> {
    let mut raws = Vec::new();
    for (gm, r) in sources.iter().zip(source_ready) {
        progress.set_message(format!("{} kappa={}", gm.label, attack.kappa));
        let raw = stage.pipeline.ensure_raw_attack(&gm.label, r, attack)?;
        // κ = 0 is the attack stage's own work.
        if attack.kappa != 0.0 {
            stage.seconds += raw.record.seconds;
        }
        raws.push(raw);
        progress.inc(1);
    }
    for &reading in &stage.profile.readings.clone() {
        let (r, scaled): (Vec<_>, Vec<_>) = raws
            .iter()
            .map(|raw| reading.apply(&raw.delta, stage.bound))
            .unzip();
        stage.held.push(HeldSets {
            reading,
            kappa: attack.kappa,
            only: None,
            keys: raws.iter().map(|raw| raw.key.clone()).collect(),
            r,
            scaled,
        });
    }
    Ok(())
}

/// The ensembles every claim point evaluates besides the sweep's models: the Table 3
/// BNN's largest ensemble, and the Table 4 BNN pruned by 75% as its
/// `prune_ensemble`-draw ensemble (ρ_init, pruning rate, family).
pub(super) const ENSEMBLES: [(f64, Option<f64>, Family); 2] = [
    (TABLE3_RHO, None, Family::BnnEnsemble),
    (TABLE4_RHO, Some(0.75), Family::PrunedEnsemble),
];

/// The `which`-th of [`ENSEMBLES`] on the grid's BNNs: which BNN, its pruning, its
/// draws and its row's name.
pub(super) struct ClaimEnsemble {
    pub bnn: usize,
    rate: Option<f64>,
    mode: PruneMode,
    family: Family,
    rho: f64,
    pub draws: usize,
    pub name: String,
}

impl ClaimEnsemble {
    /// None when the grid has no BNN of its ρ_init.
    pub(super) fn of(
        cfg: &super::ReproduceConfig,
        bnns: &[GridModel],
        which: usize,
    ) -> Option<Self> {
        let &(rho, rate, family) = ENSEMBLES.get(which)?;
        let bnn = bnns.iter().position(|g| g.spec.rho_init() == Some(rho))?;
        let profile = &cfg.profile;
        let draws = if rate.is_some() {
            profile.prune_ensemble
        } else {
            *profile.ensemble_ns.iter().max().unwrap_or(&100)
        };
        // Table 4's pruning mode; a per-tensor run's rows are cached under names of
        // their own.
        let mode = cfg.prune_mode_or(PruneMode::Global);
        let name = match rate {
            Some(r) => format!(
                "{}/pruned={}{}/ensemble={draws}",
                bnns[bnn].name,
                r,
                match mode {
                    PruneMode::Global => "",
                    PruneMode::PerTensor => "/per-tensor",
                }
            ),
            None => format!("{}/ensemble={draws}", bnns[bnn].name),
        };
        Some(Self {
            bnn,
            rate,
            mode,
            family,
            rho,
            draws,
            name,
        })
    }
}

/// The `which`-th of [`ENSEMBLES`] at one claim point (the BNN pruned in place for it,
/// then restored); None when the grid lacks its BNN.
fn ensemble_row(
    stage: &mut Stage,
    spec: &PointSpec,
    bnn_ready: &mut [Ready],
    bnns: &[GridModel],
    which: usize,
) -> Result<Option<ModelRow>, ReproduceError> {
    let Some(e) = ClaimEnsemble::of(stage.pipeline.cfg, bnns, which) else {
        return Ok(None);
    };
    let runs = stage.profile.ensemble_runs;
    let i = e.bnn;
    if let (Some(rate), crate::train::TrainedModel::Bnn { bnn, .. }) =
        (e.rate, &mut bnn_ready[i].model)
    {
        bnn.prune_with(e.mode, rate)?;
    }
    let n = e.draws;
    let model = EvalModel {
        label: match e.rate {
            Some(r) => format!(
                "BNN {}, {}% pruned, ensemble of {n}",
                bnns[i].label,
                r * 100.0
            ),
            None => format!("BNN {}, ensemble of {n}", bnns[i].label),
        },
        name: e.name,
        family: e.family,
        rho_init: Some(e.rho),
        lambda: None,
        key: bnn_ready[i].key.clone(),
        evaluated: Evaluated::Ensemble(bnn_of(&bnn_ready[i])?, n),
    };
    let row = stage.evaluate(&model, std::slice::from_ref(spec), runs);
    drop(model);
    if let crate::train::TrainedModel::Bnn { bnn, .. } = &mut bnn_ready[i].model {
        bnn.unprune();
    }
    row.map(Some)
}

/// One job of the plan's strength extension at a claim point: the `model`-th of the
/// sweep's models, or after them the `model − n`-th of [`ENSEMBLES`], evaluated at the
/// point `desc` (its models and attacks are cached).
pub(super) fn claim_eval(
    pipeline: &Pipeline,
    grid: &mut TrainedGrid,
    desc: &ClaimDesc,
    model: usize,
) -> Result<(), ReproduceError> {
    let sp = &pipeline.cfg.profile.strength;
    let controls = train_controls(pipeline, sp)?;
    let mut stage = Stage::new(pipeline, &grid.sources, 0.0);
    let spec = stage.resolve(desc, &grid.sources, &grid.source_ready)?;
    let models = grid_eval_models(grid, &controls)?;
    let n = models.len();
    if let Some(m) = models.get(model) {
        stage.evaluate(m, std::slice::from_ref(&spec), sp.matched_runs)?;
        return Ok(());
    }
    drop(models);
    ensemble_row(
        &mut stage,
        &spec,
        &mut grid.bnn_ready,
        &grid.bnns,
        model - n,
    )?;
    Ok(())
}

/// The paper's four claims on the rows of one claim point.
fn claims_at(rows: &[ModelRow], paper: &[Option<f64>; 4], compare: bool) -> Vec<ClaimAt> {
    let of = |f: Family| -> Vec<&ModelRow> { rows.iter().filter(|m| m.family == f).collect() };
    let (bnns, dets) = (of(Family::BnnDraw), of(Family::Deterministic));
    let one = |f: Family| rows.iter().find(|m| m.family == f);
    let table3_draw = bnns.iter().find(|m| m.rho_init == Some(TABLE3_RHO));
    let (Some(best_bnn), Some(best_det)) = (best_at(&bnns, 0), best_at(&dets, 0)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |claim: &str, k: usize, a: Option<&ModelRow>, b: Option<&ModelRow>| {
        if let (Some(a), Some(b)) = (a, b) {
            let ours = a.average[0].minus_independent(&b.average[0]);
            out.push(ClaimAt {
                claim: claim.to_owned(),
                paper: if compare { paper[k] } else { None },
                verdict: Verdict::of(&ours),
                ours,
            });
        }
    };
    push(
        "best BNN beats the best deterministic net on the 12 sets (Table 2)",
        0,
        Some(best_bnn),
        Some(best_det),
    );
    let ens = one(Family::BnnEnsemble);
    push(
        "the 100-draw ensemble beats one draw (Table 3)",
        1,
        ens,
        table3_draw.copied(),
    );
    push(
        "the 100-draw ensemble beats the best deterministic net",
        2,
        ens,
        Some(best_det),
    );
    push(
        "a 75%-pruned BNN beats the best deterministic net (Table 4)",
        3,
        one(Family::PrunedEnsemble),
        Some(best_det),
    );
    out
}
