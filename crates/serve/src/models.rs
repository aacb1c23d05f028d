//! The model a server decodes with, how it reads a prefix, and what requests are checked
//! against.

use std::path::Path;

use prefix_tune_model::bart::{generation_defaults, load_bart};
use prefix_tune_model::bf16::Dtype;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::{load_gpt2, model_kind, Bart, Gpt2, ModelKind};
use prefix_tune_prefix::{load_bart_prefix, load_prefix, BartLayout, Layout, PrefixedModel};

use crate::engine::{Served, ServedModel};
use crate::error::Result;

/// Reads a prefix of the served model from disk.
pub(crate) type Loader = Box<dyn Fn(&Path) -> std::result::Result<Served, prefix_tune_prefix::PrefixError> + Send + Sync>;

/// What the server checks requests against, read through the seam the commands share.
pub(crate) struct Facts {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub eos: u32,
    pub encoder_decoder: bool,
}

impl Facts {
    pub fn of<M: PrefixedModel>(model: &M) -> Self {
        Self { vocab_size: model.vocab_size(), n_positions: model.max_positions(), eos: model.special_tokens().eos, encoder_decoder: M::ENCODER_DECODER }
    }
}

/// The model in `dir`, in `--dtype`, with how its prefixes are read: GPT-2's one prefix, or
/// BART's three sets (native files or PEFT adapters).
pub(crate) fn load_model(dir: &Path, device: &Device, dtype: Dtype) -> Result<(ServedModel, Loader)> {
    let device = device.clone();
    if model_kind(dir)? == ModelKind::Bart {
        let mut model = load_bart(dir, &device)?;
        if dtype != Dtype::F32 {
            Bart::use_half(&mut model, dtype)?;
        }
        let layout = BartLayout::of(&model.config);
        let loader: Loader = Box::new(move |path| {
            let sets = load_bart_prefix(path, layout, &device)?.prefix.materialize();
            Ok(Served::Seq2Seq(sets.past(1, false), sets.decoder_offset()))
        });
        return Ok((ServedModel::Bart(model, generation_defaults(dir)?), loader));
    }
    let mut model = load_gpt2(dir, &device)?;
    if dtype != Dtype::F32 {
        Gpt2::use_half(&mut model, dtype)?;
    }
    let layout = Layout::gpt2(&model.config);
    let loader: Loader = Box::new(move |path| Ok(Served::Decoder(load_prefix(path, Some(layout), &device)?.prefix.materialize().past(1, false))));
    Ok((ServedModel::Gpt2(model), loader))
}
