//! What every bench prints beside its own figures: the sgemm rate of this process.
#![allow(dead_code)]

use std::time::Instant;

/// The machine's matrix-product rate, measured in this process (the same measure
/// `reproduce` records).
pub use bayes_robust::experiment::flops::sgemm_gflops;

/// Runs `f` `reps` times and prints its achieved GFLOP/s against `sgemm`.
pub fn report_rate(name: &str, flops: f64, reps: usize, sgemm: f64, mut f: impl FnMut()) {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    let per = t.elapsed().as_secs_f64() / reps as f64;
    let gflops = flops / per / 1e9;
    println!(
        "{name}: {:.3} ms, {gflops:.1} GFLOP/s = {:.0}% of sgemm ({sgemm:.1} GFLOP/s)",
        per * 1e3,
        100.0 * gflops / sgemm
    );
}
