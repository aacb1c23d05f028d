//! The seam between the learner and a model: what one training run needs of a frozen model and
//! of the prefix it takes. GPT-2 takes one prefix; BART takes three sets (encoder, decoder,
//! cross-attention). The loop in [`crate::Trainer`] is the same for both.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use prefix_tune_model::bart::Bart;
use prefix_tune_model::gpt2::{save_gpt2, Gpt2};
use prefix_tune_model::nn::Dropout;
use prefix_tune_prefix::{
    infix_forward, load_state_dir, PrefixedModel, save_bart_export, save_bart_peft, save_export, save_state, BartLayout, BartPrefixSets, Layout, Placement, Prefix, Stack,
};

use crate::examples::{length_bucket, Batch, Example};
use crate::loss::{head_loss, seq2seq_head_loss};
use crate::{TrainConfig, TrainError};

/// A frozen model that a prefix is trained on: the seam of [`PrefixedModel`] plus what a
/// training run needs.
pub trait PrefixModel: PrefixedModel {
    /// The dropout rates the checkpoint was trained with (training mode without `--lm-dropout`).
    fn configured_dropout(&self) -> Dropout<'static>;

    /// Pads `examples` into one batch.
    fn batch(&self, examples: &[&Example], config: &TrainConfig) -> Batch;

    /// The loss of `batch` (and its target-token count) with `prefix`, or with none for the
    /// fine-tuning baseline.
    fn loss(&self, prefix: Option<&Self::Prefix>, config: &TrainConfig, batch: &Batch, train: bool, dropout: Dropout) -> Result<(Tensor<1>, usize), TrainError>;

    /// Writes what inference needs (the activations) to `dir`.
    fn save_export(prefix: &Self::Prefix, base_model: Option<&str>, dir: &Path) -> Result<(), TrainError>;

    /// Writes the full parameterisation (MLPs included) to `dir`, for resuming.
    fn save_state(prefix: &Self::Prefix, config: &TrainConfig, dir: &Path) -> Result<(), TrainError>;

    /// Reads what [`PrefixModel::save_state`] wrote, for this model.
    fn load_state(&self, dir: &Path) -> Result<Self::Prefix, TrainError>;

    /// A cheap prefix to stand in while the real one is moved through the optimizer.
    fn placeholder_prefix(prefix: &Self::Prefix) -> Self::Prefix;

    /// The fine-tuning baseline trains the model itself; models without one refuse it.
    fn finetune(&self) -> Result<Finetune<Self>, TrainError> {
        Err(TrainError::Config(format!("method: fine-tuning is not available for {}", Self::ARCHITECTURE)))
    }
}

/// Teacher-forced scoring: each example's summed target-token NLL and its target-token count,
/// with `prefix` (or none). Runs on plain (non-autodiff) modules.
pub fn score<M: PrefixModel>(model: &M, prefix: Option<&M::Prefix>, config: &TrainConfig, examples: &[Example]) -> Result<Vec<(f64, usize)>, TrainError> {
    let config = TrainConfig { objective: crate::Objective::Paper, ..config.clone() };
    examples
        .iter()
        .map(|example| {
            // One example per batch: the paper objective's per-sequence mean is then its sum.
            let batch = model.batch(&[example], &config);
            let (nll, tokens) = model.loss(prefix, &config, &batch, false, Dropout::default())?;
            Ok((prefix_tune_model::tensors::to_f32s(nll)[0] as f64, tokens))
        })
        .collect()
}

/// What the fine-tuning baseline needs of a model: writing it, reading it back, a stand-in.
pub struct Finetune<M> {
    pub save: fn(&M, &Path) -> Result<(), TrainError>,
    pub load: fn(&Path, &Device) -> Result<M, TrainError>,
    pub placeholder: fn(&M) -> M,
}

impl PrefixModel for Gpt2 {
    fn configured_dropout(&self) -> Dropout<'static> {
        Dropout::from_config(&self.config)
    }

    fn batch(&self, examples: &[&Example], config: &TrainConfig) -> Batch {
        // A prefix (or infix) takes positions too.
        let most = self.config.n_positions.saturating_sub(config.prefix.length);
        Batch::new(examples, config.pad_token_id).bucketed(length_bucket(), config.pad_token_id, most, most)
    }

    fn loss(&self, prefix: Option<&Prefix>, config: &TrainConfig, batch: &Batch, train: bool, dropout: Dropout) -> Result<(Tensor<1>, usize), TrainError> {
        let rows = batch.ids.len();
        let (hidden, labels) = match prefix {
            None => (self.hidden_states(&batch.ids, &batch.mask, None, dropout)?, batch.labels.clone()),
            Some(prefix) if prefix.placement == Placement::Infix => {
                let (hidden, splits) = infix_forward(self, prefix, &batch.ids, &batch.mask, config.separator_token_id, train, dropout)?;
                // The target side's labels, cut where its tokens were.
                let width = hidden.dims()[1];
                let labels = batch
                    .labels
                    .iter()
                    .zip(splits)
                    .map(|(row, split)| {
                        let mut cut = row[split..].to_vec();
                        cut.resize(width, crate::loss::IGNORE);
                        cut
                    })
                    .collect();
                (hidden, labels)
            }
            Some(prefix) => {
                let past = match prefix.placement {
                    Placement::Prefix => prefix.shared_past(rows, train),
                    _ => prefix.past_through(self, rows, train, dropout),
                };
                (self.hidden_states(&batch.ids, &batch.mask, Some(past), dropout)?, batch.labels.clone())
            }
        };
        Ok(head_loss(self, hidden, &labels, config.objective))
    }

    fn save_export(prefix: &Prefix, base_model: Option<&str>, dir: &Path) -> Result<(), TrainError> {
        Ok(save_export(prefix, base_model, Self::ARCHITECTURE, dir)?)
    }

    fn save_state(prefix: &Prefix, config: &TrainConfig, dir: &Path) -> Result<(), TrainError> {
        Ok(save_state(prefix, &config.prefix, config.base_model.as_deref(), Self::ARCHITECTURE, dir)?)
    }

    fn load_state(&self, dir: &Path) -> Result<Prefix, TrainError> {
        Ok(load_state_dir(dir, Layout::gpt2(&self.config), &PrefixedModel::device(self))?)
    }

    fn placeholder_prefix(prefix: &Prefix) -> Prefix {
        Prefix::from_activations(Tensor::zeros([1, 1], &prefix.embedding.val().device()), prefix.layout)
    }

    fn finetune(&self) -> Result<Finetune<Self>, TrainError> {
        Ok(Finetune {
            save: |model, dir| Ok(save_gpt2(model, dir)?),
            load: |dir, device| Ok(prefix_tune_model::load_gpt2(dir, device)?),
            placeholder: gpt2_placeholder,
        })
    }
}

fn gpt2_placeholder(model: &Gpt2) -> Gpt2 {
    use burn::module::Param;
    let device = model.wte.val().device();
    let empty = || Param::from_tensor(Tensor::<2>::zeros([1, 1], &device));
    let norm = || prefix_tune_model::nn::LayerNorm {
        weight: Param::from_tensor(Tensor::zeros([1], &device)),
        bias: Param::from_tensor(Tensor::zeros([1], &device)),
        eps: 0.0,
    };
    Gpt2 { wte: empty(), wpe: empty(), h: Vec::new(), ln_f: norm(), head_half: None, config: model.config.clone() }
}

impl PrefixModel for Bart {
    fn configured_dropout(&self) -> Dropout<'static> {
        let c = &self.config;
        Dropout { embd: c.dropout, attn: c.attention_dropout, resid: c.dropout, activation: c.activation_dropout, draws: None }
    }

    fn batch(&self, examples: &[&Example], config: &TrainConfig) -> Batch {
        let start = self.config.decoder_start();
        // BART's prefixes take no positions, but a PEFT adapter's shifts the decoder's by P.
        let most = self.config.max_position_embeddings;
        Batch::seq2seq(examples, config.pad_token_id, start).bucketed(length_bucket(), config.pad_token_id, most, most.saturating_sub(config.prefix.length))
    }

    fn loss(&self, prefix: Option<&BartPrefixSets>, config: &TrainConfig, batch: &Batch, train: bool, dropout: Dropout) -> Result<(Tensor<1>, usize), TrainError> {
        let rows = batch.ids.len();
        let (past, offset) = match prefix {
            Some(sets) => (sets.shared_past(rows, train), sets.decoder_offset()),
            None => (Default::default(), 0),
        };
        let hidden = self.forward_tokens(&batch.ids, &batch.mask, &batch.decoder_ids, &past, offset, dropout)?;
        Ok(seq2seq_head_loss(self, hidden, &batch.labels, config.objective))
    }

    /// `best/`: the native export, or a PEFT adapter for a prefix in PEFT's layout (whose
    /// position convention the native file does not carry).
    fn save_export(sets: &BartPrefixSets, base_model: Option<&str>, dir: &Path) -> Result<(), TrainError> {
        if sets.decoder_offset() > 0 {
            return Ok(save_bart_peft(sets, base_model, dir)?);
        }
        Ok(save_bart_export(sets, base_model, dir)?)
    }

    /// One training state per set that is on, in `encoder/`, `decoder/`, `cross/`.
    fn save_state(sets: &BartPrefixSets, config: &TrainConfig, dir: &Path) -> Result<(), TrainError> {
        for stack in Stack::ALL {
            if let Some(prefix) = sets.get(stack) {
                let prefix_config = prefix_tune_prefix::PrefixConfig { length: prefix.length(), ..config.prefix.clone() };
                save_state(prefix, &prefix_config, config.base_model.as_deref(), Self::ARCHITECTURE, &dir.join(stack.name()))?;
            }
        }
        Ok(())
    }

    fn load_state(&self, dir: &Path) -> Result<BartPrefixSets, TrainError> {
        let layout = BartLayout::of(&self.config);
        let read = |stack: Stack| -> Result<Option<Prefix>, TrainError> {
            let sub = dir.join(stack.name());
            Ok(if sub.is_dir() { Some(load_state_dir(&sub, layout.stack(stack), &Bart::device(self))?) } else { None })
        };
        Ok(BartPrefixSets { encoder: read(Stack::Encoder)?, decoder: read(Stack::Decoder)?, cross: read(Stack::Cross)? })
    }

    fn placeholder_prefix(_: &BartPrefixSets) -> BartPrefixSets {
        BartPrefixSets { encoder: None, decoder: None, cross: None }
    }
}
