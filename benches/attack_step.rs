//! One attack step on FC-1200-1200-10 at batch 1,000: the paper's min-norm attack
//! (one Adam step) and PGD (one L∞ step). Gradients are taken with respect to the input
//! only; the model's parameters accumulate none.

mod common;

use bayes_robust::attack::{MinNormAttack, Pgd};
use bayes_robust::model::Arch;
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor, nn};

const BATCH: i64 = 1000;

fn attack_step(c: &mut Criterion) {
    tch::manual_seed(1);
    let sgemm = common::sgemm_gflops();
    let x = Tensor::rand([BATCH, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let y = Tensor::randint(10, [BATCH], (Kind::Int64, Device::Cpu));
    let vs = nn::VarStore::new(Device::Cpu);
    let arch = Arch::new(&[1200, 1200]);
    let mlp = Mlp::new(
        &vs.root(),
        &MlpConfig {
            arch: arch.clone(),
            ..MlpConfig::default()
        },
    );
    let min_norm = MinNormAttack {
        steps: 1,
        ..MinNormAttack::default()
    };
    let pgd = Pgd {
        steps: 1,
        ..Pgd::fgsm(0.1)
    };
    // Forward + input-gradient backward ≈ 2 × the forward's 2·MACs per example; the
    // final evaluation pass adds one forward.
    let flops = (2.0 + 1.0) * 2.0 * BATCH as f64 * arch.macs_per_example() as f64;
    common::report_rate("min-norm step, FC-1200-1200-10", flops, 10, sgemm, || {
        let _ = min_norm.run(&mlp, &x, &y);
    });
    common::report_rate("PGD step, FC-1200-1200-10", flops, 10, sgemm, || {
        let _ = pgd.run(&mlp, &x, &y);
    });
    for (name, v) in vs.variables() {
        assert!(!v.grad().defined(), "{name} accumulated a gradient");
    }
    let mut group = c.benchmark_group("attack_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("min_norm_fc1200", |b| b.iter(|| min_norm.run(&mlp, &x, &y)));
    group.bench_function("pgd_fc1200", |b| b.iter(|| pgd.run(&mlp, &x, &y)));
    group.finish();
}

criterion_group!(benches, attack_step);
criterion_main!(benches);
