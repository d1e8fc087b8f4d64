//! What every bench prints beside its own figures: the sgemm rate of this process.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

/// float32 GFLOP/s of a [10000 x 784] @ [784 x 1200] product, best of 5: the
/// machine's matrix-product rate, measured in the same process as the bench.
pub fn sgemm_gflops() -> f64 {
    let (m, k, n) = (10_000i64, 784i64, 1200i64);
    let a = Tensor::rand([m, k], (Kind::Float, Device::Cpu));
    let b = Tensor::rand([k, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b);
    (0..5)
        .map(|_| {
            let t = Instant::now();
            let _ = a.matmul(&b);
            2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

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
