//! BART as a [`Decoder`] for the shared search loop: the encoder runs once per input, its
//! cross-attention keys/values are computed once and reused, and the decoder's cache lives here
//! (both in [`KvCache`]s, so beams reorder without copying keys).

use super::{Bart, BartPrefix, DecoderState};
use crate::kv::KvCache;
use crate::past::Past;
use crate::generate::{generate, Decoder, GenerateConfig, Generated};
use crate::nn::Dropout;
use crate::ModelError;
use burn::tensor::Tensor;

pub struct BartSearch<'a> {
    model: &'a Bart,
    /// The decoder prefix and every token fed so far, per row, written in place.
    cache: KvCache,
    /// The cross-attention memory (cross prefix, encoder keys) per row.
    cross: KvCache,
    /// The next token's position (the same for every row of a search).
    position: usize,
}

impl<'a> BartSearch<'a> {
    /// A search over `state`'s rows (one per input; the search expands them to its beams), with
    /// room for `tokens` decoder tokens per row from the start.
    pub fn new(model: &'a Bart, state: DecoderState, tokens: usize) -> Result<Self, ModelError> {
        let rows = state.rows();
        let mut cross = model.kv_cache(rows * state.cross.len(), crate::kv::NO_LIMIT);
        cross.push(state.cross)?;
        let prefix_len = state.self_attn.as_ref().map_or(0, Past::len);
        let mut cache = model.kv_cache(rows * (prefix_len + tokens), crate::kv::NO_LIMIT);
        cache.push_prefix(state.self_attn, rows)?;
        Ok(Self { model, cache, cross, position: state.tokens })
    }
}

impl Decoder for BartSearch<'_> {
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError> {
        if mask.iter().flatten().any(|&m| m < 0.5) {
            return Err(ModelError::Input("BART's decoder prompts must not be padded".into()));
        }
        let positions = vec![self.position; ids.len()];
        let hidden = self.model.decode_cached(ids, &positions, &mut self.cache, &self.cross, Dropout::default())?;
        self.position += ids.first().map_or(0, Vec::len);
        // Only the last position feeds the next token: the LM head runs there alone.
        let seq = hidden.dims()[1];
        Ok(self.model.logits(hidden.narrow(1, seq - 1, 1)).squeeze_dim::<2>(1))
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        self.cache.keep(rows);
        self.cross.keep(rows);
        Ok(())
    }
}

/// Summarises every input (token ids without padding) with HF `generate`'s encoder-decoder
/// semantics: each output starts after `decoder_start_token_id`; `max_new_tokens` and
/// `min_new_tokens` count the tokens after it (HF's `max_length` − 1, `min_length` − 1).
/// `prefix` rows are per input; the encoder's stays at one row per input while the decoder's
/// and the cross-attention's expand to one row per beam. `decoder_offset` is the decoder's
/// first position (0; P for a PEFT adapter).
pub fn generate_bart(model: &Bart, inputs: &[Vec<u32>], prefix: &BartPrefix, decoder_offset: usize, config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(index) = inputs.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("input {index} is empty: give at least one token")));
    }
    let start = config
        .decoder_start_token_id
        .ok_or_else(|| ModelError::Input("an encoder-decoder model needs decoder_start_token_id".into()))?;
    if decoder_offset + 1 + config.max_new_tokens > model.config.max_position_embeddings {
        return Err(ModelError::Input(format!(
            "decoder start + max_new_tokens ({}) exceed the model's max_position_embeddings = {}",
            config.max_new_tokens, model.config.max_position_embeddings
        )));
    }
    let (ids, mask) = right_pad(inputs, config.pad_token_id);
    let cross = model.encode_tokens(&ids, &mask, prefix, Dropout::default())?;
    let mut state = model.start_decoding(cross, prefix.decoder.clone())?;
    state.tokens = decoder_offset;
    // The encoder ran once per input; the search expands the decoder's state to the beams.
    let prompts = vec![vec![start]; inputs.len()];
    generate(&mut BartSearch::new(model, state, 1 + config.max_new_tokens)?, &prompts, config)
}

/// Right-pads rows to one length (BART's encoder inputs are right-padded) and their masks.
pub fn right_pad(rows: &[Vec<u32>], pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let ids = rows.iter().map(|row| row.iter().copied().chain(std::iter::repeat_n(pad, width - row.len())).collect()).collect();
    let mask = rows.iter().map(|row| (0..width).map(|t| if t < row.len() { 1.0 } else { 0.0 }).collect()).collect();
    (ids, mask)
}

/// A checkpoint's decoding defaults (`generate`'s base for BART): `config.json` overlaid by
/// `generation_config.json`, with HF's meaning of `max_length`/`min_length`.
pub fn generation_defaults(dir: &std::path::Path) -> Result<GenerateConfig, ModelError> {
    let mut merged = serde_json::Map::new();
    for file in ["config.json", "generation_config.json"] {
        let path = dir.join(file);
        if !path.is_file() {
            continue;
        }
        if let Some(fields) = crate::hf_config::read_json(&path)?.as_object() {
            merged.extend(fields.clone());
        }
    }
    GenerateConfig::from_hf(&serde_json::Value::Object(merged), true).map_err(|e| e.at(dir.join("generation_config.json")))
}
