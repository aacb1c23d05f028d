//! `prefix-tune`: train, run, convert and score prefixes for frozen language models.
//!
//! The binary is a thin `main` over [`run`]; the examples call [`run`] with the paper's
//! settings.

mod bench;
mod eval;
mod export;
mod generate;
mod metrics;
mod prefixes;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "prefix-tune", version, about = "Prefix-Tuning (Li & Liang, 2021) for GPT-2, on Burn", args_override_self = true)]
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
    /// Score a predictions file against a data set's references.
    Metrics(metrics::MetricsArgs),
    /// Benchmarks (JSON): decoding and training speed on a GPT-2-small-shaped random model.
    Bench(bench::BenchArgs),
}

/// The command line with a `--config FILE`'s options spliced in before the real flags.
fn with_config_file(args: Vec<String>) -> Result<Vec<String>, String> {
    let Some(at) = args.iter().position(|a| a == "--config") else {
        return Ok(args);
    };
    let path = args.get(at + 1).ok_or("--config needs a file")?;
    let from_file = train::config_file_args(std::path::Path::new(path))?;
    // program, subcommand, file options, then the command line's own (which win).
    let mut spliced = args[..2.min(args.len())].to_vec();
    spliced.extend(from_file);
    spliced.extend(args[2.min(args.len())..].iter().cloned());
    Ok(spliced)
}

/// Runs a `prefix-tune` command line (`args[0]` is the program name).
pub fn run(args: Vec<String>) -> Result<(), String> {
    let cli = Cli::try_parse_from(with_config_file(args)?).map_err(|e| {
        // Help and version are not errors: print them the way clap does, then stop.
        if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
            let _ = e.print();
            std::process::exit(0);
        }
        e.to_string().lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string()
    })?;
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Metrics(args) => metrics::run(args),
    }
}
