//! `prefix-tune export`: convert a prefix between our format and PEFT's.

use std::path::PathBuf;

use crate::error::{CliError, Result};
use clap::Args;
use prefix_tune_model::backend;
use prefix_tune_prefix::{load_prefix, save_export, save_peft};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An exported prefix, PEFT adapter, training state or run directory.
    #[arg(long)]
    prefix: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// native (prefix_config.json + prefix.safetensors) or peft (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_enum, default_value_t = Format::Native)]
    format: Format,
    /// The base model to record in the written files (default: what the input records).
    #[arg(long)]
    base_model: Option<String>,
    #[arg(long)]
    backend: Option<String>,
}

/// The file formats a prefix is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Native,
    Peft,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = backend::device(args.backend.as_deref())?;
    let loaded = load_prefix(&args.prefix, None, &device)?;
    let base_model = args.base_model.or(loaded.base_model);
    // Both formats keep the activations only: the MLP (if any) is dropped here.
    let prefix = loaded.prefix.materialize();
    match args.format {
        Format::Native => save_export(&prefix, base_model.as_deref(), "gpt2", &args.out)?,
        Format::Peft => save_peft(&prefix, base_model.as_deref(), &args.out)?,
    }
    let size: u64 = std::fs::read_dir(&args.out).map_err(|e| CliError::io(&args.out, e))?.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("wrote {} ({} virtual tokens, {size} bytes)", args.out.display(), prefix.length());
    Ok(())
}
