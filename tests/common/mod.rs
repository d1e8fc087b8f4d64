//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod strategies;

use std::path::PathBuf;
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
