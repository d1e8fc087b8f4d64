//! Attacks on FC-1200-1200-10 at batch 1,000: one step of the paper's min-norm attack
//! (one Adam step and the judging pass), and a whole PGD-40 run as the torchattacks
//! anchor makes it (ε = 0.3, α = 0.01 in [0, 1] pixels, random start; 40 steps and
//! one judging pass). Gradients are taken with respect to the input only; the
//! model's parameters accumulate none.

mod common;

use bayes_robust::attack::{AttackLoss, MinNormAttack, Norm, Pgd};
use bayes_robust::data::INPUT_MAX;
use bayes_robust::model::Arch;
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor, nn};

const BATCH: i64 = 1000;

fn attack_step(c: &mut Criterion) {
    // As the CLI does (`runtime::keep_freed_memory`).
    bayes_robust::runtime::keep_freed_memory();
    tch::manual_seed(1);
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
    let pgd40 = Pgd {
        norm: Norm::Linf,
        eps: 0.3 * INPUT_MAX,
        step: 0.01 * INPUT_MAX,
        steps: 40,
        random_start: true,
        loss: AttackLoss::CrossEntropy,
    };
    // Forward + input-gradient backward ≈ 2 × the forward's 2·MACs per example; the
    // judging pass adds one forward.
    let forward = 2.0 * BATCH as f64 * arch.macs_per_example() as f64;
    common::report_rate("min-norm step, FC-1200-1200-10", 3.0 * forward, 10, || {
        let _ = min_norm.run(&mlp, &x, &y);
    });
    common::report_rate(
        "PGD-40 run (x10 = the anchor's 10k images), FC-1200-1200-10",
        (40.0 * 2.0 + 1.0) * forward,
        2,
        || {
            let _ = pgd40.run(&mlp, &x, &y);
        },
    );
    // The paper profile's small sources, at its attack chunk of 2,000 images: here the
    // element-wise work of a step (the clip, the norm's gradient, Adam) outweighs the
    // products. A 20-step run, so that its setup and judging pass (one step's worth on
    // FC-10) do not stand in for the loop's steps.
    let twenty = MinNormAttack {
        steps: 20,
        ..MinNormAttack::default()
    };
    for (label, hidden) in [("FC-10", vec![]), ("FC-200-200-10", vec![200, 200])] {
        let small_vs = nn::VarStore::new(Device::Cpu);
        let small_arch = Arch::new(&hidden);
        let small = Mlp::new(
            &small_vs.root(),
            &MlpConfig {
                arch: small_arch.clone(),
                ..MlpConfig::default()
            },
        );
        let (x2, y2) = (x.repeat([2, 1]), y.repeat([2]));
        let forward = 2.0 * 2.0 * BATCH as f64 * small_arch.macs_per_example() as f64;
        let run = common::report_rate(
            &format!("min-norm 20-step run, {label}, batch 2,000"),
            (20.0 * 2.0 + 1.0) * forward,
            3,
            || {
                let _ = twenty.run(&small, &x2, &y2);
            },
        );
        println!("  = {:.1} ms a step", run / 20.0 * 1e3);
    }
    for (name, v) in vs.variables() {
        assert!(!v.grad().defined(), "{name} accumulated a gradient");
    }
    let mut group = c.benchmark_group("attack_step");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("min_norm_fc1200", |b| b.iter(|| min_norm.run(&mlp, &x, &y)));
    group.bench_function("pgd40_fc1200", |b| b.iter(|| pgd40.run(&mlp, &x, &y)));
    group.finish();
}

criterion_group!(benches, attack_step);
criterion_main!(benches);
