//! What every bench prints beside its own figures: its rate against the sgemm rate of
//! this process, measured right before it.
#![allow(dead_code)]

use std::time::Instant;

/// The machine's matrix-product rate, measured in this process (the same measure
/// `reproduce` records).
pub use bayes_robust::experiment::flops::sgemm_gflops;

/// Rounds of an sgemm measurement followed by the workload: the machine is shared and
/// its speed changes from minute to minute, so a ratio is only taken between a workload
/// and the sgemm measured just before it.
pub const ROUNDS: usize = 5;

/// Whether criterion measures (`cargo bench` passes `--bench`); `cargo test` runs the
/// benches once as a check, where a single short round suffices.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Runs `f` in [`ROUNDS`] rounds of `reps` calls, each round right after an sgemm
/// measurement, and prints its time, GFLOP/s and share of sgemm: the median over rounds
/// of the per-round share, and its best round against the best sgemm. Returns the
/// median seconds per call. Under `cargo test`, one round of one call.
pub fn report_rate(name: &str, flops: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    let (n_rounds, reps) = if measuring() { (ROUNDS, reps) } else { (1, 1) };
    f();
    let mut rounds: Vec<(f64, f64)> = (0..n_rounds)
        .map(|_| {
            let sgemm = sgemm_gflops();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            (t.elapsed().as_secs_f64() / reps as f64, sgemm)
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let gflops = |s: f64| flops / s / 1e9;
    let share = median(rounds.iter().map(|(s, g)| gflops(*s) / g).collect());
    let seconds = median(rounds.iter().map(|r| r.0).collect());
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let best = gflops(rounds[0].0);
    let best_sgemm = rounds.iter().map(|r| r.1).fold(0.0, f64::max);
    println!(
        "{name}: {:.3} ms, {:.1} GFLOP/s = {:.0}% of the sgemm measured just before \
         (median of {n_rounds} rounds; best round {best:.1} GFLOP/s = {:.0}% of the best sgemm, {best_sgemm:.1} GFLOP/s)",
        seconds * 1e3,
        gflops(seconds),
        100.0 * share,
        100.0 * best / best_sgemm
    );
    seconds
}
