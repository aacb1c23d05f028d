//! `prefix-tune export`: convert a prefix between our format and PEFT's (GPT-2 or BART).

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use crate::models::{self, Model};
use clap::Args;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::{backend, Bart};
use prefix_tune_prefix::{load_bart_prefix, load_prefix, save_bart_export, save_bart_peft, save_export, save_peft, BartLayout};

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
    /// The model the prefix belongs to: needed for a BART prefix (its layers and heads).
    #[arg(long)]
    model: Option<String>,
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
    let bart = match &args.model {
        Some(name) => match models::load(name, &device, Default::default())?.1 {
            Model::Bart(model) => Some(model),
            Model::Gpt2(_) => None,
        },
        None if looks_like_bart(&args.prefix) => {
            return Err(CliError::usage(format!("--model: {} is a BART prefix; give its model (for the layers and heads)", args.prefix.display())))
        }
        None => None,
    };
    let (length, base_model) = match bart {
        Some(model) => export_bart(&args, &model, &device)?,
        None => export_gpt2(&args, &device)?,
    };
    let size: u64 = std::fs::read_dir(&args.out).map_err(|e| CliError::io(&args.out, e))?.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("wrote {} ({length} virtual tokens, {size} bytes{})", args.out.display(), base_model.map(|m| format!(", for {m}")).unwrap_or_default());
    Ok(())
}

fn export_gpt2(args: &ExportArgs, device: &Device) -> Result<(usize, Option<String>)> {
    let loaded = load_prefix(&args.prefix, None, device)?;
    let base_model = args.base_model.clone().or(loaded.base_model);
    // Both formats keep the activations only: the MLP (if any) is dropped here.
    let prefix = loaded.prefix.materialize();
    match args.format {
        Format::Native => save_export(&prefix, base_model.as_deref(), "gpt2", &args.out)?,
        Format::Peft => save_peft(&prefix, base_model.as_deref(), &args.out)?,
    }
    Ok((prefix.length(), base_model))
}

fn export_bart(args: &ExportArgs, model: &Bart, device: &Device) -> Result<(usize, Option<String>)> {
    let loaded = load_bart_prefix(&args.prefix, BartLayout::of(&model.config), device)?;
    let base_model = args.base_model.clone().or(loaded.base_model).or(args.model.clone());
    let sets = loaded.sets.materialize();
    match args.format {
        Format::Native => save_bart_export(&sets, base_model.as_deref(), &args.out)?,
        Format::Peft => save_bart_peft(&sets, base_model.as_deref(), &args.out)?,
    }
    Ok((sets.lengths().iter().sum(), base_model))
}

/// Whether `path` holds a BART prefix: a BART export, per-set states, a seq2seq PEFT adapter,
/// or a run directory of one.
fn looks_like_bart(path: &Path) -> bool {
    let dir = if path.join("best").is_dir() && !path.join("prefix_config.json").is_file() { path.join("best") } else { path.to_path_buf() };
    let field = |file: &str, key: &str| -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).ok()?).ok()?;
        value.get(key)?.as_str().map(String::from)
    };
    field("prefix_config.json", "architecture").as_deref() == Some("bart")
        || field("adapter_config.json", "task_type").as_deref() == Some("SEQ_2_SEQ_LM")
        || ["encoder", "decoder", "cross"].iter().any(|s| dir.join(s).join("prefix_config.json").is_file())
}
