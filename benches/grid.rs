//! Whole grids trained at once (`train::grid`): one epoch of the paper's 7-model ρ_init
//! grid of BNNs stacked, against one BNN alone through `train::fit` and through the
//! grid path with G = 1, and the λ grid of 4 deterministic nets. Synthetic data: 40
//! steps of batch 128 per epoch and 10 validation images, so that the figures are
//! training steps (as the PyTorch anchors time them, validation outside the timer).

mod common;

use std::time::Instant;

use bayes_robust::data::{Split, Splits};
use bayes_robust::experiment::RHO_INITS;
use bayes_robust::model::Arch;
use bayes_robust::model::bayes::BayesConfig;
use bayes_robust::model::checkpoint::ModelSpec;
use bayes_robust::model::mlp::MlpConfig;
use bayes_robust::seed::SeedTree;
use bayes_robust::train::grid::{GridMember, fit_grid};
use bayes_robust::train::{self, Recipe, TrainOptions, TrainedModel};
use criterion::{Criterion, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor};

const STEPS: i64 = 40;
const BATCH: i64 = 128;

fn split(n: i64) -> Split {
    Split {
        images: Tensor::rand([n, 784], (Kind::Float, Device::Cpu)) * 2.0,
        labels: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)),
    }
}

fn bnn(rho: f64, name: &str) -> GridMember {
    GridMember {
        spec: ModelSpec::Bnn {
            config: BayesConfig::with_rho_init(rho),
        },
        seeds: SeedTree::new(1).child(name),
    }
}

fn grid_epoch(c: &mut Criterion) {
    // As the CLI does (`runtime::keep_freed_memory`).
    bayes_robust::runtime::keep_freed_memory();
    tch::manual_seed(1);
    let sgemm = common::sgemm_gflops();
    let splits = Splits {
        train: split(STEPS * BATCH),
        validation: split(10),
        test: split(10),
    };
    let recipe = Recipe {
        patience: None,
        ..Recipe::paper(1)
    };
    let grid7: Vec<GridMember> = RHO_INITS
        .iter()
        .map(|r| bnn(*r, &format!("bnn/rho={r}")))
        .collect();
    let grid1 = vec![bnn(-3.0, "bnn/alone")];
    let dets: Vec<GridMember> = [0.0, 1e-4, 1e-2, 1.0]
        .iter()
        .map(|l| GridMember {
            spec: ModelSpec::Mlp {
                config: MlpConfig::default(),
                lambda: *l,
            },
            seeds: SeedTree::new(1).child(&format!("det/{l}")),
        })
        .collect();
    let grid = |members: &[GridMember]| {
        fit_grid(
            members,
            &splits,
            &recipe,
            &SeedTree::new(1).child("grid"),
            Device::Cpu,
            &TrainOptions::default(),
        )
        .expect("grid training");
    };
    let alone = || {
        let m = &grid1[0];
        let TrainedModel::Bnn { vs, bnn } = TrainedModel::init(&m.spec, Device::Cpu, &m.seeds)
        else {
            unreachable!()
        };
        train::fit(
            &vs,
            &bnn,
            &splits,
            &recipe,
            &m.seeds,
            &TrainOptions::default(),
        )
        .expect("training");
    };
    // Training arithmetic per member and step: forward + backward ≈ 3 × 2·MACs.
    let macs = Arch::new(&[100, 100]).macs_per_example() as f64;
    let step_flops = 6.0 * BATCH as f64 * macs;
    let time = |f: &dyn Fn()| {
        f();
        let t = Instant::now();
        for _ in 0..3 {
            f();
        }
        t.elapsed().as_secs_f64() / 3.0 / STEPS as f64
    };
    let one = time(&alone);
    let g1 = time(&|| grid(&grid1));
    let g7 = time(&|| grid(&grid7));
    let d4 = time(&|| grid(&dets));
    let rate = |s: f64, members: f64| members * step_flops / s / 1e9;
    println!(
        "one BNN via fit: {:.2} ms/step ({:.1} GFLOP/s); via the grid path (G = 1): {:.2} ms/step ({:.1}); \
         7-BNN grid: {:.2} ms/step ({:.1} GFLOP/s, {:.2}x one BNN's time for 7 models); \
         4-net lambda grid: {:.2} ms/step; sgemm {sgemm:.1} GFLOP/s",
        one * 1e3,
        rate(one, 1.0),
        g1 * 1e3,
        rate(g1, 1.0),
        g7 * 1e3,
        rate(g7, 7.0),
        g7 / one,
        d4 * 1e3
    );
    let mut group = c.benchmark_group("grid_epoch");
    group.sample_size(10);
    group.bench_function("bnn_alone_fit", |b| b.iter(alone));
    group.bench_function("bnn_grid_1", |b| b.iter(|| grid(&grid1)));
    group.bench_function("bnn_grid_7", |b| b.iter(|| grid(&grid7)));
    group.bench_function("det_grid_4", |b| b.iter(|| grid(&dets)));
    group.finish();
}

criterion_group!(benches, grid_epoch);
criterion_main!(benches);
