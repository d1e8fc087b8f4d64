//! One training step (forward, backward, SGD update) at batch 128, as `train::fit`
//! takes it (`Trainee::stepper`): a BNN FC-100-100-10 with the paper's scale-mixture
//! prior (the hand-differentiated step of `train::bnn_step`, and autograd through the
//! same loss for comparison), a deterministic FC-100-100-10 with the eq. 6 penalty, and
//! a deterministic FC-1200-1200-10.

mod common;

use bayes_robust::model::Arch;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use bayes_robust::train::{AutogradSgd, LossScale, PenalisedMlp, Recipe, Reduction, Trainee};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor, nn};

const BATCH: i64 = 128;

fn train_step(c: &mut Criterion) {
    // As the CLI does (`runtime::keep_freed_memory`).
    bayes_robust::runtime::keep_freed_memory();
    tch::manual_seed(1);
    let x = Tensor::rand([BATCH, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [BATCH], (Kind::Int64, Device::Cpu));
    let scale = LossScale {
        reduction: Reduction::Mean,
        n_train: 50_000,
        n_batches: 391,
    };
    let mut group = c.benchmark_group("train_step");
    group.sample_size(30);
    group.throughput(Throughput::Elements(BATCH as u64));

    let recipe = Recipe::paper(1);
    // Forward + backward ≈ 3 × the forward's 2·MACs per example.
    let flops = |arch: &Arch| 3.0 * 2.0 * (BATCH as f64) * arch.macs_per_example() as f64;
    let bvs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(&bvs.root(), &BayesConfig::default());
    let mut hand = bnn.stepper(&bvs, &recipe, &scale);
    let mut bnn_step = || {
        let _ = hand.step(&x, &y);
    };
    common::report_rate(
        "bnn FC-100-100-10 step (hand-differentiated)",
        flops(&bnn.config.arch),
        200,
        &mut bnn_step,
    );
    group.bench_function("bnn_fc100", |b| b.iter(&mut bnn_step));
    let mut autograd = AutogradSgd::boxed(&bnn, &bvs, &recipe, &scale);
    let mut autograd_step = || {
        let _ = autograd.step(&x, &y);
    };
    common::report_rate(
        "bnn FC-100-100-10 step (autograd)",
        flops(&bnn.config.arch),
        100,
        &mut autograd_step,
    );
    group.bench_function("bnn_fc100_autograd", |b| b.iter(&mut autograd_step));

    for (name, hidden) in [
        ("det_fc100", vec![100, 100]),
        ("det_fc1200", vec![1200, 1200]),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let arch = Arch::new(&hidden);
        let mlp = Mlp::new(
            &vs.root(),
            &MlpConfig {
                arch: arch.clone(),
                ..MlpConfig::default()
            },
        );
        let trainee = PenalisedMlp {
            mlp: &mlp,
            lambda: 1e-4,
        };
        let mut stepper = trainee.stepper(&vs, &recipe, &scale);
        let mut step = || {
            let _ = stepper.step(&x, &y);
        };
        common::report_rate(&format!("{name} step"), flops(&arch), 50, &mut step);
        group.bench_function(name, |b| b.iter(&mut step));
    }
    group.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
