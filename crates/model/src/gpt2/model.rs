//! GPT-2 as Hugging Face's `GPT2LMHeadModel` computes it, with a slot in every attention layer
//! for past keys and values: where a prefix goes, and where the KV cache goes.

use burn::module::{Module, Param};
use burn::tensor::{module::embedding, Int, Tensor};

use super::config::{Activation, Gpt2Config};
use crate::attention::{attend_packed, unpack, KeyValue};
use crate::dropout::Masked;
use crate::kv::{Appended, KvStore};
use crate::matmul::Then;
pub use crate::nn::{Dropout, LayerNorm, Linear as Conv1D, With};

#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Projects to queries, keys and values at once: `[D, 3·D]`.
    pub c_attn: Conv1D,
    pub c_proj: Conv1D,
    #[module(skip)]
    pub n_head: usize,
    #[module(skip)]
    pub scale: f32,
}

impl SelfAttention {
    /// The queries of `norm(x)` attend over `store`'s earlier keys of layer `layer` and the
    /// current ones; returns `x` plus the result (the residual stream).
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, bias: `[B, 1, T, S]` (S: earlier keys + T)
    /// - returns `[B, T, D]`
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, norm: &LayerNorm, x: Tensor<3>, store: &mut dyn KvStore, layer: usize, bias: Option<Tensor<4>>, dropout: Dropout) -> Tensor<3> {
        let [batch, seq, d_model] = x.dims();
        let head_dim = d_model / self.n_head;
        // Split into heads before the three are taken apart: the gradients of the three slices
        // then land in `[B, T, 3·H, Dh]` as they come (strided views of the attention's), with
        // nothing to merge and copy first.
        let qkv = self.c_attn.forward_with(x.clone(), With { norm: Some(norm), ..With::default() });
        let qkv = qkv.reshape([batch, seq, 3 * self.n_head, head_dim]); // [B, T, 3·H, Dh]
        let out = match store.passing(layer) {
            // Nothing kept (a loss): on a GPU the three stay packed, and so does their gradient.
            Some(earlier) => attend_packed(qkv, earlier, bias, self.scale, dropout.attention()),
            None => {
                let (queries, current) = unpack(qkv); // [B, H, T, Dh] each
                store.attend(layer, queries, current, bias, self.scale, dropout.attention()) // S keys: earlier, then current
            }
        }; // [B, T, D]
        self.c_proj.forward_residual(out, x, dropout.residual())
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Conv1D,
    pub c_proj: Conv1D,
    #[module(skip)]
    pub activation: Activation,
}

impl Mlp {
    /// `x + c_proj(activation(c_fc(norm(x))))`, dropout on the second product's output.
    pub fn forward(&self, norm: &LayerNorm, x: Tensor<3>, dropout: Dropout) -> Tensor<3> {
        let hidden = self.c_fc.forward_with(x.clone(), With { norm: Some(norm), activation: Some(self.activation), residual: None });
        self.c_proj.forward_residual(hidden, x, dropout.residual())
    }
}

#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: SelfAttention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    pub fn forward(&self, x: Tensor<3>, store: &mut dyn KvStore, layer: usize, bias: Option<Tensor<4>>, dropout: Dropout) -> Tensor<3> {
        let x = self.attn.forward(&self.ln_1, x, store, layer, bias, dropout);
        self.mlp.forward(&self.ln_2, x, dropout)
    }
}

impl Dropout<'static> {
    /// The rates the checkpoint was trained with (HF's `*_pdrop`), for training mode.
    pub fn from_config(config: &Gpt2Config) -> Self {
        Self { embd: config.embd_pdrop, attn: config.attn_pdrop, resid: config.resid_pdrop, activation: 0.0, draws: None }
    }
}

/// One forward pass's inputs.
///
/// # Shapes
/// - input_ids, position_ids: `[B, T]`
/// - bias: `[B, 1, T, S]` where S = past length + T (see [`crate::attention::attention_bias`])
#[derive(Debug, Clone)]
pub struct Gpt2Input {
    pub input_ids: Tensor<2, Int>,
    pub position_ids: Tensor<2, Int>,
    pub bias: Option<Tensor<4>>,
}

#[derive(Module, Debug)]
pub struct Gpt2 {
    /// Token embeddings `[V, D]`, tied to the LM head.
    pub wte: Param<Tensor<2>>,
    /// Position embeddings `[n_positions, D]`.
    pub wpe: Param<Tensor<2>>,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    /// The head (`wteᵀ`) packed for bf16 products (`--dtype bf16`).
    #[module(skip)]
    pub head_half: Option<crate::bf16::HalfWeight>,
    #[module(skip)]
    pub config: Gpt2Config,
}

impl Gpt2 {
    /// Runs the transformer; `past[l]` (prefix and/or cache) is prepended to layer l's keys and
    /// values. Returns the final hidden states `[B, T, D]` and every layer's past + current
    /// keys/values, the next step's cache.
    pub fn forward(&self, input: Gpt2Input, past: Option<Vec<KeyValue>>, dropout: Dropout) -> (Tensor<3>, Vec<KeyValue>) {
        let mut store = Appended::new(past, self.h.len());
        let hidden = self.forward_stored(input, &mut store, dropout);
        (hidden, store.presents)
    }

    /// [`Gpt2::forward`] with the earlier keys/values in `store` (a [`crate::kv::KvCache`]
    /// written in place, or [`Appended`]); returns the final hidden states `[B, T, D]`.
    pub fn forward_stored(&self, input: Gpt2Input, store: &mut dyn KvStore, dropout: Dropout) -> Tensor<3> {
        self.ln_f.forward(self.stream_stored(input, store, dropout))
    }

    /// [`Gpt2::forward_stored`] before the final LayerNorm: the residual stream `[B, T, D]` out
    /// of the last block, for [`Gpt2::head`].
    pub fn stream_stored(&self, input: Gpt2Input, store: &mut dyn KvStore, dropout: Dropout) -> Tensor<3> {
        let embedded = crate::embed::embed(&self.wte.val(), input.input_ids, 1.0, &self.wpe.val(), input.position_ids, 0); // [B, T, D]
        self.blocks(embedded, input.bias, store, dropout)
    }

    /// [`Gpt2::forward`] from input embeddings `[B, T, D]` instead of token ids (virtual
    /// tokens of the embedding-only ablation, prompt tuning).
    pub fn forward_embedded(
        &self,
        tokens: Tensor<3>,
        position_ids: Tensor<2, Int>,
        bias: Option<Tensor<4>>,
        store: &mut dyn KvStore,
        dropout: Dropout,
    ) -> Tensor<3> {
        let embedded = tokens + embedding(self.wpe.val(), position_ids); // [B, T, D]
        self.ln_f.forward(self.blocks(embedded, bias, store, dropout))
    }

    /// The blocks over the sum of token and position embeddings `[B, T, D]`: the residual
    /// stream before `ln_f`.
    fn blocks(&self, embedded: Tensor<3>, bias: Option<Tensor<4>>, store: &mut dyn KvStore, dropout: Dropout) -> Tensor<3> {
        let [batch, len, _] = embedded.dims();
        let masked = self.masked(batch, len, bias.as_ref().map_or(len, |bias| bias.dims()[3]));
        let draws = dropout.draws_for(masked, &embedded.device());
        let dropout = dropout.with(draws.as_ref());
        let mut x = dropout.embeddings().apply(embedded);
        for (layer, block) in self.h.iter().enumerate() {
            x = block.forward(x, store, layer, bias.clone(), dropout);
        }
        x
    }

    /// What dropout masks in a pass over `batch` rows of `len` tokens whose queries see `keys`
    /// keys (earlier and current).
    pub fn masked(&self, batch: usize, len: usize, keys: usize) -> Masked {
        let (layers, width) = (self.h.len(), self.config.n_embd);
        Masked {
            embeddings: batch * len * width,
            attention: layers * batch * self.config.n_head * len * keys,
            residual: layers * 2 * batch * len * width,
            activation: 0,
            masks: 1 + layers * 3,
        }
    }

    /// Logits over the vocabulary through the head tied to `wte`: `[B, T, D] → [B, T, V]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let chosen = self.head_kernel(&hidden);
        self.logits_through(hidden, chosen)
    }

    /// `ln_f`, then the LM head: the residual stream `[B, T, D]` to logits `[B, T, V]`. Where the
    /// head's product goes to the few-row kernel of `shaders/` (a decoding step's rows on a GPU,
    /// as the tuner or `PREFIX_TUNE_MATMUL` chooses, no autodiff), that kernel normalises each
    /// row as it reads it: one launch.
    pub fn head(&self, stream: Tensor<3>) -> Tensor<3> {
        // The norm keeps the shape, so one choice serves the product with or without it.
        let chosen = self.head_kernel(&stream);
        if let Some(logits) = chosen.and_then(|chosen| self.head_in_one_launch(&stream, chosen)) {
            return logits;
        }
        self.logits_through(self.ln_f.forward(stream), chosen)
    }

    /// The kernel of `shaders/` that takes the head's product of `hidden` (see
    /// [`crate::matmul::ours`]); `None` where Burn's matmul, the CPU's kernels or half precision do.
    fn head_kernel(&self, hidden: &Tensor<3>) -> Option<crate::matmul::Kernel> {
        match &self.head_half {
            Some(half) => crate::matmul::ours_half(hidden, half.on_gpu()?),
            None => crate::matmul::ours(hidden, &self.wte.val(), None, true),
        }
    }

    /// The head's weight as a kernel of ours reads it, and whether it is used transposed:
    /// `wte` `[V, D]`, or its half-precision copy `[D, V]`.
    fn head_weight(&self) -> (Tensor<2>, bool) {
        match self.head_half.as_ref().and_then(crate::bf16::HalfWeight::on_gpu) {
            Some(half) => (half.clone(), false),
            None => (self.wte.val(), true),
        }
    }

    /// `hidden · wteᵀ` through `chosen`, else half precision or Burn's matmul.
    fn logits_through(&self, hidden: Tensor<3>, chosen: Option<crate::matmul::Kernel>) -> Tensor<3> {
        let [batch, seq, d_model] = hidden.dims();
        let vocab = self.wte.val().dims()[0];
        let rows = hidden.reshape([batch * seq, d_model]); // [B·T, D]
        let (weight, transposed) = self.head_weight();
        let logits = match chosen.and_then(|chosen| crate::matmul::kernel(rows.clone(), weight, None, transposed, chosen)) {
            Some(logits) => logits,
            None => match &self.head_half {
                Some(head) => crate::bf16::matmul(rows, head),
                None => crate::few_rows::matmul(rows, self.wte.val().transpose()),
            },
        };
        logits.reshape([batch, seq, vocab])
    }

    /// [`Gpt2::head`] as one launch of `chosen`, where it takes `ln_f`.
    fn head_in_one_launch(&self, stream: &Tensor<3>, chosen: crate::matmul::Kernel) -> Option<Tensor<3>> {
        let [batch, seq, d_model] = stream.dims();
        let rows = stream.clone().reshape([batch * seq, d_model]); // [B·T, D]
        let (weight, transposed) = self.head_weight();
        let vocab = self.wte.val().dims()[0];
        let then = Then { norm: Some(&self.ln_f), ..Then::default() };
        Some(crate::matmul::kernel_then(rows, weight, None, transposed, chosen, then)?.reshape([batch, seq, vocab]))
    }

    /// `--dtype bf16` or `f16`: every frozen matrix product from now on in half precision with
    /// f32 sums (the weights converted once; the f32 weights stay for everything else). Errors
    /// where the device cannot run it.
    pub fn use_half(&mut self, dtype: crate::bf16::Dtype) -> Result<(), crate::ModelError> {
        if let Some(why) = crate::bf16::unavailable(&self.wte.device(), dtype) {
            return Err(crate::ModelError::Backend(why));
        }
        for block in &mut self.h {
            for linear in [&mut block.attn.c_attn, &mut block.attn.c_proj, &mut block.mlp.c_fc, &mut block.mlp.c_proj] {
                linear.use_half(dtype);
            }
        }
        self.head_half = Some(crate::bf16::HalfWeight::pack(self.wte.val().transpose(), dtype));
        Ok(())
    }

    pub fn n_layer(&self) -> usize {
        self.h.len()
    }
}
