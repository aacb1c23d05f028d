//! BART's three prefix sets (Li & Liang, 2021, §4.2): one in front of the encoder's
//! self-attention, one in front of the decoder's self-attention, one in front of its
//! cross-attention. Each has its own length P, its own embedding (and MLP), and may be off.

use burn::module::Module;
use burn::tensor::Device;
use prefix_tune_model::{BartConfig, BartPrefix};
use serde::{Deserialize, Serialize};

use crate::{BlockOrder, Layout, Prefix, PrefixConfig, PrefixError};

/// Which attention a prefix set feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    Encoder,
    Decoder,
    Cross,
}

impl Stack {
    pub const ALL: [Stack; 3] = [Stack::Encoder, Stack::Decoder, Stack::Cross];

    /// The set's name in files (`prefix.safetensors` tensors, `prefix_config.json` lengths).
    pub fn name(self) -> &'static str {
        match self {
            Stack::Encoder => "encoder",
            Stack::Decoder => "decoder",
            Stack::Cross => "cross",
        }
    }
}

/// The attention shapes of a BART: the encoder's, and the decoder's (which its self- and
/// cross-attention share).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BartLayout {
    pub encoder: Layout,
    pub decoder: Layout,
}

impl BartLayout {
    pub fn of(config: &BartConfig) -> Self {
        Self {
            encoder: Layout::new(config.encoder_layers, config.encoder_attention_heads, config.encoder_head_dim()),
            decoder: Layout::new(config.decoder_layers, config.decoder_attention_heads, config.decoder_head_dim()),
        }
    }

    pub fn stack(&self, stack: Stack) -> Layout {
        match stack {
            Stack::Encoder => self.encoder,
            Stack::Decoder | Stack::Cross => self.decoder,
        }
    }
}

/// The three sets; `None` is a set switched off.
#[derive(Module, Debug)]
pub struct BartPrefixSets {
    pub encoder: Option<Prefix>,
    pub decoder: Option<Prefix>,
    pub cross: Option<Prefix>,
}

impl BartPrefixSets {
    /// Fresh sets, one per `Some` config, each with its own P and parameterisation.
    pub fn init(configs: [Option<&PrefixConfig>; 3], layout: BartLayout, device: &Device) -> Result<Self, PrefixError> {
        let [encoder, decoder, cross] = configs;
        let init = |config: Option<&PrefixConfig>, stack: Stack| -> Result<Option<Prefix>, PrefixError> {
            config.map(|c| c.init(layout.stack(stack), device).map_err(|e| PrefixError::Set { set: stack.name(), source: Box::new(e) })).transpose()
        };
        Ok(Self { encoder: init(encoder, Stack::Encoder)?, decoder: init(decoder, Stack::Decoder)?, cross: init(cross, Stack::Cross)? })
    }

    pub fn get(&self, stack: Stack) -> Option<&Prefix> {
        match stack {
            Stack::Encoder => self.encoder.as_ref(),
            Stack::Decoder => self.decoder.as_ref(),
            Stack::Cross => self.cross.as_ref(),
        }
    }

    /// Each set's length, 0 when off.
    pub fn lengths(&self) -> [usize; 3] {
        Stack::ALL.map(|stack| self.get(stack).map_or(0, Prefix::length))
    }

    /// The prefixes of a batch of `batch` rows; with `train`, prefix dropout applies.
    pub fn past(&self, batch: usize, train: bool) -> BartPrefix {
        BartPrefix {
            encoder: self.encoder.as_ref().map(|p| p.past(batch, train)),
            decoder: self.decoder.as_ref().map(|p| p.past(batch, train)),
            cross: self.cross.as_ref().map(|p| p.past(batch, train)),
        }
    }

    /// [`BartPrefixSets::past`] for a teacher-forced pass (a training step's loss): each set one
    /// row the batch's rows share ([`Prefix::shared_past`]), not for a KV cache or beam search.
    pub fn shared_past(&self, batch: usize, train: bool) -> BartPrefix {
        BartPrefix {
            encoder: self.encoder.as_ref().map(|p| p.shared_past(batch, train)),
            decoder: self.decoder.as_ref().map(|p| p.shared_past(batch, train)),
            cross: self.cross.as_ref().map(|p| p.shared_past(batch, train)),
        }
    }

    /// The decoder's first position: 0 in the paper's convention; P for a PEFT adapter, whose
    /// prefix sits in the decoder's cache and so shifts its positions.
    pub fn decoder_offset(&self) -> usize {
        match &self.decoder {
            Some(prefix) if prefix.layout.blocks == BlockOrder::PeftSeq2Seq => prefix.length(),
            _ => 0,
        }
    }

    /// Drops every MLP: flat sets with the same activations, detached.
    pub fn materialize(&self) -> Self {
        Self {
            encoder: self.encoder.as_ref().map(Prefix::materialize),
            decoder: self.decoder.as_ref().map(Prefix::materialize),
            cross: self.cross.as_ref().map(Prefix::materialize),
        }
    }
}
