//! One master seed, and from it a named, independent seed for every consumer.
//!
//! Every random choice in bayes-robust (data order, initialisation, weight noise,
//! attack restarts) takes its seed from a [`SeedTree`] by a stable, human-readable name
//! such as `"train/bnn/rho=-3/shuffle"`. The derivation is
//! `ChaCha20(SHA-256("bayes-robust/seed" ‖ master ‖ name))`, so a name always gives the
//! same stream for the same master seed and unrelated names give unrelated streams.

use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};

/// The default master seed of every CLI command.
pub const DEFAULT_MASTER_SEED: u64 = 20201218;

/// A master seed and the path under which names are derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedTree {
    master: u64,
    prefix: String,
}

impl SeedTree {
    pub fn new(master: u64) -> Self {
        Self {
            master,
            prefix: String::new(),
        }
    }

    pub fn master(&self) -> u64 {
        self.master
    }

    /// The path of this (sub)tree; empty for the root.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name that `name` is derived under (the prefix joined with `/`).
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{}", self.prefix, name)
        }
    }

    /// A subtree: `tree.child("a").rng("b")` is `tree.rng("a/b")`.
    pub fn child(&self, name: &str) -> SeedTree {
        SeedTree {
            master: self.master,
            prefix: self.path(name),
        }
    }

    /// The ChaCha20 stream of `name`.
    pub fn rng(&self, name: &str) -> ChaCha20Rng {
        let mut hasher = Sha256::new();
        hasher.update(b"bayes-robust/seed\0");
        hasher.update(self.master.to_le_bytes());
        hasher.update(self.path(name).as_bytes());
        let digest = hasher.finalize();
        let mut key = [0u8; 32];
        key.copy_from_slice(&digest);
        ChaCha20Rng::from_seed(key)
    }

    /// A 63-bit seed for `name` (non-negative, so it fits libtorch's `manual_seed`).
    pub fn seed(&self, name: &str) -> u64 {
        self.rng(name).next_u64() >> 1
    }

    /// Seeds libtorch's global generator from `name`, and returns the seed used.
    ///
    /// libtorch's generator is global to the process: callers seed it right before the
    /// work that consumes it, and that work must not interleave with other seeded work.
    pub fn seed_torch(&self, name: &str) -> u64 {
        let seed = self.seed(name);
        tch::manual_seed(seed as i64);
        seed
    }
}
