//! The figure rules of `report::plots` (its module doc), checked on rendered SVG: a
//! title, axis labels and one legend entry per drawn series or line; categorical axes
//! named, never indexed; ρ_init spaced as categories; the paper's values as hollow
//! squares, in the legend too; one colour per model family in every figure; and every
//! committed report's figures.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bayes_robust::experiment::RHO_INITS;
use bayes_robust::report::plots::{
    Family, Figure, GrayImage, ImageCell, ImageGrid, ImageRow, Line, PanelLegend, PixelScale,
    Series, SmallMultiples, XAxis, rho_axis,
};

/// A `<text>` of a rendered SVG: its string, position and font size.
#[derive(Debug, Clone)]
struct Text {
    text: String,
    x: f64,
    y: f64,
    size: f64,
    /// `text-anchor`: `middle` for an x tick label.
    anchor: String,
}

fn texts(svg: &str) -> Vec<Text> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("not XML: {e}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| {
            Some(Text {
                text: n.text()?.trim().to_owned(),
                x: n.attribute("x")?.parse().ok()?,
                y: n.attribute("y")?.parse().ok()?,
                size: n.attribute("font-size")?.parse().ok()?,
                anchor: n.attribute("text-anchor").unwrap_or("start").to_owned(),
            })
        })
        .collect()
}

fn render(f: &Figure) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.svg");
    f.render(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

fn points(ys: &[f64]) -> Vec<(f64, f64, f64, f64)> {
    ys.iter()
        .enumerate()
        .map(|(i, y)| (i as f64, *y, y - 1.0, y + 1.0))
        .collect()
}

/// Numeric x tick labels (centred texts on one baseline) are at least one character
/// apart, taking a sans-serif digit as 0.56 em wide.
fn assert_ticks_apart(ts: &[Text], what: &str) {
    let mut rows: BTreeMap<(i64, i64), Vec<&Text>> = BTreeMap::new();
    for t in ts
        .iter()
        .filter(|t| t.anchor == "middle" && t.text.parse::<f64>().is_ok())
    {
        rows.entry((t.y.round() as i64, (t.size * 100.0) as i64))
            .or_default()
            .push(t);
    }
    for row in rows.values_mut() {
        row.sort_by(|a, b| a.x.total_cmp(&b.x));
        for w in row.windows(2) {
            let width = |t: &Text| 0.56 * t.size * t.text.chars().count() as f64;
            let need = (width(w[0]) + width(w[1])) / 2.0 + 0.56 * w[0].size;
            assert!(
                w[1].x - w[0].x >= need,
                "{what}: ticks {:?} and {:?} run together ({:.0} px apart, {need:.0} needed)",
                w[0].text,
                w[1].text,
                w[1].x - w[0].x
            );
        }
    }
}

/// How many times each string occurs among the texts.
fn counts(ts: &[Text]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for t in ts {
        *m.entry(t.text.as_str()).or_insert(0) += 1;
    }
    m
}

fn fixture(axis: XAxis) -> Figure {
    let mut f = Figure::new(
        "What is compared, on which data",
        "the x description",
        "the y description",
        vec![
            Series::ours("our BNN", Family::Bnn, points(&[52.0, 55.0, 58.0])),
            Series::ours(
                "our deterministic net",
                Family::Deterministic,
                points(&[51.0, 54.0, 57.0]),
            ),
            Series::paper(
                "paper: BNN",
                Family::Bnn,
                &[(0.0, 53.0), (1.0, 56.0), (2.0, 59.0)],
            ),
        ],
    );
    f.references = vec![Line::new("a reference", 56.5, Family::Deterministic)];
    f.x_axis = axis;
    f
}

#[test]
fn a_figure_shows_its_title_axis_labels_and_one_legend_entry_per_series_and_line() {
    let long: Vec<String> = (0..12)
        .map(|i| format!("a long category name {i}"))
        .collect();
    for axis in [
        XAxis::Linear,
        XAxis::Log,
        XAxis::Categorical(vec!["a".into(), "b".into(), "c".into()]),
        XAxis::Categorical(long),
    ] {
        let mut f = fixture(axis.clone());
        if axis == XAxis::Log {
            for s in &mut f.series {
                for p in &mut s.points {
                    p.0 += 1.0;
                }
            }
        }
        let ts = texts(&render(&f));
        let c = counts(&ts);
        let title = ts.iter().max_by(|a, b| a.size.total_cmp(&b.size)).unwrap();
        assert_eq!(
            title.text, f.title,
            "{axis:?}: the largest text is the title"
        );
        for label in [&f.x_label, &f.y_label] {
            assert_eq!(c.get(label.as_str()), Some(&1), "{axis:?}: {label}");
        }
        for name in f
            .series
            .iter()
            .map(|s| &s.name)
            .chain(f.references.iter().map(|l| &l.label))
        {
            assert_eq!(
                c.get(name.as_str()),
                Some(&1),
                "{axis:?}: legend entry {name}"
            );
        }
    }
}

/// A figure whose data leave no corner free draws its legend below the chart: the SVG
/// grows by a row per two entries, every series and line is named once, every entry
/// sits below the plot, and the chart keeps its own size.
#[test]
fn a_legend_below_the_chart_names_every_series_and_line_once_under_the_plot() {
    let mut f = fixture(XAxis::Linear);
    f.legend_below = true;
    let svg = render(&f);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let height: f64 = doc
        .root_element()
        .attribute("height")
        .unwrap()
        .parse()
        .unwrap();
    // Four entries: two rows of 30 px (and a 10 px margin) under the 500 px chart.
    assert_eq!(height, 570.0);
    let ts = texts(&svg);
    let c = counts(&ts);
    for name in f
        .series
        .iter()
        .map(|s| &s.name)
        .chain(f.references.iter().map(|l| &l.label))
    {
        assert_eq!(c.get(name.as_str()), Some(&1), "legend entry {name}");
        let y: f64 = doc
            .descendants()
            .find(|n| n.has_tag_name("text") && n.text().map(str::trim) == Some(name.as_str()))
            .and_then(|n| n.attribute("y"))
            .unwrap()
            .parse()
            .unwrap();
        assert!(y > 500.0, "{name} at y = {y} is inside the chart");
    }
}

#[test]
fn a_categorical_axis_is_labelled_by_name_never_by_index() {
    let short = vec!["alpha".to_owned(), "beta".into(), "gamma".into()];
    let long: Vec<String> = (0..12)
        .map(|i| format!("FC-1200-1200-10 (lambda={i})"))
        .collect();
    for names in [short, long] {
        let ts = texts(&render(&fixture(XAxis::Categorical(names.clone()))));
        let c = counts(&ts);
        for n in &names {
            assert_eq!(c.get(n.as_str()), Some(&1), "tick {n}");
        }
        for i in 0..names.len() {
            for index in [format!("{i}"), format!("{i}.0")] {
                assert!(!c.contains_key(index.as_str()), "an index tick {index}");
            }
        }
    }
}

/// The x position of each ρ_init tick of a figure.
fn rho_ticks(ts: &[Text]) -> BTreeMap<String, f64> {
    ts.iter()
        .filter(|t| RHO_INITS.iter().any(|r| format!("{r}") == t.text))
        .map(|t| (t.text.clone(), t.x))
        .collect()
}

fn assert_rho_spacing(ticks: &BTreeMap<String, f64>, what: &str) {
    let x = |r: &str| {
        *ticks
            .get(r)
            .unwrap_or_else(|| panic!("{what}: no tick {r}: {ticks:?}"))
    };
    let far = (x("-10") - x("-30")).abs();
    let near = (x("-2.5") - x("-3")).abs();
    assert!(
        far <= near + 1.0 && near > 0.0,
        "{what}: -30 … -10 is {far} px, -3 … -2.5 is {near} px"
    );
}

#[test]
fn the_rho_axis_spaces_minus_30_and_minus_10_as_minus_3_and_minus_2_5() {
    let at: Vec<f64> = (0..RHO_INITS.len()).map(|i| i as f64).collect();
    let mut f = Figure::new(
        "rho",
        "rho_init",
        "accuracy (%)",
        vec![Series::ours(
            "BNN",
            Family::Bnn,
            at.iter()
                .map(|&i| (i, 90.0 - i, 89.0 - i, 91.0 - i))
                .collect(),
        )],
    );
    f.x_axis = rho_axis(&RHO_INITS);
    assert_rho_spacing(&rho_ticks(&texts(&render(&f))), "fixture");
}

#[test]
fn the_papers_values_are_hollow_squares_in_the_legend_too() {
    let svg = render(&fixture(XAxis::Linear));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let hollow = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("none"))
        .filter(|n| n.attribute("stroke") == Some("#1F77B4"))
        .count();
    // Three points and one legend mark, in the BNN family's colour.
    assert_eq!(hollow, 4, "{svg}");
}

/// The fill colours of a figure's filled circles (our points and their legend marks).
fn circle_fills(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("circle"))
        .filter_map(|n| n.attribute("fill").map(str::to_owned))
        .collect()
}

#[test]
fn a_model_family_keeps_its_colour_whatever_else_the_figure_shows() {
    let bnn = Series::ours("BNN", Family::Bnn, points(&[1.0, 2.0]));
    let det = Series::ours("det", Family::Deterministic, points(&[1.5, 2.5]));
    let alone = circle_fills(&render(&Figure::new("a", "x", "y", vec![bnn.clone()])));
    let after = circle_fills(&render(&Figure::new("b", "x", "y", vec![det, bnn])));
    let bnn_colour = Family::Bnn.color(0);
    let hex = format!(
        "#{:02X}{:02X}{:02X}",
        bnn_colour.0, bnn_colour.1, bnn_colour.2
    );
    assert!(alone.iter().all(|c| *c == hex), "{alone:?}");
    assert_eq!(after.iter().filter(|c| **c == hex).count(), alone.len());
    // Shades of one family differ from each other and from other families.
    let shades: Vec<_> = (0..4).map(|k| Family::Bnn.color(k)).collect();
    for (i, a) in shades.iter().enumerate() {
        assert!(shades[i + 1..].iter().all(|b| b != a));
        assert_ne!(*a, Family::Deterministic.color(0));
    }
}

fn multiples(legend: PanelLegend) -> SmallMultiples {
    let panel =
        |title: &str, series: Vec<Series>| Figure::new(title, "epsilon", "accuracy (%)", series);
    SmallMultiples {
        title: "Every model, one panel each".into(),
        panels: vec![
            panel(
                "first model",
                vec![
                    Series::ours("ensemble", Family::Bnn, points(&[90.0, 60.0, 30.0])),
                    Series::ours(
                        "deterministic",
                        Family::Deterministic,
                        points(&[80.0, 40.0, 10.0]),
                    ),
                ],
            ),
            panel(
                "second model",
                vec![
                    Series::ours("one draw", Family::Bnn, points(&[85.0, 50.0, 20.0])),
                    Series::ours("ensemble", Family::Bnn, points(&[91.0, 61.0, 31.0])),
                ],
            ),
            panel(
                "third model",
                vec![Series::ours(
                    "one draw",
                    Family::Bnn,
                    points(&[84.0, 49.0, 19.0]),
                )],
            ),
        ],
        columns: 2,
        legend,
    }
}

fn render_multiples(m: &SmallMultiples) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.svg");
    m.render(&path).unwrap();
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn small_multiples_show_every_panel_and_one_shared_legend_entry_per_series_name() {
    let m = multiples(PanelLegend::Shared);
    let svg = render_multiples(&m);
    let ts = texts(&svg);
    let c = counts(&ts);
    let title = ts.iter().max_by(|a, b| a.size.total_cmp(&b.size)).unwrap();
    assert_eq!(title.text, m.title);
    for p in &m.panels {
        assert_eq!(c.get(p.title.as_str()), Some(&1), "panel {}", p.title);
        assert!(c.get(p.x_label.as_str()).is_some_and(|&n| n >= 1));
    }
    for name in ["ensemble", "deterministic", "one draw"] {
        assert_eq!(c.get(name), Some(&1), "one legend entry for {name}");
    }
    // One colour per series name across panels: "ensemble" is the first BNN series in
    // the first panel and the second in the second, yet both are drawn alike.
    // Each is drawn at three points in two panels plus its legend mark, so both BNN
    // shades fill as many circles (ranked within each panel instead, "one draw" would
    // take the first shade in panels 2 and 3 and the counts would differ).
    let fills = circle_fills(&svg);
    let hex = |c: plotters::style::RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
    let per_name = fills
        .iter()
        .filter(|f| **f == hex(Family::Deterministic.color(0)))
        .count();
    for k in 0..2 {
        let n = fills
            .iter()
            .filter(|f| **f == hex(Family::Bnn.color(k)))
            .count();
        assert_eq!(n, 2 * per_name - 1, "BNN shade {k}: {fills:?}");
    }
    let distinct: BTreeSet<&String> = fills.iter().collect();
    assert_eq!(distinct.len(), 3, "{distinct:?}");
}

/// A panel of a 200-epoch curve, where plotters' ten ticks (0, 20, …, 200) would run
/// together at a panel's text size.
#[test]
fn a_panels_numeric_ticks_do_not_run_together() {
    let curve = |y0: f64| -> Vec<(f64, f64, f64, f64)> {
        (1..=200)
            .map(|e| {
                let y = y0 + 80.0 * (1.0 - (-(e as f64) / 20.0).exp());
                (e as f64, y, y, y)
            })
            .collect()
    };
    let panel = |title: &str| {
        Figure::new(
            title,
            "epoch",
            "validation accuracy (%)",
            vec![Series::ours("λ=0", Family::Deterministic, curve(10.0)).line_only()],
        )
    };
    let m = SmallMultiples {
        title: "Training curves".into(),
        panels: vec![panel("sources FC-10"), panel("sources FC-200-200-10")],
        columns: 3,
        legend: PanelLegend::Shared,
    };
    let ts = texts(&render_multiples(&m));
    assert!(
        ts.iter().filter(|t| t.text == "100").count() >= 2,
        "every panel has numeric ticks"
    );
    assert_ticks_apart(&ts, "200-epoch panels");
}

#[test]
fn small_multiples_with_their_own_legends_name_each_series_in_every_panel_it_is_in() {
    let m = multiples(PanelLegend::PerPanel);
    let c_svg = render_multiples(&m);
    let ts = texts(&c_svg);
    let c = counts(&ts);
    assert_eq!(c.get("ensemble"), Some(&2));
    assert_eq!(c.get("one draw"), Some(&2));
    assert_eq!(c.get("deterministic"), Some(&1));
}

#[test]
fn an_image_grid_embeds_the_exact_pixels_it_is_given() {
    let clean: Vec<f32> = (0..784).map(|i| (i % 256) as f32 / 255.0).collect();
    let r: Vec<f32> = (0..784).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    let cell = |pixels: Vec<f32>, scale| ImageCell {
        image: GrayImage {
            side: 28,
            pixels,
            scale,
        },
        caption: "a caption".into(),
    };
    let grid = ImageGrid {
        title: "A grid of images".into(),
        groups: vec!["the only source".into()],
        columns: vec!["clean".into(), "perturbation".into()],
        rows: vec![ImageRow {
            label: "example 0".into(),
            cells: vec![
                cell(clean.clone(), PixelScale::Unit),
                cell(r.clone(), PixelScale::Signed { max_abs: 0.03 }),
            ],
        }],
    };
    let svg = grid.svg().unwrap();
    let images = common::svg_png_images(&svg);
    assert_eq!(images.len(), 2);
    let (w, grey) = &images[0];
    assert_eq!(*w, 28);
    for (p, v) in grey.iter().zip(&clean) {
        let g = common::grey(*v);
        assert_eq!(*p, [g, g, g]);
    }
    // The diverging scale: +max red, −max blue, 0 white.
    let (_, div) = &images[1];
    for (p, v) in div.iter().zip(&r) {
        match v.partial_cmp(&0.0).unwrap() {
            std::cmp::Ordering::Greater => {
                assert!(p[0] == 255 && p[1] == p[2] && p[1] < 255, "{v} {p:?}")
            }
            std::cmp::Ordering::Less => {
                assert!(p[2] == 255 && p[0] == p[1] && p[0] < 255, "{v} {p:?}")
            }
            std::cmp::Ordering::Equal => assert_eq!(*p, [255, 255, 255]),
        }
    }
    assert_eq!(div[6], [255, 0, 0], "r = +0.03 is full red");
    assert_eq!(div[0], [0, 0, 255], "r = -0.03 is full blue");
    let ts = texts(&svg);
    let c = counts(&ts);
    for t in [
        "A grid of images",
        "the only source",
        "clean",
        "perturbation",
        "example 0",
    ] {
        assert_eq!(c.get(t), Some(&1), "{t}");
    }
    // A row with the wrong number of cells is an error, not a broken figure.
    let mut bad = grid.clone();
    bad.rows[0].cells.pop();
    assert!(bad.svg().unwrap_err().contains("example 0"));
}

fn committed_svgs() -> Vec<PathBuf> {
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("reports");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&reports).unwrap().flatten() {
        if !dir.path().is_dir() || dir.path().ends_with("quick") {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "svg") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_committed_figure_follows_the_rules() {
    let svgs = committed_svgs();
    assert!(svgs.len() >= 40, "{svgs:?}");
    for path in svgs {
        let svg = std::fs::read_to_string(&path).unwrap();
        let what = path.display().to_string();
        let ts = texts(&svg);
        let largest = ts.iter().map(|t| t.size).fold(0.0, f64::max);
        let titles = ts.iter().filter(|t| t.size == largest).count();
        assert_eq!(titles, 1, "{what}: one title");
        assert!(ts.len() >= 8, "{what}: axis labels, ticks and a legend");
        assert_ticks_apart(&ts, &what);
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "accuracy_vs_rho.svg" || name == "whitebox_every_bnn.svg" {
            assert_rho_spacing(&rho_ticks(&ts), &what);
        }
        if name == "per_source.svg" {
            let c = counts(&ts);
            assert!(c.contains_key("FC-10 (lambda=0)"), "{what}: sources named");
            assert!(!c.keys().any(|t| t.contains("1-12")), "{what}");
        }
        if name == "seeds.svg" {
            let c = counts(&ts);
            assert!(
                c.contains_key("lambda=0") && c.contains_key("rho_init=-30"),
                "{what}"
            );
            assert!(!c.keys().any(|t| t.contains("index")), "{what}");
        }
    }
}

/// Numeric ticks drop the decimals plotters adds to whole numbers and keep the ones a
/// tick needs.
#[test]
fn numeric_ticks_are_written_as_a_reader_writes_them() {
    use bayes_robust::report::plots::tick_label;
    for (v, want) in [
        (0.0, "0"),
        (10.0, "10"),
        (-30.0, "-30"),
        (0.05, "0.05"),
        (0.1 + 0.2, "0.3"),
        (97.5, "97.5"),
        (2e-5, "2e-5"),
        (-1e-12, "-1e-12"),
    ] {
        assert_eq!(tick_label(&v), want, "{v}");
    }
}
