//! The code protocol's own report sections (kept sets, controls, the multiplier sweep,
//! learned σ) and the paper report's "Where does the margin come from?" section, which
//! sets the text protocol's results beside the code protocol's. Every conclusion is
//! computed from the numbers and their CIs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::plots::{Family, Figure, Line, Series, SeriesLabelPosition};
use super::{ReportError, Result, best_margin, paper, tables_of, typed};
use crate::experiment::code_protocol::{CodeBudget, SweepRole, TrainingRow};
use crate::results::Sigmas;
use crate::results::{Cell as Estimate, CodeSweep, SweepRow, Tables};
use crate::stats::MeanCi;

/// `{mean, ci95, runs}` as "m [lo, hi]" with a sign.
fn signed(c: &MeanCi) -> String {
    format!("{:+.2} [{:+.2}, {:+.2}]", c.mean, c.ci95[0], c.ci95[1])
}

fn cell(c: &MeanCi) -> String {
    format!("{:.2} ± {:.2}", c.mean, c.half_width())
}

/// Which side of 0 a difference a − b's CI over weight draws lies: descriptive, not a
/// verdict (the CI leaves out test images, seeds and selection).
fn verdict(d: &MeanCi, a: &str, b: &str) -> String {
    if d.ci95[0] > 0.0 {
        format!("draws-only CI above 0: {a} higher")
    } else if d.ci95[1] < 0.0 {
        format!("draws-only CI below 0: {b} higher")
    } else {
        "draws-only CI spans 0".into()
    }
}

/// A row of the code protocol's sweep: its typed `role`, or for results.json older
/// than it, the role read from its name (here and nowhere else).
pub fn role_of(row: &SweepRow) -> Option<SweepRole> {
    row.role.or_else(|| role_from_name(&row.name))
}

/// The code protocol's sweep of results.json as its type.
fn sweep_of(code: &Value) -> Result<CodeSweep> {
    typed(&code["sweep"], "/sweep")
}

fn role_from_name(name: &str) -> Option<SweepRole> {
    Some(match name {
        "deterministic, BNN recipe, BNN init" => SweepRole::MatchedInit,
        "deterministic, BNN recipe, Glorot init" => SweepRole::MatchedGlorot,
        "deterministic lambda=0 + weight noise" => SweepRole::NoisyDeterministic,
        "deterministic, BNN recipe, BNN init + weight noise" => SweepRole::NoisyMatchedInit,
        n if n.starts_with("deep ensemble of ") => SweepRole::DeepEnsemble {
            members: n["deep ensemble of ".len()..]
                .split(' ')
                .next()?
                .parse()
                .ok()?,
        },
        n if n.starts_with("deterministic lambda=") => SweepRole::Deterministic {
            lambda: n["deterministic lambda=".len()..].parse().ok()?,
        },
        n => {
            let rest = n.strip_prefix("BNN rho_init=")?;
            match rest.split_once(", ") {
                None => SweepRole::Bnn {
                    rho_init: rest.parse().ok()?,
                },
                Some((rho, "posterior mean")) => SweepRole::PosteriorMean {
                    rho_init: rho.parse().ok()?,
                },
                Some((rho, "frozen sample")) => SweepRole::FrozenSample {
                    rho_init: rho.parse().ok()?,
                },
                Some(_) => return None,
            }
        }
    })
}

/// The first model of the code protocol's sweep whose role passes `is`.
fn sweep_model(sweep: &CodeSweep, is: impl Fn(SweepRole) -> bool) -> Option<&SweepRow> {
    sweep.models.iter().find(|m| role_of(m).is_some_and(&is))
}

fn m_index(sweep: &CodeSweep, m: f64) -> Result<usize> {
    sweep
        .multipliers
        .iter()
        .position(|x| *x == m)
        .ok_or_else(|| ReportError::MissingCell(format!("/sweep/multipliers ({m})")))
}

/// The set-averaged accuracy of sweep row `model` at multiplier m.
fn row_average(sweep: &CodeSweep, model: &SweepRow, m: f64) -> Result<MeanCi> {
    let i = m_index(sweep, m)?;
    model.average.get(i).copied().flatten().ok_or_else(|| {
        ReportError::MissingCell(format!("/sweep/models ({})/average/{i}", model.name))
    })
}

/// The set-averaged accuracy at multiplier m of the sweep model with `role`, and its
/// name.
fn average_at(sweep: &CodeSweep, role: SweepRole, m: f64) -> Result<(String, MeanCi)> {
    let model = sweep_model(sweep, |r| r == role)
        .ok_or_else(|| ReportError::MissingCell(format!("/sweep/models ({role:?})")))?;
    Ok((model.name.clone(), row_average(sweep, model, m)?))
}

/// The best (highest-mean) set average at m among the sweep models of a group.
fn best_of_group(sweep: &CodeSweep, group: &str, m: f64) -> Result<(String, MeanCi)> {
    let i = m_index(sweep, m)?;
    sweep
        .models
        .iter()
        .filter(|x| x.group == group)
        .filter_map(|x| Some((x.name.clone(), (*x.average.get(i)?)?)))
        .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
        .ok_or_else(|| ReportError::MissingCell(format!("/sweep/models ({group})")))
}

fn mult(code: &Value, which: &str) -> f64 {
    code["multipliers"][which].as_f64().unwrap_or(1.0)
}

/// What the notebooks' saved outputs printed of their trained models
/// (`../shared/reference/authors-code.md`): (model name, what was measured, percent).
pub const NOTEBOOK_PRINTED: [(&str, &str, f64); 2] = [
    (
        "source/FC-200-200-10/lambda=0",
        "validation, perturbation.ipynb; FC-200-200-10, λ not stated",
        97.87,
    ),
    ("bnn/rho=-2", "test, 100-draw ensemble, bnn.ipynb", 98.18),
];

/// The paper's Table 1 (validation, test) of a code-protocol model, by its name.
fn paper_table1(p: &Value, name: &str) -> Option<(f64, f64)> {
    let (group, param, value) = if let Some(l) = name.strip_prefix("det/lambda=") {
        ("deterministic", "lambda", l.parse::<f64>().ok()?)
    } else {
        (
            "bnn",
            "rho_init",
            name.strip_prefix("bnn/rho=")?.parse::<f64>().ok()?,
        )
    };
    let t = &p["table1_clean"][group];
    let i = t[param]
        .as_array()?
        .iter()
        .position(|x| x.as_f64() == Some(value))?;
    Some((t["validation"][i].as_f64()?, t["test"][i].as_f64()?))
}

/// Each model's budget and the accuracy it reached, beside the notebooks' printed
/// figures and the paper's Table 1, with a computed sentence per printed figure.
fn training_section(code: &Value, p: &Value, md: &mut String) {
    let Ok(rows) = serde_json::from_value::<Vec<TrainingRow>>(code["training"]["models"].clone())
    else {
        return;
    };
    let budget = if budget_of(code) == CodeBudget::TrainedToAccuracy {
        "trained to accuracy: the non-Bayesian nets keep the notebook's recipe until validation accuracy stops improving (best weights kept), the BNNs and the matched-recipe controls get the notebook's 600-epoch loop, each family one stacked grid"
    } else {
        "as written: the epochs the notebooks' cells state, or the profile's reduction of them"
    };
    let _ = writeln!(
        md,
        "## Training budget and accuracy reached\n\nBudget {budget}. Validation: the trainer's, of the weights kept (a BNN: mean over its fixed validation draws). Test: a deterministic net's, or a BNN's ensemble of the stated draws.\n\n| model | epochs run / cap (best) | validation (%) | test (%) | notebooks printed | paper Table 1 val / test |\n|---|---|---|---|---|---|"
    );
    for r in &rows {
        let printed = NOTEBOOK_PRINTED
            .iter()
            .find(|(n, _, _)| *n == r.name)
            .map_or("–".into(), |(_, what, v)| format!("{v:.2} ({what})"));
        let table1 =
            paper_table1(p, &r.name).map_or("–".into(), |(v, t)| format!("{v:.2} / {t:.2}"));
        let _ = writeln!(
            md,
            "| {} | {} / {}{} ({}) | {:.2} | {:.2}{} | {printed} | {table1} |",
            r.name,
            r.epochs_run,
            r.max_epochs,
            if r.stopped_early() {
                ", stopped early"
            } else {
                ""
            },
            r.best_epoch,
            r.validation,
            r.test,
            if r.test_draws > 1 {
                format!(" ({}-draw ensemble)", r.test_draws)
            } else {
                String::new()
            },
        );
    }
    let _ = writeln!(md);
    for (name, what, printed) in NOTEBOOK_PRINTED {
        let Some(r) = rows.iter().find(|r| r.name == name) else {
            continue;
        };
        let ours = if what.starts_with("validation") {
            r.validation
        } else {
            r.test
        };
        let gap = ours - printed;
        let _ = writeln!(
            md,
            "- {name}: {ours:.2}% against the notebooks' printed {printed:.2}% ({what}): {gap:+.2} points, {}.",
            if gap.abs() <= 1.0 {
                "within a point"
            } else {
                "more than a point away"
            }
        );
    }
    let _ = writeln!(md);
}

/// The code protocol's sections of its own report.
pub fn code_sections(
    code: &Value,
    p: &Value,
    md: &mut String,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    training_section(code, p, md);
    let (mb, md_det) = (mult(code, "bnn"), mult(code, "det"));
    let _ = writeln!(
        md,
        "## Controls at the BNNs' multiplier ×{mb}\n\nEvery model on the same kept sets at x + {mb}·r; set averages with 95% CIs over single-draw runs (one run for a deterministic model, whose CI is then a point: the sampling error of the examples is not in it).\n\n| model | clean test | average over the 12 sets at ×{mb} | at ×1 | at ×{md_det} |\n|---|---|---|---|---|"
    );
    let sweep = sweep_of(code)?;
    for model in &sweep.models {
        let name = &model.name;
        let get = |m: f64| {
            row_average(&sweep, model, m)
                .map(|c| cell(&c))
                .unwrap_or_else(|_| "–".into())
        };
        let clean = model.clean_test;
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} |",
            clean.map_or("–".into(), |c| cell(&c)),
            get(mb),
            get(1.0),
            get(md_det)
        );
    }
    let ms = &sweep.multipliers;
    let _ = writeln!(
        md,
        "\n## Multiplier sweep\n\nSet-averaged accuracy of every evaluation model at x + m·r.\n\n| model | {} |\n|---|{}",
        ms.iter()
            .map(|m| format!("m = {m}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(ms.len())
    );
    for model in &sweep.models {
        let name = &model.name;
        let cells: Vec<String> = ms
            .iter()
            .map(|m| {
                row_average(&sweep, model, *m)
                    .map(|c| format!("{:.1}", c.mean))
                    .unwrap_or_else(|_| "–".into())
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    let mut series = Vec::new();
    // The figure's models: three BNNs, two λ nets and the matched-recipe controls.
    let wanted = |role: SweepRole| match role {
        SweepRole::Bnn { rho_init } => [-30.0, -3.0, -1.5].contains(&rho_init),
        SweepRole::Deterministic { lambda } => [0.0, 1e-2].contains(&lambda),
        SweepRole::MatchedInit | SweepRole::MatchedGlorot | SweepRole::DeepEnsemble { .. } => true,
        _ => false,
    };
    for model in &sweep.models {
        let name = &model.name;
        let Some(role) = role_of(model).filter(|r| wanted(*r)) else {
            continue;
        };
        let points = ms
            .iter()
            .filter_map(|m| {
                row_average(&sweep, model, *m)
                    .ok()
                    .map(|c| (*m, c.mean, c.ci95[0], c.ci95[1]))
            })
            .collect();
        series.push(Series::ours(name, family_of_role(role), points));
    }
    series.truncate(8);
    let mut fig = Figure::new(
        "Set-averaged accuracy vs multiplier m (authors' code protocol)",
        "m in x + m r",
        "accuracy, average of 12 kept sets (%)",
        series,
    );
    fig.verticals = vec![
        Line::new(format!("BNNs x{mb}"), mb, Family::Bnn),
        Line::new(
            format!("non-Bayesian x{md_det}"),
            md_det,
            Family::Deterministic,
        ),
    ];
    fig.legend = SeriesLabelPosition::LowerLeft;
    let file = "multiplier_sweep.svg";
    let path = super::write_figure(&fig, out_dir, file)?;
    let _ = writeln!(
        md,
        "\n![Average perturbed accuracy vs multiplier]({file})\n\n*Average perturbed accuracy vs the multiplier m, with 95% CIs; the dashed lines are the notebooks' ×{mb} (BNNs) and ×{md_det} (non-Bayesian nets).*\n"
    );
    sigma_table(code, "code protocol", md);
    Ok(vec![path])
}

/// Learned weight σ per layer (quantiles) of every BNN; nothing where results.json has
/// no readable σ section.
fn sigma_table(r: &Value, which: &str, md: &mut String) {
    let Ok(s) = serde_json::from_value::<Sigmas>(r["sigma"].clone()) else {
        return;
    };
    let qs: Vec<String> = s
        .quantiles
        .iter()
        .map(|q| format!("q{:02.0}", q * 100.0))
        .collect();
    let _ = writeln!(
        md,
        "\n### Learned weight σ per layer ({which})\n\nQuantiles {} of softplus(ρ) over each layer's weights: ρ_init alone does not say how much a trained network samples.\n\n| BNN | layer 1 (784→100) | layer 2 (100→100) | layer 3 (100→10) |\n|---|---|---|---|",
        qs.join(", ")
    );
    for b in &s.bnns {
        let layers: Vec<String> = b
            .layers
            .iter()
            .map(|q| {
                q.iter()
                    .map(|x| format!("{x:.2e}"))
                    .collect::<Vec<_>>()
                    .join(" / ")
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", b.model, layers.join(" | "));
    }
}

/// One row of a protocol comparison: the paper's value and ours under each protocol
/// (the text's, then each code variant's).
fn compare_row(p: &Value, text: &Tables, variants: &[Tables], row: Compared) -> Vec<String> {
    let (xs, _) = row.of(text);
    (0..xs.len())
        .map(|j| {
            let fmt = |t: &Tables| {
                row.of(t)
                    .1
                    .get(j)
                    .copied()
                    .flatten()
                    .map_or_else(|| "–".into(), |c| cell(&c))
            };
            std::iter::once(
                paper(p, &format!("{}/{j}", row.path()))
                    .map_or("–".into(), |v| format!("{v:.2}")),
            )
            .chain(std::iter::once(fmt(text)))
            .chain(variants.iter().map(fmt))
            .collect::<Vec<_>>()
            .join(" / ")
        })
        .collect()
}

/// The training budget a code-protocol run was made with (results written before the
/// budget was recorded are as written).
pub fn budget_of(code: &Value) -> CodeBudget {
    serde_json::from_value(code["budget"].clone()).unwrap_or_default()
}

/// A code variant's name in the margin section's columns.
fn variant_label(code: &Value) -> String {
    format!("code, {}", budget_of(code).label())
}

/// The colour of a sweep model: the BNNs sampled, the λ nets, the deep ensemble, and
/// every other control.
fn family_of_role(role: SweepRole) -> Family {
    match role {
        SweepRole::Bnn { .. } => Family::Bnn,
        SweepRole::Deterministic { .. } => Family::Deterministic,
        SweepRole::DeepEnsemble { .. } => Family::DeepEnsemble,
        _ => Family::Control,
    }
}

/// The code protocol's margin taken apart, from one variant's results: the margin at
/// the notebooks' multipliers, at equal multipliers, and against the controls.
struct Decomposition {
    mb: f64,
    mdet: f64,
    /// (b): best BNN ×mb − best deterministic ×mdet.
    margin: MeanCi,
    /// (c): both at ×m, for m ∈ {1, mb, mdet}.
    equal: Vec<(f64, MeanCi)>,
    best_name: String,
    /// (d): best BNN − the matched-recipe, matched-init control, both ×mb.
    vs_control: MeanCi,
    /// The non-sampling ρ_init = −30 BNN − the same control.
    never_vs_control: MeanCi,
    /// Best BNN − the ρ_init = −30 BNN.
    best_vs_never: MeanCi,
    /// The name of the matched-recipe, matched-init control.
    control_name: String,
    /// Best BNN − each further control, both ×mb.
    extra: Vec<(String, MeanCi)>,
}

impl Decomposition {
    fn of(code: &Value) -> Result<Self> {
        let (mb, mdet) = (mult(code, "bnn"), mult(code, "det"));
        let margin = best_margin(&tables_of(code)?.table2_perturbed)?;
        let sweep = sweep_of(code)?;
        let mut equal: Vec<(f64, MeanCi)> = Vec::new();
        for m in [1.0, mb, mdet] {
            if equal.iter().any(|(x, _)| *x == m) {
                continue;
            }
            let (_, b) = best_of_group(&sweep, "bnn", m)?;
            let (_, d) = best_of_group(&sweep, "det", m)?;
            equal.push((m, b.minus_independent(&d)));
        }
        let (control_name, control) = average_at(&sweep, SweepRole::MatchedInit, mb)?;
        let (best_name, best_bnn) = best_of_group(&sweep, "bnn", mb)?;
        let (_, never) = average_at(&sweep, SweepRole::Bnn { rho_init: -30.0 }, mb)?;
        let extra = [
            |r| r == SweepRole::MatchedGlorot,
            |r| r == SweepRole::NoisyMatchedInit,
            |r| matches!(r, SweepRole::DeepEnsemble { .. }),
        ]
        .into_iter()
        .filter_map(|is: fn(SweepRole) -> bool| {
            let model = sweep_model(&sweep, is)?;
            let c = row_average(&sweep, model, mb).ok()?;
            Some((model.name.clone(), best_bnn.minus_independent(&c)))
        })
        .collect();
        Ok(Self {
            mb,
            mdet,
            margin,
            equal,
            best_name,
            control_name,
            vs_control: best_bnn.minus_independent(&control),
            never_vs_control: never.minus_independent(&control),
            best_vs_never: best_bnn.minus_independent(&never),
            extra,
        })
    }

    /// The rows of the recomputed-margin table: (comparison, margin, winner if any).
    fn rows(&self) -> Vec<(String, MeanCi, String)> {
        let mb = self.mb;
        let mut rows = vec![(
            format!(
                "(b) authors' code, BNN ×{mb} vs deterministic ×{}",
                self.mdet
            ),
            self.margin,
            verdict(&self.margin, "BNN", "deterministic"),
        )];
        for (m, d) in &self.equal {
            rows.push((
                format!("(c) authors' code, both ×{m}"),
                *d,
                verdict(d, "BNN", "deterministic"),
            ));
        }
        rows.push((
            format!("(d) best BNN − matched-recipe, matched-init deterministic net, both ×{mb}"),
            self.vs_control,
            verdict(&self.vs_control, "BNN", "control"),
        ));
        rows.push((
            format!(
                "(d) BNN rho_init=-30 (σ ≈ 1e-13: never samples) − the same control, both ×{mb}"
            ),
            self.never_vs_control,
            verdict(&self.never_vs_control, "BNN", "control"),
        ));
        for (other, d) in &self.extra {
            rows.push((
                format!("best BNN − {other}, both ×{mb}"),
                *d,
                verdict(d, "BNN", "control"),
            ));
        }
        rows
    }

    fn at_equal(&self, m: f64) -> Option<&MeanCi> {
        self.equal.iter().find(|(x, _)| *x == m).map(|(_, d)| d)
    }

    /// One computed sentence per step of the decomposition.
    fn sentences(&self, paper_margin: f64, md: &mut String) {
        let (mb, b) = (self.mb, &self.margin);
        let inside = b.ci95[0] <= paper_margin && paper_margin <= b.ci95[1];
        let _ = writeln!(
            md,
            "- With the notebooks' multipliers the margin is {} points ({} the paper's {paper_margin:+.1}).",
            signed(b),
            if inside {
                "its CI contains"
            } else {
                "its CI excludes"
            }
        );
        if let Some(d) = self.at_equal(mb) {
            let _ = writeln!(
                md,
                "- Evaluating both groups at the same ×{mb} changes it to {}: the unequal multipliers account for {:+.2} points of the code protocol's margin.",
                signed(d),
                b.mean - d.mean
            );
        }
        let _ = writeln!(
            md,
            "- Against a deterministic net trained with the BNN's own recipe and initialisation ({}), the best BNN ({}) scores {} at ×{mb} ({}); the ρ_init = −30 BNN, which does not sample, scores {} against the same control ({}).",
            self.control_name,
            self.best_name,
            signed(&self.vs_control),
            verdict(&self.vs_control, "BNN", "control"),
            signed(&self.never_vs_control),
            verdict(&self.never_vs_control, "BNN", "control")
        );
        if let Some(c) = self.at_equal(mb) {
            let _ = writeln!(
                md,
                "- Between (c) at ×{mb} and (d), only the deterministic net's training changed (the notebooks' batch 10,000 and Glorot initialisation → the BNN's recipe and μ initialisation): that accounts for {:+.2} of the {:+.2} points left at equal multipliers.",
                c.mean - self.vs_control.mean,
                c.mean
            );
        }
        let never = &self.best_vs_never;
        let reading = if b.ci95[0] <= 0.0 {
            "The code protocol shows no margin for the BNNs to explain."
        } else if never.ci95[1] < b.mean / 2.0 {
            "What weight sampling adds is less than half of the code protocol's margin over the deterministic nets: most of that margin is there without sampling."
        } else if never.ci95[0] >= b.mean / 2.0 {
            "Weight sampling accounts for at least half of the code protocol's margin."
        } else {
            "How much of the code protocol's margin weight sampling accounts for is not resolved by these CIs."
        };
        let _ = writeln!(
            md,
            "- The best BNN minus the non-sampling ρ_init = −30 BNN, both ×{mb}: {} ({}). {reading}",
            signed(never),
            verdict(never, "sampling BNN", "non-sampling BNN"),
        );
        for (other, d) in &self.extra {
            let _ = writeln!(
                md,
                "- Best BNN − {other}: {} ({}).",
                signed(d),
                verdict(d, "BNN", "control")
            );
        }
    }
}

/// The Tables 1–4 grids compared between protocols: (title, cells, parameters).
/// A row of Tables 1–4 set beside itself under both protocols.
#[derive(Debug, Clone, Copy)]
enum Compared {
    BnnClean,
    DetClean,
    BnnPerturbed,
    DetPerturbed,
    Ensemble,
    Pruning,
}

impl Compared {
    const ALL: [Self; 6] = [
        Self::BnnClean,
        Self::DetClean,
        Self::BnnPerturbed,
        Self::DetPerturbed,
        Self::Ensemble,
        Self::Pruning,
    ];

    fn title(self) -> &'static str {
        match self {
            Self::BnnClean => "Table 1, BNN clean test",
            Self::DetClean => "Table 1, deterministic clean test",
            Self::BnnPerturbed => "Table 2, BNN average",
            Self::DetPerturbed => "Table 2, deterministic average",
            Self::Ensemble => "Table 3, average",
            Self::Pruning => "Table 4, average",
        }
    }

    /// Its JSON pointer in results.json and in the paper's tables.
    fn path(self) -> &'static str {
        match self {
            Self::BnnClean => "/table1_clean/bnn/test",
            Self::DetClean => "/table1_clean/deterministic/test",
            Self::BnnPerturbed => "/table2_perturbed/bnn/average",
            Self::DetPerturbed => "/table2_perturbed/deterministic/average",
            Self::Ensemble => "/table3_ensemble/average",
            Self::Pruning => "/table4_pruning/average",
        }
    }

    /// Its columns' parameters (ρ_init, λ, N or rate) as results.json spells them, and
    /// its cells.
    fn of(self, t: &Tables) -> (Vec<String>, &[Estimate]) {
        let (t1, t2) = (&t.table1_clean, &t.table2_perturbed);
        let spelled = |xs: &[f64]| xs.iter().map(|x| Value::from(*x).to_string()).collect();
        match self {
            Self::BnnClean => (spelled(&t1.bnn.rho_init), &t1.bnn.test),
            Self::DetClean => (spelled(&t1.deterministic.lambda), &t1.deterministic.test),
            Self::BnnPerturbed => (spelled(&t1.bnn.rho_init), &t2.bnn.average),
            Self::DetPerturbed => (spelled(&t1.deterministic.lambda), &t2.deterministic.average),
            Self::Ensemble => (
                t.table3_ensemble
                    .n_samples
                    .iter()
                    .map(|n| n.to_string())
                    .collect(),
                &t.table3_ensemble.average,
            ),
            Self::Pruning => (
                spelled(&t.table4_pruning.rate_percent),
                &t.table4_pruning.average,
            ),
        }
    }
}

fn report_folder(code: &Value) -> String {
    super::meta_of(code)
        .ok()
        .and_then(|m| {
            m.profile_field("/name")
                .and_then(Value::as_str)
                .map(|n| format!("{n}{}", budget_of(code).dir_suffix()))
        })
        .unwrap_or_default()
}

/// "Where does the margin come from?": the paper report's section comparing the text
/// protocol with each variant of the code protocol (as written, trained to accuracy),
/// the margin recomputed step by step per variant, and learned σ.
pub fn margin_section(text: &Value, variants: &[&Value], p: &Value, md: &mut String) -> Result<()> {
    let Some(first) = variants.first() else {
        return Ok(());
    };
    let (mb, mdet) = (mult(first, "bnn"), mult(first, "det"));
    let runs: Vec<String> = variants
        .iter()
        .map(|v| {
            format!(
                "`reports/{}/` ({}: `{}`)",
                report_folder(v),
                variant_label(v),
                super::meta_of(v).map_or_else(|_| "?".to_owned(), |m| m.command)
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "## Where does the margin come from?\n\nThe authors' notebooks depart from the paper's text (../shared/reference/authors-code.md): a targeted, brighten-only attack on the validation images that drops the examples where it failed; perturbations scaled by ×{mb} for the BNNs and ×{mdet} for the non-Bayesian nets; batch 10,000 for the non-Bayesian nets; a summed loss with lr 1e-5 for the BNNs; per-tensor pruning. The full runs under that protocol: {}. {} This section sets them beside the paper's text.\n",
        runs.join("; "),
        if variants.len() > 1 {
            "The trained-to-accuracy variant differs from the as-written one only in its training budgets (docs/FIDELITY.md)."
        } else {
            "The variant with every model trained as far as the authors' were (`--code-budget trained`, docs/FIDELITY.md) has no results for this profile yet."
        }
    );
    let columns: Vec<String> = variants.iter().map(|v| variant_label(v)).collect();
    let _ = writeln!(
        md,
        "### Tables 1–4 under both protocols\n\nEach cell: **paper / text protocol / {}** (ours ± 95% CI half-width), accuracies in percent; the Table 2–4 rows are averages over the 12 sets.\n",
        columns.join(" / ")
    );
    let text_tables = tables_of(text)?;
    let variant_tables: Vec<Tables> = variants
        .iter()
        .map(|v| tables_of(v))
        .collect::<Result<_>>()?;
    for row in Compared::ALL {
        let title = row.title();
        let (xs, _) = row.of(&text_tables);
        let _ = writeln!(
            md,
            "| {title} | {} |\n|---|{}",
            xs.join(" | "),
            "---|".repeat(xs.len())
        );
        let _ = writeln!(
            md,
            "| paper / text / {} | {} |\n",
            columns.join(" / "),
            compare_row(p, &text_tables, &variant_tables, row).join(" | ")
        );
    }

    let margin_a = best_margin(&text_tables.table2_perturbed)?;
    let paper_margin = paper(p, "/claims/bnn_over_deterministic_average_margin_points")?;
    let decompositions: Vec<Decomposition> = variants
        .iter()
        .map(|v| Decomposition::of(v))
        .collect::<Result<_>>()?;
    let _ = writeln!(
        md,
        "### The paper's {paper_margin:+.1}-point margin, recomputed\n\nDifferences of set-averaged accuracies in points, 95% CIs combined in quadrature; one column per variant of the code protocol.\n\n| comparison | {} |\n|---|{}",
        columns.join(" | "),
        "---|".repeat(columns.len())
    );
    let _ = writeln!(
        md,
        "| (a) paper's text: best BNN − best deterministic | {} |",
        vec![
            format!(
                "{} ({})",
                signed(&margin_a),
                verdict(&margin_a, "BNN", "deterministic")
            );
            columns.len()
        ]
        .join(" | ")
    );
    let per_variant: Vec<Vec<(String, MeanCi, String)>> =
        decompositions.iter().map(Decomposition::rows).collect();
    let mut names: Vec<&String> = Vec::new();
    for (name, _, _) in per_variant.iter().flatten() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in names {
        let cells: Vec<String> = per_variant
            .iter()
            .map(|rows| {
                rows.iter()
                    .find(|(n, _, _)| n == name)
                    .map_or("–".into(), |(_, d, v)| format!("{} ({v})", signed(d)))
            })
            .collect();
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }

    let _ = writeln!(md, "\n### What the numbers say\n");
    let inside = margin_a.ci95[0] <= paper_margin && paper_margin <= margin_a.ci95[1];
    let _ = writeln!(
        md,
        "Under the paper's text the margin is {} points; the paper's {paper_margin:+.1} is {} its CI.\n",
        signed(&margin_a),
        if inside { "inside" } else { "outside" }
    );
    for (v, d) in variants.iter().zip(&decompositions) {
        let _ = writeln!(
            md,
            "**Authors' code, {}** (`reports/{}/`):\n",
            budget_of(v).label(),
            report_folder(v)
        );
        d.sentences(paper_margin, md);
        let _ = writeln!(md);
    }
    if let [a, t] = decompositions.as_slice() {
        let change = t.margin.minus_independent(&a.margin);
        let _ = writeln!(
            md,
            "Training the models as far as the authors' were changes the code protocol's margin by {} points ({}).\n",
            signed(&change),
            verdict(&change, "trained to accuracy", "as written")
        );
    }
    let _ = writeln!(
        md,
        "The multiplier sweep and every control's accuracy are in {}.",
        variants
            .iter()
            .map(|v| format!("`reports/{}/README.md`", report_folder(v)))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    sigma_table(text, "text protocol", md);
    for v in variants {
        sigma_table(v, &variant_label(v), md);
    }
    let _ = writeln!(md);
    Ok(())
}
