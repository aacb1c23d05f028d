//! A frozen weight's product through whichever kernel is fastest for its shape on this device:
//! Burn's matmul, one of our blocks ([`matmul`](crate::matmul)) or, for a few rows, our
//! few-row kernel ([`few_rows`](crate::few_rows)), timed by CubeCL's tuner the
//! first time a shape is seen and remembered from then on (in the process, and on disk with
//! CubeCL's other autotune results, so a second run uses the same kernels and rounds the same).
//!
//! Which one wins depends on the GPU: on lavapipe (a CPU) Burn's matmul is the faster, and on an
//! H200 Burn's f32 kernels ran at ~4 TFLOP/s of ~60. [`choices`] says what was picked, for
//! `bench` to report.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock};

use burn_backend::ops::FloatTensorOps;
use burn_backend::{Shape, TensorMetadata};
use burn_cubecl::kernel::matmul::{matmul as burn_matmul, MatmulStrategy};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::tune::{local_tuner, LocalTuner, Tunable, TunableSet, TuneGroup};
use cubecl::{AutotuneKey, CubeTuneId};
use serde::{Deserialize, Serialize};

use crate::epilogue::Addends;
use crate::few_rows;
use crate::matmul::{self, Tiling};

/// A kernel the tuner times. Burn's pays for a bias with a separate addition, which its fused
/// path in a model folds into the product; so for a biased product ours is taken where it beats
/// Burn's product and that addition together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Candidate {
    /// Burn's matmul (itself autotuned among CubeCL's kernels when Burn's `autotune` is on),
    /// then the bias added.
    Burn,
    /// Ours, in one block shape, K split where the blocks are too few ([`matmul::splits`]).
    Block(Tiling),
    /// Ours for a few rows ([`few_rows`]): a decoding step's products and its LM head.
    FewRows,
}

impl fmt::Display for Candidate {
    /// The name a tuned result is stored under: `burn`, `shaders_64x64`, `shaders_128x128_v4`,
    /// `shaders_few_rows`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Burn => write!(f, "burn"),
            Candidate::Block(tiling) => write!(f, "shaders_{tiling}"),
            Candidate::FewRows => write!(f, "shaders_few_rows"),
        }
    }
}

/// What a tuned result is kept for: the product's shape, rows rounded up to a power of two
/// (a batch's labelled rows vary from step to step; the LM head's take one result per octave).
#[derive(Hash, Eq, PartialEq, Debug, Clone, Serialize, Deserialize, AutotuneKey)]
pub struct ProductKey {
    #[autotune(anchor)]
    m: usize,
    k: usize,
    n: usize,
    transposed: bool,
    biased: bool,
}

impl ProductKey {
    /// `[M, K]·[K, N]`, with `ᵀ` for a weight stored `[N, K]` and `+ b` for a bias.
    fn name(&self) -> String {
        let (t, b) = (if self.transposed { "ᵀ" } else { "" }, if self.biased { " + b" } else { "" });
        format!("[{}, {}]·[{}, {}]{t}{b}", self.m, self.k, self.k, self.n)
    }
}

/// The input, the weight, the bias and whether the weight is used transposed.
type Inputs = (CubeTensor, CubeTensor, Option<CubeTensor>, bool);

/// `lhs [M, K] · weight + bias` as [`matmul::matmul`] defines it, through the fastest of Burn's
/// matmul and `blocks` for this shape on this device.
pub fn matmul(lhs: CubeTensor, weight: CubeTensor, bias: Option<CubeTensor>, transposed: bool, blocks: &[Tiling]) -> CubeTensor {
    static TUNER: LocalTuner<ProductKey, CubeTuneId> = local_tuner!();
    let client = lhs.client.clone();
    let id = CubeTuneId::new(&client, &lhs.device);
    let blocks = blocks.to_vec();
    let set = TUNER.init(&id, move || candidates(&blocks));
    let inputs = (lhs, weight, bias, transposed);
    let key = set.generate_key(&inputs);
    let product = TUNER.execute(&id, &client, set.clone(), inputs);
    if let Some(winner) = TUNER.fastest_identity(&id, &set, &key) {
        chosen().entry(key).or_insert(winner);
    }
    product
}

/// Each shape tuned in this process (`[M, K]·[K, N]`, M rounded up as the tuner rounds it) and
/// the kernel that won it, in order of the shapes' names.
pub fn choices() -> Vec<(String, Candidate)> {
    let mut all: Vec<_> = chosen().iter().map(|(key, winner)| (key.name(), *winner)).collect();
    all.sort();
    all
}

/// The kernel the tuner chose in this process for `[m, k] · [k, n]` (a weight stored `[n, k]`
/// when `transposed`), if it has tuned that shape.
pub fn choice(m: usize, k: usize, n: usize, transposed: bool, biased: bool) -> Option<Candidate> {
    chosen().get(&ProductKey::new(m, k, n, transposed, biased)).copied()
}

fn chosen() -> MutexGuard<'static, HashMap<ProductKey, Candidate>> {
    static CHOSEN: OnceLock<Mutex<HashMap<ProductKey, Candidate>>> = OnceLock::new();
    CHOSEN.get_or_init(Default::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Burn's matmul, the few-row kernel and each of `blocks`, all in one round: every one that
/// applies to the shape is timed.
fn candidates(blocks: &[Tiling]) -> TunableSet<ProductKey, Inputs, CubeTensor, Candidate> {
    let round = TuneGroup::<ProductKey>::new("frozen product", |_| 0);
    let key = |(lhs, weight, bias, transposed): &Inputs| {
        let ([m, k], [rows, cols]) = (lhs.shape().dims::<2>(), weight.shape().dims::<2>());
        ProductKey::new(m, k, if *transposed { rows } else { cols }, *transposed, bias.is_some())
    };
    let all = [Candidate::Burn, Candidate::FewRows].into_iter().chain(blocks.iter().map(|&tiling| Candidate::Block(tiling)));
    all.fold(TunableSet::new_cloning_inputs(key), |set, candidate| {
        set.with(Tunable::identified(candidate, move |(lhs, weight, bias, transposed): Inputs| candidate.matmul(lhs, weight, bias, transposed)).group(&round, |_| 0))
    })
}

impl Candidate {
    /// `lhs [M, K] · weight + bias` as [`matmul::matmul`] defines it, through this kernel alone.
    pub fn matmul(self, lhs: CubeTensor, weight: CubeTensor, bias: Option<CubeTensor>, transposed: bool) -> Result<CubeTensor, String> {
        match self {
            Candidate::Block(tiling) => Ok(matmul::matmul(lhs, weight, Addends::bias(bias), transposed, tiling, true)),
            Candidate::FewRows => Ok(few_rows::matmul(lhs, weight, None, Addends::bias(bias), transposed)),
            Candidate::Burn => {
                let dtype = lhs.dtype;
                // A weight in half precision (`--dtype f16`, `bf16`): the input cast to its type,
                // f32 sums writing f32 (the product is not rounded to half precision, as the CPU's
                // bf16 products are not).
                let lhs = if weight.dtype != dtype { burn_cubecl::kernel::cast(lhs, weight.dtype) } else { lhs };
                // A transposed weight is a view of the stored one: Burn's matmul reads either layout.
                let weight = if transposed { CubeBackend::float_swap_dims(weight, 0, 1) } else { weight };
                let product = burn_matmul(lhs, weight, None, MatmulStrategy::default(), dtype).map_err(|e| format!("{e:?}"))?;
                Ok(match bias {
                    Some(bias) => {
                        let n = bias.shape().num_elements();
                        CubeBackend::float_add(product, CubeBackend::float_reshape(bias, Shape::new([1, n]))) // [M, N] + [1, N]
                    }
                    None => product,
                })
            }
        }
    }
}
