//! Inference throughput: a BNN FC-100-100-10 ensemble over 10,000 images with
//! N ∈ {1, 10, 100} weight draws (eq. 7), and the deterministic forward, on seeded
//! random inputs. Prints achieved GFLOP/s against the sgemm rate measured just before
//! (`common::report_rate`).

mod common;

use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use bayes_robust::model::mlp::{Mlp, MlpConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, Kind, Tensor, nn};

const IMAGES: i64 = 10_000;

fn inference(c: &mut Criterion) {
    // As the CLI does (`runtime::keep_freed_memory`).
    bayes_robust::runtime::keep_freed_memory();
    tch::manual_seed(1);
    let x = Tensor::rand([IMAGES, 784], (Kind::Float, Device::Cpu)) * 2.0;
    let vs = nn::VarStore::new(Device::Cpu);
    let bnn = BayesMlp::new(&vs.root(), &BayesConfig::default());
    let mlp = Mlp::new(&vs.root().sub("det"), &MlpConfig::default());
    let flops_per_pass = 2.0 * IMAGES as f64 * bnn.config.arch.macs_per_example() as f64;

    let mut group = c.benchmark_group("inference");
    group.sample_size(10);
    for n in [1usize, 10, 100] {
        group.throughput(Throughput::Elements(IMAGES as u64 * n as u64));
        group.bench_function(format!("bnn_ensemble_n{n}"), |b| {
            b.iter(|| tch::no_grad(|| bnn.ensemble_probs(&x, n, 10)))
        });
        common::report_rate(
            &format!("bnn ensemble N={n} over 10,000 images"),
            n as f64 * flops_per_pass,
            1,
            || {
                let _ = tch::no_grad(|| bnn.ensemble_probs(&x, n, 10));
            },
        );
    }
    common::report_rate(
        "deterministic forward FC-100-100-10",
        2.0 * IMAGES as f64 * mlp.config.arch.macs_per_example() as f64,
        10,
        || {
            let _ = tch::no_grad(|| mlp.forward(&x));
        },
    );
    group.throughput(Throughput::Elements(IMAGES as u64));
    group.bench_function("deterministic_forward", |b| {
        b.iter(|| tch::no_grad(|| mlp.forward(&x)))
    });
    group.finish();
}

criterion_group!(benches, inference);
criterion_main!(benches);
