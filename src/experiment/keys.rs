//! The content keys of the reproduction's planned artifacts, in one place. Each function
//! builds the JSON preimage of one kind of artifact, verbatim as the pipeline built it
//! before the plan of jobs (`fixtures/golden-keys/` pins the keys), and hashes it with
//! [`cache::key`]: the id is `<name>-<first 16 hex digits of SHA-256(CACHE_FORMAT as
//! 4 little-endian bytes ‖ compact JSON of the config)>`. The preimage is stored beside
//! its artifact as `<id>.key.json` ([`Key::write_beside`]) so that what was hashed can
//! always be read back.

use serde_json::{Value, json};

use super::Profile;
use super::cache::{self, ArtifactDir, CacheError};
use super::whitebox::{WhiteboxChecks, WhiteboxProfile};
use crate::attack::{BudgetReading, MinNormAttack, TargetedAttack};
use crate::data::{Dataset, SplitSpec};
use crate::model::checkpoint::ModelSpec;
use crate::train::Recipe;

/// A content key: the readable name, the config hashed, and the id they make.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub id: String,
    pub name: String,
    pub config: Value,
}

impl Key {
    pub fn new(name: &str, config: Value) -> Self {
        Self {
            id: cache::key(name, &config),
            name: name.to_owned(),
            config,
        }
    }

    /// The preimage file's content: what [`cache::key`] hashed, and the format.
    pub fn preimage(&self) -> Value {
        json!({
            "id": self.id, "name": self.name, "cache_format": cache::CACHE_FORMAT,
            "hashed": "SHA-256 of cache_format as 4 little-endian bytes followed by the compact JSON of config; the id is the name (characters outside [A-Za-z0-9-_.=] as _) and the first 16 hex digits",
            "config": self.config,
        })
    }

    /// Writes `<id>.key.json` into `dir` (atomically).
    pub fn write_beside(&self, dir: &ArtifactDir) -> Result<(), CacheError> {
        dir.write_json(&format!("{}.key", self.id), &self.preimage())
    }
}

/// A trained model of the text protocol's grid (or a training seed of one).
pub fn model(
    name: &str,
    spec: &ModelSpec,
    recipe: &Recipe,
    master_seed: u64,
    seed_name: &str,
    dataset: Dataset,
) -> Key {
    Key::new(
        name,
        json!({
            "spec": spec, "recipe": recipe, "master_seed": master_seed,
            "seed_name": seed_name, "split": SplitSpec::PAPER, "data": dataset.name(),
        }),
    )
}

/// Training seed `seed` of the grid model `model_name`, a member of the seeds stage's
/// stacked grid whose members are named `grid` (the names are part of every member's
/// key: a grid is one training run).
#[allow(clippy::too_many_arguments)]
pub fn seed_member(
    model_name: &str,
    seed: usize,
    spec: &ModelSpec,
    recipe: &Recipe,
    master_seed: u64,
    seed_name: &str,
    dataset: Dataset,
    grid: &[String],
) -> Key {
    Key::new(
        &format!("{}-seed={seed}", model_name.replace('/', "_")),
        json!({
            "spec": spec, "recipe": recipe, "master_seed": master_seed,
            "seed_name": seed_name, "split": SplitSpec::PAPER,
            "data": dataset.name(), "trained": { "stacked_grid": grid },
        }),
    )
}

/// The seeds stage's evaluation of one model at one seed (`name`: `<model>/seed=<s>`)
/// on the clean splits and the sets `sets_key` (their ids joined with `+`), with
/// `draws` single-draw runs.
pub fn seeds_eval(
    name: &str,
    model_key: &str,
    sets_key: &str,
    draws: usize,
    master_seed: u64,
) -> Key {
    Key::new(
        &format!("seeds-eval-{}", name.replace('/', "_")),
        json!({"model": model_key, "sets": sets_key, "draws": draws, "master_seed": master_seed}),
    )
}

/// A min-norm attack's raw perturbations of the first `n` test images against the source
/// `source_key`, in chunks of `chunk`.
pub fn min_norm_attack(
    label: &str,
    source_key: &str,
    attack: &MinNormAttack,
    n: usize,
    chunk: usize,
) -> Key {
    Key::new(
        label,
        json!({"source": source_key, "attack": attack, "n": n, "chunk": chunk}),
    )
}

/// One set of a strength point as a strength evaluation's key names it: the raw attack
/// `attack_key`, held under `reading` with the distortion `bound`, at multiplier `m`.
pub fn strength_set(attack_key: &str, reading: BudgetReading, bound: f64, m: f64) -> Value {
    json!({"attack": attack_key, "reading": reading, "bound": bound, "m": m})
}

/// The strength stage's evaluation of the model `name` (weights `model_key`; a deep
/// ensemble's members joined with `+`) at the points `points` (per point, per set, a
/// [`strength_set`]), with `runs` single-draw runs per cell.
pub fn strength_eval(
    name: &str,
    model_key: &str,
    points: &[Vec<Value>],
    runs: usize,
    n_eval: usize,
    master_seed: u64,
) -> Key {
    Key::new(
        &format!("strength-{name}"),
        json!({"model": model_key, "points": points, "runs": runs, "n_eval": n_eval, "master_seed": master_seed}),
    )
}

/// The id of a perturbation set as evaluated: the raw attack `attack_key` under the
/// profile's distortion budget (not an artifact; evaluations' keys name it).
pub fn perturbation_set_id(
    label: &str,
    attack_key: &str,
    max_rms_distortion: Option<f64>,
) -> String {
    cache::key(
        label,
        &json!({"attack": attack_key, "max_rms_distortion": max_rms_distortion}),
    )
}

/// An evaluation `what` (a grid model's name, `table3`, `table4`, `calibration+…`) of
/// the model(s) `model_key` on the clean splits and the sets `set_ids`, with the
/// profile's evaluation settings.
pub fn evaluation(
    what: &str,
    model_key: &str,
    set_ids: &[String],
    n_eval: usize,
    profile: &Profile,
    master_seed: u64,
) -> Key {
    let p = profile;
    Key::new(
        what,
        json!({
            "model": model_key, "sets": set_ids,
            "n_eval": n_eval, "runs": p.single_draw_runs, "ensemble_ns": p.ensemble_ns,
            "ensemble_runs": p.ensemble_runs, "prune_rates": p.prune_rates,
            "prune_ensemble": p.prune_ensemble, "prune_runs": p.prune_runs, "master_seed": master_seed,
        }),
    )
}

/// Each example's correct-run count of the evaluation `eval` of the grid model `name`
/// (`--per-example`): the name with `/` as `_`, and the evaluation's id.
pub fn per_example_counts(name: &str, eval: &Key) -> Key {
    Key::new(
        &format!("per-example-{}", name.replace('/', "_")),
        json!({ "eval": eval.id }),
    )
}

/// A white-box curve of the target named `target` (a model attacked one way) under
/// `profile`; `artifact` is the target's name, or for a rerun of a masking check the
/// name with what it varies (`… (2x steps)`).
pub fn whitebox_curve(
    artifact: &str,
    target: &str,
    model_key: &str,
    profile: &WhiteboxProfile,
    master_seed: u64,
) -> Key {
    Key::new(
        &format!("whitebox-{artifact}"),
        json!({"model": model_key, "target": target, "profile": profile, "master_seed": master_seed}),
    )
}

/// The SPSA (gradient-free) check against the target named `target`.
pub fn spsa(
    target: &str,
    model_key: &str,
    profile: &WhiteboxProfile,
    checks: &WhiteboxChecks,
    master_seed: u64,
) -> Key {
    Key::new(
        &format!("whitebox-spsa-{target}"),
        json!({"model": model_key, "target": target, "profile": profile, "checks": checks, "master_seed": master_seed}),
    )
}

/// A trained model of the code protocol's grid; a member of a stacked grid (the
/// trained-to-accuracy variant) also names its grid's members, as the seeds study's
/// grids do.
pub fn code_model(
    name: &str,
    spec: &ModelSpec,
    recipe: &Recipe,
    master_seed: u64,
    seed_name: &str,
    dataset: Dataset,
    stacked_grid: Option<&[&str]>,
) -> Key {
    // The text protocol's model preimage with the protocol (and grid) added; serde_json
    // maps are sorted, so where a field is inserted does not change the hash.
    let mut config = model(name, spec, recipe, master_seed, seed_name, dataset).config;
    if let Some(map) = config.as_object_mut() {
        map.insert("protocol".into(), json!("code"));
        if let Some(names) = stacked_grid {
            map.insert("trained".into(), json!({ "stacked_grid": names }));
        }
    }
    Key::new(name, config)
}

/// The code protocol's targeted attack on the first `n` validation images against the
/// source `source_key`, in chunks of `chunk`, keeping each example's smallest
/// successful perturbation.
pub fn targeted_attack(
    label: &str,
    source_key: &str,
    attack: &TargetedAttack,
    n: usize,
    chunk: usize,
) -> Key {
    Key::new(
        &format!("targeted-{label}"),
        json!({"source": source_key, "attack": attack, "n": n, "chunk": chunk, "keep": "smallest successful r of any step"}),
    )
}

/// A key's configuration with the clean-evaluation cap added when there is one (the
/// paper profile evaluates every image, and its keys stay as they were).
fn with_eval_examples(mut config: Value, eval_examples: Option<usize>) -> Value {
    if let (Some(n), Some(map)) = (eval_examples, config.as_object_mut()) {
        map.insert("eval_examples".into(), json!(n));
    }
    config
}

/// The code protocol's test accuracy of every trained model (`model_keys`, training
/// order), a BNN as its `draws`-draw ensemble.
pub fn code_training_rows(
    model_keys: &[String],
    draws: usize,
    master_seed: u64,
    eval_examples: Option<usize>,
) -> Key {
    Key::new(
        "code-training-accuracy",
        with_eval_examples(
            json!({"models": model_keys, "draws": draws, "master_seed": master_seed}),
            eval_examples,
        ),
    )
}

/// The code protocol's sweep of the evaluation model `name` (made of the models
/// `model_keys`, joined with `+`, and a weight-noise control's σ) on the clean splits
/// and every targeted set (`set_keys`) at every multiplier, `runs` runs per cell.
pub fn code_sweep(
    name: &str,
    model_keys: &str,
    set_keys: &[String],
    multipliers: &[f64],
    runs: usize,
    master_seed: u64,
    eval_examples: Option<usize>,
) -> Key {
    Key::new(
        &format!("sweep-{name}"),
        with_eval_examples(
            json!({
                "models": model_keys, "sets": set_keys,
                "multipliers": multipliers, "runs": runs, "master_seed": master_seed,
            }),
            eval_examples,
        ),
    )
}

/// The code protocol's Table 3: ensembles of `ns` draws of the BNN `model_key` on every
/// targeted set at the BNN multiplier `m`.
pub fn code_table3(
    model_key: &str,
    set_keys: &[String],
    m: f64,
    ns: &[usize],
    runs: usize,
    master_seed: u64,
) -> Key {
    Key::new(
        "code-table3",
        json!({"model": model_key, "sets": set_keys, "m": m,
                "ns": ns, "runs": runs, "master_seed": master_seed}),
    )
}

/// What the code protocol's Table 4 prunes and how it evaluates each pruned BNN.
#[derive(Debug, Clone, Copy)]
pub struct CodePruning<'a> {
    pub per_tensor: bool,
    pub rates: &'a [f64],
    pub ensemble: usize,
    pub runs: usize,
}

/// The code protocol's Table 4: SNR pruning of the BNN `model_key` (per tensor, or
/// globally), each rate's `ensemble`-draw ensembles on the clean splits and every
/// targeted set at the BNN multiplier `m`.
pub fn code_table4(
    model_key: &str,
    set_keys: &[String],
    m: f64,
    pruning: CodePruning,
    master_seed: u64,
    eval_examples: Option<usize>,
) -> Key {
    Key::new(
        if pruning.per_tensor {
            "code-table4"
        } else {
            "code-table4-global"
        },
        with_eval_examples(
            json!({"model": model_key, "sets": set_keys, "m": m,
                   "rates": pruning.rates, "n": pruning.ensemble, "runs": pruning.runs, "master_seed": master_seed}),
            eval_examples,
        ),
    )
}

/// The strength axis across training seeds: the model `name` at seed `seed`, with the
/// preimage of its strength evaluation `eval` ([`strength_eval`]: weights, points, runs)
/// under the study's name.
pub fn strength_seeds_eval(eval: &Key, name: &str, seed: usize) -> Key {
    Key::new(
        &format!("strength-seeds-{}-seed={seed}", name.replace('/', "_")),
        eval.config.clone(),
    )
}
