//! Tables 1 and 2 of results.json as types, shared by the protocols that write them
//! (`experiment::reproduce`, `experiment::code_protocol`) and by whoever reads them.
//! Every cell is a percentage with its 95% CI over runs ([`MeanCi`], `{mean, ci95,
//! runs}`), or `null` where no run was made. The JSON is the shape every committed
//! results.json has had (tests/report.rs round-trips them).

use crate::stats::MeanCi;

/// One cell of a table: percent accuracy with its CI, or none.
pub type Cell = Option<MeanCi>;

/// Table 1: clean validation and test accuracy of the BNNs (by ρ_init) and the
/// deterministic nets (by λ).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table1 {
    pub bnn: BnnClean,
    pub deterministic: DetClean,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnnClean {
    pub rho_init: Vec<f64>,
    pub validation: Vec<Cell>,
    pub test: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetClean {
    pub lambda: Vec<f64>,
    pub validation: Vec<Cell>,
    pub test: Vec<Cell>,
}

/// Table 2: accuracy on each perturbation set (`rows[set][model]`) and each model's
/// average over the sets (the per-run average's CI).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Table2 {
    /// How the sets were evaluated, where the protocol says (the code protocol's
    /// multipliers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub bnn: BnnPerturbed,
    pub deterministic: DetPerturbed,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BnnPerturbed {
    pub rho_init: Vec<f64>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetPerturbed {
    pub lambda: Vec<f64>,
    pub rows: Vec<Vec<Cell>>,
    pub average: Vec<Cell>,
}

/// One family's clean cells: (validation, test), one per model.
pub type CleanCells = (Vec<Cell>, Vec<Cell>);

/// One family's Table 2 part: (rows `[set][model]`, each model's average).
pub type PerturbedCells = (Vec<Vec<Cell>>, Vec<Cell>);

impl Table1 {
    /// The table of the BNNs `rho_init` and the nets `lambda`.
    pub fn new(rho_init: &[f64], lambda: &[f64], bnn: CleanCells, det: CleanCells) -> Self {
        Self {
            bnn: BnnClean {
                rho_init: rho_init.to_vec(),
                validation: bnn.0,
                test: bnn.1,
            },
            deterministic: DetClean {
                lambda: lambda.to_vec(),
                validation: det.0,
                test: det.1,
            },
        }
    }
}

impl Table2 {
    /// The table of the BNNs `rho_init` and the nets `lambda`.
    pub fn new(
        note: Option<String>,
        rho_init: &[f64],
        lambda: &[f64],
        bnn: PerturbedCells,
        det: PerturbedCells,
    ) -> Self {
        Self {
            note,
            bnn: BnnPerturbed {
                rho_init: rho_init.to_vec(),
                rows: bnn.0,
                average: bnn.1,
            },
            deterministic: DetPerturbed {
                lambda: lambda.to_vec(),
                rows: det.0,
                average: det.1,
            },
        }
    }
}

/// Each model's per-set cells `sets[model][set]`, as Table 2's rows `[set][model]`.
pub fn rows_by_set(sets: &[Vec<Cell>]) -> Vec<Vec<Cell>> {
    let n_sets = sets.first().map_or(0, Vec::len);
    (0..n_sets)
        .map(|i| sets.iter().map(|model| model[i]).collect())
        .collect()
}
