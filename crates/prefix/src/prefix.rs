//! The prefix: the only parameters a user trains.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use prefix_tune_model::attention::apply_dropout;
use prefix_tune_model::Past;
use serde::{Deserialize, Serialize};

use crate::Layout;

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefixConfig {
    /// P, the number of virtual tokens (for `Init::Text`, the text's token count).
    pub length: usize,
    pub reparam: Reparam,
    /// Dropout on the prefix activations while training (the paper's `prefix_dropout`).
    #[serde(default)]
    pub dropout: f64,
    pub init: Init,
}

impl PrefixConfig {
    pub fn new(length: usize) -> Self {
        Self { length, reparam: Reparam::Mlp { hidden: 512 }, dropout: 0.0, init: Init::Random }
    }

    /// A prefix with random or zero values (text init goes through [`crate::text_init`]).
    pub fn init(&self, layout: Layout, device: &Device) -> Result<Prefix, String> {
        if self.length == 0 {
            return Err("prefix length P must be at least 1".into());
        }
        let zero = matches!(self.init, Init::Zero);
        let embedding_width = match self.reparam {
            Reparam::Flat => layout.width(),
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
                let mut output = LinearConfig::new(hidden, layout.width()).init(device);
                if zero {
                    // Zero activations whatever the embedding: zero the last layer.
                    output.weight = Param::from_tensor(Tensor::zeros([hidden, layout.width()], device));
                    output.bias = Some(Param::from_tensor(Tensor::zeros([layout.width()], device)));
                }
                Some(PrefixMlp { hidden: LinearConfig::new(layout.d_model(), hidden).init(device), output })
            }
        };
        Ok(Prefix { embedding: Param::from_tensor(embedding), mlp, layout, dropout: self.dropout })
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
}

impl Prefix {
    /// A flat prefix holding fixed activations (an export, a PEFT adapter).
    pub fn from_activations(activations: Tensor<2>, layout: Layout) -> Self {
        Self { embedding: Param::from_tensor(activations), mlp: None, layout, dropout: 0.0 }
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
    pub fn past(&self, batch: usize, train: bool) -> Past {
        let mut activations = self.activations();
        if train {
            activations = apply_dropout(activations, self.dropout);
        }
        self.layout.past(activations, batch)
    }

    /// Drops the reparameterisation: a flat prefix with the same activations, detached.
    pub fn materialize(&self) -> Prefix {
        Prefix::from_activations(self.activations().detach(), self.layout)
    }

    pub fn num_params(&self) -> usize {
        self.num_params_module()
    }

    fn num_params_module(&self) -> usize {
        Module::num_params(self)
    }
}
