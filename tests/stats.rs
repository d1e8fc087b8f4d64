//! Confidence intervals over repeated runs.

use bayes_robust::stats::MeanCi;
use proptest::prelude::*;

#[test]
fn the_t_interval_matches_the_textbook() {
    // n = 2: t_{0.975, 1} = 12.7062; values 1, 3: mean 2, s = √2, se = 1.
    let m = MeanCi::from_values(&[1.0, 3.0]).unwrap();
    assert!((m.mean - 2.0).abs() < 1e-12);
    assert!((m.half_width() - 12.7062).abs() < 1e-3);
    assert_eq!(MeanCi::from_values(&[5.0]).unwrap().ci95, [5.0, 5.0]);
    assert!(MeanCi::from_values(&[]).is_none());
    assert!(MeanCi::from_values(&[1.0, f64::NAN]).is_none());
}

#[test]
fn intervals_shrink_with_more_runs() {
    // A deterministic, spread-out sequence (a low-discrepancy sample of [0, 1)).
    let values = |n: usize| {
        (0..n)
            .map(|i| (i as f64 * 0.618_033_988_75).fract())
            .collect::<Vec<_>>()
    };
    let widths: Vec<f64> = [5, 20, 100, 1000]
        .iter()
        .map(|&n| MeanCi::from_values(&values(n)).unwrap().half_width())
        .collect();
    assert!(widths.windows(2).all(|w| w[1] < w[0]), "{widths:?}");
}

proptest! {
    #[test]
    fn the_interval_contains_its_mean(values in prop::collection::vec(-100.0f64..100.0, 1..50)) {
        let m = MeanCi::from_values(&values).unwrap();
        prop_assert!(m.ci95[0] <= m.mean && m.mean <= m.ci95[1]);
        prop_assert_eq!(m.runs, values.len());
        let s = m.scaled(100.0);
        prop_assert!((s.mean - 100.0 * m.mean).abs() <= 1e-9 * s.mean.abs().max(1.0));
    }
}
