//! Expectation over transformation (Athalye, Carlini & Wagner 2018) for a BNN: the
//! decision rule the BNN is deployed with, eq. 7's softmax averaged over k weight
//! draws, as a differentiable model, so any gradient attack can target it.

use tch::{Kind, Tensor};

use super::Differentiable;
use crate::model::WeightMode;
use crate::model::bayes::BayesMlp;

/// `log((1/k) Σ_j softmax(z_j))` over k fresh weight draws (eq. 7 in log space), as
/// `[B, 10]` "logits". Cross-entropy on them is the cross-entropy of the averaged
/// probabilities; the margin on them is a margin on log-probabilities. Each call
/// draws afresh, so an attack step sees a new k-draw estimate.
pub struct Eot<'a> {
    pub bnn: &'a BayesMlp,
    pub k: usize,
}

impl Differentiable for Eot<'_> {
    fn logits(&self, x: &Tensor) -> Tensor {
        let k = self.k.max(1);
        let z = self.bnn.forward(x, k, WeightMode::Sample, false).logits;
        z.log_softmax(-1, None::<Kind>)
            .logsumexp([0].as_slice(), false)
            - (k as f64).ln()
    }
}
