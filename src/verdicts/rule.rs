//! The one rule that turns a margin's CI and the paper's claimed size into a verdict
//! word, and the multiplicity correction of the primary family.

/// A primary claim's verdict, computed from its CI and the paper's value by
/// [`Verdict::of`]; no report states one this rule did not compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The CI contains the paper's value or lies above it (and excludes 0).
    Reproduced,
    /// The CI lies above 0 but below the paper's value.
    Smaller,
    /// The CI contains 0.
    NotSettled,
    /// The CI lies below 0.
    Reversed,
}

impl Verdict {
    /// The verdict of a margin with CI `ci` against a claimed size `paper` > 0.
    /// A CI that contains 0 is "not settled" even when it also contains the paper's
    /// value: it cannot tell the claim from no effect.
    pub fn of(ci: [f64; 2], paper: f64) -> Self {
        if ci[1] < 0.0 {
            Verdict::Reversed
        } else if ci[0] <= 0.0 {
            Verdict::NotSettled
        } else if ci[1] >= paper {
            Verdict::Reproduced
        } else {
            Verdict::Smaller
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Smaller => "smaller",
            Verdict::NotSettled => "not settled",
            Verdict::Reversed => "reversed",
        }
    }
}

/// What an exploratory (secondary) comparison's unadjusted CI says: its direction only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Above0,
    Contains0,
    Below0,
}

impl Direction {
    pub fn of(ci: [f64; 2]) -> Self {
        if ci[0] > 0.0 {
            Direction::Above0
        } else if ci[1] < 0.0 {
            Direction::Below0
        } else {
            Direction::Contains0
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Direction::Above0 => "CI above 0 (exploratory)",
            Direction::Contains0 => "CI contains 0 (exploratory)",
            Direction::Below0 => "CI below 0 (exploratory)",
        }
    }
}

/// The per-comparison confidence level of Bonferroni simultaneous intervals: with
/// `family` comparisons each at 1 − α/family, all of them cover together with
/// probability at least 1 − α (family-wise).
pub fn bonferroni_level(alpha: f64, family: usize) -> f64 {
    1.0 - alpha / family.max(1) as f64
}
