//! proptest strategies for the math and data tests, exported from one place.

use proptest::prelude::*;

/// Any finite ρ the posterior may hold, including the paper's extremes and beyond.
pub fn rho() -> impl Strategy<Value = f64> {
    prop_oneof![
        -700.0f64..700.0,
        Just(-100.0),
        Just(100.0),
        Just(-30.0),
        -40.0f64..5.0
    ]
}

/// A posterior scale σ > 0 over many orders of magnitude.
pub fn sigma() -> impl Strategy<Value = f64> {
    (-30.0f64..3.0).prop_map(f64::exp)
}

/// Weights on the scale MNIST MLPs use.
pub fn weight() -> impl Strategy<Value = f64> {
    prop_oneof![-3.0f64..3.0, -0.01f64..0.01, Just(0.0)]
}

/// A vector of SNR-like values with deliberate ties.
pub fn snr_values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![0.0f32..10.0, Just(1.0f32), Just(0.5f32)],
        1..max_len,
    )
}

/// Pruning rates in [0, 1] including both ends.
pub fn prune_rate() -> impl Strategy<Value = f64> {
    prop_oneof![0.0f64..=1.0, Just(0.0), Just(1.0), Just(0.25), Just(0.75)]
}

/// An unsigned-byte IDX array with 1 to 3 small dimensions.
pub fn idx_array() -> impl Strategy<Value = bayes_robust::data::IdxArray> {
    prop::collection::vec(0usize..6, 1..4).prop_flat_map(|dims| {
        let n: usize = dims.iter().product();
        prop::collection::vec(any::<u8>(), n).prop_map(move |data| bayes_robust::data::IdxArray {
            dims: dims.clone(),
            data,
        })
    })
}
