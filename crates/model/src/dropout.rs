//! Dropout as PyTorch applies it: zero with probability `p`, scale the rest by `1/(1 − p)`;
//! and where its masks come from.
//!
//! On the CPU every mask is drawn on all cores from a seed of three draws of Burn's generator
//! ([`prefix_tune_kernels::dropout`]). On a GPU a forward pass draws its uniform numbers at once
//! ([`Draws`]) and cuts each mask from them: a draw per mask was a random kernel per layer and
//! sub-layer, 37 launches of a 12-layer GPT-2 training step. A value is kept where its number
//! is below `1 − p`; the attention kernels read the numbers themselves.

use std::cell::RefCell;

use burn::tensor::{Device, Distribution, Shape, Tensor};
#[cfg(feature = "gpu")]
use prefix_tune_shaders::cut::ALIGN;
#[cfg(not(feature = "gpu"))]
const ALIGN: usize = 1;

/// Dropout rates in effect for one forward pass (all zero at inference), and on a GPU the
/// numbers its masks are cut from.
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
/// how many masks (each may start up to [`ALIGN`] − 1 numbers past the end of the one before).
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

    /// On a GPU, the numbers for a pass that masks `masked` values, drawn at once; `None` where
    /// there is no dropout, where these rates have their numbers already, and on the CPU.
    /// The pass then runs with [`Dropout::with`] these numbers.
    pub fn draws_for(&self, masked: Masked, device: &Device) -> Option<Draws> {
        if self.draws.is_some() || !crate::backend::is_gpu(device) {
            return None;
        }
        let sites = [(self.embd, masked.embeddings), (self.attn, masked.attention), (self.resid, masked.residual), (self.activation, masked.activation)];
        let count: usize = sites.iter().filter(|(p, _)| *p > 0.0).map(|(_, count)| count).sum();
        (count > 0).then(|| Draws::new(count + masked.masks * ALIGN, device))
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
        let device = x.device();
        if crate::backend::is_gpu(&device) {
            // The mask is saved for the backward pass as booleans, and the numbers' buffer is
            // freed once the pass's masks are taken from it.
            let dropped = self.numbers::<D>(x.shape(), &device).greater_equal_elem(1.0 - self.p);
            return x.mask_fill(dropped, 0.0) * (1.0 / (1.0 - self.p));
        }
        let keep = self.keep_mask::<D>(x.shape(), &device);
        x * keep / (1.0 - self.p)
    }

    /// Uniform numbers in [0, 1) for a mask of `shape`: a value is kept where its number is
    /// below `1 − p`.
    pub fn numbers<const D: usize>(&self, shape: Shape, device: &Device) -> Tensor<D> {
        match self.draws {
            Some(draws) => draws.cut(shape),
            None => Tensor::random(shape, Distribution::Default, device),
        }
    }

    /// The keep mask: 1 with probability `1 − p`, else 0. On the CPU backend three draws of
    /// Burn's generator seed a mask drawn on all cores ([`prefix_tune_kernels::dropout`]), so a
    /// seeded run stays reproducible; Burn's own draw there is one value at a time on one core.
    pub fn keep_mask<const D: usize>(&self, shape: Shape, device: &Device) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if crate::backend::is_cpu(device) {
            let draws = crate::tensors::to_f32s(Tensor::<1>::random([3], Distribution::Default, device));
            let seed = draws.iter().fold(0u64, |seed, draw| seed.rotate_left(24) ^ draw.to_bits() as u64);
            let mask = prefix_tune_kernels::dropout::keep_mask(seed, shape.num_elements(), self.p);
            return Tensor::from_data(burn::tensor::TensorData::new(mask, shape), device);
        }
        self.numbers::<D>(shape, device).lower_elem(1.0 - self.p).float()
    }
}

/// The most numbers one draw holds (128 MiB of f32, WebGPU's default binding size): a larger
/// pass draws again, and a larger mask is drawn on its own.
const MAX_DRAW: usize = 1 << 25;

/// Uniform numbers in [0, 1) drawn at once for a forward pass on a GPU, cut into its masks in
/// the order they are asked for: views of one buffer, each starting on the device's alignment
/// ([`ALIGN`] numbers). A pass that asks for more than was drawn draws again.
#[derive(Debug)]
pub struct Draws {
    device: Device,
    /// How many numbers a draw holds.
    capacity: usize,
    drawn: RefCell<Drawn>,
}

#[derive(Debug, Default)]
struct Drawn {
    /// The latest draw, `[N]`.
    numbers: Option<Tensor<1>>,
    /// Where in it the next cut may start.
    next: usize,
    /// Draws so far.
    draws: usize,
}

impl Draws {
    /// Numbers for a pass that cuts `count` of them, alignment included.
    pub fn new(count: usize, device: &Device) -> Self {
        Draws { device: device.clone(), capacity: count.min(MAX_DRAW), drawn: RefCell::default() }
    }

    /// How many times the device's generator has run for this pass.
    pub fn draws(&self) -> usize {
        self.drawn.borrow().draws
    }

    /// Where the next cut of the latest draw may start: how many of its numbers are taken,
    /// alignment included.
    pub fn used(&self) -> usize {
        self.drawn.borrow().next
    }

    /// The next `shape`'s worth of numbers.
    pub fn cut<const D: usize>(&self, shape: Shape) -> Tensor<D> {
        let count = shape.num_elements();
        let mut drawn = self.drawn.borrow_mut();
        let mut start = drawn.next.next_multiple_of(ALIGN);
        if !drawn.numbers.as_ref().is_some_and(|numbers| start + count <= numbers.dims()[0]) {
            drawn.numbers = Some(Tensor::random([count.max(self.capacity)], Distribution::Default, &self.device));
            drawn.draws += 1;
            start = 0;
        }
        drawn.next = start + count;
        let numbers = drawn.numbers.clone().expect("drawn above");
        crate::ops::cut::cut(numbers, start, shape)
    }
}
