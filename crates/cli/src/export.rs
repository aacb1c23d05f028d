//! `prefix-tune export`: convert a prefix between our format and PEFT's (GPT-2 or BART).

use std::path::{Path, PathBuf};

use crate::error::{CliError, Result};
use crate::arch::Architecture;
use crate::models::{self, ModelJob};
use clap::Args;
use prefix_tune_model::backend::{self, Backend};
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::Gpt2;
use prefix_tune_prefix::{load_prefix, PrefixFormat, PrefixedModel};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An exported prefix, PEFT adapter, training state or run directory.
    #[arg(long)]
    prefix: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// native (prefix_config.json + prefix.safetensors) or peft (adapter_config.json + adapter_model.safetensors).
    #[arg(long, value_enum, default_value_t = PrefixFormat::Native)]
    format: PrefixFormat,
    /// The base model to record in the written files (default: what the input records).
    #[arg(long)]
    base_model: Option<String>,
    /// The model the prefix belongs to: needed for a BART prefix (its layers and heads).
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let device = backend::device_for(args.backend)?;
    let (length, base_model) = match &args.model {
        Some(name) => models::with_model(name, &device, Default::default(), &args)?,
        None if looks_like_bart(&args.prefix) => {
            return Err(CliError::usage(format!("--model: {} is a BART prefix; give its model (for the layers and heads)", args.prefix.display())))
        }
        // A GPT-2 prefix's file says all its shapes: no model needed.
        None => export_unchecked(&args, &device)?,
    };
    let size: u64 = std::fs::read_dir(&args.out).map_err(|e| CliError::io(&args.out, e))?.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum();
    eprintln!("wrote {} ({length} virtual tokens, {size} bytes{})", args.out.display(), base_model.map(|m| format!(", for {m}")).unwrap_or_default());
    Ok(())
}

/// The prefix, checked against `--model`, written in `--format`: its virtual tokens and the
/// base model recorded.
impl ModelJob for &ExportArgs {
    type Output = (usize, Option<String>);

    fn run<M: Architecture>(self, model: M, _dir: &Path) -> Result<Self::Output> {
        let loaded = model.load_prefix(&self.prefix)?;
        let base_model = self.base_model.clone().or(loaded.base_model).or(self.model.clone());
        // Both formats keep the activations only: the MLP (if any) is dropped here.
        M::save_prefix(&loaded.prefix, self.format, base_model.as_deref(), &self.out)?;
        Ok((M::prefix_tokens(&loaded.prefix), base_model))
    }
}

/// A GPT-2 prefix read with the shapes its own file records.
fn export_unchecked(args: &ExportArgs, device: &Device) -> Result<(usize, Option<String>)> {
    let loaded = load_prefix(&args.prefix, None, device)?;
    let base_model = args.base_model.clone().or(loaded.base_model);
    <Gpt2 as PrefixedModel>::save_prefix(&loaded.prefix, args.format, base_model.as_deref(), &args.out)?;
    Ok((loaded.prefix.length(), base_model))
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
