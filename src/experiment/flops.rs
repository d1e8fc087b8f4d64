//! Counted floating-point work of each `reproduce` stage, so that its wall time can be
//! set against the machine's matrix-product rate. Only the matrix products are
//! counted (2 FLOPs per multiply-add; the element-wise work of weight sampling, the
//! KL and the attacks' updates is not), so "wall ÷ (FLOPs / sgemm rate)" says how far
//! a stage is from being bound by its matrix products.

use crate::model::Arch;
use crate::model::checkpoint::ModelSpec;
use crate::train::Recipe;

/// FLOPs of forward passes of `examples` examples (each under its own or a shared
/// weight draw: the products cost the same).
pub fn forward(arch: &Arch, examples: f64) -> f64 {
    2.0 * arch.macs_per_example() as f64 * examples
}

/// FLOPs of attack steps: a forward pass and the backward pass to the input only
/// (no weight gradients), per example and step.
pub fn input_gradient_steps(arch: &Arch, steps: f64, examples: f64) -> f64 {
    2.0 * forward(arch, steps * examples)
}

/// FLOPs of training a model of `spec` with `recipe` at its epoch cap (an upper bound:
/// early stopping may end it sooner), a BNN validated under the recipe's `val_draws`.
pub fn training_at_cap(
    spec: &ModelSpec,
    recipe: &Recipe,
    n_train: usize,
    n_validation: usize,
) -> f64 {
    let draws = match spec {
        ModelSpec::Bnn { .. } => recipe.val_draws,
        ModelSpec::Mlp { .. } => 1,
    };
    training(spec.arch(), recipe.max_epochs, n_train, n_validation, draws)
}

/// FLOPs of training `epochs` epochs on `n_train` examples (forward, backward to the
/// input and to the weights) with a validation pass over `n_validation` examples
/// under `validation_draws` weight draws after each.
pub fn training(
    arch: &Arch,
    epochs: usize,
    n_train: usize,
    n_validation: usize,
    validation_draws: usize,
) -> f64 {
    epochs as f64
        * (3.0 * forward(arch, n_train as f64)
            + forward(arch, (n_validation * validation_draws.max(1)) as f64))
}

/// The float32 GFLOP/s of a [10000 × 784] · [784 × 1200] product on the CPU, best of
/// 5: the machine's matrix-product rate, measured in this process.
pub fn sgemm_gflops() -> f64 {
    use tch::{Device, Kind, Tensor};
    let (m, k, n) = (10_000i64, 784i64, 1200i64);
    let a = Tensor::rand([m, k], (Kind::Float, Device::Cpu));
    let b = Tensor::rand([k, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b);
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            let _ = a.matmul(&b);
            2.0 * (m * k * n) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}
