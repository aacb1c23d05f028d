//! A pass's input embeddings, `scale · tokens[ids] + positions[position_ids + offset]`: GPT-2's
//! `wte[ids] + wpe[positions]`, BART's `embed_scale · shared[ids] + positions[t + 2]`. On a GPU
//! without autodiff (a decoding step, evaluation) one kernel ([`prefix_tune_shaders::embed`]);
//! elsewhere the gathers and the sum as tensor operations, which it equals bit for bit.

use burn::tensor::{module::embedding, Int, Tensor};

/// `[B, T, D]` from tables `[V, D]` (tokens) and `[P, D]` (positions) and ids `[B, T]` each,
/// which the caller has checked are in range.
pub fn embed(tokens: &Tensor<2>, ids: Tensor<2, Int>, scale: f32, positions: &Tensor<2>, position_ids: Tensor<2, Int>, offset: usize) -> Tensor<3> {
    #[cfg(feature = "gpu")]
    {
        let device = tokens.device();
        let f32s = tokens.dtype() == burn::tensor::DType::F32 && positions.dtype() == burn::tensor::DType::F32;
        if f32s && !device.is_autodiff() && crate::backend::is_gpu(&device) {
            return gpu::embed(tokens, ids, scale, positions, position_ids, offset as u32);
        }
    }
    let tokens = embedding(tokens.clone(), ids); // [B, T, D]
    // A scale of 1 (GPT-2, BART without `scale_embedding`) is no multiplication.
    let tokens = if scale == 1.0 { tokens } else { tokens * scale };
    let position_ids = if offset == 0 { position_ids } else { position_ids + offset as i64 };
    tokens + embedding(positions.clone(), position_ids)
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::backend_extension;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::{FloatTensor, IntTensor};
    use burn::tensor::{Int, Shape, Tensor};
    use prefix_tune_shaders::{embed as kernel, CubeBackend, CubeTensor};

    #[backend_extension(Cube, Fusion)]
    pub trait CubeEmbed: burn::backend::Backend {
        /// `[R, D]`: `scale · tokens[ids] + positions[position_ids + offset]` (the scale as its
        /// bits: an op's arguments compare and hash).
        #[fusion(meta = |tokens, ids, _positions, _position_ids, _scale, _offset| TensorSpec::new(Shape::new([ids.shape[0], tokens.shape[1]]), tokens.dtype))]
        fn cube_embed(tokens: FloatTensor<Self>, ids: IntTensor<Self>, positions: FloatTensor<Self>, position_ids: IntTensor<Self>, scale: u32, offset: u32) -> FloatTensor<Self>;
    }

    impl CubeEmbed for CubeBackend {
        fn cube_embed(tokens: CubeTensor, ids: CubeTensor, positions: CubeTensor, position_ids: CubeTensor, scale: u32, offset: u32) -> CubeTensor {
            kernel::embed(tokens, ids, positions, position_ids, f32::from_bits(scale), offset)
        }
    }

    pub fn embed(tokens: &Tensor<2>, ids: Tensor<2, Int>, scale: f32, positions: &Tensor<2>, position_ids: Tensor<2, Int>, offset: u32) -> Tensor<3> {
        let [batch, seq] = ids.dims();
        let width = tokens.dims()[1];
        let flat = |ids: Tensor<2, Int>| ids.reshape([batch * seq]).into_dispatch();
        let out = <burn::backend::Dispatch as CubeEmbed>::cube_embed(tokens.clone().into_dispatch(), flat(ids), positions.clone().into_dispatch(), flat(position_ids), scale.to_bits(), offset);
        Tensor::<2>::from_dispatch(out).reshape([batch, seq, width])
    }
}
