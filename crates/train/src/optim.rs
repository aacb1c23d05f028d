//! AdamW and SGD exactly as PyTorch computes them, over whatever parameters of a module
//! require gradients, with gradient accumulation and clipping by global norm.
//!
//! Written here rather than taken from burn-optim so that (1) the update is PyTorch's to the
//! last rounding (the published learning rates assume it) and (2) the state is ours to save
//! next to the prefix, so a resumed run continues bit-exactly.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Bool, Gradients, Tensor};
use prefix_tune_model::adamw::{self, Coefficients};
use prefix_tune_model::tensors::{floats, to_f32s};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerConfig {
    /// PyTorch's AdamW (decoupled weight decay; defaults betas 0.9/0.999, eps 1e-8).
    AdamW { beta1: f64, beta2: f64, eps: f64, weight_decay: f64 },
    /// Plain SGD (weight decay added to the gradient, as torch.optim.SGD).
    Sgd { weight_decay: f64 },
}

impl OptimizerConfig {
    pub fn adamw(weight_decay: f64) -> Self {
        Self::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }
}

/// The choice of [`OptimizerConfig`] without its settings (a command-line option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    Sgd,
}

impl OptimizerKind {
    /// PyTorch's defaults for everything but the weight decay.
    pub fn with_weight_decay(self, weight_decay: f64) -> OptimizerConfig {
        match self {
            OptimizerKind::Adamw => OptimizerConfig::adamw(weight_decay),
            OptimizerKind::Sgd => OptimizerConfig::Sgd { weight_decay },
        }
    }
}

/// Per-parameter moments, in the module's visiting order, flattened.
#[derive(Debug, Clone, Default)]
pub struct OptimizerState {
    /// Optimizer steps taken so far.
    pub step: usize,
    pub first_moments: Vec<Option<Tensor<1>>>,
    pub second_moments: Vec<Option<Tensor<1>>>,
}

impl OptimizerState {
    /// Flat host copies for a checkpoint: (name, values).
    pub fn to_host(&self) -> Vec<(String, Vec<f32>)> {
        let mut out = Vec::new();
        for (kind, moments) in [("m", &self.first_moments), ("v", &self.second_moments)] {
            for (i, moment) in moments.iter().enumerate() {
                if let Some(moment) = moment {
                    out.push((format!("{kind}.{i}"), to_f32s(moment.clone())));
                }
            }
        }
        out
    }

    pub fn from_host(step: usize, tensors: &[(String, Vec<f32>)], device: &burn::tensor::Device) -> Self {
        let mut state = OptimizerState { step, ..Default::default() };
        for (name, values) in tensors {
            let (kind, index) = name.split_once('.').expect("names are kind.index");
            let index: usize = index.parse().expect("numeric index");
            let list = if kind == "m" { &mut state.first_moments } else { &mut state.second_moments };
            if list.len() <= index {
                list.resize(index + 1, None);
            }
            list[index] = Some(floats(values.clone(), [values.len()], device));
        }
        state
    }
}

/// Gradients of the trainable parameters, flattened, in visiting order; `None` for a
/// parameter that got no gradient (frozen).
#[derive(Debug, Clone, Default)]
pub struct Accumulated {
    pub grads: Vec<Option<Tensor<1>>>,
}

struct Collect<'a> {
    gradients: &'a Gradients,
    into: &'a mut Accumulated,
    index: usize,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = param.val().grad(self.gradients).map(|g| {
            let count = g.shape().num_elements();
            g.reshape([count])
        });
        if self.into.grads.len() <= self.index {
            self.into.grads.push(None);
        }
        let slot = &mut self.into.grads[self.index];
        *slot = match (slot.take(), grad) {
            (Some(sum), Some(g)) => Some(sum + g),
            (sum, g) => sum.or(g),
        };
        self.index += 1;
    }
}

/// Columns per row of [`row_sums_then_total`]'s first stage.
const ROW: usize = 4096;

/// The sum of `x` as one value `[1]`. The CPU sums in one pass. On a GPU a whole gradient of
/// millions of values (the prefix MLP's output layer: 9.4M) reduced to one value in one fused
/// kernel is the likely one slow kernel of a training step (a single fused reduction took 17.7
/// ms of a 60 ms GPT-2-small step on an H200; not yet confirmed to be this one), so it is
/// summed in rows first, which gives the reduction parallel work.
fn total(x: Tensor<1>) -> Tensor<1> {
    match prefix_tune_model::backend::is_cpu(&x.device()) {
        true => x.sum(),
        false => row_sums_then_total(x),
    }
}

/// `x` zero-padded to whole rows of [`ROW`], each row summed, then the row sums.
pub fn row_sums_then_total(x: Tensor<1>) -> Tensor<1> {
    let [n] = x.dims();
    if n <= ROW {
        return x.sum();
    }
    let rows = n.div_ceil(ROW);
    let padded = match rows * ROW - n {
        0 => x,
        padding => {
            let zeros = Tensor::zeros([padding], &x.device());
            Tensor::cat(vec![x, zeros], 0)
        }
    };
    padded.reshape([rows, ROW]).sum_dim(1).reshape([rows]).sum() // [1]
}

impl Accumulated {
    /// Adds the gradients of `module`'s parameters from one backward pass.
    pub fn add<M: Module>(&mut self, module: &M, gradients: &Gradients) {
        module.visit(&mut Collect { gradients, into: self, index: 0 });
    }

    /// Number of parameters that received a gradient.
    pub fn count(&self) -> usize {
        self.grads.iter().filter(|g| g.is_some()).count()
    }

    /// The index (in visiting order) of the first parameter whose gradient holds a NaN or an
    /// infinity, if any: its sum is then NaN or infinite. An overflowing sum counts too: such a
    /// step is as bad. (The plain sum, not of magnitudes: on a GPU a sum of magnitudes took a
    /// launch more per parameter, Burn's fusion not folding `abs` into the reduction.)
    pub fn first_non_finite(&self) -> Option<usize> {
        self.per_parameter(|g| g).into_iter().find(|(_, sum)| !sum.is_finite()).map(|(i, _)| i)
    }

    /// The global L2 norm of all gradients.
    pub fn norm(&self) -> f64 {
        self.per_parameter(|g| g.powf_scalar(2.0)).iter().map(|&(_, x)| x as f64).sum::<f64>().sqrt()
    }

    /// The sum of `elementwise` of each gradient, with its parameter's index, in one read
    /// back: on a GPU each read waits for the device.
    fn per_parameter(&self, elementwise: impl Fn(Tensor<1>) -> Tensor<1>) -> Vec<(usize, f32)> {
        match self.per_parameter_on_device(elementwise) {
            Some((indices, sums)) => indices.into_iter().zip(to_f32s(sums)).collect(),
            None => Vec::new(),
        }
    }

    /// The sum of `elementwise` of each gradient, `[parameters]` on the device, with the
    /// parameters' indices; `None` without gradients.
    fn per_parameter_on_device(&self, elementwise: impl Fn(Tensor<1>) -> Tensor<1>) -> Option<(Vec<usize>, Tensor<1>)> {
        let (indices, values): (Vec<usize>, Vec<Tensor<1>>) =
            self.grads.iter().enumerate().filter_map(|(i, g)| Some((i, total(elementwise(g.as_ref()?.clone()))))).unzip();
        (!values.is_empty()).then(|| (indices, Tensor::cat(values, 0)))
    }

    /// Divides every gradient by `by` (averaging over accumulated micro-batches).
    pub fn scale(&mut self, by: f64) {
        if by == 1.0 {
            return;
        }
        for grad in self.grads.iter_mut().flatten() {
            *grad = grad.clone() * by;
        }
    }

    /// Whether any gradient holds a NaN or an infinity (an overflowing sum counts too, as in
    /// [`Accumulated::first_non_finite`]), as a `[1]` flag on the device, nothing read back:
    /// what a step that runs ahead of its checks ([`step_unless`]) guards its update with.
    /// `None` without gradients.
    pub fn non_finite_on_device(&self) -> Option<Tensor<1, Bool>> {
        let (_, sums) = self.per_parameter_on_device(|g| g)?;
        let sum = sums.sum(); // [1]: finite only if every gradient is
        // Burn's own NaN and infinity tests: `x − x ≠ 0` is folded to false on a GPU.
        Some(sum.clone().is_nan().bool_or(sum.is_inf()))
    }

    /// [`Accumulated::clip`] without reading the norm back: the coefficient
    /// `min(1, max_norm / (norm + 1e-6))` is applied on the device, as PyTorch applies it
    /// (multiplying by 1 changes nothing). Returns the norm before clipping, `[1]`.
    pub fn clip_on_device(&mut self, max_norm: f64) -> Option<Tensor<1>> {
        let (_, squares) = self.per_parameter_on_device(|g| g.powf_scalar(2.0))?;
        let norm = squares.sum().sqrt(); // [1]
        let coefficient = ((norm.clone() + 1e-6).recip() * max_norm).clamp_max(1.0);
        for grad in self.grads.iter_mut().flatten() {
            let count = grad.dims()[0];
            *grad = grad.clone() * coefficient.clone().expand([count]);
        }
        Some(norm)
    }

    /// `torch.nn.utils.clip_grad_norm_`: scales by max_norm / (norm + 1e-6) when that is < 1.
    /// Returns the norm before clipping.
    pub fn clip(&mut self, max_norm: f64) -> f64 {
        let norm = self.norm();
        let coefficient = max_norm / (norm + 1e-6);
        if coefficient < 1.0 {
            self.scale(coefficient);
        }
        norm
    }
}

/// AdamW's scalars at step `t` (from 1) as f32, each computed in f64 and rounded once, as a
/// tensor operation rounds its scalar; `None` for SGD.
fn coefficients(config: OptimizerConfig, lr: f64, t: usize) -> Option<Coefficients> {
    let OptimizerConfig::AdamW { beta1, beta2, eps, weight_decay } = config else { return None };
    Some(Coefficients::at_step(beta1, beta2, eps, weight_decay, lr, t))
}

/// AdamW in one pass on the CPU ([`prefix_tune_kernels::adamw`]), bit for bit the tensor form:
/// a dozen single-threaded passes over the prefix's parameters (9.9M for GPT-2 small with MLP
/// 512) were 5% of a bf16 training step.
fn adamw_fused(c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, (m, v): (Option<Tensor<1>>, Option<Tensor<1>>)) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let device = value.device();
    let count = value.dims()[0];
    let host = |t: Tensor<1>| t.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 values");
    let first = m.is_none() || v.is_none();
    let (mut value, grad) = (host(value), host(grad));
    let mut m = m.map_or_else(|| vec![0.0; count], host);
    let mut v = v.map_or_else(|| vec![0.0; count], host);
    prefix_tune_kernels::adamw::step(c, &mut value, &grad, &mut m, &mut v, first);
    (floats(value, [count], &device), floats(m, [count], &device), floats(v, [count], &device))
}

struct Update<'a> {
    /// AdamW through the fused CPU step (plain f32 tensors on the CPU backend); elsewhere
    /// [`adamw::step`]: one kernel on a GPU, tensor operations otherwise.
    fused: bool,
    config: OptimizerConfig,
    lr: f64,
    grads: &'a mut Accumulated,
    state: &'a mut OptimizerState,
    index: usize,
    /// `[1]`, true when the step must leave everything as it was ([`step_unless`]).
    unless: Option<Tensor<1, Bool>>,
    /// `unless` as 1 or 0, what AdamW's kernel reads (converted once for every parameter).
    skip: Option<Tensor<1>>,
}

impl Update<'_> {
    /// `new`, or `old` where the step is called off (`old` `None`: zeros, an unset moment).
    fn guarded(&self, new: Tensor<1>, old: Option<Tensor<1>>) -> Tensor<1> {
        match &self.unless {
            None => new,
            Some(unless) => adamw::guard(new, old, unless),
        }
    }

    /// [`adamw_fused`], its value and moments [`Update::guarded`].
    fn adamw_fused_unless(&self, c: &Coefficients, value: Tensor<1>, grad: Tensor<1>, moments: (Option<Tensor<1>>, Option<Tensor<1>>)) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
        let old = self.unless.as_ref().map(|_| (value.clone(), moments.clone()));
        let (updated, m, v) = adamw_fused(c, value, grad, moments);
        match old {
            None => (updated, m, v),
            Some((value, (old_m, old_v))) => (self.guarded(updated, Some(value)), self.guarded(m, old_m), self.guarded(v, old_v)),
        }
    }
}

impl ModuleMapper for Update<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let index = self.index;
        self.index += 1;
        let Some(Some(grad)) = self.grads.grads.get_mut(index).map(Option::take) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let count = shape.num_elements();
        let require_grad = tensor.is_require_grad();
        let value = tensor.inner().reshape([count]);
        let updated = match self.config {
            OptimizerConfig::Sgd { weight_decay } => {
                let grad = if weight_decay != 0.0 { grad + value.clone() * weight_decay } else { grad };
                self.guarded(value.clone() - grad * self.lr, Some(value))
            }
            OptimizerConfig::AdamW { .. } => {
                for list in [&mut self.state.first_moments, &mut self.state.second_moments] {
                    if list.len() <= index {
                        list.resize(index + 1, None);
                    }
                }
                let c = coefficients(self.config, self.lr, self.state.step).expect("AdamW");
                let moments = (self.state.first_moments[index].take(), self.state.second_moments[index].take());
                let (updated, m, v) = if self.fused { self.adamw_fused_unless(&c, value, grad, moments) } else { adamw::step_unless(&c, value, grad, moments, self.skip.clone()) };
                self.state.first_moments[index] = Some(m);
                self.state.second_moments[index] = Some(v);
                updated
            }
        };
        let mut lifted = Tensor::from_inner(updated.reshape(shape));
        if require_grad {
            lifted = lifted.require_grad();
        }
        Param::from_mapped_value(id, lifted, mapper)
    }
}

/// One optimizer step of `module` with the accumulated gradients; consumes them.
pub fn step<M: Module>(module: M, config: OptimizerConfig, lr: f64, grads: &mut Accumulated, state: &mut OptimizerState) -> M {
    run_step(module, config, lr, grads, state, None)
}

/// [`step`], called off on the device where `unless` (`[1]`) is true: every parameter and
/// moment keeps its value, without the host reading the flag first. (The step count still
/// moves; a run stops on such a step.)
pub fn step_unless<M: Module>(module: M, config: OptimizerConfig, lr: f64, grads: &mut Accumulated, state: &mut OptimizerState, unless: Tensor<1, Bool>) -> M {
    run_step(module, config, lr, grads, state, Some(unless))
}

fn run_step<M: Module>(module: M, config: OptimizerConfig, lr: f64, grads: &mut Accumulated, state: &mut OptimizerState, unless: Option<Tensor<1, Bool>>) -> M {
    state.step += 1;
    let fused = grads.grads.iter().flatten().next().is_some_and(|g| prefix_tune_model::backend::is_cpu(&g.device()) && g.dtype() == burn::tensor::DType::F32);
    let skip = unless.as_ref().map(|unless| unless.clone().float());
    let mut update = Update { fused, config, lr, grads, state, index: 0, unless, skip };
    module.map(&mut update)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused step is the tensor form bit for bit (so a run, and its resumption, is the same
    /// whichever path it takes), over three steps, with and without weight decay, on more
    /// values than one task takes.
    #[test]
    fn fused_adamw_is_the_tensor_form_bit_for_bit() {
        let device = prefix_tune_model::testing::device();
        let count = 150_001;
        let wave = |seed: usize, scale: f32| -> Vec<f32> { (0..count).map(|i| ((i * 7919 + seed * 104_729) % 10_007) as f32 / 10_007.0 * scale - scale / 2.0).collect() };
        for weight_decay in [0.0, 0.01] {
            let config = OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay };
            let start = floats(wave(0, 2.0), [count], &device);
            let (mut fused, mut tensors) = ((start.clone(), None, None), (start, None, None));
            for t in 1..=3 {
                let c = coefficients(config, 5e-3, t).unwrap();
                // Gradients from 1e-9 to 1e3 in magnitude, where eps and the square root matter.
                let grad = floats(wave(t, 1.0).into_iter().enumerate().map(|(i, g)| g * 10f32.powi((i % 13) as i32 - 9)).collect(), [count], &device);
                let (value, m, v) = adamw_fused(&c, fused.0, grad.clone(), (fused.1, fused.2));
                fused = (value, Some(m), Some(v));
                let (value, m, v) = adamw::tensors(&c, tensors.0, grad, (tensors.1, tensors.2));
                tensors = (value, Some(m), Some(v));
            }
            let bits = |t: Tensor<1>| to_f32s(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert!(bits(fused.0.clone()) == bits(tensors.0.clone()), "values differ (weight decay {weight_decay})");
            assert!(bits(fused.1.unwrap()) == bits(tensors.1.unwrap()), "first moments differ");
            assert!(bits(fused.2.unwrap()) == bits(tensors.2.unwrap()), "second moments differ");
        }
    }
}
