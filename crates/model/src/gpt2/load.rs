//! Building a [`Gpt2`] from a Hugging Face checkpoint, or from random weights for tests and
//! benchmarks. Both go through one builder that asks for each tensor by its HF name.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::config::{Activation, Gpt2Config};
use super::model::{Block, Conv1D, Gpt2, LayerNorm, Mlp, SelfAttention};
use crate::tensors::floats;
use crate::weights::WeightFiles;
use crate::ModelError;

/// Reads `config.json` and the safetensors weights of a GPT-2 model directory.
pub fn load_gpt2(dir: &Path, device: &Device) -> Result<Gpt2, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let config = Gpt2Config::from_file(&dir.join("config.json"))?;
    let weights = WeightFiles::open_dir(dir)?;
    gpt2_from_weights(config, &weights, device)
}

pub fn gpt2_from_weights(config: Gpt2Config, weights: &WeightFiles, device: &Device) -> Result<Gpt2, ModelError> {
    // GPT2LMHeadModel checkpoints prefix every name with `transformer.`; GPT2Model and the
    // original hub files do not. `attn.bias` (the causal-mask buffer) and the tied
    // `lm_head.weight` are not read.
    let prefix = if weights.contains("transformer.wte.weight") { "transformer." } else { "" };
    let layer_key = format!("{prefix}h.{}.ln_1.weight", config.n_layer);
    if weights.contains(&layer_key) {
        return Err(ModelError::Config {
            path: weights.describe(),
            field: "n_layer".into(),
            reason: format!("config.json says {} layers but the weights have `{layer_key}`", config.n_layer),
        });
    }
    build(&config, device, |name, shape, why| weights.read(&format!("{prefix}{name}"), shape, why))
}

/// A GPT-2 with HF's initialisation (normal(0, 0.02) weights, zero biases, unit norms), seeded.
pub fn random_gpt2(config: &Gpt2Config, seed: u64, device: &Device) -> Gpt2 {
    let mut rng = StdRng::seed_from_u64(seed);
    build(config, device, |name, shape, _| {
        let count = shape.iter().product();
        Ok(if name.ends_with("ln_1.weight") || name.ends_with("ln_2.weight") || name.ends_with("ln_f.weight") {
            vec![1.0; count]
        } else if name.ends_with(".bias") {
            vec![0.0; count]
        } else {
            (0..count).map(|_| 0.02 * standard_normal(&mut rng)).collect()
        })
    })
    .expect("random weights have the right shapes")
}

fn standard_normal(rng: &mut StdRng) -> f32 {
    // Box–Muller; enough for initialisation.
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

type Fetch<'a> = dyn FnMut(&str, &[usize], &str) -> Result<Vec<f32>, ModelError> + 'a;

fn build(
    config: &Gpt2Config,
    device: &Device,
    mut fetch: impl FnMut(&str, &[usize], &str) -> Result<Vec<f32>, ModelError>,
) -> Result<Gpt2, ModelError> {
    let d = config.n_embd;
    let activation = config.activation().map_err(|e| e.at("config.json"))?;
    let mut read = Reader { fetch: &mut fetch, device, config, why_d: format!("config.json n_embd = {d}") };
    let wte = read.param2("wte.weight", [config.vocab_size, d], &format!("config.json vocab_size = {}, n_embd = {d}", config.vocab_size))?;
    let wpe = read.param2("wpe.weight", [config.n_positions, d], &format!("config.json n_positions = {}, n_embd = {d}", config.n_positions))?;
    let h = (0..config.n_layer).map(|layer| read.block(layer, activation)).collect::<Result<Vec<_>, _>>()?;
    let ln_f = read.norm("ln_f")?;
    Ok(Gpt2 { wte, wpe, h, ln_f, head_half: None, config: config.clone() })
}

/// Reads the tensors of a GPT-2 by their HF names, each checked against the shape the config
/// gives it (`why` names the config fields in the message).
struct Reader<'a, 'f> {
    fetch: &'a mut Fetch<'f>,
    device: &'a Device,
    config: &'a Gpt2Config,
    why_d: String,
}

impl Reader<'_, '_> {
    fn param1(&mut self, name: &str, len: usize, why: &str) -> Result<Param<Tensor<1>>, ModelError> {
        Ok(Param::from_tensor(floats((self.fetch)(name, &[len], why)?, [len], self.device)))
    }

    fn param2(&mut self, name: &str, shape: [usize; 2], why: &str) -> Result<Param<Tensor<2>>, ModelError> {
        Ok(Param::from_tensor(floats((self.fetch)(name, &shape, why)?, shape, self.device)))
    }

    fn norm(&mut self, prefix: &str) -> Result<LayerNorm, ModelError> {
        let (d, why) = (self.config.n_embd, self.why_d.clone());
        Ok(LayerNorm {
            weight: self.param1(&format!("{prefix}.weight"), d, &why)?,
            bias: self.param1(&format!("{prefix}.bias"), d, &why)?,
            eps: self.config.layer_norm_epsilon,
        })
    }

    fn conv(&mut self, prefix: &str, d_in: usize, d_out: usize, why: &str) -> Result<Conv1D, ModelError> {
        Ok(Conv1D {
            weight: self.param2(&format!("{prefix}.weight"), [d_in, d_out], why)?,
            bias: self.param1(&format!("{prefix}.bias"), d_out, why)?,
            half: None,
        })
    }

    fn block(&mut self, layer: usize, activation: Activation) -> Result<Block, ModelError> {
        let (d, inner) = (self.config.n_embd, self.config.inner_dim());
        let why_d = self.why_d.clone();
        let why_inner = format!("config.json n_embd = {d}, n_inner = {inner}");
        let ln_1 = self.norm(&format!("h.{layer}.ln_1"))?;
        let ln_2 = self.norm(&format!("h.{layer}.ln_2"))?;
        let attn = SelfAttention {
            c_attn: self.conv(&format!("h.{layer}.attn.c_attn"), d, 3 * d, &why_d)?,
            c_proj: self.conv(&format!("h.{layer}.attn.c_proj"), d, d, &why_d)?,
            n_head: self.config.n_head,
            scale: attention_scale(self.config, layer),
        };
        let mlp = Mlp {
            c_fc: self.conv(&format!("h.{layer}.mlp.c_fc"), d, inner, &why_inner)?,
            c_proj: self.conv(&format!("h.{layer}.mlp.c_proj"), inner, d, &why_inner)?,
            activation,
        };
        Ok(Block { ln_1, attn, ln_2, mlp })
    }
}

/// 1/√Dh when `scale_attn_weights`, further divided by (layer + 1) when
/// `scale_attn_by_inverse_layer_idx`, as HF's GPT2Attention.
fn attention_scale(config: &Gpt2Config, layer: usize) -> f32 {
    let mut scale = 1.0f32;
    if config.scale_attn_weights {
        scale /= (config.head_dim() as f32).sqrt();
    }
    if config.scale_attn_by_inverse_layer_idx {
        scale /= (layer + 1) as f32;
    }
    scale
}
