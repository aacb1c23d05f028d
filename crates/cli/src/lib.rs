//! `prefix-tune`: train, run, convert and score prefixes for frozen language models.
//!
//! The binary is a thin `main` over [`run`]; the examples call [`run`] with the paper's
//! settings.

mod arch;
mod bench;
mod bench_matmul;
mod bench_serve;
mod devices;
pub mod error;
mod eval;
mod export;
mod generate;
mod metrics;
pub mod out_of_memory;
mod models;
mod score;
mod train;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use error::CliError;
use error::Result;

#[derive(Parser)]
#[command(name = "prefix-tune", version, about = "Prefix-Tuning (Li & Liang, 2021) for GPT-2 and BART, on Burn", args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue prompts with a model, optionally prefixed (one prefix, or one per prompt).
    Generate(generate::GenerateArgs),
    /// Train a prefix on a frozen model.
    Train(train::TrainArgs),
    /// Convert a prefix: our export format or a PEFT adapter.
    Export(export::ExportArgs),
    /// Decode a data split with the paper's settings and score it.
    Eval(eval::EvalArgs),
    /// Teacher-forced NLL of given targets, per example (GPT-2 or BART, with or without a prefix).
    Score(score::ScoreArgs),
    /// Score a predictions file against a data set's references.
    Metrics(metrics::MetricsArgs),
    /// Serve one frozen model with many prefixes over an OpenAI-compatible HTTP API.
    Serve(prefix_tune_serve::ServeArgs),
    /// Benchmarks (JSON): decoding and training speed on a GPT-2-small-shaped random model.
    Bench(bench::BenchArgs),
    /// The backends compiled in, the GPU adapters seen, and what `--backend auto` picks.
    Devices(devices::DevicesArgs),
}

/// clap's error as one line; a wrong choice keeps the list of valid ones.
fn one_line(error: clap::Error) -> CliError {
    // Help and version are not errors: print them the way clap does, then stop.
    if matches!(error.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = error.print();
        std::process::exit(0);
    }
    let text = error.to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut message = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
    if let Some(choices) = lines.find(|l| l.starts_with("[possible values:")) {
        message = format!("{message} {choices}");
    }
    CliError::usage(message)
}

/// The options of `subcommand` typed by the user, not defaulted.
fn given_options(matches: &ArgMatches, subcommand: &str) -> Vec<String> {
    let Some(sub) = matches.subcommand_matches(subcommand) else { return Vec::new() };
    sub.ids().filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine)).map(|id| id.to_string()).collect()
}

/// Runs a `prefix-tune` command line (`args[0]` is the program name).
pub fn run(args: Vec<String>) -> Result<()> {
    let matches = Cli::command().try_get_matches_from(args).map_err(one_line)?;
    let cli = Cli::from_arg_matches(&matches).map_err(one_line)?;
    // A command that sizes its work by a batch reports running out of GPU memory with it; any
    // other place (loading a model too large for the adapter, a benchmark) reports it here.
    out_of_memory::guard(None, "the model and its work do not fit this GPU: a larger one, or --backend flex", || match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args, &given_options(&matches, "train")),
        Command::Export(args) => export::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Metrics(args) => metrics::run(args),
        Command::Score(args) => score::run(args),
        Command::Serve(args) => Ok(prefix_tune_serve::run(args)?),
        Command::Devices(args) => devices::run(args),
    })
}
