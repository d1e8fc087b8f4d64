//! The bayes-robust command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use bayes_robust::data::{self, ChecksumPolicy, Dataset, RawDataset, SplitSpec, Splits};
use bayes_robust::eval::{self, EvalChunks};
use bayes_robust::experiment::Profile;
use bayes_robust::experiment::code_protocol::{self, CodeBudget, Multipliers};
use bayes_robust::experiment::plan::Plan;
use bayes_robust::experiment::reproduce::{self, ReproduceConfig};
use bayes_robust::experiment::stage::{dataset_folder, default_folders};
use bayes_robust::model::bayes::{BayesConfig, PruneMode};
use bayes_robust::model::checkpoint::ModelSpec;
use bayes_robust::model::mlp::{MlpConfig, MlpInit};
use bayes_robust::model::{Arch, bayes::BayesMlp};
use bayes_robust::report;
use bayes_robust::runtime;
use bayes_robust::seed::{DEFAULT_MASTER_SEED, SeedTree};
use bayes_robust::train::{self, Recipe, TrainOptions, TrainedModel};

#[derive(Parser)]
#[command(
    name = "bayes-robust",
    version,
    about = "Reproduce and test Zhang & Chen (2020): Bayesian weight sampling and adversarial robustness"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Global {
    /// Master seed; every random choice derives its own seed from it by name.
    #[arg(long, global = true, default_value_t = DEFAULT_MASTER_SEED)]
    seed: u64,
    /// mnist (the paper's) or fashion-mnist (same shapes; its own runs/ and reports/
    /// folders, named fashion-mnist-<profile>).
    #[arg(long, global = true, default_value = "mnist")]
    dataset: Dataset,
    /// Folder with the dataset's four IDX files (raw or .gz, either common naming);
    /// default for mnist $BAYES_ROBUST_DATA_DIR, else data/mnist; for fashion-mnist
    /// /usr/share/datasets/fashion-mnist (the Debian package dataset-fashion-mnist).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// libtorch intra-op threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// cpu, or cuda (only when libtorch sees a CUDA device).
    #[arg(long, global = true, default_value = "cpu")]
    device: String,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and prepare data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train one model with the paper's recipe and save a checkpoint.
    Train(TrainArgs),
    /// Train the paper's model grid, make the 12 perturbation sets, evaluate Tables 1–4
    /// and write reports/<profile>/results.json; resumes from runs/<profile>/. Prints
    /// the plan's summary first. (`reproduce` is the same command.)
    #[command(name = "run", alias = "reproduce")]
    Reproduce(ReproduceArgs),
    /// The plan of content-keyed jobs of a run (text protocol: training, the min-norm
    /// sets, the evaluations, white-box; code protocol: training and the targeted
    /// sets), which are cached, and an estimate of the work left; computes nothing.
    Plan {
        #[command(flatten)]
        args: ReproduceArgs,
        /// Accepted for clarity: `plan` never computes anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        emit: EmitArgs,
    },
    /// One job of a plan.
    #[command(subcommand)]
    Job(JobCommand),
    /// Clean validation and test accuracy of any checkpoint in the documented format
    /// (docs/CHECKPOINT.md); a BNN's single-draw runs and N-draw ensembles.
    Eval(EvalArgs),
    /// A min-norm perturbation set (the paper's eq. 5 attack, before any distortion
    /// budget) of the test images against any deterministic checkpoint, with a
    /// profile's attack settings: `<out>.safetensors` (delta, norms) and `<out>.json`.
    Attack(AttackArgs),
    /// White-box PGD curves (L∞ and L2, robust accuracy per budget) of any checkpoint,
    /// attacked as a deterministic net, or a BNN as one draw, its ensemble through EOT,
    /// its posterior mean or a frozen sample; with a profile's white-box settings.
    Whitebox(WhiteboxArgs),
    /// Render reports/<profile>/README.md and SVG figures from its results.json beside
    /// the paper's numbers (reports/paper_tables.json).
    Report {
        #[arg(long, default_value = "paper")]
        profile: String,
        /// code: render reports/<profile>-code/ (the authors' protocol).
        #[arg(long, value_enum, default_value_t = ProtocolArg::Text)]
        protocol: ProtocolArg,
        /// With --protocol code: trained renders reports/<profile>-code-trained/.
        #[arg(long, value_enum)]
        code_budget: Option<CodeBudgetArg>,
        /// Folder with results.json; the report is written there (default reports/<profile>).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value = "reports/paper_tables.json")]
        paper_tables: PathBuf,
    },
}

/// How `plan` writes the plan.
#[derive(Args, Clone)]
struct EmitArgs {
    /// table (default): the uncached jobs and the estimate; slurm: a bash script that
    /// submits each uncached job with sbatch (README, "Running on a Slurm cluster");
    /// json: the plan as data (key, kind, inputs, outputs, cpus, memory, time, cached).
    #[arg(long, value_enum, default_value_t = EmitArg::Table)]
    emit: EmitArg,
    /// With --emit slurm: extra sbatch arguments for every job, passed through
    /// (one string, split at spaces: "--partition=cpu --account=lab").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    sbatch_args: String,
    /// With --emit slurm|json: cores per job (-c; each job runs with that many threads).
    #[arg(long, default_value_t = 2)]
    cpus_per_job: usize,
    /// With --emit slurm: tries of each job inside `job run` (Slurm never retries).
    #[arg(long, default_value_t = 2)]
    attempts: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EmitArg {
    Table,
    Slurm,
    Json,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Run the job with this key in this process (its inputs must be cached and verify:
    /// exit status 3 and nothing written otherwise; 75 when another process holds it
    /// and --wait is not given).
    Run {
        key: String,
        #[command(flatten)]
        args: ReproduceArgs,
        /// While another live process (on any host) holds the job's claim, wait for it
        /// to finish or for its heartbeat to stop, instead of exiting with 75.
        #[arg(long)]
        wait: bool,
        /// Tries of the job's work before it fails (for transient errors).
        #[arg(long, default_value_t = 1)]
        attempts: u32,
    },
    /// Each job of the plan and whether it is cached.
    Status {
        #[command(flatten)]
        args: ReproduceArgs,
    },
}

#[derive(Args, Clone)]
struct ReproduceArgs {
    /// paper (the paper's protocol), seeds (the same with 5 training seeds; shares
    /// runs/paper), short (the same on a half-hour budget) or quick (every cell, far less
    /// work).
    #[arg(long, default_value = "paper")]
    profile: String,
    /// Artifact cache (default runs/<profile>; the seeds profile's is runs/paper).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Where results.json goes (default reports/<profile>).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Hide progress bars and per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Run the plan's jobs (text protocol: training, the min-norm sets, the
    /// evaluations, white-box, the strength sweep; code protocol: training and the targeted sets) in this
    /// many local worker processes, each with --threads threads, before the rest runs
    /// in this process; 1 (default) runs them here. The numbers do not depend on it.
    /// Several `run`s on one runs folder share the jobs through claims.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Also attack the evaluation models white-box (PGD on each model itself, EOT on
    /// the BNN's ensemble) and report the curves and gradient-masking checks.
    #[arg(long)]
    whitebox: bool,
    /// Also evaluate every model along the attack-strength axis (budget readings,
    /// multipliers m of x + m·r, attack confidences κ), at the paper-matched difficulty,
    /// with the text protocol's controls.
    #[arg(long)]
    strength: bool,
    /// Also write each evaluation model's per-example results (text protocol: Tables
    /// 1–4; code protocol: its whole multiplier sweep) and each perturbation set's
    /// per-example distortion and success, as per_example.npz (with per_example.json)
    /// beside results.json (docs/PER_EXAMPLE.md).
    #[arg(long)]
    per_example: bool,
    /// text: the paper's text (default); code: the authors' notebooks (targeted attack
    /// on validation images, evaluation multipliers, their training recipes, per-tensor
    /// pruning) plus the confound controls, written to reports/<profile>-code/.
    #[arg(long, value_enum, default_value_t = ProtocolArg::Text)]
    protocol: ProtocolArg,
    /// Evaluation multiplier m of x + m·r for BNNs and their controls (code protocol;
    /// default 1.5 as in the notebooks).
    #[arg(long, allow_negative_numbers = true)]
    multiplier_bnn: Option<f64>,
    /// Table 4's pruning: global (the paper's text; the text protocol's default) or
    /// per-tensor (the notebooks; the code protocol's default).
    #[arg(long, value_enum)]
    pruning: Option<PruningArg>,
    /// Retrain every evaluation model with K training seeds (seed 0 is the main run;
    /// the rest train as stacked grids) and report CIs across seeds and the paired
    /// margin test; with --strength also the strength axis's headline comparisons
    /// across the seeds (the matched-init control retrained too). Default: the
    /// profile's (paper 3, short 1, quick 2); 1 skips the stage.
    #[arg(long, value_name = "K")]
    train_seeds: Option<usize>,
    /// Evaluation multiplier for the deterministic λ grid (code protocol; default 3).
    #[arg(long, allow_negative_numbers = true)]
    multiplier_det: Option<f64>,
    /// The code protocol's training budgets: as-written (the notebooks' cells, default)
    /// or trained (as far as the notebooks' printed accuracies show: the BNNs' 600
    /// epochs as one stacked grid, the non-Bayesian nets until validation stops
    /// improving), written to reports/<profile>-code-trained/.
    #[arg(long, value_enum)]
    code_budget: Option<CodeBudgetArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodeBudgetArg {
    AsWritten,
    Trained,
}

impl From<CodeBudgetArg> for CodeBudget {
    fn from(b: CodeBudgetArg) -> Self {
        match b {
            CodeBudgetArg::AsWritten => CodeBudget::AsWritten,
            CodeBudgetArg::Trained => CodeBudget::TrainedToAccuracy,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PruningArg {
    Global,
    PerTensor,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    Text,
    Code,
}

#[derive(Subcommand)]
enum DataCommand {
    /// Load, verify and summarise the dataset; exits non-zero on any problem.
    Check {
        /// The split of the training file: paper (50,000 + 10,000) or fixture (1,600 + 400).
        #[arg(long, value_enum, default_value_t = SplitArg::Paper)]
        split: SplitArg,
        /// Skip the SHA-256 check (for subsets such as the fixture, which have no reference sums).
        #[arg(long)]
        no_checksum: bool,
    },
    /// Write the first N training and test images as gzipped IDX files (the test fixture).
    MakeFixture {
        #[arg(long, default_value = "fixtures/mnist-small")]
        out: PathBuf,
        #[arg(long, default_value_t = 2000)]
        train: usize,
        #[arg(long, default_value_t = 500)]
        test: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Paper,
    Fixture,
}

impl SplitArg {
    fn spec(self) -> SplitSpec {
        match self {
            SplitArg::Paper => SplitSpec::PAPER,
            SplitArg::Fixture => SplitSpec::FIXTURE,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModelKind {
    Mlp,
    Bnn,
}

#[derive(Args)]
struct EvalArgs {
    /// The checkpoint: its path without extension (`<stem>.safetensors` and
    /// `<stem>.json`), or either file.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate the first this many validation and test images (default: all).
    #[arg(long)]
    examples: Option<usize>,
    /// Single-draw passes of a BNN (mean and 95% CI over them).
    #[arg(long, default_value_t = 100)]
    runs: usize,
    /// Ensemble sizes N of a BNN (comma-separated), each over `--ensemble-runs` runs.
    #[arg(long, default_value = "1,10,100", value_delimiter = ',')]
    ensemble: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    ensemble_runs: usize,
    /// The split of the training file.
    #[arg(long, value_enum, default_value_t = SplitArg::Paper)]
    split: SplitArg,
    /// Skip the SHA-256 check of the data (subsets only).
    #[arg(long)]
    no_checksum: bool,
    /// Also evaluate on this perturbation set (repeatable): one written by `attack
    /// --out`, or a plan's min-norm set (`runs/<profile>/attacks/<key>`); its stem or
    /// either file. Its perturbations r of the first n test images are held to
    /// --budget and evaluated at x + m·r, clipped to the input box.
    #[arg(long = "set")]
    sets: Vec<PathBuf>,
    /// How a set is held to the paper's distortion bound of 0.10 (§4.2).
    #[arg(long, value_enum, default_value_t = BudgetArg::PerExampleCap)]
    budget: BudgetArg,
    /// The evaluation multiplier m of x + m·r.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    multiplier: f64,
}

/// How `eval --set` holds a set to the distortion bound.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BudgetArg {
    /// Each perturbation above the bound is scaled back onto it (the plan's sets).
    PerExampleCap,
    /// The whole set is scaled so that its mean distortion is at most the bound.
    SetMean,
    /// The perturbations as they are.
    None,
}

impl From<BudgetArg> for bayes_robust::attack::BudgetReading {
    fn from(b: BudgetArg) -> Self {
        match b {
            BudgetArg::PerExampleCap => Self::PerExampleCap,
            BudgetArg::SetMean => Self::SetMean,
            BudgetArg::None => Self::None,
        }
    }
}

#[derive(Args)]
struct AttackArgs {
    /// The source: a deterministic checkpoint (its stem, or either file).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The profile whose attack settings, test images and chunking are used.
    #[arg(long, default_value = "paper")]
    profile: String,
    /// Attack the first this many test images (default: the profile's).
    #[arg(long)]
    examples: Option<usize>,
    /// The attack's confidence κ (default: the profile's).
    #[arg(long, allow_negative_numbers = true)]
    kappa: Option<f64>,
    /// The weight c of ‖r‖₂ against the margin loss at the start (default: the
    /// profile's).
    #[arg(long)]
    c: Option<f64>,
    /// Rounds of the per-example search on c; 0 keeps c fixed (default: the profile's).
    #[arg(long)]
    search_rounds: Option<usize>,
    /// Where the set goes (`<out>.safetensors`, `<out>.json`; replaced if there).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = SplitArg::Paper)]
    split: SplitArg,
    /// Skip the SHA-256 check of the data (subsets only).
    #[arg(long)]
    no_checksum: bool,
}

#[derive(Args)]
struct WhiteboxArgs {
    /// The target: a checkpoint (its stem, or either file).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The profile whose white-box settings and test images are used.
    #[arg(long, default_value = "paper")]
    profile: String,
    /// How it is attacked (a BNN: single-draw, ensemble, posterior-mean or
    /// frozen-sample; default deterministic for a net, ensemble for a BNN).
    #[arg(long, value_enum)]
    kind: Option<TargetKindArg>,
    /// EOT draws per gradient for --kind ensemble.
    #[arg(long, default_value_t = 10)]
    eot_k: usize,
    /// The name the attack's random streams are drawn under; a plan target's name (in
    /// its curve's `name`) reproduces that curve.
    #[arg(long)]
    name: Option<String>,
    /// Where the curves go as JSON (they are printed either way).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = SplitArg::Paper)]
    split: SplitArg,
    /// Skip the SHA-256 check of the data (subsets only).
    #[arg(long)]
    no_checksum: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKindArg {
    Deterministic,
    SingleDraw,
    Ensemble,
    PosteriorMean,
    FrozenSample,
}

#[derive(Args)]
struct TrainArgs {
    #[arg(long, value_enum)]
    model: ModelKind,
    /// Hidden layers, e.g. "" (FC-10), "100-100", "1200-1200".
    #[arg(long, default_value = "100-100")]
    hidden: String,
    /// Weight of the eq. 6 L2 penalty (mlp only).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    lambda: f64,
    /// Constant initial ρ of every weight (bnn only).
    #[arg(long, default_value_t = -3.0, allow_negative_numbers = true)]
    rho_init: f64,
    /// Epoch budget (early stopping with patience 5 usually ends sooner).
    #[arg(long, default_value_t = 300)]
    max_epochs: usize,
    /// Single-draw test passes to average for a BNN (the paper: 100).
    #[arg(long, default_value_t = 100)]
    eval_runs: usize,
    /// The split of the training file.
    #[arg(long, value_enum, default_value_t = SplitArg::Paper)]
    split: SplitArg,
    /// Skip the SHA-256 check of the data (subsets only).
    #[arg(long)]
    no_checksum: bool,
    /// Where checkpoints go.
    #[arg(long, default_value = "runs/models")]
    out: PathBuf,
    /// Hide the per-epoch log and progress bar.
    #[arg(long)]
    quiet: bool,
    /// text: the paper's recipe (early stopping); code: the notebooks' (an mlp with
    /// batch 10,000, a bnn with the summed loss and lr 1e-5; --max-epochs epochs, no
    /// early stopping).
    #[arg(long, value_enum, default_value_t = ProtocolArg::Text)]
    protocol: ProtocolArg,
    /// Train the model of this profile's plan (text protocol) that has this spec, with
    /// the plan's recipe and seeds, into its runs folder under the plan's key, so that
    /// `run` reuses it (instead of a checkpoint in --out; --max-epochs is the profile's).
    #[arg(long, value_name = "PROFILE")]
    plan: Option<String>,
    /// With --plan: the runs folder (default runs/<profile>).
    #[arg(long, requires = "plan")]
    runs_dir: Option<PathBuf>,
}

/// A run command line's flags alone, parsed (for `train --plan`).
#[derive(Parser)]
struct RunFlags {
    #[command(flatten)]
    args: ReproduceArgs,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    runtime::keep_freed_memory();
    let threads = cli.global.threads.unwrap_or_else(runtime::default_threads);
    runtime::set_threads(threads)?;
    let device = runtime::device_from_flag(&cli.global.device)?;
    let dataset = cli.global.dataset;
    let data_dir = data::resolve_data_dir(cli.global.data_dir.as_deref(), dataset);
    // Every default folder of a non-MNIST dataset carries its name.
    let folder = |profile: &str| dataset_folder(dataset, profile);
    let env = || RunEnv {
        seed: cli.global.seed,
        threads,
        device,
        dataset,
        data_dir: data_dir.clone(),
        global: cli.global.clone(),
    };
    match cli.command {
        Command::Data(DataCommand::Check { split, no_checksum }) => {
            data_check(&data_dir, split.spec(), policy(no_checksum, dataset))
        }
        Command::Data(DataCommand::MakeFixture { out, train, test }) => {
            let raw = RawDataset::load(&data_dir, ChecksumPolicy::Require(dataset))?;
            data::write_subset(&raw, &out, train, test)?;
            println!(
                "wrote the first {train} training and {test} test images of {} to {}",
                data_dir.display(),
                out.display()
            );
            Ok(())
        }
        Command::Eval(args) => eval_command(&args, &env()),
        Command::Attack(args) => attack_command(&args, &env()),
        Command::Whitebox(args) => whitebox_command(&args, &env()),
        Command::Train(args) if args.plan.is_some() => train_plan_model(&args, &env()),
        Command::Train(args) => {
            train_command(&args, &data_dir, dataset, device, cli.global.seed, threads)
        }
        Command::Reproduce(args) => reproduce_command(args, &env()),
        Command::Plan {
            args,
            dry_run: _,
            emit,
        } => match emit.emit {
            EmitArg::Table => plan_command(&args, &env(), PlanView::Summary),
            EmitArg::Slurm | EmitArg::Json => emit_plan(&args, &emit, &env()),
        },
        Command::Job(JobCommand::Status { args }) => plan_command(&args, &env(), PlanView::Status),
        Command::Job(JobCommand::Run {
            key,
            args,
            wait,
            attempts,
        }) => {
            let opts = reproduce::JobRunOptions {
                wait,
                attempts,
                ..Default::default()
            };
            job_run_command(&key, &args, &opts, &env())
        }
        Command::Report {
            profile,
            protocol,
            code_budget,
            dir,
            paper_tables,
        } => {
            let budget: CodeBudget = code_budget.map_or(CodeBudget::AsWritten, Into::into);
            let suffix = if protocol == ProtocolArg::Code {
                budget.dir_suffix()
            } else {
                ""
            };
            render_report(
                &dir.unwrap_or_else(|| {
                    PathBuf::from("reports").join(format!("{}{suffix}", folder(&profile)))
                }),
                &paper_tables,
            )
        }
    }
}

/// What every run-like command shares: the global flags, resolved.
struct RunEnv {
    seed: u64,
    threads: usize,
    device: tch::Device,
    dataset: Dataset,
    data_dir: PathBuf,
    global: Global,
}

impl RunEnv {
    /// A default folder's name: a non-MNIST dataset's carries the dataset's name.
    fn folder(&self, profile: &str) -> String {
        dataset_folder(self.dataset, profile)
    }
}

/// A checked run configuration and the protocol it follows.
struct RunSetup {
    cfg: ReproduceConfig,
    code: bool,
    mult: Multipliers,
    budget: CodeBudget,
}

impl RunSetup {
    fn code_run(&self) -> code_protocol::CodeRunSpec<'_> {
        code_protocol::CodeRunSpec {
            cfg: &self.cfg,
            budget: self.budget,
            mult: self.mult,
        }
    }
}

fn reproduce_command(args: ReproduceArgs, env: &RunEnv) -> Result<()> {
    let workers = args.workers;
    if workers == 0 {
        bail!("--workers 0: at least one process must run the plan");
    }
    let setup = run_setup(args, env)?;
    let plan = plan_of(&setup)?;
    let cfg = &setup.cfg;
    let sgemm =
        (cfg.device == tch::Device::Cpu).then(bayes_robust::experiment::flops::sgemm_gflops);
    eprintln!("plan: {}", plan.summary(&cfg.runs_dir, sgemm));
    let report = if workers > 1 {
        bayes_robust::experiment::plan::drain_growing(
            || plan_of(&setup),
            |p| p.jobs.len(),
            |p| drain_in_workers(p, &setup, env, workers),
        )?
    } else if setup.code {
        code_protocol::run_code_plan(setup.code_run())?
    } else {
        reproduce::run_plan(cfg)?
    };
    eprintln!(
        "plan: {} job(s) computed in {}, {} already cached, {} made by another process",
        report.computed,
        if workers > 1 {
            format!("{workers} worker processes")
        } else {
            "this process".to_owned()
        },
        report.already_cached,
        report.left_to_others
    );
    let (code, budget) = (setup.code, setup.budget);
    if code {
        code_protocol::reproduce_code(cfg, setup.mult, budget)?;
    } else {
        reproduce::reproduce(cfg)?;
    }
    let tables = Path::new("reports/paper_tables.json");
    render_report(&cfg.out_dir, tables)?;
    // The text report of the same profile gains the margin section from these
    // results: re-render it when it is there.
    let text_dir = PathBuf::from("reports").join(env.folder(&cfg.profile.name));
    let default_code_dir =
        PathBuf::from("reports").join(format!("{}{}", cfg.profile.name, budget.dir_suffix()));
    if code && cfg.out_dir == default_code_dir && text_dir.join("results.json").exists() {
        render_report(&text_dir, tables)?;
    }
    Ok(())
}

/// The worker command of one job: this binary with the same global flags and run
/// flags, `job run <key>`.
fn worker_command(
    job: &bayes_robust::experiment::plan::Job,
    setup: &RunSetup,
    env: &RunEnv,
) -> std::process::Command {
    let cfg = &setup.cfg;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("bayes-robust"));
    let mut c = std::process::Command::new(exe);
    c.arg("--seed").arg(env.seed.to_string());
    c.arg("--threads").arg(env.threads.to_string());
    c.arg("--dataset").arg(env.dataset.name());
    c.arg("--data-dir").arg(&env.data_dir);
    c.arg("--device").arg(&env.global.device);
    c.args([
        "job",
        "run",
        &job.key.id,
        "--quiet",
        "--profile",
        &cfg.profile.name,
    ]);
    c.arg("--runs-dir").arg(&cfg.runs_dir);
    // The flags that add jobs or change keys, so that the worker's plan is this one.
    c.args(cfg.plan_flags());
    if setup.code {
        c.args(["--protocol", "code"]);
        if setup.budget == CodeBudget::TrainedToAccuracy {
            c.args(["--code-budget", "trained"]);
        }
        // The multipliers name the evaluations' keys.
        if setup.mult != Multipliers::CODE {
            c.arg("--multiplier-bnn").arg(setup.mult.bnn.to_string());
            c.arg("--multiplier-det").arg(setup.mult.det.to_string());
        }
    }
    c
}

fn drain_in_workers(
    plan: &bayes_robust::experiment::plan::Plan,
    setup: &RunSetup,
    env: &RunEnv,
    workers: usize,
) -> Result<bayes_robust::experiment::plan::DrainReport> {
    let cfg = &setup.cfg;
    let left = plan.summary(&cfg.runs_dir, None).to_compute;
    let progress = bayes_robust::progress::bar(left, "   jobs", "", cfg.verbose);
    let report = bayes_robust::experiment::plan::drain(
        plan,
        &cfg.runs_dir,
        workers,
        &|job| worker_command(job, setup, env),
        &progress,
    )?;
    progress.finish_and_clear();
    Ok(report)
}

/// What `plan` and `job status` print.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PlanView {
    Summary,
    Status,
}

/// The plan of a checked run configuration: the text or the code protocol's.
fn plan_of(setup: &RunSetup) -> Result<Plan> {
    Ok(if setup.code {
        code_protocol::code_plan(&setup.cfg, setup.budget, setup.mult)?
    } else {
        reproduce::text_plan(&setup.cfg)?
    })
}

/// The checked configuration and the plan of these run flags.
fn run_plan_of(args: &ReproduceArgs, env: &RunEnv) -> Result<(ReproduceConfig, Plan)> {
    let setup = run_setup(args.clone(), env)?;
    let plan = plan_of(&setup)?;
    Ok((setup.cfg, plan))
}

fn plan_command(args: &ReproduceArgs, env: &RunEnv, view: PlanView) -> Result<()> {
    let (cfg, plan) = run_plan_of(args, env)?;
    let cfg = &cfg;
    let cached = plan.cached(&cfg.runs_dir);
    println!("| kind | key | cached | GFLOP | what |\n|---|---|---|---|---|");
    for (job, c) in plan.jobs.iter().zip(&cached) {
        if view == PlanView::Summary && *c {
            continue;
        }
        println!(
            "| {} | {} | {} | {:.0} | {} |",
            serde_json::to_value(job.kind)?.as_str().unwrap_or("?"),
            job.key.id,
            if *c { "yes" } else { "no" },
            job.flops / 1e9,
            job.label
        );
    }
    let sgemm =
        (cfg.device == tch::Device::Cpu).then(bayes_robust::experiment::flops::sgemm_gflops);
    println!(
        "\n{} (runs folder {})",
        plan.summary(&cfg.runs_dir, sgemm),
        cfg.runs_dir.display()
    );
    if plan.finish.flops > 0.0 {
        println!(
            "Then {:.0} GFLOP counted in `run`'s own process, or as jobs `run` plans once the lambda = 0 net's sweep row is measured (the strength axis's paper-matched claim points){}.",
            plan.finish.flops / 1e9,
            sgemm.map_or(String::new(), |g| format!(
                ", {} at this machine's sgemm rate",
                bayes_robust::experiment::plan::human_seconds(plan.finish.flops / (g * 1e9))
            ))
        );
    }
    if view == PlanView::Summary {
        println!(
            "Cached jobs are not listed (`bayes-robust job status` lists every job). After these, `run` plans again what waited on a measured value (the strength axis's paper-matched claim points, matched on the sweep, and its study across seeds; the code protocol's weight-noise controls, whose sigma is learned) and drains it, then assembles results.json and what is written beside it (the per-example files, from the cached counts) in its own process."
        );
    }
    Ok(())
}

/// `plan --emit slurm|json`: the plan as a Slurm submission script or as data, on stdout.
fn emit_plan(args: &ReproduceArgs, emit: &EmitArgs, env: &RunEnv) -> Result<()> {
    use bayes_robust::experiment::slurm;
    let (cfg, plan) = run_plan_of(args, env)?;
    let cfg = &cfg;
    let cached = plan.cached(&cfg.runs_dir);
    let sizing = slurm::Sizing {
        cpus: emit.cpus_per_job,
        sgemm_gflops: bayes_robust::experiment::flops::sgemm_gflops(),
    };
    if emit.emit == EmitArg::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&slurm::plan_json(&plan, &cached, &sizing))?
        );
        return Ok(());
    }
    let (global, run_flags) = plan_invocation(std::env::args().skip(1).collect())?;
    let workdir = std::env::current_dir()?;
    let commands = slurm::SlurmCommands {
        exe: std::env::current_exe()?,
        log_dir: workdir.join(&cfg.runs_dir).join("slurm-logs"),
        workdir,
        global,
        run_flags,
        sbatch_args: emit
            .sbatch_args
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        attempts: emit.attempts,
    };
    print!(
        "{}",
        slurm::slurm_script(&plan, &cached, &sizing, &commands)
    );
    Ok(())
}

/// Splits this `plan` command line into its global flags (before `plan`, without
/// `--threads`) and its run flags (after it, without the flags of `plan` itself), which
/// `job run <key>` and `run` take as they are.
fn plan_invocation(argv: Vec<String>) -> Result<(Vec<String>, Vec<String>)> {
    const DROP_WITH_VALUE: [&str; 5] = [
        "--threads",
        "--emit",
        "--sbatch-args",
        "--cpus-per-job",
        "--attempts",
    ];
    let mut i = 0;
    while i < argv.len() && argv[i].starts_with("--") {
        i += if argv[i].contains('=') { 1 } else { 2 };
    }
    if argv.get(i).map(String::as_str) != Some("plan") {
        bail!("--emit slurm: cannot find the `plan` subcommand in the command line");
    }
    let filter = |args: &[String]| {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a.split('=').next().unwrap_or(a);
            if DROP_WITH_VALUE.contains(&name) {
                if !a.contains('=') {
                    it.next();
                }
            } else if a != "--dry-run" {
                out.push(a.clone());
            }
        }
        out
    };
    Ok((filter(&argv[..i]), filter(&argv[i + 1..])))
}

fn job_run_command(
    key: &str,
    args: &ReproduceArgs,
    opts: &reproduce::JobRunOptions,
    env: &RunEnv,
) -> Result<()> {
    use bayes_robust::experiment::plan::{EXIT_CLAIMED, EXIT_MISSING_INPUT};
    let setup = run_setup(args.clone(), env)?;
    let outcome = if setup.code {
        code_protocol::run_code_job(setup.code_run(), key, opts)
    } else {
        reproduce::run_job(&setup.cfg, key, opts)
    };
    match outcome {
        Ok(reproduce::JobRun::Computed) => {
            eprintln!("job {key}: computed");
            Ok(())
        }
        Ok(reproduce::JobRun::Cached) => {
            eprintln!("job {key}: already cached");
            Ok(())
        }
        Ok(reproduce::JobRun::Claimed) => {
            eprintln!("job {key}: another live process holds its claim");
            std::process::exit(EXIT_CLAIMED);
        }
        Err(e @ reproduce::ReproduceError::MissingInput { .. }) => {
            eprintln!("error: {e}");
            std::process::exit(EXIT_MISSING_INPUT);
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks the run flags and builds the configuration.
fn run_setup(args: ReproduceArgs, env: &RunEnv) -> Result<RunSetup> {
    let dataset = env.dataset;
    let device = env.device;
    let threads = env.threads;
    let data_dir = env.data_dir.clone();
    let profile = profile_named(&args.profile)?;
    let code = args.protocol == ProtocolArg::Code;
    let default_mult = if code {
        Multipliers::CODE
    } else {
        Multipliers::TEXT
    };
    let mult = Multipliers {
        bnn: args.multiplier_bnn.unwrap_or(default_mult.bnn),
        det: args.multiplier_det.unwrap_or(default_mult.det),
    };
    for (flag, m) in [
        ("--multiplier-bnn", mult.bnn),
        ("--multiplier-det", mult.det),
    ] {
        if !m.is_finite() || m < 0.0 {
            bail!("{flag} {m} must be a finite number ≥ 0");
        }
    }
    if !code && mult != Multipliers::TEXT {
        bail!(
            "--multiplier-bnn/--multiplier-det apply to --protocol code; the text protocol evaluates x + r (the code protocol's report sweeps m for every model)"
        );
    }
    if args.train_seeds == Some(0) {
        bail!("--train-seeds 0: K counts the training seeds and must be at least 1");
    }
    if code && args.train_seeds.is_some() {
        bail!(
            "--train-seeds belongs to the text protocol (it retrains the models of reports/<profile>/)"
        );
    }
    if code && dataset != Dataset::Mnist {
        bail!(
            "--protocol code reruns the authors' MNIST notebooks; use the text protocol with --dataset {dataset}"
        );
    }
    if code && args.whitebox {
        bail!(
            "--whitebox belongs to the text protocol (it attacks the models of reports/<profile>/)"
        );
    }
    if code && args.strength {
        bail!(
            "--strength belongs to the text protocol (the code protocol has its own multiplier sweep)"
        );
    }
    if !code && args.code_budget.is_some() {
        bail!("--code-budget applies to --protocol code");
    }
    let budget: CodeBudget = args.code_budget.map_or(CodeBudget::AsWritten, Into::into);
    let suffix = if code { budget.dir_suffix() } else { "" };
    let [default_runs, default_out] = default_folders(&profile, dataset, suffix);
    let cfg = ReproduceConfig {
        runs_dir: args.runs_dir.unwrap_or(default_runs),
        out_dir: args.out_dir.unwrap_or(default_out),
        profile,
        dataset,
        master_seed: env.seed,
        device,
        threads,
        data_dir,
        verbose: !args.quiet,
        whitebox: args.whitebox,
        strength: args.strength,
        per_example: args.per_example,
        prune_mode: args.pruning.map(|p| match p {
            PruningArg::Global => PruneMode::Global,
            PruningArg::PerTensor => PruneMode::PerTensor,
        }),
        train_seeds: args.train_seeds,
    };
    Ok(RunSetup {
        cfg,
        code,
        mult,
        budget,
    })
}

fn render_report(dir: &Path, paper_tables: &Path) -> Result<()> {
    let results = report::read_json(&dir.join("results.json"))?;
    let paper = report::read_json(paper_tables)?;
    // The text protocol's report adds the margin section when the code protocol's
    // results of the same profile sit beside it (reports/<profile>-code/ and
    // reports/<profile>-code-trained/).
    let mut code = Vec::new();
    if results["protocol"] != "code" {
        for budget in [CodeBudget::AsWritten, CodeBudget::TrainedToAccuracy] {
            let code_dir = dir.with_file_name(format!(
                "{}{}",
                dir.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                budget.dir_suffix()
            ));
            if code_dir.join("results.json").exists() {
                code.push(report::read_json(&code_dir.join("results.json"))?);
            }
        }
    }
    let code: Vec<&serde_json::Value> = code.iter().collect();
    let files = report::render_with_variants(&results, &paper, &code, dir)?;
    println!(
        "wrote {} ({} files)",
        dir.join("README.md").display(),
        files.len()
    );
    Ok(())
}

fn policy(no_checksum: bool, dataset: Dataset) -> ChecksumPolicy {
    if no_checksum {
        ChecksumPolicy::Skip
    } else {
        ChecksumPolicy::Require(dataset)
    }
}

fn data_check(dir: &Path, spec: SplitSpec, policy: ChecksumPolicy) -> Result<()> {
    let raw = RawDataset::load(dir, policy)
        .with_context(|| format!("loading the dataset in {}", dir.display()))?;
    println!("data folder: {}", dir.display());
    for f in raw.files() {
        println!(
            "  {:<40} {}",
            f.path
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            f.checksum
        );
    }
    let splits = Splits::from_raw(&raw, spec)?;
    let expected = [("train", spec.train), ("validation", spec.validation)];
    let mut problems = Vec::new();
    println!(
        "{:<11} {:>6}  label counts 0..9{:>37}pixel range",
        "split", "n", ""
    );
    for (name, split) in [
        ("train", &splits.train),
        ("validation", &splits.validation),
        ("test", &splits.test),
    ] {
        let counts = split.label_counts();
        let (lo, hi) = split.pixel_range();
        println!(
            "{name:<11} {:>6}  {}  [{lo:.4}, {hi:.4}]",
            split.len(),
            counts
                .iter()
                .map(|c| format!("{c:>5}"))
                .collect::<Vec<_>>()
                .join("")
        );
        if let Some((_, n)) = expected.iter().find(|(e, _)| *e == name)
            && split.len() != *n
        {
            problems.push(format!("{name} has {} examples, expected {n}", split.len()));
        }
        if lo < 0.0 || hi > data::INPUT_MAX + 1e-6 {
            problems.push(format!(
                "{name} pixels span [{lo}, {hi}], outside [0, 255/126]"
            ));
        }
    }
    if !problems.is_empty() {
        bail!("data check failed: {}", problems.join("; "));
    }
    println!(
        "ok: inputs scaled by 1/{} to [0, {:.4}]",
        data::PIXEL_DIVISOR,
        data::INPUT_MAX
    );
    Ok(())
}

/// The checkpoint stem of `path` (`x`, `x.json` or `x.safetensors` all name `x`).
fn checkpoint_stem(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    for ext in [".safetensors", ".json"] {
        if let Some(stem) = s.strip_suffix(ext) {
            return PathBuf::from(stem);
        }
    }
    path.to_owned()
}

fn eval_command(args: &EvalArgs, env: &RunEnv) -> Result<()> {
    if args.runs == 0 || args.ensemble_runs == 0 || args.ensemble.contains(&0) {
        bail!("--runs, --ensemble-runs and every --ensemble size must be at least 1");
    }
    if !(args.multiplier.is_finite() && args.multiplier >= 0.0) {
        bail!(
            "--multiplier {}: must be a finite number ≥ 0",
            args.multiplier
        );
    }
    let stem = checkpoint_stem(&args.checkpoint);
    let meta = bayes_robust::model::checkpoint::read_meta(&stem)?;
    let (model, _) = TrainedModel::load(&meta.model, env.device, &stem)?;
    let raw = RawDataset::load(&env.data_dir, policy(args.no_checksum, env.dataset))?;
    let splits = Splits::from_raw(&raw, args.split.spec())?.to_device(env.device);
    let n = args.examples.unwrap_or(usize::MAX);
    let seeds = SeedTree::new(env.seed);
    println!("checkpoint: {} ({})", stem.display(), meta.model.describe());
    for (name, split) in [
        ("validation", splits.validation.head(n)),
        ("test", splits.test.head(n)),
    ] {
        print_accuracies(name, &model, &split, args, &seeds);
    }
    for path in &args.sets {
        let (name, split) = perturbation_set(path, &splits.test, args, env.device)?;
        print_accuracies(&name, &model, &split, args, &seeds);
    }
    Ok(())
}

/// The set at `path` (tensor `delta`, the raw r of the first n test images) held to
/// `--budget` at x + m·r, with its name; prints its size and mean distortion.
fn perturbation_set(
    path: &Path,
    test: &bayes_robust::data::Split,
    args: &EvalArgs,
    device: tch::Device,
) -> Result<(String, bayes_robust::data::Split)> {
    use bayes_robust::attack::{BudgetReading, budget};
    let stem = checkpoint_stem(path);
    let key = stem
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("--set {}: needs a file name", path.display()))?;
    let dir =
        bayes_robust::experiment::cache::ArtifactDir::new(stem.parent().unwrap_or(Path::new(".")));
    let delta = dir
        .read_tensors(&key)?
        .into_iter()
        .find(|(n, _)| n == "delta")
        .map(|(_, t)| t.to_device(device))
        .with_context(|| format!("--set {}: no tensor `delta` in it", path.display()))?;
    let n = delta.size().first().copied().unwrap_or(0) as usize;
    if delta.size().len() != 2 || n == 0 || n > test.len() {
        bail!(
            "--set {}: perturbations of shape {:?}, not [n ≤ {}, 784] of the test images",
            path.display(),
            delta.size(),
            test.len()
        );
    }
    let test = test.head(n);
    let reading = BudgetReading::from(args.budget);
    let (r, scaled) = reading.apply(&delta, 0.10);
    let images = budget::at_strength(&test.images, &r, args.multiplier);
    println!(
        "set {key}: {n} test images, {} (scaled {:.1}%), m = {}, mean distortion {:.4}",
        reading.label(),
        100.0 * scaled,
        args.multiplier,
        budget::mean_distortion(&test.images, &images)
    );
    let split = bayes_robust::data::Split {
        images,
        labels: test.labels,
    };
    Ok((format!("set {key}"), split))
}

/// Prints a net's accuracy on `split`, or a BNN's single-draw and ensemble accuracies.
fn print_accuracies(
    name: &str,
    model: &TrainedModel,
    split: &bayes_robust::data::Split,
    args: &EvalArgs,
    seeds: &SeedTree,
) {
    let chunks = EvalChunks {
        examples: 10_000,
        draws: 10,
    };
    match model {
        TrainedModel::Mlp { mlp, .. } => {
            println!(
                "{name} accuracy (%): {:.2}",
                100.0 * eval::accuracy(mlp, split, chunks)
            );
        }
        TrainedModel::Bnn { bnn, .. } => {
            seeds.seed_torch(&format!("eval-checkpoint/{name}/single"));
            let runs = eval::single_draw_accuracies(bnn, split, args.runs, chunks);
            if let Some(m) = eval::summarize_percent(&runs) {
                println!(
                    "{name} one draw (%): {:.2} [{:.2}, {:.2}] over {} runs",
                    m.mean, m.ci95[0], m.ci95[1], args.runs
                );
            }
            for &k in &args.ensemble {
                seeds.seed_torch(&format!("eval-checkpoint/{name}/ensemble-{k}"));
                let acc = eval::ensemble_accuracies(bnn, split, k, args.ensemble_runs, chunks);
                if let Some(m) = eval::summarize_percent(&acc) {
                    println!(
                        "{name} ensemble of {k} (%): {:.2} [{:.2}, {:.2}] over {} runs",
                        m.mean, m.ci95[0], m.ci95[1], args.ensemble_runs
                    );
                }
            }
        }
    }
}

/// The profile of `--profile`, or an error listing the profiles.
fn profile_named(name: &str) -> Result<Profile> {
    Profile::by_name(name).with_context(|| {
        format!(
            "--profile {name:?} is not one of {}",
            Profile::NAMES.join(", ")
        )
    })
}

fn whitebox_command(args: &WhiteboxArgs, env: &RunEnv) -> Result<()> {
    use bayes_robust::experiment::whitebox::{self, Target, TargetKind};
    let profile = profile_named(&args.profile)?;
    if args.eot_k == 0 {
        bail!("--eot-k must be at least 1");
    }
    let stem = checkpoint_stem(&args.checkpoint);
    let meta = bayes_robust::model::checkpoint::read_meta(&stem)?;
    let (model, _) = TrainedModel::load(&meta.model, env.device, &stem)?;
    let kind = match (args.kind, &model) {
        (None, TrainedModel::Mlp { .. }) | (Some(TargetKindArg::Deterministic), _) => {
            TargetKind::Deterministic
        }
        (None, TrainedModel::Bnn { .. }) | (Some(TargetKindArg::Ensemble), _) => {
            TargetKind::Ensemble { k: args.eot_k }
        }
        (Some(TargetKindArg::SingleDraw), _) => TargetKind::SingleDraw,
        (Some(TargetKindArg::PosteriorMean), _) => TargetKind::PosteriorMean,
        (Some(TargetKindArg::FrozenSample), _) => TargetKind::FrozenSample,
    };
    let target = Target::of(&model, kind).with_context(|| {
        format!(
            "--kind does not fit {} ({}): a deterministic net is attacked as deterministic, a BNN by one of its kinds",
            stem.display(),
            meta.model.describe()
        )
    })?;
    let raw = RawDataset::load(&env.data_dir, policy(args.no_checksum, env.dataset))?;
    let splits = Splits::from_raw(&raw, args.split.spec())?.to_device(env.device);
    let n = profile
        .eval_examples
        .unwrap_or(usize::MAX)
        .min(profile.whitebox.examples);
    let test = splits.test.head(n);
    let name = args.name.clone().unwrap_or_else(|| meta.model.describe());
    eprintln!("white-box {name} on {} test images", test.len());
    let curves = whitebox::curves(
        &name,
        &target,
        &test,
        &profile.whitebox,
        &SeedTree::new(env.seed),
    );
    if let Some(out) = &args.out {
        bayes_robust::fsio::write_atomic(out, &serde_json::to_vec_pretty(&curves)?)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("{}", serde_json::to_string_pretty(&curves)?);
    Ok(())
}

/// What `attack` writes beside its tensors.
#[derive(serde::Serialize)]
struct AttackSetRecord {
    checkpoint: PathBuf,
    model: String,
    n: usize,
    mean_distortion: f64,
    success_rate: f64,
    seconds: f64,
    attack: bayes_robust::attack::MinNormAttack,
}

fn attack_command(args: &AttackArgs, env: &RunEnv) -> Result<()> {
    let profile = profile_named(&args.profile)?;
    let stem = checkpoint_stem(&args.checkpoint);
    let meta = bayes_robust::model::checkpoint::read_meta(&stem)?;
    let (model, _) = TrainedModel::load(&meta.model, env.device, &stem)?;
    let TrainedModel::Mlp { mlp, .. } = &model else {
        bail!(
            "{}: the min-norm attack's sources are deterministic nets, and this is {}",
            stem.display(),
            meta.model.describe()
        );
    };
    let raw = RawDataset::load(&env.data_dir, policy(args.no_checksum, env.dataset))?;
    let splits = Splits::from_raw(&raw, args.split.spec())?.to_device(env.device);
    let n = args
        .examples
        .or(profile.eval_examples)
        .unwrap_or(usize::MAX);
    let test = splits.test.head(n);
    let attack = bayes_robust::attack::MinNormAttack {
        kappa: args.kappa.unwrap_or(profile.attack.kappa),
        c: args.c.unwrap_or(profile.attack.c),
        search_rounds: args.search_rounds.unwrap_or(profile.attack.search_rounds),
        ..profile.attack.clone()
    };
    if !(attack.c.is_finite() && attack.c > 0.0) {
        bail!("--c {}: the weight of the norm must be positive", attack.c);
    }
    eprintln!(
        "attacking {} test images against {} ({} steps, c = {}, κ = {})",
        test.len(),
        meta.model.describe(),
        attack.steps,
        attack.c,
        attack.kappa
    );
    let t0 = std::time::Instant::now();
    let (delta, outcome) = attack.run_split(mlp, &test, profile.attack_chunk);
    let record = AttackSetRecord {
        checkpoint: stem.clone(),
        model: meta.model.describe(),
        n: test.len(),
        mean_distortion: outcome.mean_distortion(),
        success_rate: outcome.success_rate(),
        seconds: t0.elapsed().as_secs_f64(),
        attack,
    };
    let dir = bayes_robust::experiment::cache::ArtifactDir::new(
        args.out.parent().unwrap_or(Path::new(".")),
    );
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--out needs a file name")?;
    dir.discard(&name)?;
    dir.write_with_tensors(
        &name,
        &[
            ("delta", &delta.to_device(tch::Device::Cpu)),
            ("norms", &outcome.norms.to_device(tch::Device::Cpu)),
        ],
        &record,
    )?;
    println!(
        "mean distortion: {:.6}\nsuccess rate (%): {:.2}\nset: {}.safetensors",
        record.mean_distortion,
        100.0 * record.success_rate,
        args.out.display()
    );
    Ok(())
}

/// `train --plan P`: the plan job that trains the model of this spec, run here.
fn train_plan_model(args: &TrainArgs, env: &RunEnv) -> Result<()> {
    let profile = args.plan.clone().unwrap_or_default();
    let mut flags = vec!["run".to_owned(), "--profile".into(), profile.clone()];
    if let Some(dir) = &args.runs_dir {
        flags.push("--runs-dir".into());
        flags.push(dir.display().to_string());
    }
    if args.quiet {
        flags.push("--quiet".into());
    }
    let run_args = RunFlags::try_parse_from(flags)?.args;
    let (cfg, plan) = run_plan_of(&run_args, env)?;
    let (spec, _) = train_spec(args)?;
    let spec_json = serde_json::to_value(&spec)?;
    let job = plan
        .jobs
        .iter()
        .find(|j| {
            j.kind == bayes_robust::experiment::plan::JobKind::TrainModel
                && j.key.config["spec"] == spec_json
        })
        .with_context(|| {
            format!(
                "no model of the {profile} plan is {} (`bayes-robust job status --profile {profile}` lists them)",
                spec.describe()
            )
        })?;
    let outcome = reproduce::run_job(&cfg, &job.key.id, &Default::default())?;
    println!(
        "{}: {} ({:?}); checkpoint {}",
        job.label,
        job.key.id,
        outcome,
        cfg.runs_dir
            .join("models")
            .join(format!("{}.safetensors", job.key.id))
            .display()
    );
    Ok(())
}

/// The model spec of `train`'s flags and its checkpoint's name.
fn train_spec(args: &TrainArgs) -> Result<(ModelSpec, String)> {
    let arch: Arch = args.hidden.parse()?;
    Ok(match args.model {
        ModelKind::Mlp => {
            if args.lambda < 0.0 || !args.lambda.is_finite() {
                bail!("--lambda {} must be a finite value >= 0", args.lambda);
            }
            let config = MlpConfig {
                arch: arch.clone(),
                init: MlpInit::GlorotUniform,
            };
            (
                ModelSpec::Mlp {
                    config,
                    lambda: args.lambda,
                },
                format!("mlp_{}_lambda={}", arch, args.lambda),
            )
        }
        ModelKind::Bnn => {
            if !args.rho_init.is_finite() {
                bail!("--rho-init {} must be finite", args.rho_init);
            }
            let config = BayesConfig {
                arch: arch.clone(),
                ..BayesConfig::with_rho_init(args.rho_init)
            };
            (
                ModelSpec::Bnn { config },
                format!("bnn_{}_rho={}", arch, args.rho_init),
            )
        }
    })
}

fn train_command(
    args: &TrainArgs,
    data_dir: &Path,
    dataset: Dataset,
    device: tch::Device,
    master: u64,
    threads: usize,
) -> Result<()> {
    if args.max_epochs == 0 {
        bail!("--max-epochs must be at least 1");
    }
    let (spec, name) = train_spec(args)?;
    let raw = RawDataset::load(data_dir, policy(args.no_checksum, dataset))?;
    let splits = Splits::from_raw(&raw, args.split.spec())?.to_device(device);
    let (recipe, name) = match (args.protocol, args.model) {
        (ProtocolArg::Text, _) => (Recipe::paper(args.max_epochs), name),
        (ProtocolArg::Code, ModelKind::Mlp) => (
            code_protocol::det_recipe(&code_protocol::CodeProfile::paper(), args.max_epochs),
            format!("{name}_code"),
        ),
        (ProtocolArg::Code, ModelKind::Bnn) => (
            Recipe {
                max_epochs: args.max_epochs,
                ..code_protocol::bnn_recipe(&code_protocol::CodeProfile::paper())
            },
            format!("{name}_code"),
        ),
    };
    let name = match dataset {
        Dataset::Mnist => name,
        d => format!("{d}_{name}"),
    };
    let seeds = SeedTree::new(master).child(&format!("train/{name}"));
    let stem = args.out.join(&name);
    eprintln!(
        "training {} on {} threads, {:?}; seed {master} / {}",
        spec.describe(),
        threads,
        device,
        seeds.prefix()
    );
    let options = TrainOptions {
        verbose: !args.quiet,
        label: name.clone(),
    };
    let (model, meta) =
        train::train_and_save(&spec, &splits, &recipe, &seeds, device, &stem, &options)?;
    println!(
        "{}: {} epochs, best validation {:.2}% at epoch {}, {:.1}s; checkpoint {}.safetensors",
        spec.describe(),
        meta.epochs_run,
        100.0 * meta.best_validation_accuracy,
        meta.best_epoch,
        meta.wall_seconds,
        stem.display()
    );
    let chunks = EvalChunks::default();
    match &model {
        TrainedModel::Mlp { mlp, .. } => {
            for (label, split) in [("validation", &splits.validation), ("test", &splits.test)] {
                println!(
                    "{label} accuracy: {:.2}%",
                    100.0 * eval::accuracy(mlp, split, chunks)
                );
            }
        }
        TrainedModel::Bnn { bnn, .. } => report_bnn(bnn, &splits, &seeds, args.eval_runs, chunks)?,
    }
    Ok(())
}

fn report_bnn(
    bnn: &BayesMlp,
    splits: &Splits,
    seeds: &SeedTree,
    runs: usize,
    chunks: EvalChunks,
) -> Result<()> {
    for (label, split) in [("validation", &splits.validation), ("test", &splits.test)] {
        seeds.seed_torch(&format!("eval/{label}"));
        let accs = eval::single_draw_accuracies(bnn, split, runs, chunks);
        let m = eval::summarize_percent(&accs).context("no evaluation runs")?;
        println!(
            "{label} accuracy, one weight draw per pass, {runs} passes: {:.2}% ± {:.2} (95% CI)",
            m.mean,
            m.half_width()
        );
    }
    let mean_acc = tch::no_grad(|| {
        train::per_draw_accuracy(
            &bnn.logits(&splits.test.images, bayes_robust::model::WeightMode::Mean)
                .unsqueeze(0),
            &splits.test.labels,
        )
        .double_value(&[0])
    });
    println!(
        "test accuracy of the posterior mean: {:.2}%",
        100.0 * mean_acc
    );
    seeds.seed_torch("eval/test/ensemble");
    let ensemble = eval::ensemble_accuracies(bnn, &splits.test, 100, 1, chunks);
    println!(
        "test accuracy of the 100-draw ensemble (eq. 7): {:.2}%",
        100.0 * ensemble.first().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
