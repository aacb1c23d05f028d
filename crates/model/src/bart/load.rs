//! Building a [`Bart`] from a Hugging Face checkpoint (`BartForConditionalGeneration` or
//! `BartModel` names), asking for each tensor by its HF name.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor};

use super::config::{BartConfig, POSITION_OFFSET};
use super::model::{Attention, Bart, DecoderLayer, Embeddings, EncoderLayer, FeedForward, SelfAttention};
use crate::nn::{LayerNorm, Linear};
use crate::tensors::floats;
use crate::weights::WeightFiles;
use crate::ModelError;

/// Reads `config.json` and the safetensors weights of a BART model directory.
pub fn load_bart(dir: &Path, device: &Device) -> Result<Bart, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let config = BartConfig::from_file(&dir.join("config.json"))?;
    let weights = WeightFiles::open_dir(dir)?;
    bart_from_weights(config, &weights, device)
}

/// Reads tensors of one checkpoint by HF name, checking shapes against the config.
struct Reader<'a> {
    weights: &'a WeightFiles,
    /// `model.` for `BartForConditionalGeneration`, empty for `BartModel`.
    scope: &'static str,
    device: &'a Device,
}

impl Reader<'_> {
    fn tensor<const D: usize>(&self, name: &str, shape: [usize; D], why: &str) -> Result<Tensor<D>, ModelError> {
        let values = self.weights.read(&format!("{}{name}", self.scope), &shape, why)?;
        Ok(floats(values, shape, self.device))
    }

    fn norm(&self, name: &str, d: usize) -> Result<LayerNorm, ModelError> {
        let why = format!("config.json d_model = {d}");
        Ok(LayerNorm {
            weight: Param::from_tensor(self.tensor(&format!("{name}.weight"), [d], &why)?),
            bias: Param::from_tensor(self.tensor(&format!("{name}.bias"), [d], &why)?),
            eps: 1e-5,
        })
    }

    /// A PyTorch `nn.Linear` (`[out, in]`), transposed to `[in, out]`. On a GPU it is laid out
    /// so once, here: the kernels read a weight as it lies, and a transposed view was copied by
    /// every product, each layer's of each training and decoding step. On the CPU the view
    /// stays, as every result there was measured with it.
    fn linear(&self, name: &str, d_in: usize, d_out: usize, why: &str) -> Result<Linear, ModelError> {
        self.side_by_side(&[name], d_in, d_out, why)
    }

    /// `nn.Linear`s of one input (`[d_out, d_in]` each), their outputs side by side in `names`'
    /// order: one layer `[d_in, n · d_out]`, laid out as [`Reader::linear`] lays out one.
    fn side_by_side(&self, names: &[&str], d_in: usize, d_out: usize, why: &str) -> Result<Linear, ModelError> {
        let (mut stored, mut biases) = (Vec::new(), Vec::new());
        for name in names {
            stored.extend(self.weights.read(&format!("{}{name}.weight", self.scope), &[d_out, d_in], why)?); // rows of outputs
            biases.extend(self.weights.read(&format!("{}{name}.bias", self.scope), &[d_out], why)?);
        }
        let width = names.len() * d_out;
        let weight = if crate::backend::is_gpu(self.device) {
            let laid_out: Vec<f32> = (0..d_in).flat_map(|i| stored.iter().skip(i).step_by(d_in).copied().collect::<Vec<f32>>()).collect();
            floats(laid_out, [d_in, width], self.device)
        } else {
            floats(stored, [width, d_in], self.device).transpose()
        };
        Ok(Linear { weight: Param::from_tensor(weight), bias: Param::from_tensor(floats(biases, [width], self.device)), half: None })
    }

    /// Self-attention: `q_proj`, `k_proj` and `v_proj` side by side ([`SelfAttention`]).
    fn self_attention(&self, name: &str, d: usize, heads: usize) -> Result<SelfAttention, ModelError> {
        let why = format!("config.json d_model = {d}");
        let names = ["q_proj", "k_proj", "v_proj"].map(|which| format!("{name}.{which}"));
        let qkv = self.side_by_side(&names.each_ref().map(String::as_str), d, d, &why)?;
        Ok(SelfAttention { qkv, out_proj: self.linear(&format!("{name}.out_proj"), d, d, &why)?, n_head: heads, head_dim: d / heads })
    }

    fn attention(&self, name: &str, d: usize, heads: usize) -> Result<Attention, ModelError> {
        let why = format!("config.json d_model = {d}");
        let proj = |which: &str| self.linear(&format!("{name}.{which}"), d, d, &why);
        Ok(Attention { q_proj: proj("q_proj")?, k_proj: proj("k_proj")?, v_proj: proj("v_proj")?, out_proj: proj("out_proj")?, n_head: heads, head_dim: d / heads })
    }

    fn ffn(&self, name: &str, config: &BartConfig, inner: usize, field: &str) -> Result<FeedForward, ModelError> {
        let d = config.d_model;
        let why = format!("config.json d_model = {d}, {field} = {inner}");
        Ok(FeedForward {
            fc1: self.linear(&format!("{name}.fc1"), d, inner, &why)?,
            fc2: self.linear(&format!("{name}.fc2"), inner, d, &why)?,
            activation: config.activation(),
        })
    }

    fn embeddings(&self, stack: &str, config: &BartConfig) -> Result<Embeddings, ModelError> {
        let rows = config.max_position_embeddings + POSITION_OFFSET;
        let why = format!("config.json max_position_embeddings = {} (+ 2), d_model = {}", config.max_position_embeddings, config.d_model);
        Ok(Embeddings {
            positions: Param::from_tensor(self.tensor(&format!("{stack}.embed_positions.weight"), [rows, config.d_model], &why)?),
            layernorm_embedding: self.norm(&format!("{stack}.layernorm_embedding"), config.d_model)?,
        })
    }
}

pub fn bart_from_weights(config: BartConfig, weights: &WeightFiles, device: &Device) -> Result<Bart, ModelError> {
    let scope = if weights.contains("model.encoder.layers.0.fc1.weight") { "model." } else { "" };
    let reader = Reader { weights, scope, device };
    for (stack, count, field) in [("encoder", config.encoder_layers, "encoder_layers"), ("decoder", config.decoder_layers, "decoder_layers")] {
        let extra = format!("{scope}{stack}.layers.{count}.fc1.weight");
        if weights.contains(&extra) {
            return Err(ModelError::config(weights.describe(), field, format!("config.json says {count} layers but the weights have `{extra}`")));
        }
    }
    let d = config.d_model;
    let vocab_why = format!("config.json vocab_size = {}, d_model = {d}", config.vocab_size);
    // The shared table; older checkpoints store only the encoder's tied copy.
    let shared_name = if weights.contains(&format!("{scope}shared.weight")) { "shared.weight" } else { "encoder.embed_tokens.weight" };
    let shared = Param::from_tensor(reader.tensor(shared_name, [config.vocab_size, d], &vocab_why)?);
    let final_logits_bias = if weights.contains("final_logits_bias") {
        let bias: Tensor<2> = Reader { scope: "", ..reader }.tensor("final_logits_bias", [1, config.vocab_size], &vocab_why)?;
        bias.reshape([config.vocab_size])
    } else {
        Tensor::zeros([config.vocab_size], device)
    };

    let encoder_layers = (0..config.encoder_layers)
        .map(|l| {
            let name = format!("encoder.layers.{l}");
            Ok(EncoderLayer {
                self_attn: reader.self_attention(&format!("{name}.self_attn"), d, config.encoder_attention_heads)?,
                self_attn_layer_norm: reader.norm(&format!("{name}.self_attn_layer_norm"), d)?,
                ffn: reader.ffn(&name, &config, config.encoder_ffn_dim, "encoder_ffn_dim")?,
                final_layer_norm: reader.norm(&format!("{name}.final_layer_norm"), d)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let decoder_layers = (0..config.decoder_layers)
        .map(|l| {
            let name = format!("decoder.layers.{l}");
            Ok(DecoderLayer {
                self_attn: reader.self_attention(&format!("{name}.self_attn"), d, config.decoder_attention_heads)?,
                self_attn_layer_norm: reader.norm(&format!("{name}.self_attn_layer_norm"), d)?,
                encoder_attn: reader.attention(&format!("{name}.encoder_attn"), d, config.decoder_attention_heads)?,
                encoder_attn_layer_norm: reader.norm(&format!("{name}.encoder_attn_layer_norm"), d)?,
                ffn: reader.ffn(&name, &config, config.decoder_ffn_dim, "decoder_ffn_dim")?,
                final_layer_norm: reader.norm(&format!("{name}.final_layer_norm"), d)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    Ok(Bart {
        shared,
        encoder_embeddings: reader.embeddings("encoder", &config)?,
        encoder_layers,
        decoder_embeddings: reader.embeddings("decoder", &config)?,
        decoder_layers,
        final_logits_bias: Param::from_tensor(final_logits_bias),
        head_half: None,
        config,
    })
}
