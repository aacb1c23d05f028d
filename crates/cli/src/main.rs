//! `prefix-tune`: train, run, convert and score prefixes for frozen language models.

mod bench;
mod export;
mod generate;
mod prefixes;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "prefix-tune", version, about = "Prefix-Tuning (Li & Liang, 2021) for GPT-2, on Burn")]
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
    /// Benchmarks (JSON): decoding and training speed on a GPT-2-small-shaped random model.
    Bench(bench::BenchArgs),
}

/// The command line with a `--config FILE`'s options spliced in before the real flags.
fn arguments() -> Result<Vec<String>, String> {
    let args: Vec<String> = std::env::args().collect();
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

fn main() -> ExitCode {
    let result = arguments().and_then(|args| {
        let cli = Cli::parse_from(args);
        match cli.command {
            Command::Generate(args) => generate::run(args),
            Command::Train(args) => train::run(args),
            Command::Export(args) => export::run(args),
            Command::Bench(args) => bench::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, no backtrace: the message names the file and the field at fault.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
