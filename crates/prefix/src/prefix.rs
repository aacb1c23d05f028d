//! The prefix: the only parameters a user trains.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::dropout::Site;
use prefix_tune_model::gpt2::{Dropout, Gpt2};
use prefix_tune_model::Past;
use serde::{Deserialize, Serialize};

use crate::{Layout, PrefixError};

/// How the prefix's activations are parameterised during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reparam {
    /// The activations `[P, 2·L·D]` are the parameters.
    Flat,
    /// Embedding(P, D) → Linear(D, hidden) → tanh → Linear(hidden, 2·L·D), as the paper's code
    /// and PEFT's `prefix_projection`; more stable to train. Dropped at export.
    Mlp { hidden: usize },
}

/// The choice of [`Reparam`] without its size (a command-line option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ReparamKind {
    #[default]
    Mlp,
    Flat,
}

impl ReparamKind {
    /// The reparameterisation, with `hidden` units for the MLP.
    pub fn with_hidden(self, hidden: usize) -> Reparam {
        match self {
            ReparamKind::Mlp => Reparam::Mlp { hidden },
            ReparamKind::Flat => Reparam::Flat,
        }
    }
}

/// Where the initial values come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Init {
    /// Standard normal embedding (PEFT's `nn.Embedding` default) and PyTorch's Linear init.
    Random,
    /// All activations zero: the prefix starts as keys of zeros, values of zeros.
    Zero,
    /// The frozen model's own keys/values for this text (the paper's real-word init).
    Text { text: String },
}

/// Where the trained activations enter the model (the paper's §7 ablations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Keys and values in front of every layer's attention: prefix-tuning.
    #[default]
    Prefix,
    /// `[x; INFIX; y]`: the same activations between the source and the target, so the
    /// source cannot see them (§7.4).
    Infix,
    /// Only P virtual token embeddings at the input; the frozen model computes their keys and
    /// values (§7.2, like prompt tuning).
    EmbeddingOnly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixConfig {
    /// P, the number of virtual tokens (for `Init::Text`, the text's token count).
    pub length: usize,
    pub reparam: Reparam,
    /// Dropout on the prefix activations while training (the paper's `prefix_dropout`).
    #[serde(default)]
    pub dropout: f64,
    pub init: Init,
    #[serde(default)]
    pub placement: Placement,
}

impl Placement {
    /// Columns of the activation matrix: 2·L·D for keys/values, D for input embeddings.
    pub fn width(self, layout: Layout) -> usize {
        match self {
            Placement::Prefix | Placement::Infix => layout.width(),
            Placement::EmbeddingOnly => layout.d_model(),
        }
    }
}

impl PrefixConfig {
    pub fn new(length: usize) -> Self {
        Self { length, reparam: Reparam::Mlp { hidden: 512 }, dropout: 0.0, init: Init::Random, placement: Placement::Prefix }
    }

    /// A prefix with random or zero values (text init goes through [`crate::text_init`]).
    pub fn init(&self, layout: Layout, device: &Device) -> Result<Prefix, PrefixError> {
        if self.length == 0 {
            return Err(PrefixError::EmptyPrefix);
        }
        if self.reparam == (Reparam::Mlp { hidden: 0 }) {
            return Err(PrefixError::EmptyMlp);
        }
        let zero = matches!(self.init, Init::Zero);
        let width = self.placement.width(layout);
        let embedding_width = match self.reparam {
            Reparam::Flat => width,
            Reparam::Mlp { .. } => layout.d_model(),
        };
        let embedding = if zero {
            Tensor::zeros([self.length, embedding_width], device)
        } else {
            Tensor::random([self.length, embedding_width], Distribution::Normal(0.0, 1.0), device)
        };
        let mlp = match self.reparam {
            Reparam::Flat => None,
            Reparam::Mlp { hidden } => {
                let mut output = LinearConfig::new(hidden, width).init(device);
                if zero {
                    // Zero activations whatever the embedding: zero the last layer.
                    output.weight = Param::from_tensor(Tensor::zeros([hidden, width], device));
                    output.bias = Some(Param::from_tensor(Tensor::zeros([width], device)));
                }
                Some(PrefixMlp { hidden: LinearConfig::new(layout.d_model(), hidden).init(device), output })
            }
        };
        Ok(Prefix { embedding: Param::from_tensor(embedding), mlp, layout, dropout: self.dropout, placement: self.placement })
    }
}

/// Embedding(P, D) → Linear → tanh → Linear: PEFT's `transform.0` and `transform.2`.
#[derive(Module, Debug)]
pub struct PrefixMlp {
    pub hidden: Linear,
    pub output: Linear,
}

#[derive(Module, Debug)]
pub struct Prefix {
    /// `[P, 2·L·D]` when flat; `[P, D]`, the MLP's input, when reparameterised.
    pub embedding: Param<Tensor<2>>,
    pub mlp: Option<PrefixMlp>,
    #[module(skip)]
    pub layout: Layout,
    #[module(skip)]
    pub dropout: f64,
    #[module(skip)]
    pub placement: Placement,
}

impl Prefix {
    /// A flat prefix holding fixed activations (an export, a PEFT adapter).
    pub fn from_activations(activations: Tensor<2>, layout: Layout) -> Self {
        Self { embedding: Param::from_tensor(activations), mlp: None, layout, dropout: 0.0, placement: Placement::Prefix }
    }

    pub fn length(&self) -> usize {
        self.embedding.val().dims()[0]
    }

    /// The activations `[P, 2·L·D]`: what the frozen model's attention sees.
    pub fn activations(&self) -> Tensor<2> {
        let embedding = self.embedding.val();
        match &self.mlp {
            None => embedding,
            Some(mlp) => mlp.output.forward(mlp.hidden.forward(embedding).tanh()),
        }
    }

    /// The prefix as past keys/values for `batch` rows; with `train`, prefix dropout applies.
    /// For the embedding-only ablation use [`Prefix::past_through`], which needs the model.
    pub fn past(&self, batch: usize, train: bool) -> Past {
        self.layout.past(self.activations_with_dropout(train), batch)
    }

    /// [`Prefix::past`] for a teacher-forced pass (a training step's loss): its layers one row
    /// the batch's rows share ([`Layout::shared_past`]), not for a KV cache or beam search.
    pub fn shared_past(&self, batch: usize, train: bool) -> Past {
        self.layout.shared_past(self.activations_with_dropout(train), batch)
    }

    /// [`Prefix::activations`], with prefix dropout when `train`.
    fn activations_with_dropout(&self, train: bool) -> Tensor<2> {
        let activations = self.activations();
        if train { Site::rate(self.dropout).apply(activations) } else { activations }
    }

    /// The past every placement produces: for embedding-only, the frozen model's keys and
    /// values of the virtual embeddings (gradients flow back to them through the model).
    pub fn past_through(&self, model: &Gpt2, batch: usize, train: bool, dropout: Dropout) -> Past {
        match self.placement {
            Placement::Prefix | Placement::Infix => self.past(batch, train),
            Placement::EmbeddingOnly => {
                let mut embeddings = self.activations();
                if train {
                    embeddings = Site::rate(self.dropout).apply(embeddings);
                }
                let [length, d_model] = embeddings.dims();
                let embeddings = embeddings.unsqueeze::<3>().expand([batch, length, d_model]);
                model.past_of_embeddings(embeddings, dropout)
            }
        }
    }

    /// Drops the reparameterisation: a flat prefix with the same activations, detached.
    pub fn materialize(&self) -> Prefix {
        let mut flat = Prefix::from_activations(self.activations().detach(), self.layout);
        flat.placement = self.placement;
        flat
    }
}
