//! The strength axis's extension of the text plan (`--strength`): the controls'
//! training, the min-norm attacks at each κ > 0 of the profile, and every sweep model at
//! every point of the sweep, as jobs with the keys the strength stage uses. What depends
//! on measured values stays in `run`, in process, once these exist: the claim points
//! (their strengths are matched on the λ = 0 net's sweep row), the attacks at a matched
//! κ, the seeds' strength study and the section of results.json.

use std::iter::once;

use serde_json::Value;

use super::strength_stage::{SweepKeys, SweepModel, control_models, sweep_eval, sweep_models};
use super::{GridModel, Pipeline, ReproduceError};
use crate::attack::{BudgetReading, MinNormAttack};
use crate::data::Dataset;
use crate::experiment::flops;
use crate::experiment::keys;
use crate::experiment::plan::{Finish, Job, JobKind};
use crate::experiment::strength::sweep;
use crate::model::Arch;

/// What runs a job of the strength extension.
#[derive(Debug, Clone, Copy)]
pub(super) enum StrengthTask {
    /// The i-th control: the matched-init net, then the deep ensemble's members.
    Control(usize),
    /// The min-norm attack at the `kappa`-th κ of the profile against the `source`-th source.
    Attack { kappa: usize, source: usize },
    /// The i-th model of the sweep at every point.
    Sweep(usize),
}

/// The ids the strength extension's jobs read: the main grid's checkpoints and the
/// attack stage's raw attacks (κ = 0), per source.
pub(super) struct StrengthPlanInputs<'a> {
    pub source_keys: &'a [String],
    pub det_keys: &'a [String],
    pub bnn_keys: &'a [String],
    pub attack_ids: &'a [String],
}

impl Pipeline<'_> {
    /// The controls, the κ > 0 attacks, then the sweep's evaluations; and what `run`
    /// then does in its own process (the claim points).
    pub(super) fn strength_jobs(
        &self,
        sources: &[GridModel],
        dets: &[GridModel],
        bnns: &[GridModel],
        inputs: &StrengthPlanInputs,
    ) -> (Vec<(Job, StrengthTask)>, Finish) {
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
        for (k, &kappa) in sp.kappas.iter().enumerate() {
            let attack = MinNormAttack {
                kappa,
                ..p.attack.clone()
            };
            let mut ids = Vec::new();
            for (i, (gm, source_key)) in sources.iter().zip(inputs.source_keys).enumerate() {
                let job = self.attack_job(gm, source_key, &attack);
                ids.push(job.key.id.clone());
                out.push((
                    job,
                    StrengthTask::Attack {
                        kappa: k,
                        source: i,
                    },
                ));
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
        let finish = self.claims_work(sources, &models, memory_mib, set_mib);
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
            out.push((job, StrengthTask::Sweep(i)));
        }
        (out, finish)
    }

    /// The claim points' counted work (every sweep model and the two BNN ensembles at
    /// each point with the claim runs, and the attacks at a matched κ) and memory (the
    /// sweep's, plus the Table 2 sets and the matched κ's).
    fn claims_work(
        &self,
        sources: &[GridModel],
        models: &[SweepModel],
        sweep_mib: usize,
        set_mib: f64,
    ) -> Finish {
        let p = &self.cfg.profile;
        let sp = &p.strength;
        let mnist = self.cfg.dataset == Dataset::Mnist;
        let points =
            usize::from(sp.readings.contains(&BudgetReading::SetMean)) + 2 * usize::from(mnist);
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
        let attacks: f64 = if mnist {
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

    /// Runs one job of the strength extension (its inputs are cached).
    pub(super) fn run_strength_task(
        &self,
        sources: &[GridModel],
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
                if let (Some(&kappa), Some(gm)) = (sp.kappas.get(kappa), sources.get(source)) {
                    let (ready, _) = self.ensure_model(gm)?;
                    let attack = MinNormAttack {
                        kappa,
                        ..self.cfg.profile.attack.clone()
                    };
                    self.ensure_raw_attack(&gm.label, &ready, &attack)?;
                }
            }
            StrengthTask::Sweep(i) => sweep_eval(self, &self.load_grid()?, i)?,
        }
        Ok(())
    }
}
