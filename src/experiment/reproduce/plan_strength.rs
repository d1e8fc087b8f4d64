//! The strength axis's extension of the text plan (`--strength`): the controls'
//! training, the min-norm attacks at each κ > 0 of the profile, every sweep model at
//! every point of the sweep, and every model at each claim point, as jobs with the keys
//! the strength stage uses. The paper-matched claim points depend on a measured value
//! (the λ = 0 net's sweep row): the plan has them, and the attacks at a matched κ, once
//! that row is cached, and `run` plans again after each drain until nothing is added.
//! The seeds' strength study and the section of results.json stay in `run`'s process.

use std::iter::once;

use serde_json::Value;

use super::claim_points::{ClaimDesc, claim_descs};
use super::strength_stage::{
    ClaimEnsemble, ENSEMBLES, StrengthEval, SweepKeys, SweepModel, claim_eval, control_models,
    paper_column_for, pct, sweep_eval, sweep_models,
};
use super::{GridModel, Pipeline, ReproduceError, Timed};
use crate::attack::MinNormAttack;
use crate::experiment::flops;
use crate::experiment::keys::{self, Key};
use crate::experiment::plan::{Finish, Job, JobKind};
use crate::experiment::strength::sweep;
use crate::model::Arch;

/// What runs a job of the strength extension.
#[derive(Debug, Clone, Copy)]
pub(super) enum StrengthTask {
    /// The i-th control: the matched-init net, then the deep ensemble's members.
    Control(usize),
    /// The min-norm attack at confidence `kappa` (one of the profile's, or a
    /// paper-matched one) against the `source`-th source.
    Attack { kappa: f64, source: usize },
    /// The i-th model of the sweep at every point.
    Sweep(usize),
    /// At the `point`-th claim point, the `model`-th model of the sweep, or after them
    /// the `model − n`-th of the claim points' ensembles.
    Claim { point: usize, model: usize },
}

/// The strength extension of the plan: its jobs, what `run` then does in its own process,
/// and the claim points known now (their jobs' tasks index them).
pub(super) struct StrengthPlan {
    pub jobs: Vec<(Job, StrengthTask)>,
    pub finish: Finish,
    pub claims: Vec<ClaimDesc>,
    /// The λ = 0 net's sweep evaluation, once cached: the claim points are then all known.
    pub det0: Option<Key>,
    /// The matched-init control's key.
    pub control_key: String,
}

/// The ids the strength extension's jobs read: the main grid's checkpoints and the
/// attack stage's raw attacks (κ = 0), per source.
pub(super) struct StrengthPlanInputs<'a> {
    pub source_keys: &'a [String],
    pub det_keys: &'a [String],
    pub bnn_keys: &'a [String],
    pub attack_ids: &'a [String],
}

/// What the claim points' jobs read: the grid, the sweep's models and the λ = 0 net's
/// sweep evaluation (which a matched point depends on).
struct ClaimJobs<'a> {
    sources: &'a [GridModel],
    bnns: &'a [GridModel],
    inputs: &'a StrengthPlanInputs<'a>,
    models: &'a [SweepModel],
    det0: Option<&'a Key>,
    memory_mib: usize,
}

impl ClaimJobs<'_> {
    /// The jobs of the `c`-th claim point: the attacks at a κ no earlier job made, then
    /// every sweep model and the two ensembles there, with the keys the stage names.
    fn push_jobs(
        &self,
        pipeline: &Pipeline,
        c: usize,
        desc: &ClaimDesc,
        out: &mut Vec<(Job, StrengthTask)>,
    ) {
        let p = &pipeline.cfg.profile;
        let sp = &p.strength;
        let n = pipeline.test.len();
        let bound = p.max_rms_distortion.unwrap_or(0.10);
        // A job known only once the λ = 0 net's row is measured reads that row, so that
        // a worker's plan (made when the job starts) has the job too.
        let matched = (!desc.matched.is_empty()).then_some(self.det0).flatten();
        let mut attack_ids = Vec::new();
        let mut sets = Vec::new();
        for (i, s) in desc.per_set.iter().enumerate() {
            let attack = MinNormAttack {
                kappa: s.kappa,
                ..p.attack.clone()
            };
            let (gm, source_key) = (&self.sources[i], &self.inputs.source_keys[i]);
            let job = pipeline.attack_job(gm, source_key, &attack);
            if !out.iter().any(|(j, _)| j.key.id == job.key.id)
                && !self.inputs.attack_ids.contains(&job.key.id)
            {
                let task = StrengthTask::Attack {
                    kappa: s.kappa,
                    source: i,
                };
                let mut job = job.clone();
                job.inputs.extend(matched.map(|k| k.id.clone()));
                out.push((job, task));
            }
            sets.push(keys::strength_set(&job.key.id, s.reading, bound, s.m));
            attack_ids.push(job.key.id);
        }
        let points = [sets];
        let arch = Arch::new(&[100, 100]);
        let cells = (self.sources.len() * n) as f64;
        let job = |name: &str, model_key: &str, model_inputs: &[String], runs, passes: usize| Job {
            also: Vec::new(),
            key: keys::strength_eval(name, model_key, &points, runs, n, pipeline.seeds.master()),
            kind: JobKind::Evaluation,
            label: format!("{name} at {}", desc.name),
            inputs: model_inputs
                .iter()
                .chain(&attack_ids)
                .chain(matched.map(|k| &k.id))
                .cloned()
                .collect(),
            memory_mib: Some(self.memory_mib),
            flops: flops::forward(&arch, cells * passes as f64),
        };
        for (j, m) in self.models.iter().enumerate() {
            let passes = m.passes_per_cell(sp.matched_runs);
            let task = StrengthTask::Claim { point: c, model: j };
            out.push((
                job(&m.name, &m.key(), &m.inputs, sp.matched_runs, passes),
                task,
            ));
        }
        for which in 0..ENSEMBLES.len() {
            let Some(e) = ClaimEnsemble::of(pipeline.cfg, self.bnns, which) else {
                continue;
            };
            let bnn_key = &self.inputs.bnn_keys[e.bnn];
            let passes = sp.ensemble_runs * e.draws;
            let task = StrengthTask::Claim {
                point: c,
                model: self.models.len() + which,
            };
            let j = job(
                &e.name,
                bnn_key,
                std::slice::from_ref(bnn_key),
                sp.ensemble_runs,
                passes,
            );
            out.push((j, task));
        }
    }
}

impl Pipeline<'_> {
    /// The controls, the κ > 0 attacks, the sweep's evaluations, then the claim points'
    /// (the paper-matched ones once the λ = 0 net's sweep row is cached).
    pub(super) fn strength_plan(
        &self,
        sources: &[GridModel],
        dets: &[GridModel],
        bnns: &[GridModel],
        inputs: &StrengthPlanInputs,
    ) -> StrengthPlan {
        let p = &self.cfg.profile;
        let sp = &p.strength;
        let n = self.test.len() as f64;
        let mut out = Vec::new();
        let (matched, members) = control_models(sp.ensemble_members);
        let controls: Vec<&GridModel> = once(&matched).chain(&members).collect();
        let control_keys: Vec<String> = controls.iter().map(|gm| self.model_key(gm)).collect();
        for (i, gm) in controls.iter().enumerate() {
            out.push((self.train_job(gm), StrengthTask::Control(i)));
        }
        // Per κ (0 first, the attack stage's), the raw attacks of the 12 sources.
        let mut attack_ids: Vec<Vec<String>> = vec![inputs.attack_ids.to_vec()];
        for &kappa in &sp.kappas {
            let attack = MinNormAttack {
                kappa,
                ..p.attack.clone()
            };
            let mut ids = Vec::new();
            for (i, (gm, source_key)) in sources.iter().zip(inputs.source_keys).enumerate() {
                let job = self.attack_job(gm, source_key, &attack);
                ids.push(job.key.id.clone());
                out.push((job, StrengthTask::Attack { kappa, source: i }));
            }
            attack_ids.push(ids);
        }
        let kappas: Vec<f64> = once(0.0).chain(sp.kappas.iter().copied()).collect();
        let bound = p.max_rms_distortion.unwrap_or(0.10);
        let points: Vec<Vec<Value>> = sweep(sp)
            .iter()
            .filter_map(|s| {
                let k = kappas.iter().position(|&x| x == s.kappa)?;
                Some(
                    attack_ids[k]
                        .iter()
                        .map(|id| keys::strength_set(id, s.reading, bound, s.m))
                        .collect(),
                )
            })
            .collect();
        let all_attacks = attack_ids.concat();
        let keys = SweepKeys {
            dets: inputs.det_keys,
            bnns: inputs.bnn_keys,
            matched: &control_keys[0],
            members: &control_keys[1..],
        };
        let cells = (points.len() * sources.len()) as f64;
        // The sweep holds every κ's sets under every reading at once, and one κ's raw
        // attacks while holding them; the dataset and libtorch take 2 GiB, and 1 GiB more
        // for the models and a cell's inputs.
        let set_mib = (self.test.images.numel() * 4) as f64 / (1 << 20) as f64;
        let held = (sp.readings.len() * kappas.len() + 1) * sources.len();
        let memory_mib = 3072 + (held as f64 * set_mib).ceil() as usize;
        let models = sweep_models(dets, bnns, &matched, &keys);
        let mut sweep_keys = Vec::new();
        for (i, m) in models.iter().enumerate() {
            let job = Job {
                also: Vec::new(),
                key: keys::strength_eval(
                    &m.name,
                    &m.key(),
                    &points,
                    sp.runs,
                    self.test.len(),
                    self.seeds.master(),
                ),
                kind: JobKind::Evaluation,
                label: format!("strength sweep of {}", m.name),
                inputs: m.inputs.iter().chain(&all_attacks).cloned().collect(),
                memory_mib: Some(memory_mib),
                flops: flops::forward(
                    &Arch::new(&[100, 100]),
                    cells * m.passes_per_cell(sp.runs) as f64 * n,
                ),
            };
            sweep_keys.push(job.key.clone());
            out.push((job, StrengthTask::Sweep(i)));
        }
        // The λ = 0 net's row (the first model), which the paper-matched points need.
        let det0 = sweep_keys.first().and_then(|k| self.sweep_row(k));
        let paper_det0 = paper_column_for(self.cfg, sources.len());
        let labels: Vec<String> = sources.iter().map(|g| g.label.clone()).collect();
        let claims = claim_descs(sp, &labels, det0.as_deref(), paper_det0.as_deref());
        // A claim job holds one point's 12 sets and the raw attacks they come from.
        let claim_mib = 3072 + (2.0 * sources.len() as f64 * set_mib).ceil() as usize;
        let at = ClaimJobs {
            sources,
            bnns,
            inputs,
            models: &models,
            det0: sweep_keys.first(),
            memory_mib: claim_mib,
        };
        for (c, desc) in claims.iter().enumerate() {
            at.push_jobs(self, c, desc, &mut out);
        }
        let unplanned = if paper_det0.is_some() && det0.is_none() {
            2
        } else {
            0
        };
        let finish = self.claims_work(sources, &models, unplanned, memory_mib, set_mib);
        StrengthPlan {
            jobs: out,
            finish,
            claims,
            det0: det0.and(sweep_keys.first().cloned()),
            control_key: control_keys[0].clone(),
        }
    }

    /// The λ = 0 net's sweep row from the cache (accuracy fractions per point, per set),
    /// as the stage reads it; None until that evaluation is made.
    fn sweep_row(&self, key: &Key) -> Option<Vec<Vec<f64>>> {
        let e: Timed<StrengthEval> = self.evals_dir.read_json(&key.id).ok().flatten()?;
        Some(
            e.value
                .cells
                .iter()
                .map(|sets| sets.iter().map(|r| pct(r).mean / 100.0).collect())
                .collect(),
        )
    }

    /// What `run` makes in its own process: the work of the `points` claim points not yet
    /// in the plan (every sweep model and the two BNN ensembles at each point with the
    /// claim runs, and the attacks at a matched κ), and the memory of assembling the
    /// section (the sweep's sets, plus the Table 2 sets and the matched κ's).
    fn claims_work(
        &self,
        sources: &[GridModel],
        models: &[SweepModel],
        points: usize,
        sweep_mib: usize,
        set_mib: f64,
    ) -> Finish {
        let p = &self.cfg.profile;
        let sp = &p.strength;
        let largest = p.ensemble_ns.iter().copied().max().unwrap_or(100);
        let passes: usize = models
            .iter()
            .map(|m| m.passes_per_cell(sp.matched_runs))
            .sum::<usize>()
            + sp.ensemble_runs * (largest + p.prune_ensemble);
        let n = self.test.len() as f64;
        let evals = flops::forward(
            &Arch::new(&[100, 100]),
            (points * passes * sources.len()) as f64 * n,
        );
        let attacks: f64 = if points > 0 {
            sources
                .iter()
                .map(|gm| flops::input_gradient_steps(gm.spec.arch(), p.attack.steps as f64, n))
                .sum()
        } else {
            0.0
        };
        Finish {
            flops: evals + attacks,
            memory_mib: Some(sweep_mib + (2.0 * sources.len() as f64 * set_mib).ceil() as usize),
        }
    }

    /// The profile's min-norm attack at confidence `kappa` against the source `gm`.
    fn attack_at(&self, gm: &GridModel, kappa: f64) -> Result<(), ReproduceError> {
        let (ready, _) = self.ensure_model(gm)?;
        let attack = MinNormAttack {
            kappa,
            ..self.cfg.profile.attack.clone()
        };
        self.ensure_raw_attack(&gm.label, &ready, &attack)?;
        Ok(())
    }

    /// Runs one job of the strength extension (its inputs are cached).
    pub(super) fn run_strength_task(
        &self,
        sources: &[GridModel],
        claims: &[ClaimDesc],
        task: StrengthTask,
    ) -> Result<(), ReproduceError> {
        let sp = &self.cfg.profile.strength;
        match task {
            StrengthTask::Control(i) => {
                let (matched, members) = control_models(sp.ensemble_members);
                if let Some(gm) = once(&matched).chain(&members).nth(i) {
                    self.ensure_model(gm)?;
                }
            }
            StrengthTask::Attack { kappa, source } => {
                if let Some(gm) = sources.get(source) {
                    self.attack_at(gm, kappa)?;
                }
            }
            StrengthTask::Sweep(i) => sweep_eval(self, &self.load_grid()?, i)?,
            StrengthTask::Claim { point, model } => {
                if let Some(desc) = claims.get(point) {
                    claim_eval(self, &mut self.load_grid()?, desc, model)?;
                }
            }
        }
        Ok(())
    }
}
