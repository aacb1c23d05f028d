//! Products with a frozen weight, `x · W` or `x · Wᵀ`: the linear layers and the tied LM head.
//!
//! On a GPU, f32, which kernel computes them is [`Kernel`]: `PREFIX_TUNE_MATMUL=tune` times
//! Burn's matmul against the tiled kernel of `shaders/` ([`prefix_tune_shaders::matmul`]) in each
//! block of [`Tile::ALL`] and the few-row kernel ([`prefix_tune_shaders::few_rows`], for a
//! decoding step's rows) the first time a shape is seen, and keeps the fastest
//! ([`prefix_tune_shaders::tune`]); `shaders` (or `shaders:128x128_v4`, another block, or
//! `shaders:few_rows`) always takes ours; `burn` always Burn's. The default is `tune` in a build
//! with the `autotune` feature (a GPU build: Burn tunes its own kernels there too), else Burn's
//! matmul. A block runs forward and, for the input's gradient, backward (the same kernel with
//! the weight the other way round); the tuner picks for the backward product separately. On the
//! CPU, Burn's matmul; in half precision, Burn's matmul in the weight's type ([`in_half`]), or
//! the few-row kernel for a decoding step's rows ([`ours_half`]).

use burn::tensor::{DType, Device, Tensor};

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

/// Which kernel a frozen product takes on a GPU, where [`available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Ours, in this block.
    Block(Tile),
    /// Ours for a few rows (a decoding step's products and LM head).
    FewRows,
    /// The fastest of Burn's matmul and ours in each of [`Tile::ALL`], for the product's shape,
    /// timed on first use.
    Tuned,
    /// A block the tuner chose for this product's shape (see [`through`]); the input's gradient
    /// is tuned on its own.
    TunedBlock(Tile),
    /// The few-row kernel, as the tuner chose it for this product's shape.
    TunedFewRows,
    /// Burn's matmul, then the bias: the tuner's other candidate, alone (for the tests); and a
    /// half-precision weight's product, in its type with f32 sums and output ([`in_half`]).
    Burn,
}

impl Kernel {
    /// As `PREFIX_TUNE_MATMUL` names it: `tune`, `shaders:64x64_v4`, `burn` (this last one inside
    /// the kernel wrapper; the variable's `burn` is Burn's own path).
    pub fn name(self) -> String {
        match self {
            Kernel::Block(tile) => format!("shaders:{}", tile.name()),
            Kernel::FewRows => "shaders:few_rows".into(),
            Kernel::Tuned => "tune".into(),
            Kernel::TunedBlock(tile) => format!("tune:{}", tile.name()),
            Kernel::TunedFewRows => "tune:few_rows".into(),
            Kernel::Burn => "burn".into(),
        }
    }

    /// The kernel for the input's gradient, `grad · Wᵀ`: a tuned product's is tuned on its own
    /// shape; one named is the same kernel with the weight the other way round.
    #[cfg(feature = "gpu")]
    fn input_gradient(self) -> Kernel {
        match self {
            Kernel::TunedBlock(_) | Kernel::TunedFewRows => Kernel::Tuned,
            other => other,
        }
    }
}

/// The kernel `PREFIX_TUNE_MATMUL` asks for (`None`: Burn's matmul): `tune`, `shaders` (64 × 64),
/// `shaders:BLOCK` (one of [`Tile::ALL`]) or `burn`; unset, `tune` where the `autotune` feature
/// is built in, else Burn's. Anything else warns and takes Burn's.
pub fn asked() -> Option<Kernel> {
    static ASKED: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    *ASKED.get_or_init(|| match std::env::var("PREFIX_TUNE_MATMUL") {
        Ok(value) => parse(&value).unwrap_or_else(|| {
            let blocks: Vec<String> = Tile::ALL.iter().map(|t| format!("shaders:{}", t.name())).collect();
            eprintln!("warning: PREFIX_TUNE_MATMUL=`{value}` is not `tune`, `burn`, `shaders`, `shaders:few_rows` or one of {}; using Burn's matmul", blocks.join(", "));
            None
        }),
        Err(_) => cfg!(feature = "autotune").then_some(Kernel::Tuned),
    })
}

/// A value of `PREFIX_TUNE_MATMUL`: `Some(None)` for `burn`, `None` for none of the values.
fn parse(value: &str) -> Option<Option<Kernel>> {
    match value {
        "burn" => Some(None),
        "tune" => Some(Some(Kernel::Tuned)),
        "shaders" => Some(Some(Kernel::Block(Tile::DEFAULT))),
        "shaders:few_rows" => Some(Some(Kernel::FewRows)),
        _ => {
            let block = value.strip_prefix("shaders:")?;
            Tile::ALL.into_iter().find(|t| t.name() == block).map(|tile| Some(Kernel::Block(tile)))
        }
    }
}

/// Each shape the tuner has timed in this process (`[M, K]·[K, N]`, M rounded up to a power of
/// two, `ᵀ` for a weight used transposed, `+ b` with a bias) and the kernel it chose (`burn`,
/// `shaders_BLOCK` or `shaders_few_rows`): what `bench` reports.
pub fn tuned() -> Vec<(String, String)> {
    #[cfg(feature = "gpu")]
    return prefix_tune_shaders::tune::choices().into_iter().map(|(shape, kernel)| (shape, kernel.to_string())).collect();
    #[cfg(not(feature = "gpu"))]
    Vec::new()
}

/// The kernel the tuner chose in this process for `[m, k] · [k, n]` (`transposed`: the weight
/// stored `[n, k]`), if it has timed that shape.
pub fn tuned_for(m: usize, k: usize, n: usize, transposed: bool, biased: bool) -> Option<String> {
    #[cfg(feature = "gpu")]
    return prefix_tune_shaders::tune::choice(m, k, n, transposed, biased).map(|kernel| kernel.to_string());
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (m, k, n, transposed, biased);
        None
    }
}

/// A product's input as the choice of its kernel sees it: `rows × depth` values (a `[B, T, K]`
/// input is B·T rows of K) of `dtype` on `device`, so that a layer chooses before it reshapes.
#[derive(Debug, Clone)]
pub struct Input {
    pub rows: usize,
    pub depth: usize,
    pub dtype: DType,
    pub device: Device,
}

impl Input {
    /// `x`'s last dimension as the depth, the others as rows.
    pub fn of<const D: usize>(x: &Tensor<D>) -> Input {
        let dims = x.dims();
        Input { rows: dims[..D - 1].iter().product(), depth: dims[D - 1], dtype: x.dtype(), device: x.device() }
    }
}

/// Whether the kernel can run on these operands at all (a GPU, f32, 32-bit indexable).
pub fn available(x: &Tensor<2>, weight: &Tensor<2>) -> bool {
    takes(&Input::of(x), weight)
}

/// Whether `chosen` runs on these operands: [`takes`]; a weight in half precision (`--dtype
/// f16`, `bf16`) through Burn's matmul and, without autodiff, the few-row kernel.
fn runs(x: &Input, weight: &Tensor<2>, chosen: Kernel) -> bool {
    let weight_type = match weight.dtype() {
        DType::F32 => true,
        DType::F16 | DType::BF16 => chosen == Kernel::Burn || (matches!(chosen, Kernel::FewRows | Kernel::TunedFewRows) && !x.device.is_autodiff()),
        _ => false,
    };
    weight_type && on_gpu(x, weight)
}

/// [`available`] for an input described by its [`Input`].
fn takes(x: &Input, weight: &Tensor<2>) -> bool {
    weight.dtype() == DType::F32 && on_gpu(x, weight)
}

/// An f32 input on a GPU, both operands indexable in 32 bits.
fn on_gpu(x: &Input, weight: &Tensor<2>) -> bool {
    #[cfg(feature = "gpu")]
    return crate::backend::is_gpu(&x.device) && x.dtype == DType::F32 && prefix_tune_shaders::fits(&[x.rows * x.depth, weight.shape().num_elements()]);
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (x, weight);
        false
    }
}

/// `x [M, K] · weight + bias` (`weight` stored `[K, N]`, or `[N, K]` and used transposed; the
/// bias `[N]` added as each output is written, where there is one) through the [`Kernel`]
/// `PREFIX_TUNE_MATMUL` asks for (see [`through`]); `None` where the caller takes its own path
/// (Burn's matmul).
pub fn frozen(x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Tensor<2>> {
    through(asked()?, x, weight, bias, transposed)
}

/// The kernel of ours that [`frozen`] takes for the product of `x` (any rank: its last
/// dimension is the depth) with `weight` (the tuner's choice resolved, tuning the shape first if
/// need be), or `None` where the product takes Burn's matmul. Decided from the dimensions, so
/// a caller that then takes Burn's path has built nothing for ours.
pub fn ours<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Kernel> {
    resolve(asked()?, &Input::of(x), weight, bias, transposed)
}

/// `asked` for this product: `None` where the operands take no kernel of ours (a GPU, f32,
/// frozen weight and bias) or where the tuner chose Burn's matmul.
fn resolve(asked: Kernel, x: &Input, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Kernel> {
    if weight.is_require_grad() || bias.is_some_and(|b| b.is_require_grad()) || !takes(x, weight) {
        return None;
    }
    match asked {
        Kernel::Tuned => tuned_kernel(x, weight, bias, transposed),
        other => Some(other),
    }
}

/// The kernel of ours for a decoding step's product with a frozen weight in half precision
/// (`--dtype f16` or `bf16` on a GPU): the few-row kernel, for up to 16 rows without autodiff,
/// wherever `PREFIX_TUNE_MATMUL` asks for a kernel of ours (the tuner times f32 products only);
/// `None` elsewhere (Burn's matmul in half precision).
pub fn ours_half<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>) -> Option<Kernel> {
    asked()?;
    let x = Input::of(x);
    (x.rows <= 2 * MAX_FEW_ROWS && runs(&x, weight, Kernel::FewRows)).then_some(Kernel::FewRows)
}

/// `x [M, K] · weight [K, N]` with `weight` in half precision on a GPU (`--dtype f16`, `bf16`):
/// the input rounded to its type and Burn's matmul with f32 sums and output, one op
/// ([`Kernel::Burn`]), differentiable in `x`. `weight` is an autodiff tensor where `x` is.
pub fn in_half(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    match kernel(x.clone(), weight.clone(), None, false, Kernel::Burn) {
        Some(product) => product,
        // Not a GPU build: the tensor form, the product rounded on the way.
        None => x.cast(weight.dtype()).matmul(weight).cast(DType::F32),
    }
}

/// The rows the few-row kernel takes in one read of the weight.
const MAX_FEW_ROWS: usize = 8;

/// What a product's kernel does besides it, in the same launch: `activation(norm(x)·W + b) +
/// residual`. A norm (the few-row kernel's alone) and an activation only where no gradient is
/// recorded (the kernels differentiate the product and the residual, not those); the residual
/// `[M, N]` takes the output's gradient as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Then<'a> {
    pub norm: Option<&'a crate::nn::LayerNorm>,
    pub activation: Option<crate::nn::Activation>,
    pub residual: Option<&'a Tensor<2>>,
}

impl Then<'_> {
    fn is_nothing(&self) -> bool {
        self.norm.is_none() && self.activation.is_none() && self.residual.is_none()
    }
}

/// The product through `asked`, when the operands are [`available`] and neither weight nor bias
/// takes a gradient (the kernels differentiate the input only); else `None`. `Kernel::Tuned`
/// resolves here, as the step is built: to the block the tuner chose for this shape, or to
/// `None` where Burn's matmul won, so that product takes Burn's own path (fused with its
/// neighbours, no separate bias). A shape this process has not seen is tuned first, on zeros of
/// its shape, waiting for the result; which path a product takes never depends on when the
/// lazy kernels happen to run.
pub fn through(asked: Kernel, x: &Tensor<2>, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Tensor<2>> {
    let chosen = resolve(asked, &Input::of(x), weight, bias, transposed)?;
    kernel(x.clone(), weight.clone(), bias.cloned(), transposed, chosen)
}

/// Which of ours the tuner chose for this product's shape, tuning it first if need be; `None`
/// where Burn's matmul won.
fn tuned_kernel(x: &Input, weight: &Tensor<2>, bias: Option<&Tensor<1>>, transposed: bool) -> Option<Kernel> {
    #[cfg(feature = "gpu")]
    {
        let (m, k) = (x.rows, x.depth);
        let n = weight.dims()[if transposed { 0 } else { 1 }];
        let chosen = || gpu::tuned_choice(m, k, n, transposed, bias.is_some());
        chosen().or_else(|| {
            let zeros = Tensor::zeros([m, k], &x.device);
            let probe = kernel(zeros, weight.clone(), bias.cloned(), transposed, Kernel::Tuned)?;
            crate::tensors::to_f32s(probe.narrow(0, 0, 1).narrow(1, 0, 1)); // waits for the tuner
            chosen()
        })?
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (x, weight, bias, transposed);
        None
    }
}

/// The product through `chosen`, differentiable in `x`, for [`available`] operands (else
/// `None`): `bench matmul` and the tests call it directly.
pub fn kernel(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, transposed: bool, chosen: Kernel) -> Option<Tensor<2>> {
    kernel_then(x, weight, bias, transposed, chosen, Then::default())
}

/// [`kernel`] with `then`'s norm, activation and residual in the same launch; `None` also where
/// `chosen` does not take them ([`takes_then`]).
pub fn kernel_then(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>, transposed: bool, chosen: Kernel, then: Then) -> Option<Tensor<2>> {
    if !runs(&Input::of(&x), &weight, chosen) || bias.as_ref().is_some_and(|b| b.dtype() != DType::F32) {
        return None;
    }
    if !then.is_nothing() && !takes_then(chosen, &x, &weight, transposed, &then) {
        return None;
    }
    #[cfg(feature = "gpu")]
    {
        let activation = match then.activation {
            None => prefix_tune_shaders::epilogue::Activation::Identity,
            Some(crate::nn::Activation::GeluTanh) => prefix_tune_shaders::epilogue::Activation::GeluTanh,
            Some(crate::nn::Activation::Gelu) => prefix_tune_shaders::epilogue::Activation::GeluErf,
            Some(crate::nn::Activation::Relu) => return None, // refused by takes_then
        };
        // What is absent is told so and never read: a one-value tensor takes its place.
        let steps = prefix_tune_shaders::epilogue::Epilogue { biased: bias.is_some(), activation, residual: then.residual.is_some() };
        let stand_in = || Tensor::<2>::empty([1, 1], &x.device());
        let one = || Tensor::<1>::empty([1], &x.device());
        let bias = bias.unwrap_or_else(one).into_dispatch();
        let residual = then.residual.cloned().unwrap_or_else(stand_in).into_dispatch();
        let eps = then.norm.map_or(0.0, |norm| norm.eps as f32);
        let [norm_scale, norm_shift] = then.norm.map_or_else(|| [one(), one()], |norm| [norm.weight.val(), norm.bias.val()]).map(Tensor::into_dispatch);
        let norm = gpu::NormArgs { normalized: then.norm.is_some(), eps: eps.to_bits() };
        Some(Tensor::from_dispatch(<burn::backend::Dispatch as gpu::CubeFrozenMatmul>::cube_frozen_matmul(x.into_dispatch(), weight.into_dispatch(), bias, residual, norm_scale, norm_shift, transposed, steps, norm, chosen)))
    }
    #[cfg(not(feature = "gpu"))]
    {
        let _ = (bias, transposed, chosen, then);
        None
    }
}

/// Whether `chosen` takes `then` with the product of `x` `[M, K]` and `weight`: our kernels
/// only (not Burn's matmul, nor the tuner's own call); an f32 residual `[M, N]`; a norm over K
/// in the few-row kernel alone; a norm or an activation only without autodiff (their gradients
/// are the tensor form's), and only the GELUs.
fn takes_then(chosen: Kernel, x: &Tensor<2>, weight: &Tensor<2>, transposed: bool, then: &Then) -> bool {
    let f32s = |dtype: burn::tensor::DType| dtype == burn::tensor::DType::F32;
    let [m, k] = x.dims();
    let n = weight.dims()[if transposed { 0 } else { 1 }];
    let ours = !matches!(chosen, Kernel::Tuned | Kernel::Burn);
    let residual_fits = then.residual.is_none_or(|r| f32s(r.dtype()) && r.dims() == [m, n]);
    let few_rows = matches!(chosen, Kernel::FewRows | Kernel::TunedFewRows);
    let norm_fits = then.norm.is_none_or(|norm| few_rows && f32s(norm.weight.val().dtype()) && norm.weight.dims() == [k]);
    let untracked = (then.norm.is_none() && then.activation.is_none()) || !x.device().is_autodiff();
    let gelu = then.activation.is_none_or(|a| a != crate::nn::Activation::Relu);
    ours && residual_fits && norm_fits && untracked && gelu
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
    use prefix_tune_shaders::epilogue::{Addends, Epilogue};
    use prefix_tune_shaders::few_rows::Norm;
    use prefix_tune_shaders::{few_rows, matmul, tune, CubeBackend, CubeTensor};

    /// Whether the few-row kernel normalises the input's rows as it reads them, and the norm's
    /// eps (as bits: an op's arguments compare and hash).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct NormArgs {
        pub normalized: bool,
        pub eps: u32,
    }

    use super::{Kernel, Tile};

    /// `[M, N]` from `[M, K]` and a weight `[K, N]` (or `[N, K]` transposed).
    fn product_spec(x: &TensorSpec, weight: &TensorSpec, transposed: bool) -> TensorSpec {
        let n = if transposed { weight.shape[0] } else { weight.shape[1] };
        TensorSpec::new(Shape::new([x.shape[0], n]), x.dtype)
    }

    #[backend_extension(Autodiff, Cube, Fusion)]
    pub trait CubeFrozenMatmul: burn::backend::Backend {
        /// `activation(norm(x) · W + bias) + residual` (or `x · Wᵀ`; each step only where
        /// `steps` and `norm` say, the norm's scale and shift `[K]`); differentiable in `x` and
        /// `residual` (without a norm or an activation).
        #[allow(clippy::too_many_arguments)]
        #[fusion(meta = |x, weight, _bias, _residual, _norm_scale, _norm_shift, transposed, _steps, _norm, _chosen| product_spec(x, weight, *transposed))]
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, residual: FloatTensor<Self>, norm_scale: FloatTensor<Self>, norm_shift: FloatTensor<Self>, transposed: bool, steps: Epilogue, norm: NormArgs, chosen: Kernel) -> FloatTensor<Self>;
    }

    impl CubeFrozenMatmul for CubeBackend {
        #[allow(clippy::too_many_arguments)]
        fn cube_frozen_matmul(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, residual: CubeTensor, norm_scale: CubeTensor, norm_shift: CubeTensor, transposed: bool, steps: Epilogue, norm: NormArgs, chosen: Kernel) -> CubeTensor {
            let addends = Addends { bias: steps.biased.then_some(bias), activation: steps.activation, residual: steps.residual.then_some(residual) };
            let norm = norm.normalized.then(|| Norm { weight: norm_scale, bias: norm_shift, eps: f32::from_bits(norm.eps) });
            match chosen {
                Kernel::Block(tile) | Kernel::TunedBlock(tile) => matmul::matmul(x, weight, addends, transposed, tiling(tile), tile.split_k),
                Kernel::FewRows | Kernel::TunedFewRows => few_rows::matmul(x, weight, norm, addends, transposed),
                // Only the bias: `kernel_then` sends these nothing else.
                Kernel::Tuned => tune::matmul(x, weight, addends.bias, transposed, &Tile::ALL.map(tiling)),
                Kernel::Burn => tune::Candidate::Burn.matmul(x, weight, addends.bias, transposed).unwrap_or_else(|e| panic!("Burn's matmul: {e}")),
            }
        }
    }

    pub fn tiling(tile: Tile) -> matmul::Tiling {
        matmul::Tiling { rows: tile.rows, cols: tile.cols, run: tile.run }
    }

    /// What the tuner chose in this process for this shape, if it has timed it: `Some(None)`
    /// where Burn's matmul won, else which of ours.
    pub fn tuned_choice(m: usize, k: usize, n: usize, transposed: bool, biased: bool) -> Option<Option<Kernel>> {
        Some(match tune::choice(m, k, n, transposed, biased)? {
            tune::Candidate::Burn => None,
            tune::Candidate::FewRows => Some(Kernel::TunedFewRows),
            tune::Candidate::Block(chosen) => Tile::ALL.into_iter().find(|&tile| tiling(tile) == chosen).map(Kernel::TunedBlock),
        })
    }

    /// The input's gradient: `grad · Wᵀ`, the same kernel with the weight the other way round
    /// (or the tuner's choice for that shape, for a tuned product), and nothing after it: the
    /// forward's bias tensor only stands in the arguments' places. The residual's gradient is
    /// the output's.
    #[derive(Debug)]
    struct FrozenMatmulBackward {
        transposed: bool,
        chosen: Kernel,
    }

    impl Backward<Cube, 2> for FrozenMatmulBackward {
        type State = (FloatTensor<Cube>, FloatTensor<Cube>); // the weight and the bias

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [input, residual] = ops.parents;
            let grad = grads.consume::<Cube>(&ops.node);
            let (weight, bias) = ops.state;
            if let Some(residual) = residual {
                grads.register::<Cube>(residual.id, grad.clone());
            }
            if let Some(input) = input {
                let stand_in = || bias.clone();
                let input_grad = Cube::cube_frozen_matmul(grad, weight, stand_in(), stand_in(), stand_in(), stand_in(), !self.transposed, Epilogue::default(), NormArgs::default(), self.chosen);
                grads.register::<Cube>(input.id, input_grad);
            }
        }
    }

    impl<C: CheckpointStrategy> CubeFrozenMatmul for Autodiff<Cube, C> {
        #[allow(clippy::too_many_arguments)]
        fn cube_frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>, residual: FloatTensor<Self>, norm_scale: FloatTensor<Self>, norm_shift: FloatTensor<Self>, transposed: bool, steps: Epilogue, norm: NormArgs, chosen: Kernel) -> FloatTensor<Self> {
            let (weight, bias) = (weight.primitive().clone(), bias.primitive().clone());
            let (norm_scale, norm_shift) = (norm_scale.into_primitive(), norm_shift.into_primitive());
            let input_gradient = chosen.input_gradient();
            match (FrozenMatmulBackward { transposed, chosen: input_gradient }).prepare::<C>([x.node(), residual.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    assert!(steps.activation == Default::default() && !norm.normalized, "a product's norm and activation have no backward pass here");
                    prep.finish((weight.clone(), bias.clone()), Cube::cube_frozen_matmul(x.primitive().clone(), weight, bias, residual.primitive().clone(), norm_scale, norm_shift, transposed, steps, norm, chosen))
                }
                OpsKind::UnTracked(prep) => prep.finish(Cube::cube_frozen_matmul(x.into_primitive(), weight, bias, residual.into_primitive(), norm_scale, norm_shift, transposed, steps, norm, chosen)),
            }
        }
    }
}
