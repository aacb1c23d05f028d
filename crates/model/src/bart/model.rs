//! BART (Lewis et al., 2020) as Hugging Face's `BartForConditionalGeneration` computes it, with
//! keys and values in front of every attention: the encoder's self-attention, the decoder's
//! self-attention and its cross-attention each take their own prefix (Li & Liang, 2021, §4.2).

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

use crate::attention::{attend, attend_packed, unpack, KeyValue, Memory};
use crate::dropout::Masked;
use crate::kv::{KvMemory, KvStore};
use crate::nn::{Activation, Dropout, LayerNorm, Linear, With};

/// Cross-attention: queries from the decoder, keys and values from the encoder's output, each
/// its own projection (PyTorch `nn.Linear`s, stored `[in, out]`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl Attention {
    fn use_half(&mut self, dtype: crate::bf16::Dtype) {
        for linear in [&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.out_proj] {
            linear.use_half(dtype);
        }
    }

    /// `[B, S, D] → [B, H, S, Dh]`
    fn to_heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, self.n_head, self.head_dim]).swap_dims(1, 2)
    }

    /// The keys and values of `x` `[B, S, D]`: `[B, H, S, Dh]` each.
    pub fn keys_values(&self, x: Tensor<3>) -> KeyValue {
        KeyValue { keys: self.to_heads(self.k_proj.forward(x.clone())), values: self.to_heads(self.v_proj.forward(x)) }
    }

    /// Queries from `x` `[B, T, D]` attend over `memory` (prefix, cache and current keys, or
    /// prefix and encoder keys), S keys in all; `bias` `[B, 1, T, S]`. Returns `x` plus the
    /// attention's output, `[B, T, D]`.
    pub fn forward(&self, x: Tensor<3>, memory: Memory, bias: Tensor<4>, dropout: Dropout) -> Tensor<3> {
        let queries = self.to_heads(self.q_proj.forward(x.clone()));
        let out = attend(queries, memory, Some(bias), scale(self.head_dim), dropout.attention()); // [B, T, D]
        self.out_proj.forward_residual(out, x, dropout.residual())
    }

}

/// BART's attention scale, `1/√Dh`, as HF computes it (in f32).
fn scale(head_dim: usize) -> f32 {
    (head_dim as f32).powf(-0.5)
}

/// Self-attention, its query, key and value projections side by side (`q_proj`, `k_proj`,
/// `v_proj` as one `[D, 3·D]` product, as GPT-2's `c_attn`): one product where there were three,
/// and back one input gradient where three were summed. On a GPU the three stay packed into the
/// attention kernels, and so does their gradient.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub out_proj: Linear,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl SelfAttention {
    fn use_half(&mut self, dtype: crate::bf16::Dtype) {
        self.qkv.use_half(dtype);
        self.out_proj.use_half(dtype);
    }

    /// `[B, T, D] → [B, T, 3·H, Dh]`: queries, keys and values, split into heads.
    fn projected(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, len, _] = x.dims();
        self.qkv.forward(x).reshape([batch, len, 3 * self.n_head, self.head_dim])
    }

    /// The encoder's: the queries of `x` `[B, S, D]` attend over `prefix` (`[B|1, H, P, Dh]`)
    /// then `x`'s own keys; `bias` `[B, 1, S, P + S]`. Returns `x` plus the attention's output.
    pub fn forward(&self, x: Tensor<3>, prefix: Option<KeyValue>, bias: Tensor<4>, dropout: Dropout) -> Tensor<3> {
        let out = attend_packed(self.projected(x.clone()), prefix, Some(bias), scale(self.head_dim), dropout.attention()); // [B, S, D]
        self.out_proj.forward_residual(out, x, dropout.residual())
    }

    /// The decoder's: over `store`'s earlier keys of layer `layer` (prefix, cache) and `x`'s
    /// own, which the store keeps (a KV cache writes them as it attends).
    pub fn forward_stored(&self, x: Tensor<3>, store: &mut dyn KvStore, layer: usize, bias: Tensor<4>, dropout: Dropout) -> Tensor<3> {
        let qkv = self.projected(x.clone());
        let out = match store.passing(layer) {
            // Nothing kept (a loss): on a GPU the three stay packed, and so does their gradient.
            Some(earlier) => attend_packed(qkv, earlier, Some(bias), scale(self.head_dim), dropout.attention()),
            None => {
                let (queries, current) = unpack(qkv); // [B, H, T, Dh] each
                store.attend(layer, queries, current, Some(bias), scale(self.head_dim), dropout.attention())
            }
        }; // [B, T, D]
        self.out_proj.forward_residual(out, x, dropout.residual())
    }
}

/// fc1 → activation → fc2.
#[derive(Module, Debug)]
pub struct FeedForward {
    pub fc1: Linear,
    pub fc2: Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl FeedForward {
    /// `x + fc2(activation(fc1(x)))`.
    pub fn forward(&self, x: Tensor<3>, dropout: Dropout) -> Tensor<3> {
        let hidden = dropout.activation().apply(self.fc1.forward_with(x.clone(), With { activation: Some(self.activation), ..With::default() }));
        self.fc2.forward_residual(hidden, x, dropout.residual())
    }
}

/// Post-LayerNorm: each sub-layer adds to the residual stream, then normalises it.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    pub self_attn: SelfAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub ffn: FeedForward,
    pub final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    /// `prefix`: this layer's prefix keys/values `[B, H, P, Dh]`, in front of the tokens'.
    pub fn forward(&self, x: Tensor<3>, prefix: Option<KeyValue>, bias: Tensor<4>, dropout: Dropout) -> Tensor<3> {
        let x = self.self_attn_layer_norm.forward(self.self_attn.forward(x, prefix, bias, dropout));
        self.final_layer_norm.forward(self.ffn.forward(x, dropout))
    }
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub self_attn_layer_norm: LayerNorm,
    pub encoder_attn: Attention,
    pub encoder_attn_layer_norm: LayerNorm,
    pub ffn: FeedForward,
    pub final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    /// Self-attention over `store`'s keys of layer `layer` (decoder prefix, cache) and the
    /// current ones; cross-attention over `cross`'s (cross prefix, encoder keys).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: Tensor<3>,
        store: &mut dyn KvStore,
        cross: &dyn KvMemory,
        layer: usize,
        self_bias: Tensor<4>,
        cross_bias: Tensor<4>,
        dropout: Dropout,
    ) -> Tensor<3> {
        let x = self.self_attn_layer_norm.forward(self.self_attn.forward_stored(x, store, layer, self_bias, dropout));
        let x = self.encoder_attn_layer_norm.forward(self.encoder_attn.forward(x, cross.layer(layer), cross_bias, dropout));
        self.final_layer_norm.forward(self.ffn.forward(x, dropout))
    }
}

/// Token embeddings (shared), learned positions and `layernorm_embedding`: one stack's input.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// `[max_position_embeddings + 2, D]`; row t + 2 is position t.
    pub positions: Param<Tensor<2>>,
    pub layernorm_embedding: LayerNorm,
}

#[derive(Module, Debug)]
pub struct Bart {
    /// Token embeddings `[V, D]`, shared by encoder, decoder and the LM head.
    pub shared: Param<Tensor<2>>,
    pub encoder_embeddings: Embeddings,
    pub encoder_layers: Vec<EncoderLayer>,
    pub decoder_embeddings: Embeddings,
    pub decoder_layers: Vec<DecoderLayer>,
    /// Added to the logits `[V]` (a buffer in HF, zero in most checkpoints).
    pub final_logits_bias: Param<Tensor<1>>,
    /// The head (`sharedᵀ`) packed for bf16 products (`--dtype bf16`).
    #[module(skip)]
    pub head_half: Option<crate::bf16::HalfWeight>,
    #[module(skip)]
    pub config: super::BartConfig,
}

impl Bart {
    /// `embed_scale · E[ids] + P[positions + 2]`, normalised, with dropout: `[B, T, D]`.
    fn embed(&self, stack: &Embeddings, ids: Tensor<2, Int>, positions: Tensor<2, Int>, dropout: Dropout) -> Tensor<3> {
        let embedded = crate::embed::embed(&self.shared.val(), ids, self.config.embed_scale(), &stack.positions.val(), positions, super::config::POSITION_OFFSET);
        dropout.embeddings().apply(stack.layernorm_embedding.forward(embedded))
    }

    /// The encoder over `ids` `[B, S]` at positions 0..S; `prefix[l]` goes in front of layer
    /// l's keys. `bias` `[B, 1, S, P + S]`. Returns `[B, S, D]`.
    pub fn encode(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>, prefix: Option<Vec<KeyValue>>, bias: Tensor<4>, dropout: Dropout) -> Tensor<3> {
        let masked = self.masked(&ids, self.config.encoder_layers, self.config.encoder_attention_heads, bias.dims()[3], self.config.encoder_ffn_dim, 2);
        let draws = dropout.draws_for(masked, &ids.device());
        let dropout = dropout.with(draws.as_ref());
        let mut x = self.embed(&self.encoder_embeddings, ids, positions, dropout);
        let mut prefix = prefix.map(Vec::into_iter);
        for layer in &self.encoder_layers {
            let layer_prefix = prefix.as_mut().and_then(Iterator::next);
            x = layer.forward(x, layer_prefix, bias.clone(), dropout);
        }
        x
    }

    /// What dropout masks in a pass of a stack of `layers` over `ids` `[B, T]`: each layer's
    /// queries see `keys` keys (in all of its attentions), its feed-forward is `ffn` wide, and
    /// `residuals` sub-layers add to the residual stream.
    fn masked(&self, ids: &Tensor<2, Int>, layers: usize, heads: usize, keys: usize, ffn: usize, residuals: usize) -> Masked {
        let [batch, len] = ids.dims();
        let rows = batch * len;
        Masked {
            embeddings: rows * self.config.d_model,
            attention: layers * batch * heads * len * keys,
            residual: layers * residuals * rows * self.config.d_model,
            activation: layers * rows * ffn,
            masks: 1 + layers * 2 * residuals, // embeddings; attentions, residuals and activation
        }
    }

    /// Every decoder layer's cross-attention keys/values of the encoder output `[B, S, D]`:
    /// computed once per input, reused at every decoding step.
    pub fn cross_keys_values(&self, encoded: Tensor<3>) -> Vec<KeyValue> {
        self.decoder_layers.iter().map(|layer| layer.encoder_attn.keys_values(encoded.clone())).collect()
    }

    /// The decoder over `ids` `[B, T]`: layer l's self-attention reads `store`'s earlier keys
    /// (prefix and cache) and adds the current ones, its cross-attention reads `cross`.
    /// Biases: self `[B, 1, T, S]`, cross `[B, 1, T, S_cross]`. Returns `[B, T, D]`.
    #[allow(clippy::too_many_arguments)]
    pub fn decode(
        &self,
        ids: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        store: &mut dyn KvStore,
        cross: &dyn KvMemory,
        self_bias: Tensor<4>,
        cross_bias: Tensor<4>,
        dropout: Dropout,
    ) -> Tensor<3> {
        let keys = self_bias.dims()[3] + cross_bias.dims()[3];
        let masked = self.masked(&ids, self.config.decoder_layers, self.config.decoder_attention_heads, keys, self.config.decoder_ffn_dim, 3);
        let draws = dropout.draws_for(masked, &ids.device());
        let dropout = dropout.with(draws.as_ref());
        let mut x = self.embed(&self.decoder_embeddings, ids, positions, dropout);
        for (index, layer) in self.decoder_layers.iter().enumerate() {
            x = layer.forward(x, store, cross, index, self_bias.clone(), cross_bias.clone(), dropout);
        }
        x
    }

    /// Logits through the head tied to the shared embeddings, plus `final_logits_bias`:
    /// `[B, T, D] → [B, T, V]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let [batch, seq, d_model] = hidden.dims();
        let vocab = self.config.vocab_size;
        let rows = hidden.reshape([batch * seq, d_model]); // [B·T, D]
        let bias = self.final_logits_bias.val(); // [V]
        // A kernel of `shaders/` adds the bias as it writes each logit.
        let logits = match &self.head_half {
            Some(head) => {
                let through_ours = head.on_gpu().and_then(|weight| {
                    let chosen = crate::matmul::ours_half(&rows, weight)?;
                    crate::matmul::kernel(rows.clone(), weight.clone(), Some(bias.clone()), false, chosen)
                });
                through_ours.unwrap_or_else(|| crate::bf16::matmul(rows, head) + bias.unsqueeze::<2>())
            }
            None => match crate::matmul::frozen(&rows, &self.shared.val(), Some(&bias), true) {
                Some(logits) => logits,
                None => crate::few_rows::matmul(rows, self.shared.val().transpose()) + bias.unsqueeze::<2>(),
            },
        };
        logits.reshape([batch, seq, vocab])
    }

    /// `--dtype bf16`: every frozen matrix product from now on in bf16 with f32 sums (the
    /// weights packed once). Errors where the device cannot run it.
    pub fn use_half(&mut self, dtype: crate::bf16::Dtype) -> Result<(), crate::ModelError> {
        if let Some(why) = crate::bf16::unavailable(&self.shared.device(), dtype) {
            return Err(crate::ModelError::Backend(why));
        }
        for attention in self.encoder_layers.iter_mut().map(|layer| &mut layer.self_attn) {
            attention.use_half(dtype);
        }
        for layer in &mut self.decoder_layers {
            layer.self_attn.use_half(dtype);
            layer.encoder_attn.use_half(dtype);
        }
        for ffn in self.encoder_layers.iter_mut().map(|l| &mut l.ffn).chain(self.decoder_layers.iter_mut().map(|l| &mut l.ffn)) {
            ffn.fc1.use_half(dtype);
            ffn.fc2.use_half(dtype);
        }
        self.head_half = Some(crate::bf16::HalfWeight::pack(self.shared.val().transpose(), dtype));
        Ok(())
    }
}
