//! Dropout as PyTorch applies it: zero with probability `p`, scale the rest by `1/(1 − p)`;
//! and where its masks come from.
//!
//! On the CPU every mask is drawn on all cores from a seed of three draws of Burn's generator
//! ([`prefix_tune_kernels::dropout`]). On a GPU a forward pass draws its keep masks at once, one
//! draw per rate ([`Draws`]), and cuts each mask from it: a draw per mask was a random kernel per
//! layer and sub-layer, 37 launches of a 12-layer GPT-2 training step. A mask cut from the draw
//! is a leaf of the element-wise work that applies it, as a mask drawn on its own is, so Burn's
//! fusion folds `x · keep · 1/(1 − p)` into that work either way; a mask computed from shared
//! uniform numbers was not (each comparison became a launch of its own).

use std::cell::RefCell;

use burn::tensor::{Device, Distribution, Shape, Tensor};
#[cfg(feature = "gpu")]
use prefix_tune_shaders::cut::ALIGN;
#[cfg(not(feature = "gpu"))]
const ALIGN: usize = 1;

/// Dropout rates in effect for one forward pass (all zero at inference), and on a GPU the draws
/// its masks are cut from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dropout<'a> {
    /// After the input embeddings (BART: after `layernorm_embedding`).
    pub embd: f64,
    /// On the attention weights.
    pub attn: f64,
    /// On each sub-layer's output before the residual sum.
    pub resid: f64,
    /// Inside the feed-forward, after the activation (BART's `activation_dropout`; GPT-2 has none).
    pub activation: f64,
    /// Where the masks are cut from; `None`: each is drawn on its own.
    pub draws: Option<&'a Draws>,
}

/// How many values each kind of dropout masks in one forward pass, all layers together, and in
/// how many masks (each may start up to [`ALIGN`] − 1 values past the end of the one before).
#[derive(Debug, Clone, Copy, Default)]
pub struct Masked {
    pub embeddings: usize,
    pub attention: usize,
    pub residual: usize,
    pub activation: usize,
    pub masks: usize,
}

impl Dropout<'static> {
    /// The same rate everywhere (`--lm-dropout X`).
    pub fn uniform(p: f64) -> Self {
        Self { embd: p, attn: p, resid: p, activation: p, draws: None }
    }
}

impl<'a> Dropout<'a> {
    pub fn embeddings(&self) -> Site<'a> {
        self.site(self.embd)
    }

    pub fn attention(&self) -> Site<'a> {
        self.site(self.attn)
    }

    pub fn residual(&self) -> Site<'a> {
        self.site(self.resid)
    }

    pub fn activation(&self) -> Site<'a> {
        self.site(self.activation)
    }

    fn site(&self, p: f64) -> Site<'a> {
        Site { p, draws: self.draws }
    }

    /// On a GPU, the keep masks of a pass that masks `masked` values, drawn at once per rate;
    /// `None` where there is no dropout, where these rates have their draws already, and on
    /// the CPU. The pass then runs [`Dropout::with`] them.
    pub fn draws_for(&self, masked: Masked, device: &Device) -> Option<Draws> {
        if self.draws.is_some() || !crate::backend::is_gpu(device) {
            return None;
        }
        let sites = [(self.embd, masked.embeddings), (self.attn, masked.attention), (self.resid, masked.residual), (self.activation, masked.activation)];
        let mut counts: Vec<(f64, usize)> = Vec::new();
        for (p, count) in sites.into_iter().filter(|(p, count)| *p > 0.0 && *count > 0) {
            match counts.iter_mut().find(|(rate, _)| *rate == p) {
                Some((_, total)) => *total += count,
                None => counts.push((p, count + masked.masks * ALIGN)),
            }
        }
        (!counts.is_empty()).then(|| Draws::new(&counts, device))
    }

    /// These rates with their masks cut from `draws` (when given).
    pub fn with<'b>(self, draws: Option<&'b Draws>) -> Dropout<'b>
    where
        'a: 'b,
    {
        let rates: Dropout<'b> = self;
        Dropout { draws: draws.or(rates.draws), ..rates }
    }
}

/// One place dropout applies: its rate, and where its mask comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Site<'a> {
    pub p: f64,
    draws: Option<&'a Draws>,
}

impl Site<'static> {
    /// Rate `p`, its mask drawn on its own.
    pub fn rate(p: f64) -> Self {
        Site { p, draws: None }
    }
}

impl Site<'_> {
    pub fn is_off(&self) -> bool {
        self.p <= 0.0
    }

    /// `x` with this dropout.
    pub fn apply<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.is_off() {
            return x;
        }
        let keep = self.keep_mask::<D>(x.shape(), &x.device());
        x * keep / (1.0 - self.p)
    }

    /// The keep mask: 1 with probability `1 − p`, else 0; cut from the pass's draw where it has
    /// one. On the CPU backend three draws of Burn's generator seed a mask drawn on all cores
    /// ([`prefix_tune_kernels::dropout`]), so a seeded run stays reproducible; Burn's own draw
    /// there is one value at a time on one core.
    pub fn keep_mask<const D: usize>(&self, shape: Shape, device: &Device) -> Tensor<D> {
        if let Some(draws) = self.draws {
            return draws.cut(self.p, shape);
        }
        #[cfg(feature = "flex")]
        if crate::backend::is_cpu(device) {
            let draws = crate::tensors::to_f32s(Tensor::<1>::random([3], Distribution::Default, device));
            let seed = draws.iter().fold(0u64, |seed, draw| seed.rotate_left(24) ^ draw.to_bits() as u64);
            let mask = prefix_tune_kernels::dropout::keep_mask(seed, shape.num_elements(), self.p);
            return Tensor::from_data(burn::tensor::TensorData::new(mask, shape), device);
        }
        Tensor::random(shape, Distribution::Bernoulli(1.0 - self.p), device)
    }
}

/// The most values one draw holds (128 MiB of f32, WebGPU's default binding size): a larger
/// pass draws again, and a larger mask is drawn on its own.
const MAX_DRAW: usize = 1 << 25;

/// Keep masks drawn at once for a forward pass on a GPU, one draw per rate, cut into the pass's
/// masks in the order they are asked for: views of one buffer ([`crate::cut`]), each starting
/// on the device's alignment ([`ALIGN`] values). A pass that asks for more than was drawn draws
/// again.
#[derive(Debug)]
pub struct Draws {
    device: Device,
    rates: RefCell<Vec<Drawn>>,
}

/// One rate's draw.
#[derive(Debug)]
struct Drawn {
    p: f64,
    /// How many values a draw holds.
    capacity: usize,
    /// The latest draw, `[N]`.
    keep: Option<Tensor<1>>,
    /// Where in it the next cut may start.
    next: usize,
    /// Draws so far.
    draws: usize,
}

impl Draws {
    /// Masks for a pass that cuts `count` values (alignment included) at each rate `p` of
    /// `counts`.
    pub fn new(counts: &[(f64, usize)], device: &Device) -> Self {
        let rates = counts.iter().map(|&(p, count)| Drawn { p, capacity: count.min(MAX_DRAW), keep: None, next: 0, draws: 0 }).collect();
        Draws { device: device.clone(), rates: RefCell::new(rates) }
    }

    /// How many times the device's generator has run for this pass.
    pub fn draws(&self) -> usize {
        self.rates.borrow().iter().map(|rate| rate.draws).sum()
    }

    /// How many values of the latest draws are taken, alignment included.
    pub fn used(&self) -> usize {
        self.rates.borrow().iter().map(|rate| rate.next).sum()
    }

    /// The next keep mask of `shape` at rate `p` (a rate the pass did not announce is drawn as
    /// it comes).
    pub fn cut<const D: usize>(&self, p: f64, shape: Shape) -> Tensor<D> {
        let count = shape.num_elements();
        let mut rates = self.rates.borrow_mut();
        let index = match rates.iter().position(|rate| rate.p == p) {
            Some(index) => index,
            None => {
                rates.push(Drawn { p, capacity: count, keep: None, next: 0, draws: 0 });
                rates.len() - 1
            }
        };
        let rate = &mut rates[index];
        let mut start = rate.next.next_multiple_of(ALIGN);
        if !rate.keep.as_ref().is_some_and(|keep| start + count <= keep.dims()[0]) {
            rate.keep = Some(Tensor::random([count.max(rate.capacity)], Distribution::Bernoulli(1.0 - p), &self.device));
            rate.draws += 1;
            start = 0;
        }
        rate.next = start + count;
        crate::cut::cut(rate.keep.clone().expect("drawn above"), start, shape)
    }
}
