//! bayes-robust: a seeded, tested reproduction harness for *Improving Neural Network
//! Robustness with Bayesian Weight Sampling* (Zhang & Chen, 2020) on tch (libtorch).
//!
//! Data flows one way: [`data`] → [`model`] → [`train`] → [`eval`] → [`stats`].
//! Every random choice takes its seed from a [`seed::SeedTree`].

pub mod attack;
pub mod calibration;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod fsio;
pub mod model;
pub mod progress;
pub mod report;
pub mod results;
pub mod runtime;
pub mod seed;
pub mod stats;
pub mod train;
pub mod verdicts;
