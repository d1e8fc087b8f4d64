//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod strategies;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use bayes_robust::data::{ChecksumPolicy, RawDataset, SplitSpec, Splits};
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use bayes_robust::seed::SeedTree;
use bayes_robust::train::{self, PenalisedMlp, Recipe, TrainOptions};

/// The small real-MNIST subset in `fixtures/mnist-small` (see fixtures/README.md).
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/mnist-small")
}

pub fn fixture_splits() -> Splits {
    let raw = RawDataset::load(&fixture_dir(), ChecksumPolicy::Skip).expect("fixture loads");
    Splits::from_raw(&raw, SplitSpec::FIXTURE).expect("fixture splits")
}

/// Real MNIST, as fetched by scripts/setup.sh. Tests that need it fail (never skip)
/// without it, saying how to get it.
pub fn real_mnist_dir() -> PathBuf {
    let dir = std::env::var_os("BAYES_ROBUST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    assert!(
        dir.join("train-images.idx3-ubyte").exists()
            || dir.join("train-images-idx3-ubyte.gz").exists(),
        "real MNIST not found in {}: run scripts/setup.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

/// Fashion-MNIST, as installed by scripts/setup.sh (the Debian package
/// dataset-fashion-mnist). Tests that need it fail (never skip) without it.
pub fn fashion_mnist_dir() -> PathBuf {
    let dir = bayes_robust::data::Dataset::FashionMnist.default_dir();
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists(),
        "Fashion-MNIST not found in {}: run scripts/setup.sh (or scripts/test.sh) first",
        dir.display()
    );
    dir
}

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// libtorch's generator is global to the process: tests that seed it and depend on
/// its stream hold this lock so that `cargo test`'s threads cannot interleave.
pub fn torch_rng_lock() -> MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// An untrained MLP with these hidden widths, initialised from libtorch's generator
/// (seed it first).
pub fn untrained_mlp(hidden: &[usize]) -> (tch::nn::VarStore, Mlp) {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mlp = Mlp::new(
        &vs.root(),
        &MlpConfig {
            arch: bayes_robust::model::Arch::new(hidden),
            ..MlpConfig::default()
        },
    );
    (vs, mlp)
}

/// An FC-100-100-10 trained for 8 epochs on the fixture (about 80% accurate).
pub fn fixture_mlp() -> (tch::nn::VarStore, Mlp, Splits) {
    tch::set_num_threads(1);
    let splits = fixture_splits();
    let seeds = SeedTree::new(1).child("attack-test");
    seeds.seed_torch("init");
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let mlp = Mlp::new(&vs.root(), &MlpConfig::default());
    let recipe = Recipe {
        lr: 0.05,
        patience: None,
        ..Recipe::paper(8)
    };
    train::fit(
        &vs,
        &PenalisedMlp {
            mlp: &mlp,
            lambda: 0.0,
        },
        &splits,
        &recipe,
        &seeds,
        &TrainOptions::default(),
    )
    .unwrap();
    (vs, mlp, splits)
}

/// A model's variables sorted by name (a stable order for comparing two models).
pub fn sorted_variables(model: &train::TrainedModel) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<_> = model.vs().variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The paper's deterministic FC-100-100-10 with penalty λ (Glorot initialisation).
pub fn mlp_spec(lambda: f64) -> bayes_robust::model::checkpoint::ModelSpec {
    bayes_robust::model::checkpoint::ModelSpec::Mlp {
        config: MlpConfig {
            arch: bayes_robust::model::Arch::new(&[100, 100]),
            init: bayes_robust::model::mlp::MlpInit::GlorotUniform,
        },
        lambda,
    }
}

/// The paper's FC-100-100-10 BNN with ρ_init.
pub fn bnn_spec(rho_init: f64) -> bayes_robust::model::checkpoint::ModelSpec {
    bayes_robust::model::checkpoint::ModelSpec::Bnn {
        config: bayes_robust::model::bayes::BayesConfig::with_rho_init(rho_init),
    }
}

/// The images embedded in an SVG (`<image href="data:image/png;base64,…">`), decoded
/// independently of the crate's encoder: base64 (RFC 4648), zlib, then PNG rows of
/// filter type 0 (the only one the report writes; any other is a test failure). Each is
/// (width, RGB pixels row-major).
pub fn svg_png_images(svg: &str) -> Vec<(usize, Vec<[u8; 3]>)> {
    use std::io::Read;
    let doc = roxmltree::Document::parse(svg).expect("the SVG is XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("image"))
        .map(|n| {
            let href = n.attribute("href").expect("an image has an href");
            let b64 = href
                .strip_prefix("data:image/png;base64,")
                .expect("an embedded PNG");
            let png = base64_decode(b64);
            assert_eq!(
                &png[..8],
                &[137, 80, 78, 71, 13, 10, 26, 10],
                "PNG signature"
            );
            let (mut pos, mut width, mut idat) = (8, 0usize, Vec::new());
            while pos + 8 <= png.len() {
                let len = u32::from_be_bytes(png[pos..pos + 4].try_into().unwrap()) as usize;
                let kind = &png[pos + 4..pos + 8];
                let data = &png[pos + 8..pos + 8 + len];
                match kind {
                    b"IHDR" => {
                        width = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                        assert_eq!(&data[8..10], &[8, 2], "8-bit RGB");
                    }
                    b"IDAT" => idat.extend_from_slice(data),
                    _ => {}
                }
                pos += 12 + len;
            }
            let mut raw = Vec::new();
            flate2::read::ZlibDecoder::new(&idat[..])
                .read_to_end(&mut raw)
                .expect("zlib");
            let mut pixels = Vec::new();
            for row in raw.chunks(1 + 3 * width) {
                assert_eq!(row[0], 0, "filter type 0");
                pixels.extend(row[1..].chunks(3).map(|p| [p[0], p[1], p[2]]));
            }
            (width, pixels)
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |acc, v| acc << 6 | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

/// The grey level the report draws for a pixel value in [0, 1].
pub fn grey(v: f32) -> u8 {
    (255.0 * v).round().clamp(0.0, 255.0) as u8
}

/// The trimmed strings of every `<text>` of an SVG.
pub fn svg_texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("the SVG is XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
        .collect()
}

/// The quick profile on real MNIST with the default seed, the runs and results folders
/// given, and every optional stage off.
pub fn quick_config(
    runs: &std::path::Path,
    out: &std::path::Path,
    threads: usize,
) -> bayes_robust::experiment::reproduce::ReproduceConfig {
    bayes_robust::experiment::reproduce::ReproduceConfig {
        profile: bayes_robust::experiment::Profile::quick(),
        master_seed: 20201218,
        device: tch::Device::Cpu,
        threads,
        dataset: bayes_robust::data::Dataset::Mnist,
        data_dir: real_mnist_dir(),
        runs_dir: runs.to_owned(),
        out_dir: out.to_owned(),
        verbose: false,
        whitebox: false,
        strength: false,
        per_example: false,
        prune_mode: None,
        train_seeds: None,
    }
}

/// The numbers on the line of `out` that starts with `tag`.
pub fn printed(out: &str, tag: &str) -> Vec<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("no line starting {tag:?} in: {out}"));
    line.split_whitespace()
        .filter_map(|t| t.parse::<f64>().ok())
        .collect()
}

/// Runs the Python example `script` (relative to the repository `root`) on the report
/// folder `dir` with the project venv's Python (numpy): its `cell` line must be
/// results.json's Table 2 cell of the ρ_init = −3 BNN on the first set, and its
/// `margin` line the best BNN's set average minus the best deterministic net's, inside
/// the CI it prints.
pub fn assert_python_example(r: &serde_json::Value, root: &Path, script: &str, dir: &Path) {
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/setup.sh makes it (with numpy)",
        python.display()
    );
    let out = std::process::Command::new(&python)
        .arg(root.join(script))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cell = printed(&stdout, "cell");
    let want = r["table2_perturbed"]["bnn"]["rows"][0][3]["mean"]
        .as_f64()
        .unwrap();
    assert!(
        (cell.last().unwrap() - want).abs() < 1e-4,
        "{stdout} vs {want}"
    );
    let best = |g: &str| {
        r["table2_perturbed"][g]["average"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["mean"].as_f64().unwrap())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let margin = printed(&stdout, "margin");
    let want = best("bnn") - best("deterministic");
    assert!((margin[0] - want).abs() < 1e-4, "{stdout} vs {want}");
    assert!(margin[1] <= margin[0] && margin[0] <= margin[2], "{stdout}");
}
