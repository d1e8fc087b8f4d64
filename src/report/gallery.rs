//! Figures of many models or images on one page: the perturbation grid (clean images,
//! their perturbed versions and the perturbations, per source family), the training
//! curves of every model of the grid, and the white-box curves of every model in small
//! multiples.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::curve_id::{CurveId, CurveModel};
use super::plots::{
    Family, Figure, GrayImage, ImageCell, ImageGrid, ImageRow, PanelLegend, PixelScale, Series,
    SmallMultiples,
};
use super::{Result, embed_figure, fmt_param};
use crate::experiment::ModelGroup;
use crate::experiment::examples::{ExampleSet, PerturbationExamples};
use crate::model::checkpoint::ModelSpec;
use crate::model::mlp::MlpInit;
use crate::stats::MeanCi;

const SIDE: usize = 28;

/// The three cells of one example: clean, perturbed, and r = x' − x on a diverging
/// scale up to `max_abs`.
fn example_cells(set: &ExampleSet, i: usize, max_abs: f32) -> Vec<ImageCell> {
    let e = &set.examples[i];
    let r: Vec<f32> = e
        .perturbed
        .iter()
        .zip(&e.clean)
        .map(|(p, c)| p - c)
        .collect();
    let fooled = if e.perturbed_prediction != e.label {
        " (wrong)"
    } else {
        ""
    };
    let image = |pixels: Vec<f32>, scale| GrayImage {
        side: SIDE,
        pixels,
        scale,
    };
    vec![
        ImageCell {
            image: image(e.clean.clone(), PixelScale::Unit),
            caption: format!("label {}, pred {}", e.label, e.clean_prediction),
        },
        ImageCell {
            image: image(e.perturbed.clone(), PixelScale::Unit),
            caption: format!("pred {}{fooled}", e.perturbed_prediction),
        },
        ImageCell {
            image: image(r, PixelScale::Signed { max_abs }),
            caption: format!("‖r‖₂ = {:.2}", e.l2),
        },
    ]
}

/// The perturbation grid of a run's examples.
pub fn perturbation_grid(ex: &PerturbationExamples) -> ImageGrid {
    let n = ex.sets.iter().map(|s| s.examples.len()).min().unwrap_or(0);
    // One scale per source, so its four perturbations compare with each other.
    let scales: Vec<f32> = ex
        .sets
        .iter()
        .map(|s| {
            s.examples
                .iter()
                .flat_map(|e| e.perturbed.iter().zip(&e.clean).map(|(p, c)| (p - c).abs()))
                .fold(0.0, f32::max)
        })
        .collect();
    let what = if ex.protocol == "code" {
        "kept #"
    } else {
        "test #"
    };
    ImageGrid {
        title: format!(
            "Perturbations against each source family (λ = 0), {} protocol",
            ex.protocol
        ),
        groups: ex
            .sets
            .iter()
            .map(|s| format!("source {}", s.source))
            .collect(),
        columns: vec!["clean x".into(), "perturbed x'".into(), "r = x' − x".into()],
        rows: (0..n)
            .map(|i| ImageRow {
                label: format!("{what}{}", ex.sets[0].examples[i].index),
                cells: ex
                    .sets
                    .iter()
                    .zip(&scales)
                    .flat_map(|(s, &m)| example_cells(s, i, m))
                    .collect(),
            })
            .collect(),
    }
}

/// The perturbation grid in the report, when the run wrote its examples.
pub fn perturbation_section(out_dir: &Path, md: &mut String) -> Result<Vec<PathBuf>> {
    let Some(ex) = PerturbationExamples::read(out_dir).map_err(|e| super::ReportError::Write {
        path: e.path.clone(),
        reason: e.reason,
    })?
    else {
        return Ok(Vec::new());
    };
    let caption = format!(
        "The first {} of each source family's λ = 0 perturbation set: the clean image with its label and the source's prediction, the perturbed image x' with the source's prediction, and r = x' − x (red positive, blue negative, white 0; one scale per source, up to its largest |r|) with its L2 norm. {}.",
        if ex.protocol == "code" {
            "kept validation examples"
        } else {
            "test images"
        },
        ex.note
    );
    Ok(vec![embed_figure(
        &perturbation_grid(&ex),
        out_dir,
        "perturbations.svg",
        &caption,
        md,
    )?])
}

/// One trained model of results.json's `models`, as the training-curve figure reads it.
#[derive(serde::Deserialize)]
struct TrainedRow {
    group: ModelGroup,
    spec: ModelSpec,
    best_epoch: usize,
    validation_curve: Vec<f64>,
}

/// The series name of a model within its panel: its λ or ρ_init, or a control's
/// initialisation.
fn grid_name(group: ModelGroup, spec: &ModelSpec) -> String {
    match (group, spec) {
        (ModelGroup::Control, ModelSpec::Mlp { config, .. }) => match config.init {
            MlpInit::GlorotUniform => "Glorot init".into(),
            MlpInit::TruncatedNormal { .. } => "BNN's init".into(),
        },
        (_, ModelSpec::Mlp { lambda, .. }) => format!("λ={}", fmt_param(*lambda)),
        (_, ModelSpec::Bnn { config }) => format!("ρ_init={}", config.rho_init),
    }
}

/// `names` with a repeated name numbered by its place among its repeats (`Glorot
/// init 1`, `Glorot init 2`), so that every series of a panel has its own entry.
fn numbered(names: Vec<String>) -> Vec<String> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if names.iter().filter(|m| *m == n).count() < 2 {
                return n.clone();
            }
            let k = names[..i].iter().filter(|m| *m == n).count() + 1;
            format!("{n} {k}")
        })
        .collect()
}

/// Training curves: validation accuracy after each epoch of every model of the grid,
/// one panel per group (each source architecture, the λ grid, the ρ_init grid), with
/// each model's early-stopping point (the epoch whose weights were kept).
pub fn training_curves(r: &Value) -> Option<SmallMultiples> {
    let rows: Vec<TrainedRow> = serde_json::from_value(r["models"].clone()).ok()?;
    let mut panels: Vec<(String, Vec<&TrainedRow>)> = Vec::new();
    for row in rows.iter().filter(|r| !r.validation_curve.is_empty()) {
        let title = match row.group {
            ModelGroup::Source => format!("sources {}", row.spec.arch()),
            ModelGroup::Deterministic => format!("deterministic {}", row.spec.arch()),
            ModelGroup::Bnn => format!("BNNs {}", row.spec.arch()),
            ModelGroup::Control => format!("controls {} (BNN recipe)", row.spec.arch()),
        };
        match panels.iter_mut().find(|(t, _)| *t == title) {
            Some((_, members)) => members.push(row),
            None => panels.push((title, vec![row])),
        }
    }
    if panels.is_empty() {
        return None;
    }
    let panels = panels
        .into_iter()
        .map(|(title, members)| {
            let family = |row: &TrainedRow| match row.group {
                ModelGroup::Bnn => Family::Bnn,
                ModelGroup::Control => Family::Control,
                ModelGroup::Source | ModelGroup::Deterministic => Family::Deterministic,
            };
            let names = numbered(
                members
                    .iter()
                    .map(|r| grid_name(r.group, &r.spec))
                    .collect(),
            );
            let mut series: Vec<Series> = members
                .iter()
                .zip(names)
                .map(|(row, name)| {
                    let points = row
                        .validation_curve
                        .iter()
                        .enumerate()
                        .map(|(i, a)| ((i + 1) as f64, 100.0 * a, 100.0 * a, 100.0 * a))
                        .collect();
                    Series::ours(name, family(row), points).line_only()
                })
                .collect();
            let stops = members
                .iter()
                .filter_map(|row| {
                    let a = 100.0 * row.validation_curve.get(row.best_epoch.checked_sub(1)?)?;
                    Some((row.best_epoch as f64, a, a, a))
                })
                .collect();
            series.push(
                Series::ours("weights kept (best epoch)", Family::Other, stops).points_only(),
            );
            Figure::new(&title, "epoch", "validation accuracy (%)", series)
        })
        .collect();
    Some(SmallMultiples {
        title: if r["protocol"] == "code" {
            "Validation accuracy per epoch of every model of the authors' code protocol".into()
        } else {
            "Validation accuracy per epoch of every model of the grid".into()
        },
        panels,
        columns: 3,
        legend: PanelLegend::Shared,
    })
}

/// The training curves in the report, when results.json has them.
pub fn training_section(r: &Value, out_dir: &Path, md: &mut String) -> Result<Vec<PathBuf>> {
    let Some(fig) = training_curves(r) else {
        return Ok(Vec::new());
    };
    let meta = super::meta_of(r)?;
    let caption = if r["protocol"] == "code" {
        format!(
            "Validation accuracy (the {} validation images) after every epoch of every model the authors' code protocol trains (budget {}), one panel per part of the grid; a grey dot marks the epoch whose weights were kept. Each model has its notebook recipe (results.json's `models[].recipe`): the sources and the λ nets SGD on batches of 10,000, the BNNs and the controls the BNNs' batches of 128; as written, each trains a fixed number of epochs and keeps the last weights. A BNN's accuracy is the mean of its trainer's fixed weight draws.",
            meta.n_validation,
            r["budget"].as_str().unwrap_or("as written"),
        )
    } else {
        text_training_caption(&meta)
    };
    Ok(vec![embed_figure(
        &fig,
        out_dir,
        "training_curves.svg",
        &caption,
        md,
    )?])
}

/// The text protocol's training-curve caption: its early stopping, from the profile.
fn text_training_caption(meta: &crate::results::Meta) -> String {
    let recipe = crate::train::Recipe::paper(
        meta.profile_field("/max_epochs")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize,
    );
    format!(
        "Validation accuracy (the {} validation images) after every epoch of every model trained for this run, one panel per part of the grid; a grey dot marks the epoch whose weights were kept (early stopping with patience {} on validation accuracy, at most {} epochs). A BNN's is the mean accuracy of {} fixed weight draws, as its trainer judges it.",
        meta.n_validation,
        recipe.patience.unwrap_or(0),
        recipe.max_epochs,
        recipe.val_draws
    )
}

/// A white-box curve's panel (the model attacked: the λ nets share one, each BNN has
/// its own, ordered by ρ_init after them), its series name (what of the model: a λ,
/// one draw, an ensemble through EOT k, the posterior mean, a frozen sample) and
/// colour; `None` for the reruns of the masking checks.
fn whitebox_panel_and_series(r: &Value, c: &Value) -> Option<(String, f64, String, Family)> {
    let id = CurveId::of(r, c).filter(|id| !id.rerun)?;
    let name = c["model"].as_str().unwrap_or("?");
    Some(match id.model {
        CurveModel::Deterministic { .. } => (
            "deterministic FC-100-100-10".into(),
            f64::NEG_INFINITY,
            name.replace("lambda", "λ"),
            id.family(),
        ),
        CurveModel::Bnn { rho_init } => (
            format!("BNN ρ_init={rho_init}"),
            rho_init,
            name.split_once(", ")
                .map_or(name, |(_, what)| what)
                .to_owned(),
            id.family(),
        ),
    })
}

/// The white-box accuracy of every model under one norm, in small multiples: the
/// deterministic λ nets in one panel, then one panel per BNN.
pub fn whitebox_multiples(r: &Value, norm: &str) -> Option<SmallMultiples> {
    let curves = r["whitebox"]["curves"].as_array()?;
    let mut panels: Vec<(String, f64, Vec<Series>)> = Vec::new();
    for c in curves {
        let Some((panel, order, name, family)) = whitebox_panel_and_series(r, c) else {
            continue;
        };
        let xs_key = if norm == "linf" { "eps_pixels" } else { "eps" };
        let xs: Vec<f64> = serde_json::from_value(c[norm][xs_key].clone()).ok()?;
        let acc: Vec<MeanCi> = serde_json::from_value(c[norm]["accuracy"].clone()).ok()?;
        let points = xs
            .iter()
            .zip(&acc)
            .map(|(x, a)| (*x, a.mean, a.ci95[0], a.ci95[1]))
            .collect();
        let s = Series::ours(name, family, points);
        match panels.iter_mut().find(|(t, _, _)| *t == panel) {
            Some((_, _, series)) => series.push(s),
            None => panels.push((panel, order, vec![s])),
        }
    }
    if panels.is_empty() {
        return None;
    }
    panels.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (unit, what) = if norm == "linf" {
        ("L∞ ε ([0, 1] pixel units)", "L∞")
    } else {
        ("L2 ε (input units)", "L2")
    };
    Some(SmallMultiples {
        title: format!("White-box {what} PGD: robust accuracy of every model, one panel each"),
        panels: panels
            .into_iter()
            .map(|(title, _, series)| Figure::new(&title, unit, "accuracy (%)", series))
            .collect(),
        columns: 4,
        legend: PanelLegend::Shared,
    })
}

/// Both norms' small multiples in the report, when the run has white-box curves.
pub fn whitebox_multiples_section(
    r: &Value,
    out_dir: &Path,
    md: &mut String,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (norm, file) in [
        ("linf", "whitebox_all_linf.svg"),
        ("l2", "whitebox_all_l2.svg"),
    ] {
        let Some(fig) = whitebox_multiples(r, norm) else {
            continue;
        };
        if written.is_empty() {
            let _ = writeln!(md, "### Every model on one page\n");
        }
        let caption = format!(
            "White-box {} PGD against every model of the grid on the first {} test images: the deterministic λ nets in one panel, then each BNN with one weight draw, its deployed ensemble attacked through EOT over k draws, its posterior mean and a frozen sample; 95% CI bars over the examples (and repeats).",
            if norm == "linf" { "L∞" } else { "L2" },
            r["whitebox"]["profile"]["examples"]
        );
        written.push(embed_figure(&fig, out_dir, file, &caption, md)?);
    }
    Ok(written)
}
