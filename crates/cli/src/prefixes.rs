//! Reading `--prefix` arguments for a model.

use std::path::Path;

use crate::error::{CliError, Result};
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::Gpt2;
use prefix_tune_data::Gpt2Encoder;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_prefix::{generate_prefixed, load_prefix, Layout, Prefix};

/// Every `--prefix` (export, PEFT adapter, training state or run directory), checked against
/// the model's layout.
pub fn load_prefixes(model: &Gpt2, paths: &[String], device: &Device) -> Result<Vec<Prefix>> {
    let layout = Layout::gpt2(&model.config);
    paths
        .iter()
        .map(|path| Ok(load_prefix(Path::new(path), Some(layout), device)?.prefix))
        .collect()
}

/// The text predictions for `prompts` (one batch): generated with `prefixes`, EOS dropped,
/// one line each. New tokens are capped so prefix + prompt + continuation fit the model's
/// positions (short-context models).
pub fn predict(
    model: &Gpt2,
    encoder: &Gpt2Encoder,
    prompts: &[Vec<u32>],
    prefixes: &[&Prefix],
    config: &GenerateConfig,
) -> Result<Vec<String>> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + prefixes.iter().map(|p| p.length()).max().unwrap_or(0);
    let room = model.config.n_positions.saturating_sub(longest);
    if room == 0 {
        return Err(CliError::usage(format!("an input of {longest} tokens (prefix included) leaves no room to generate within n_positions = {}", model.config.n_positions)));
    }
    let mut config = config.clone();
    config.max_new_tokens = config.max_new_tokens.min(room);
    generate_prefixed(model, prompts, prefixes, &config)?
        .into_iter()
        .map(|output| {
            let ids: Vec<u32> = output.ids.into_iter().filter(|&id| id != encoder.eos_id()).collect();
            Ok(encoder.decode(&ids)?.trim().replace('\n', " "))
        })
        .collect()
}
