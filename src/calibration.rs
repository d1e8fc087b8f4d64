//! Calibration and detection: how well predicted probabilities match accuracy, and how
//! well uncertainty separates perturbed from clean inputs. Not in the paper; these are
//! the standard measures (Guo et al. 2017 for ECE; Smith & Gal 2018 for mutual
//! information as an adversarial detector).

use tch::{Kind, Tensor};

/// Expected calibration error: Σ_b (n_b / n) |acc_b − conf_b| over `bins` equal-width
/// bins of the top-class confidence. `probs` `[B, C]` rows sum to 1; `labels` `[B]`.
pub fn expected_calibration_error(probs: &Tensor, labels: &Tensor, bins: usize) -> f64 {
    let n = probs.size()[0];
    if n == 0 || bins == 0 {
        return 0.0;
    }
    let probs = probs.to_kind(Kind::Double);
    let (conf, pred) = probs.max_dim(-1, false);
    let correct = pred.eq_tensor(labels).to_kind(Kind::Double);
    let bin = (&conf * bins as f64)
        .floor()
        .clamp(0.0, (bins - 1) as f64)
        .to_kind(Kind::Int64);
    let zeros = Tensor::zeros([bins as i64], (Kind::Double, conf.device()));
    let conf_sum = zeros.scatter_add(0, &bin, &conf);
    let correct_sum = zeros.scatter_add(0, &bin, &correct);
    ((conf_sum - correct_sum).abs().sum(Kind::Double) / n as f64).double_value(&[])
}

/// Mean negative log-likelihood −(1/n) Σ log p(y_i), probabilities floored at 1e-12.
pub fn negative_log_likelihood(probs: &Tensor, labels: &Tensor) -> f64 {
    let p_y = probs
        .to_kind(Kind::Double)
        .gather(1, &labels.unsqueeze(1), false)
        .clamp_min(1e-12);
    (-p_y.log().mean(Kind::Double)).double_value(&[])
}

/// Predictive entropy −Σ_c p_c log p_c of every row of `[B, C]`: `[B]`.
pub fn predictive_entropy(probs: &Tensor) -> Tensor {
    let p = probs.to_kind(Kind::Double);
    -(&p * p.clamp_min(1e-300).log()).sum_dim_intlist([-1].as_slice(), false, None::<Kind>)
}

/// Mutual information between the prediction and the weights, from per-draw
/// probabilities `[n, B, C]`: H(mean_n p) − mean_n H(p_n), `[B]`, ≥ 0. Zero when every
/// draw agrees.
pub fn mutual_information(draw_probs: &Tensor) -> Tensor {
    let mean = draw_probs.mean_dim([0].as_slice(), false, Kind::Double);
    let expected_entropy =
        predictive_entropy(draw_probs).mean_dim([0].as_slice(), false, Kind::Double);
    (predictive_entropy(&mean) - expected_entropy).clamp_min(0.0)
}

/// Area under the ROC curve of a detector that flags high scores as positive: the
/// Mann–Whitney probability P(s⁺ > s⁻) + ½ P(s⁺ = s⁻). `None` if either side is empty
/// or a score is NaN.
pub fn auroc(negatives: &[f64], positives: &[f64]) -> Option<f64> {
    if negatives.is_empty() || positives.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = negatives
        .iter()
        .map(|&s| (s, false))
        .chain(positives.iter().map(|&s| (s, true)))
        .collect();
    if all.iter().any(|(s, _)| s.is_nan()) {
        return None;
    }
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks, ties sharing their average rank (1-based).
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * all[i..=j].iter().filter(|(_, p)| *p).count() as f64;
        i = j + 1;
    }
    let (n_pos, n_neg) = (positives.len() as f64, negatives.len() as f64);
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}
