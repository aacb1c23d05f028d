//! Products with a frozen weight, `x · W` or `x · Wᵀ`: the linear layers and the tied LM head.
//!
//! On a GPU with `PREFIX_TUNE_MATMUL=shaders` (or `shaders:128x128`, another block; see
//! [`Tile`]) they run the tiled kernel of `shaders/`
//! ([`prefix_tune_shaders::matmul`]) forward and, for the input's gradient, backward (the same
//! kernel with the weight the other way round). It is opt-in: `bench matmul` times it against
//! Burn's matmul, and only a GPU can say which is faster. Elsewhere, and by default, Burn's
//! matmul.

use burn::tensor::Tensor;

/// The outputs each thread of the kernel computes, `rows × cols`, in runs of `run` neighbouring
/// rows and columns read from shared memory as one vector (1 or 4); a cube's block is
/// `16·rows × 16·cols`. Small blocks make more cubes for a few hundred rows; large ones read
/// each staged value into more products. `split_k`: whether a product with too few blocks to
/// fill a large GPU splits K across cubes ([`splits`]); off only for `bench matmul`'s
/// comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    pub rows: usize,
    pub cols: usize,
    pub run: usize,
    pub split_k: bool,
}

impl Tile {
    /// 64 × 64 blocks, 4 × 4 outputs per thread, scalar reads.
    pub const DEFAULT: Tile = Tile::new(4, 4, 1);
    /// The blocks `bench matmul` compares: 32 × 64, 64 × 64, 64 × 128 and 128 × 128 with scalar
    /// reads, and the last three with vectors of four.
    pub const ALL: [Tile; 7] = [
        Tile::new(2, 4, 1),
        Tile::DEFAULT,
        Tile::new(4, 8, 1),
        Tile::new(8, 8, 1),
        Tile::new(4, 4, 4),
        Tile::new(4, 8, 4),
        Tile::new(8, 8, 4),
    ];

    const fn new(rows: usize, cols: usize, run: usize) -> Tile {
        Tile { rows, cols, run, split_k: true }
    }

    /// The block as `ROWSxCOLS`, with `_v4` for vector reads: `64x64`, `128x128_v4`.
    pub fn name(self) -> String {
        let vectors = if self.run > 1 { format!("_v{}", self.run) } else { String::new() };
        format!("{}x{}{vectors}", 16 * self.rows, 16 * self.cols)
    }
}

/// Into how many parts the kernel splits the K of an `[m, k] · [k, n]` product in `tile`'s
/// blocks (1: not split, and always 1 without a GPU backend).
pub fn splits(m: usize, k: usize, n: usize, tile: Tile) -> usize {
    #[cfg(feature = "gpu")]
    if tile.split_k {
        return prefix_tune_shaders::matmul::splits(m, k, n, gpu::tiling(tile));
    }
    let _ = (m, k, n, tile);
    1
}

/// The block `PREFIX_TUNE_MATMUL` asks for: `shaders` (64 × 64) or `shaders:ROWSxCOLS` (one of
/// [`Tile::ALL`]); `None` (Burn's matmul) when unset or anything else.
pub fn asked() -> Option<Tile> {
    static ASKED: std::sync::OnceLock<Option<Tile>> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| {
        let value = std::env::var("PREFIX_TUNE_MATMUL").ok()?;
        let tile = match value.strip_prefix("shaders") {
            Some("") => Some(Tile::DEFAULT),
            Some(block) => Tile::ALL.into_iter().find(|t| Some(t.name().as_str()) == block.strip_prefix(':')),
            None => None,
        };
        if tile.is_none() {
            let blocks: Vec<String> = Tile::ALL.iter().map(|t| format!("shaders:{}", t.name())).collect();
            eprintln!("warning: PREFIX_TUNE_MATMUL=`{value}` is not `shaders` or one of {}; using Burn's matmul", blocks.join(", "));
        }
        tile
    })
}

/// Whether the kernel can run on these operands at all (a GPU, f32, 32-bit indexable).
pub fn available(x: &Tensor<2>, weight: &Tensor<2>) -> bool {
    #[cfg(feature = "gpu")]
    return crate::backend::is_gpu(&x.device())
        && x.dtype() == burn::tensor::DType::F32
        && weight.dtype() == burn::tensor::DType::F32
        && prefix_tune_shaders::fits(&[x.shape().num_elements(), weight.shape().num_elements()]);
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (x, weight);
        false
    }
}

/// `x [M, K] · weight + bias` (`weight` stored `[K, N]`, or `[N, K]` and used transposed; the
/// bias `[N]` added as each output is written, where there is one) through the kernel, when
/// `PREFIX_TUNE_MATMUL` asks for it, the operands are [`available`] and neither weight nor
/// bias takes a gradient (the kernel differentiates the input only); else `None`, and the
/// caller takes its own path.
pub fn frozen(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Tensor<2>> {
    let tile = asked()?;
    if weight.is_require_grad() || bias.is_some_and(|b| b.is_require_grad()) {
        return None;
    }
    kernel(x.clone(), weight.clone(), bias.cloned(), transposed, tile)
}

/// The kernel of `shaders/`, differentiable in `x`, for [`available`] operands (else `None`):
/// `bench matmul` and the tests call it directly.
pub fn kernel(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, transposed: bool, tile: Tile) -> Option<Tensor<2>> {
    if !available(&x, &weight) || bias.as_ref().is_some_and(|b| b.dtype() != burn::tensor::DType::F32) {
        return None;
    }
    #[cfg(feature = "gpu")]
    {
        // Without a bias the kernel is told so and never reads the one-value tensor in its place.
        let biased = bias.is_some();
        let bias = bias.unwrap_or_else(|| Tensor::empty([1], &x.device())).into_dispatch();
        Some(Tensor::from_dispatch(<burn::backend::Dispatch as gpu::CubeFrozenMatmul>::cube_frozen_matmul(x.into_dispatch(), weight.into_dispatch(), bias, transposed, biased, tile)))
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (bias, transposed, tile);
        None
    }
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::Autodiff;
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::{backend_extension, Cube};
    use burn::tensor::Shape;
    use prefix_tune_shaders::{matmul, CubeBackend, CubeTensor};

    use super::Tile;

    /// `[M, N]` from `[M, K]` and a weight `[K, N]` (or `[N, K]` transposed).
    fn product_spec(x: &TensorSpec, weight: &TensorSpec, transposed: bool) -> TensorSpec {
        let n = if transposed { weight.shape[0] } else { weight.shape[1] };
        TensorSpec::new(Shape::new([x.shape[0], n]), x.dtype)
    }

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeFrozenMatmul: burn::backend::Backend {
        /// `x · W + bias` (or `x · Wᵀ + bias`; no bias unless `biased`); differentiable in `x`
        /// only.
        #[fusion(meta = |x, weight, _bias, transposed, _biased, _tile| product_spec(x, weight, *transposed))]
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, transposed: bool, biased: bool, tile: Tile) -> FloatTensor<Self>;
    }

    impl CubeFrozenMatmul for CubeBackend {
        fn cube_frozen_matmul(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, transposed: bool, biased: bool, tile: Tile) -> CubeTensor {
            matmul::matmul(x, weight, biased.then_some(bias), transposed, tiling(tile), tile.split_k)
        }
    }

    pub fn tiling(tile: Tile) -> matmul::Tiling {
        matmul::Tiling { rows: tile.rows, cols: tile.cols, run: tile.run }
    }

    /// The input's gradient: `grad · Wᵀ`, the same kernel with the weight the other way round
    /// (and no bias: the forward's bias tensor only stands in the argument's place).
    #[derive(Debug)]
    struct FrozenMatmulBackward {
        transposed: bool,
        tile: Tile,
    }

    impl Backward<Cube, 1> for FrozenMatmulBackward {
        type State = (FloatTensor<Cube>, FloatTensor<Cube>); // the weight and the bias

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let (transposed, tile) = (self.transposed, self.tile);
            crate::ops::backward_one::<Cube, _>(ops, grads, |(weight, bias), grad| Cube::cube_frozen_matmul(grad, weight, bias, !transposed, false, tile));
        }
    }

    impl<C: CheckpointStrategy> CubeFrozenMatmul for Autodiff<Cube, C> {
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, transposed: bool, biased: bool, tile: Tile) -> FloatTensor<Self> {
            let (weight, bias) = (weight.primitive().clone(), bias.primitive().clone());
            match (FrozenMatmulBackward { transposed, tile }).prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish((weight.clone(), bias.clone()), Cube::cube_frozen_matmul(x.primitive().clone(), weight, bias, transposed, biased, tile)),
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_frozen_matmul(x.into_primitive(), weight, bias, transposed, biased, tile)),
            }
        }
    }
}
