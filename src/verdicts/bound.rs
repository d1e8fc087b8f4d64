//! The paper's distortion bound, per set (§4.2: the average distortion is below 0.10
//! "for all 12 models"): each strength point is labelled with how many of its sets
//! exceed it, and the within-bound frontier says how strong an attack the paper's
//! bound allows.

/// How far above the bound a set's mean distortion may be and still count as within
/// it: float rounding at the cap (the set-mean reading scales onto 0.10 · (1 − 10⁻⁶),
/// and a mean of 10,000 f32 distortions carries about 10⁻⁷ of rounding).
pub const BOUND_TOLERANCE: f64 = 1e-6;

/// A strength point's sets against the bound.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundLabel {
    /// Sets whose mean distortion exceeds the bound (beyond [`BOUND_TOLERANCE`]).
    pub over: usize,
    /// Sets measured.
    pub sets: usize,
    /// The largest set's mean distortion.
    pub max: f64,
}

impl BoundLabel {
    /// The label of sets with mean distortions `set_means` against `bound`.
    pub fn of(set_means: &[f64], bound: f64) -> Self {
        Self {
            over: set_means
                .iter()
                .filter(|d| **d > bound + BOUND_TOLERANCE)
                .count(),
            sets: set_means.len(),
            max: set_means.iter().copied().fold(0.0, f64::max),
        }
    }

    /// Every set within the bound.
    pub fn within(&self) -> bool {
        self.over == 0
    }

    /// "within the bound", or "outside the paper's bound: k of 12 sets above 0.10 (max …)".
    pub fn describe(&self, bound: f64) -> String {
        if self.within() {
            format!("within the bound (max {:.3})", self.max)
        } else {
            format!(
                "outside the paper's bound: {} of {} sets above {bound:.2} (max {:.3})",
                self.over, self.sets, self.max
            )
        }
    }
}

/// One measured strength point: its reading, κ, multiplier m and label.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundPoint {
    pub reading: String,
    pub kappa: f64,
    pub m: f64,
    pub label: BoundLabel,
}

/// For one reading and κ: the largest measured m at which every set is within the
/// bound (and so is every smaller measured m > 0); `None` when even the smallest is not.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Frontier {
    pub reading: String,
    pub kappa: f64,
    pub largest_m: Option<f64>,
    /// The measured m values along this κ.
    pub measured: Vec<f64>,
}

/// The within-bound frontier of every (reading, κ) among `points`, in first-seen order.
pub fn frontiers(points: &[BoundPoint]) -> Vec<Frontier> {
    let mut keys: Vec<(String, f64)> = Vec::new();
    for p in points {
        if !keys.iter().any(|(r, k)| *r == p.reading && *k == p.kappa) {
            keys.push((p.reading.clone(), p.kappa));
        }
    }
    keys.into_iter()
        .map(|(reading, kappa)| {
            let mut along: Vec<&BoundPoint> = points
                .iter()
                .filter(|p| p.reading == reading && p.kappa == kappa && p.m > 0.0)
                .collect();
            along.sort_by(|a, b| a.m.total_cmp(&b.m));
            let largest_m = along
                .iter()
                .take_while(|p| p.label.within())
                .last()
                .map(|p| p.m);
            Frontier {
                measured: along.iter().map(|p| p.m).collect(),
                reading,
                kappa,
                largest_m,
            }
        })
        .collect()
}
