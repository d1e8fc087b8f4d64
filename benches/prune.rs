//! SNR ranking and global pruning (Table 4) of a 2.4M-weight BNN (FC-1200-1200-10).

use bayes_robust::model::Arch;
use bayes_robust::model::bayes::{BayesConfig, BayesMlp};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tch::{Device, nn};

fn prune(c: &mut Criterion) {
    // As the CLI does (`runtime::keep_freed_memory`).
    bayes_robust::runtime::keep_freed_memory();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut bnn = BayesMlp::new(
        &vs.root(),
        &BayesConfig {
            arch: Arch::new(&[1200, 1200]),
            rho_init: -3.0,
            ..BayesConfig::default()
        },
    );
    let n = bnn.config.arch.n_weights();
    println!("pruning a BNN with {n} weights");
    let mut group = c.benchmark_group("prune");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("snr_rank_and_prune_75pct_fc1200", |b| {
        b.iter(|| {
            let pruned = bnn.prune(0.75).expect("a valid rate");
            bnn.unprune();
            pruned
        })
    });
    group.finish();
}

criterion_group!(benches, prune);
criterion_main!(benches);
