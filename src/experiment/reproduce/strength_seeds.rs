//! The strength axis across training seeds (issue 19, item 5): the three headline
//! comparisons ([`HEADLINES`]) at the paper-matched multiplier and at the profile's
//! `seed_multipliers`, for every training seed of the evaluation models and of the
//! matched-init control. Per seed a margin has two CIs: over weight draws (as the
//! strength section's) and a paired bootstrap over the test images, the same images
//! under both models; across seeds a Student-t CI over the per-seed margins and a
//! two-level bootstrap over seeds and images together.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::claim_points::{ClaimDesc, SeedPointSpec, matched_of, seed_points};
use super::strength_counts::{StrengthCounts, StudyPoint};
use super::strength_stage::{control_models, pct as percent, row_label};
use super::{GridModel, Pipeline, Ready, ReproduceError, StageReport, Timed, TrainedGrid, mlp_of};
use crate::attack::BudgetReading;
use crate::attack::budget::{at_strength, mean_distortion};
use crate::data::Split;
use crate::eval;
use crate::experiment::keys::{self, Key};
use crate::experiment::seeds::{BOOTSTRAP_RESAMPLES, ExtraSeeds, SeedsStage, arrange};
use crate::experiment::strength::{
    ClaimAxis, Family, HEADLINES, SeedComparison, SeedMargin, SeedModelRow, SeedPoint,
    SeedsAtStrength, Strength, StrengthSection, headline_pairs,
};
use crate::model::checkpoint::ModelSpec;
use crate::stats::{MeanCi, paired_bootstrap, two_level_bootstrap};
use crate::train::TrainedModel;

/// What the stage works on: the grid (its models are seed 0), the seeds stage's models
/// of seeds 1..K, and the strength section it extends.
pub(super) struct SeedsInputs<'r> {
    pub grid: &'r TrainedGrid,
    pub extra: &'r ExtraSeeds,
    pub section: &'r StrengthSection,
}

/// One model at one seed over the points: per point each run's set average (fractions),
/// cached with the tensor `per_image` `[points, n]`, each test image's fraction of runs
/// correct averaged over the 12 sets.
#[derive(serde::Serialize, serde::Deserialize)]
struct SeedStrengthEval {
    runs: Vec<Vec<f64>>,
}

/// A model of the study at one seed, measured.
struct Measured {
    /// `[point][run]` set averages, fractions.
    runs: Vec<Vec<f64>>,
    /// `[points, n]`.
    per_image: Tensor,
}

/// The key of `name` at seed `seed` (weights `model_key`) over `points`, on the sets of
/// the raw attacks `attack_keys` (κ = 0) under the per-example cap `bound`.
pub(super) fn study_key(
    pipeline: &Pipeline,
    (name, seed, model_key): (&str, usize, &str),
    points: &[SeedPointSpec],
    attack_keys: &[String],
    bound: f64,
) -> Key {
    let points: Vec<Vec<serde_json::Value>> = points
        .iter()
        .map(|(_, st)| {
            st.iter()
                .zip(attack_keys)
                .map(|(s, k)| keys::strength_set(k, s.reading, bound, s.m))
                .collect()
        })
        .collect();
    let eval = keys::strength_eval(
        name,
        model_key,
        &points,
        pipeline.cfg.profile.strength.runs,
        pipeline.test.len(),
        pipeline.seeds.master(),
    );
    keys::strength_seeds_eval(&eval, name, seed)
}

struct Study<'p, 'a> {
    pipeline: &'p Pipeline<'a>,
    /// Per set, r under the per-example cap (κ = 0): Table 2's perturbations.
    r: Vec<Tensor>,
    attack_keys: Vec<String>,
    bound: f64,
    points: Vec<(String, Vec<Strength>)>,
    runs: usize,
    seconds: f64,
    computed: usize,
    reused: usize,
}

impl<'p, 'a> Study<'p, 'a> {
    /// The study at `points` on Table 2's 12 sets (the grid's sources' raw attacks at
    /// κ = 0 under the per-example cap); `seconds` starts its artifact time.
    fn new(
        pipeline: &'p Pipeline<'a>,
        grid: &TrainedGrid,
        points: Vec<SeedPointSpec>,
        seconds: f64,
    ) -> Result<Self, ReproduceError> {
        let cfg = pipeline.cfg;
        let bound = cfg.profile.max_rms_distortion.unwrap_or(0.10);
        let mut r = Vec::new();
        let mut attack_keys = Vec::new();
        for (gm, ready) in grid.sources.iter().zip(&grid.source_ready) {
            mlp_of(ready)?;
            let raw = pipeline.ensure_raw_attack(&gm.label, ready, &cfg.profile.attack)?;
            let delta = raw.delta.to_device(cfg.device);
            r.push(BudgetReading::PerExampleCap.apply(&delta, bound).0);
            attack_keys.push(raw.key);
        }
        Ok(Study {
            pipeline,
            points,
            r,
            attack_keys,
            bound,
            runs: cfg.profile.strength.runs,
            seconds,
            computed: 0,
            reused: 0,
        })
    }
}

impl Study<'_, '_> {
    /// `model` (named `name`, seed `seed`) at every point, cached under a key naming the
    /// model, the sets, their strengths and the runs.
    fn measure(
        &mut self,
        name: &str,
        seed: usize,
        ready: &Ready,
    ) -> Result<Measured, ReproduceError> {
        let p = self.pipeline;
        let key = study_key(
            p,
            (name, seed, &ready.key),
            &self.points,
            &self.attack_keys,
            self.bound,
        );
        if let Some(e) = p.evals_dir.read_json::<Timed<SeedStrengthEval>>(&key.id)? {
            let per_image = p
                .evals_dir
                .read_tensors(&key.id)?
                .into_iter()
                .find(|(n, _)| n == "per_image")
                .map(|(_, t)| t.to_device(p.cfg.device))
                .ok_or(ReproduceError::MissingTensor {
                    key: key.id.clone(),
                    name: "per_image",
                })?;
            self.reused += 1;
            self.seconds += e.seconds;
            return Ok(Measured {
                runs: e.value.runs,
                per_image,
            });
        }
        let t0 = Instant::now();
        let (runs, per_image): (Vec<Vec<f64>>, Vec<Tensor>) = self
            .points
            .iter()
            .map(|(point, strengths)| self.at_point(name, seed, point, strengths, &ready.model))
            .unzip();
        let per_image = Tensor::stack(&per_image, 0);
        let e = Timed {
            seconds: t0.elapsed().as_secs_f64(),
            value: SeedStrengthEval { runs },
        };
        key.write_beside(&p.evals_dir)?;
        p.evals_dir.write_with_tensors(
            &key.id,
            &[("per_image", &per_image.to_device(tch::Device::Cpu))],
            &e,
        )?;
        self.seconds += e.seconds;
        self.computed += 1;
        Ok(Measured {
            runs: e.value.runs,
            per_image,
        })
    }

    /// The mean over the sets of each set's mean distortion at its strength.
    fn mean_distortion(&self, strengths: &[Strength]) -> f64 {
        let d = self.set_distortions(strengths);
        d.iter().sum::<f64>() / d.len().max(1) as f64
    }

    /// Each set's mean distortion at its strength.
    fn set_distortions(&self, strengths: &[Strength]) -> Vec<f64> {
        let x = &self.pipeline.test.images;
        strengths
            .iter()
            .zip(&self.r)
            .map(|(s, r)| mean_distortion(x, &at_strength(x, r, s.m)))
            .collect()
    }

    /// One point: each run's set average and each image's fraction of runs correct
    /// (averaged over the sets), from the `[runs, n]` correctness of every set.
    fn at_point(
        &self,
        name: &str,
        seed: usize,
        point: &str,
        strengths: &[Strength],
        model: &TrainedModel,
    ) -> (Vec<f64>, Tensor) {
        let p = self.pipeline;
        let sum = strengths
            .iter()
            .zip(&self.r)
            .enumerate()
            .map(|(i, (s, r))| {
                let split = Split {
                    images: at_strength(&p.test.images, r, s.m),
                    labels: p.test.labels.shallow_clone(),
                };
                p.seeds.seed_torch(&format!(
                    "strength-seeds/{name}/seed={seed}/{point}/set={i}"
                ));
                correct_table(model, &split, self.runs, p.chunks)
            })
            .reduce(|a, b| a + b)
            .unwrap_or_else(|| Tensor::zeros([1, p.test.len() as i64], tch::kind::FLOAT_CPU));
        let avg = sum / strengths.len().max(1) as f64;
        let per_run = Vec::<f64>::try_from(avg.mean_dim([1].as_slice(), false, Kind::Double))
            .unwrap_or_default();
        (per_run, avg.mean_dim([0].as_slice(), false, Kind::Float))
    }
}

/// `[runs, n]` 0/1 floats: a deterministic net's one row, a BNN's one row per draw.
fn correct_table(
    model: &TrainedModel,
    split: &Split,
    runs: usize,
    chunks: eval::EvalChunks,
) -> Tensor {
    match model {
        TrainedModel::Mlp { mlp, .. } => eval::correct_flags(mlp, split, chunks)
            .to_kind(Kind::Float)
            .unsqueeze(0),
        TrainedModel::Bnn { bnn, .. } => eval::single_draw_correct_table(bnn, split, runs, chunks),
    }
}

/// A model of the study: its name, label, family and its models by seed.
struct StudyModel<'r> {
    gm: &'r GridModel,
    /// As the strength section labels the model's row.
    label: String,
    family: Family,
    by_seed: Vec<&'r Ready>,
}

/// Runs the stage: the section and the stage's report.
pub(super) fn run(
    pipeline: &Pipeline,
    seeds_stage: &SeedsStage,
    inputs: SeedsInputs,
) -> Result<(SeedsAtStrength, StageReport, StrengthCounts), ReproduceError> {
    let t0 = Instant::now();
    let cfg = pipeline.cfg;
    let k = seeds_stage.train_seeds;

    // The matched-init control's seeds: seed 0 is the strength stage's.
    let (control_gm, _) = control_models(1);
    let (control0, _) = pipeline.ensure_model(&control_gm)?;
    let control_extra = seeds_stage.ensure_family(std::slice::from_ref(&control_gm), "control")?;
    let train_seconds: f64 = control_extra.iter().map(|r| r.meta.wall_seconds).sum();

    let grid = inputs.grid;
    let section = inputs.section;
    let matched = section
        .claim_points
        .iter()
        .find(|c| c.axis == ClaimAxis::Multiplier)
        .map(|c| (c.name.clone(), c.point.strengths.clone()));
    let points = seed_points(
        matched,
        &section.profile.seed_multipliers,
        grid.sources.len(),
    );
    let mut study = Study::new(pipeline, grid, points, train_seconds)?;

    let models = study_models(grid, inputs.extra, (&control_gm, &control0, &control_extra));
    let progress = super::bar(models.len() * k, "strength seeds", cfg.verbose);
    let mut measured: Vec<Vec<Measured>> = Vec::new();
    for m in &models {
        let mut per_seed = Vec::new();
        for (s, ready) in m.by_seed.iter().enumerate().take(k) {
            progress.set_message(format!("{} seed {s}", m.gm.label));
            per_seed.push(study.measure(&m.gm.name, s, ready)?);
            progress.inc(1);
        }
        measured.push(per_seed);
    }
    progress.finish_and_clear();

    let counts = StrengthCounts::of(
        models.iter().map(|m| m.gm.name.clone()).collect(),
        models
            .iter()
            .map(|m| match m.gm.spec {
                ModelSpec::Bnn { .. } => study.runs,
                ModelSpec::Mlp { .. } => 1,
            })
            .collect(),
        study
            .points
            .iter()
            .map(|(name, strengths)| StudyPoint {
                name: name.clone(),
                set_distortions: study.set_distortions(strengths),
            })
            .collect(),
        &measured
            .iter()
            .map(|seeds| seeds.iter().map(|m| &m.per_image).collect())
            .collect::<Vec<_>>(),
        study.r.len(),
    )?;
    let n_points = study.points.len();
    let seeds_here = measured.iter().map(Vec::len).min().unwrap_or(0);
    let kinds: Vec<(Family, Option<f64>)> = models
        .iter()
        .map(|m| (m.family, m.gm.spec.rho_init()))
        .collect();
    let points = study
        .points
        .iter()
        .enumerate()
        .map(|(i, (name, strengths))| SeedPoint {
            name: name.clone(),
            strengths: strengths.clone(),
            mean_distortion: study.mean_distortion(strengths),
            comparisons: compare_at(pipeline, &models, &measured, &kinds, i, seeds_here),
        })
        .collect();
    let rows = models
        .iter()
        .zip(&measured)
        .map(|(m, per_seed)| model_row(m, per_seed, n_points))
        .collect();
    let forward = crate::experiment::flops::forward(
        &crate::model::Arch::new(&[100, 100]),
        (pipeline.test.len() * study.r.len() * n_points * seeds_here) as f64
            * models
                .iter()
                .map(|m| match m.gm.spec {
                    ModelSpec::Bnn { .. } => study.runs as f64,
                    ModelSpec::Mlp { .. } => 1.0,
                })
                .sum::<f64>(),
    );
    let flops = forward
        + control_extra
            .iter()
            .map(|r| super::training_flops(r, &pipeline.recipe, &pipeline.splits))
            .sum::<f64>();
    let section = SeedsAtStrength {
        note: format!(
            "The strength axis's three headline comparisons across {k} training seeds (seed 0: the main run's models; seeds 1..{}: the seeds study's, and the matched-init control retrained with the same seed names), at the paper-matched multiplier and at m in {:?} (per-example cap, kappa = 0; the same 12 sets for every seed). Per seed: 'best' is chosen at that seed; the margin's CI over {} single weight draws per BNN and set (combined in quadrature), and a paired bootstrap CI over the {} test images ({BOOTSTRAP_RESAMPLES} resamples). Across seeds: Student t over the {k} per-seed margins, and a two-level bootstrap resampling seeds and test images together; the two are read as above or below 0 only where both exclude 0 on the same side (exploratory: no verdict). Points.",
            k - 1,
            cfg.profile.strength.seed_multipliers,
            study.runs,
            pipeline.test.len()
        ),
        train_seeds: seeds_here,
        runs: study.runs,
        bootstrap_resamples: BOOTSTRAP_RESAMPLES,
        points,
        models: rows,
    };
    let report = StageReport {
        stage: "strength_seeds".into(),
        seconds: t0.elapsed().as_secs_f64(),
        artifact_seconds: study.seconds,
        computed: study.computed,
        reused: study.reused,
        flops: Some(flops),
    };
    Ok((section, report, counts))
}

/// The study's models, each with its models by seed: the λ nets and BNNs (seed 0 the
/// grid's, then the seeds stage's), then the matched-init control.
fn study_models<'r>(
    grid: &'r TrainedGrid,
    extra: &'r ExtraSeeds,
    (control_gm, control0, control_extra): (&'r GridModel, &'r Ready, &'r [Ready]),
) -> Vec<StudyModel<'r>> {
    let det_by_model = arrange(&grid.det_ready, &extra.dets);
    let bnn_by_model = arrange(&grid.bnn_ready, &extra.bnns);
    let mut models: Vec<StudyModel> = Vec::new();
    for (gms, by_model, family) in [
        (&grid.dets, det_by_model, Family::Deterministic),
        (&grid.bnns, bnn_by_model, Family::BnnDraw),
    ] {
        models.extend(gms.iter().zip(by_model).map(|(gm, by_seed)| StudyModel {
            gm,
            label: row_label(gm, family),
            family,
            by_seed,
        }));
    }
    models.push(StudyModel {
        gm: control_gm,
        label: control_gm.label.clone(),
        family: Family::MatchedInit,
        by_seed: std::iter::once(control0).chain(control_extra).collect(),
    });
    models
}

/// The headline comparisons at point `i`, per seed and across the seeds.
fn compare_at(
    pipeline: &Pipeline,
    models: &[StudyModel],
    measured: &[Vec<Measured>],
    kinds: &[(Family, Option<f64>)],
    i: usize,
    seeds: usize,
) -> Vec<SeedComparison> {
    let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let per_seed: Vec<Vec<(&'static str, SeedMargin, Vec<f64>)>> = (0..seeds)
        .map(|s| {
            headline_pairs(kinds, |j| mean(&measured[j][s].runs[i]))
                .into_iter()
                .map(|(name, a, b)| {
                    let (ma, mb) = (&measured[a][s], &measured[b][s]);
                    let diff = Vec::<f64>::try_from(
                        (ma.per_image.get(i as i64) - mb.per_image.get(i as i64))
                            .to_kind(Kind::Double),
                    )
                    .unwrap_or_default();
                    let mut rng = pipeline.seeds.rng(&format!(
                        "strength-seeds/bootstrap/{name}/point={i}/seed={s}"
                    ));
                    let margin = SeedMargin {
                        seed: s,
                        a: models[a].label.clone(),
                        b: models[b].label.clone(),
                        over_draws: percent(&ma.runs[i]).minus_independent(&percent(&mb.runs[i])),
                        paired_bootstrap: paired_bootstrap(&diff, BOOTSTRAP_RESAMPLES, &mut rng)
                            .map(|m| m.scaled(100.0)),
                    };
                    (name, margin, diff)
                })
                .collect()
        })
        .collect();
    HEADLINES
        .iter()
        .filter_map(|&name| {
            let (margins, diffs): (Vec<SeedMargin>, Vec<Vec<f64>>) = per_seed
                .iter()
                .filter_map(|ms| {
                    ms.iter()
                        .find(|(n, _, _)| *n == name)
                        .map(|(_, m, d)| (m.clone(), d.clone()))
                })
                .unzip();
            if margins.is_empty() {
                return None;
            }
            let values: Vec<f64> = margins.iter().map(|m| m.over_draws.mean).collect();
            let across = MeanCi::from_values(&values);
            let mut rng = pipeline
                .seeds
                .rng(&format!("strength-seeds/two-level/{name}/point={i}"));
            let both =
                two_level_bootstrap(&diffs, BOOTSTRAP_RESAMPLES, &mut rng).map(|m| m.scaled(100.0));
            Some(SeedComparison {
                name: name.to_owned(),
                per_seed: margins,
                verdict: across
                    .as_ref()
                    .filter(|c| c.runs > 1)
                    .map(|c| SeedComparison::verdict_of(c, both.as_ref())),
                across_seeds: across,
                seeds_and_images: both,
            })
        })
        .collect()
}

/// A model's set averages per point and seed, and across the seeds.
fn model_row(m: &StudyModel, per_seed: &[Measured], points: usize) -> SeedModelRow {
    let average: Vec<Vec<MeanCi>> = (0..points)
        .map(|i| per_seed.iter().map(|e| percent(&e.runs[i])).collect())
        .collect();
    SeedModelRow {
        name: m.gm.name.clone(),
        label: m.label.clone(),
        family: m.family,
        rho_init: m.gm.spec.rho_init(),
        lambda: match m.gm.spec {
            ModelSpec::Mlp { lambda, .. } => Some(lambda),
            ModelSpec::Bnn { .. } => None,
        },
        across_seeds: average
            .iter()
            .map(|seeds| MeanCi::from_values(&seeds.iter().map(|c| c.mean).collect::<Vec<_>>()))
            .collect(),
        average,
    }
}

/// The study's models by the family their seeds 1..K are trained with, in the study's
/// order ([`study_models`]'s): the λ nets, the BNNs, then the matched-init control, each
/// family with its stacked grids' tag.
pub(super) fn study_families<'g>(
    dets: &'g [GridModel],
    bnns: &'g [GridModel],
    control: &'g GridModel,
) -> [(&'g [GridModel], &'static str); 3] {
    [
        (dets, "det"),
        (bnns, "bnn"),
        (std::slice::from_ref(control), "control"),
    ]
}

/// The `model`-th model of the study, with its family and that family's tag.
fn study_model<'g>(
    grid: &'g TrainedGrid,
    control: &'g GridModel,
    model: usize,
) -> Option<(&'g GridModel, &'g [GridModel], &'static str)> {
    study_families(&grid.dets, &grid.bnns, control)
        .into_iter()
        .flat_map(|(family, tag)| family.iter().map(move |gm| (gm, family, tag)))
        .nth(model)
}

/// One job of the plan: the `model`-th model of the study at seed `seed`, at the points
/// of `claims` (its model and the sets are cached).
pub(super) fn measure_one(
    pipeline: &Pipeline,
    seeds_stage: &SeedsStage,
    claims: &[ClaimDesc],
    (model, seed): (usize, usize),
) -> Result<(), ReproduceError> {
    let grid = pipeline.load_grid()?;
    let (control_gm, _) = control_models(1);
    let Some((gm, family, tag)) = study_model(&grid, &control_gm, model) else {
        return Ok(());
    };
    let ready = if seed == 0 {
        pipeline.ensure_model(gm)?.0
    } else {
        let grids = seeds_stage.seed_grids(family, tag);
        let Some((g, i)) = super::plan_seeds::member_of(&grids, gm, seed) else {
            return Ok(());
        };
        seeds_stage.ensure_grid(&grids[g])?.swap_remove(i)
    };
    let sp = &pipeline.cfg.profile.strength;
    let points = seed_points(matched_of(claims), &sp.seed_multipliers, grid.sources.len());
    Study::new(pipeline, &grid, points, 0.0)?.measure(&gm.name, seed, &ready)?;
    Ok(())
}
