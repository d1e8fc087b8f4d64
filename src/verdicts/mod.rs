//! Verdicts a reviewer can trust (issue 36): the paper's claims as one pre-specified
//! family ([`claims`]), one uncertainty procedure for every margin ([`bootstrap`]: a
//! hierarchical, paired, selection-aware bootstrap over training seeds and test
//! images), one rule from CI to verdict word with a family-wise correction ([`rule`]),
//! and the paper's distortion bound per set ([`bound`]).
//!
//! Everything here is computed from a report's committed files (`per_example.npz`,
//! `results.json`), never from `runs/`.

pub mod bootstrap;
pub mod bound;
pub mod claims;
pub mod per_example_file;
pub mod rule;

use std::path::PathBuf;

/// What can go wrong computing a verdict; each names the file, model or shape.
#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("cannot read {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("{path} is not as docs/PER_EXAMPLE.md describes: {why}")]
    Format { path: PathBuf, why: String },
    #[error("the per-example scores have no model `{0}`")]
    MissingModel(String),
    #[error("the per-example scores are malformed: {0}")]
    Shape(String),
    #[error("reports/paper_tables.json has no claim `{0}`")]
    MissingPaperValue(String),
}

/// The primary reading, pre-specified (docs/FIDELITY.md, "The primary reading"): the
/// sets as the attack made them (m = 1, κ = 0) under the per-example cap, which is
/// where Table 2 is measured and what the paper's text describes.
pub const PRIMARY_READING: &str = "the sets as made: m = 1, κ = 0, per-example cap";

/// The readings the primary family is checked at; the family-wise correction divides
/// its level among 4 claims × these.
pub const PRIMARY_READINGS: usize = 1;
