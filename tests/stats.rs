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

#[test]
fn the_paired_bootstrap_matches_the_normal_interval_of_a_mean() {
    use bayes_robust::stats::paired_bootstrap;
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    // 0/1 differences with p = 0.3 over 2,000 examples: the mean's standard error is
    // √(0.3·0.7/2000) = 0.01025, so the 95% interval is about ±0.0201.
    let diffs: Vec<f64> = (0..2000)
        .map(|i| if i % 10 < 3 { 1.0 } else { 0.0 })
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let b = paired_bootstrap(&diffs, 2000, &mut rng).unwrap();
    assert!((b.mean - 0.3).abs() < 1e-12);
    assert!((b.half_width() - 0.0201).abs() < 0.002, "{b:?}");
    assert!(b.ci95[0] > 0.25 && b.ci95[1] < 0.35);
    // Seeded: the same generator state gives the same interval.
    let again = paired_bootstrap(&diffs, 2000, &mut ChaCha20Rng::seed_from_u64(3)).unwrap();
    assert_eq!(b, again);
    // Differences centred on 0 give an interval that covers 0.
    let centred: Vec<f64> = diffs.iter().map(|d| d - 0.3).collect();
    let c = paired_bootstrap(&centred, 2000, &mut rng).unwrap();
    assert!(c.ci95[0] < 0.0 && 0.0 < c.ci95[1], "{c:?}");
    assert!(paired_bootstrap(&[], 10, &mut rng).is_none());
}

/// The two-level bootstrap against what it must reduce to: with one group its interval
/// is the paired bootstrap's width (images only); with groups that differ only by a
/// constant shift it widens by the spread of those shifts, which the paired bootstrap of
/// the pooled differences never sees.
#[test]
fn the_two_level_bootstrap_counts_groups_and_examples() {
    use bayes_robust::stats::{paired_bootstrap, two_level_bootstrap};
    use rand_chacha::ChaCha20Rng;
    use rand_chacha::rand_core::SeedableRng;
    let diffs: Vec<f64> = (0..2000)
        .map(|i| if i % 10 < 3 { 1.0 } else { 0.0 })
        .collect();
    let one = two_level_bootstrap(
        std::slice::from_ref(&diffs),
        2000,
        &mut ChaCha20Rng::seed_from_u64(5),
    )
    .unwrap();
    let paired = paired_bootstrap(&diffs, 2000, &mut ChaCha20Rng::seed_from_u64(5)).unwrap();
    assert!((one.mean - 0.3).abs() < 1e-12);
    assert_eq!(one.runs, 1);
    assert!(
        (one.half_width() - paired.half_width()).abs() < 0.003,
        "{one:?} vs {paired:?}"
    );
    // Five groups shifted by −0.2, −0.1, 0, +0.1, +0.2: the same mean, and an interval
    // at least as wide as the shifts' own spread (sd 0.158 over 5 groups: se 0.071).
    let shifted: Vec<Vec<f64>> = [-0.2, -0.1, 0.0, 0.1, 0.2]
        .iter()
        .map(|s| diffs.iter().map(|d| d + s).collect())
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let two = two_level_bootstrap(&shifted, 2000, &mut rng).unwrap();
    assert!((two.mean - 0.3).abs() < 1e-12);
    assert_eq!(two.runs, 5);
    assert!(two.half_width() > 0.1, "{two:?}");
    assert!(two.ci95[0] <= two.mean && two.mean <= two.ci95[1]);
    // Groups of different lengths, or none, give no interval.
    assert!(two_level_bootstrap(&[diffs.clone(), vec![1.0]], 10, &mut rng).is_none());
    assert!(two_level_bootstrap(&[], 10, &mut rng).is_none());
}

proptest! {
    #[test]
    fn the_two_level_interval_contains_the_mean_of_identical_groups(
        values in prop::collection::vec(-1.0f64..1.0, 2..60),
        groups in 1usize..5,
    ) {
        use bayes_robust::stats::two_level_bootstrap;
        use rand_chacha::ChaCha20Rng;
        use rand_chacha::rand_core::SeedableRng;
        let same: Vec<Vec<f64>> = vec![values.clone(); groups];
        let m = two_level_bootstrap(&same, 200, &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        prop_assert!((m.mean - mean).abs() < 1e-12);
        prop_assert!(m.ci95[0] <= m.ci95[1]);
        prop_assert!(m.ci95[0] >= values.iter().cloned().fold(f64::INFINITY, f64::min) - 1e-12);
        prop_assert!(m.ci95[1] <= values.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 1e-12);
    }
}
