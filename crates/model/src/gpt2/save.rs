//! Writing a GPT-2 back in Hugging Face layout (`config.json` + `model.safetensors`), for the
//! full fine-tuning baseline: what it trains is the model itself.

use std::path::Path;

use burn::tensor::Tensor;

use super::{Conv1D, Gpt2, LayerNorm};
use crate::tensors::to_f32s;
use crate::weights::{save_f32, write_atomic};
use crate::ModelError;

fn entry<const D: usize>(name: String, tensor: Tensor<D>) -> (String, Vec<usize>, Vec<f32>) {
    (name, tensor.dims().to_vec(), to_f32s(tensor.detach()))
}

fn norm(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, name: &str, norm: &LayerNorm) {
    out.push(entry(format!("{name}.weight"), norm.weight.val()));
    out.push(entry(format!("{name}.bias"), norm.bias.val()));
}

fn conv(out: &mut Vec<(String, Vec<usize>, Vec<f32>)>, name: &str, conv: &Conv1D) {
    out.push(entry(format!("{name}.weight"), conv.weight.val()));
    out.push(entry(format!("{name}.bias"), conv.bias.val()));
}

/// Saves `model` so that [`super::load_gpt2`] and HF `from_pretrained` read it back.
pub fn save_gpt2(model: &Gpt2, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut tensors = vec![entry("wte.weight".into(), model.wte.val()), entry("wpe.weight".into(), model.wpe.val())];
    for (layer, block) in model.h.iter().enumerate() {
        norm(&mut tensors, &format!("h.{layer}.ln_1"), &block.ln_1);
        conv(&mut tensors, &format!("h.{layer}.attn.c_attn"), &block.attn.c_attn);
        conv(&mut tensors, &format!("h.{layer}.attn.c_proj"), &block.attn.c_proj);
        norm(&mut tensors, &format!("h.{layer}.ln_2"), &block.ln_2);
        conv(&mut tensors, &format!("h.{layer}.mlp.c_fc"), &block.mlp.c_fc);
        conv(&mut tensors, &format!("h.{layer}.mlp.c_proj"), &block.mlp.c_proj);
    }
    norm(&mut tensors, "ln_f", &model.ln_f);
    save_f32(&dir.join("model.safetensors"), &tensors)?;
    let mut config = serde_json::to_value(&model.config).expect("config serialises");
    config["model_type"] = "gpt2".into();
    config["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    config["tie_word_embeddings"] = true.into();
    let text = serde_json::to_string_pretty(&config).expect("config serialises");
    write_atomic(&dir.join("config.json"), text.as_bytes())
}
