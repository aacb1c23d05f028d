//! Choosing each row's next token from its logits: what the logits processors do to the scores
//! ([`Edits`]), then the argmax or a seeded draw ([`Choice`]). On a GPU both happen on the
//! device and only the chosen ids come back; elsewhere the same rules run on the host.
//!
//! A draw follows HF's warpers, in their order, with each rule stated so that the device needs
//! no sort:
//! - temperature divides the scores;
//! - top-k keeps the scores at or above the k-th largest (HF's `scores < kth` removal: ties
//!   with the k-th stay);
//! - top-p keeps a token when the probability of the tokens strictly more likely than it is
//!   below p: HF's cumulative rule, with tied scores kept or removed together;
//! - the token is the first, in vocabulary order, at which the running sum of the kept weights
//!   `exp(s − max)` passes `uniform · total`, `uniform` drawn from the row's seeded generator.

use std::collections::BTreeMap;

use burn::tensor::{IndexingUpdateOp, Int, Tensor};
use rand::{rngs::StdRng, Rng};

use super::draw::draw;
pub use super::draw::kept_weights;
use super::Sampling;
use crate::tensors::{floats, ints, to_i64s};
use crate::ModelError;

/// What the logits processors do to one row's scores before its token is chosen: amounts added
/// to some tokens' scores (−∞ forbids a token) and, last, a token forced (every other score
/// −∞, its own 0). Forcing replaces the whole row, so it is the same before or after additions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edits {
    added: BTreeMap<u32, f32>,
    forced: Option<u32>,
}

impl Edits {
    /// The token may not be chosen.
    pub fn ban(&mut self, token: u32) {
        self.add(token, f32::NEG_INFINITY);
    }

    /// `delta` is added to the token's score (to what earlier edits added).
    pub fn add(&mut self, token: u32, delta: f32) {
        *self.added.entry(token).or_insert(0.0) += delta;
    }

    /// The token is chosen; a later force wins, as HF's later processor does.
    pub fn force(&mut self, token: u32) {
        self.forced = Some(token);
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.forced.is_none()
    }

    /// Whether every edit is a ban (none, too).
    pub fn bans_only(&self) -> bool {
        self.forced.is_none() && self.added.values().all(|&delta| delta == f32::NEG_INFINITY)
    }

    /// The edits applied to one row's scores on the host.
    pub fn apply(&self, scores: &mut [f32]) {
        for (&token, &delta) in &self.added {
            if let Some(score) = scores.get_mut(token as usize) {
                *score += delta;
            }
        }
        if let Some(token) = self.forced.filter(|&t| (t as usize) < scores.len()) {
            scores.fill(f32::NEG_INFINITY);
            scores[token as usize] = 0.0;
        }
    }
}

/// Every row's edits applied to `[rows, V]` logits on their device: the additions as one
/// scatter over the flattened scores, forced rows replaced through one mask.
pub fn edit(logits: Tensor<2>, edits: &[Edits]) -> Tensor<2> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let (mut at, mut deltas) = (Vec::new(), Vec::new());
    for (row, row_edits) in edits.iter().enumerate() {
        // Tokens outside the vocabulary (a config's bad word) are ignored, as on the host.
        for (&token, &delta) in row_edits.added.range(..vocab as u32) {
            at.push((row * vocab + token as usize) as i64);
            deltas.push(delta);
        }
    }
    let mut logits = logits;
    if !at.is_empty() {
        let count = at.len();
        let flat = logits.reshape([rows * vocab]);
        // Each (row, token) appears once: the edits are summed per token on the host.
        let deltas = floats(deltas, [count], &device).cast(flat.dtype());
        logits = flat.select_assign(0, ints(at, [count], &device), deltas, IndexingUpdateOp::Add).reshape([rows, vocab]);
    }
    let forced_column = |e: &Edits| e.forced.filter(|&t| (t as usize) < vocab);
    if edits.iter().any(|e| forced_column(e).is_some()) {
        // Per row the forced column, or −1 (no column) for a row that is not forced.
        let forced: Vec<i64> = edits.iter().map(|e| forced_column(e).map_or(-1, i64::from)).collect();
        let forced = ints(forced, [rows, 1], &device);
        let columns = Tensor::<1, Int>::arange(0..vocab as i64, &device).reshape([1, vocab]).expand([rows, vocab]);
        let is_forced = forced.clone().greater_equal_elem(0).expand([rows, vocab]);
        let hit = columns.equal(forced.expand([rows, vocab]));
        let replaced = logits.full_like(f32::NEG_INFINITY).mask_fill(hit, 0.0);
        logits = logits.mask_where(is_forced, replaced);
    }
    logits
}

/// How one row's token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice {
    /// The most likely token (the first, on ties).
    Argmax,
    /// A draw under `sampling`'s temperature, top-k and top-p, with `uniform` in [0, 1) from
    /// the row's seeded generator.
    Draw { sampling: Sampling, uniform: f32 },
}

impl Choice {
    /// A draw under `sampling` with the next uniform number of the row's generator, or the
    /// argmax without sampling.
    pub fn next(sampling: Option<(Sampling, &mut StdRng)>) -> Choice {
        match sampling {
            Some((sampling, rng)) => Choice::Draw { sampling, uniform: rng.random::<f32>() },
            None => Choice::Argmax,
        }
    }
}

/// How one row's next token is chosen, in one decoding step.
#[derive(Debug, Clone, PartialEq)]
pub struct RowStep {
    pub edits: Edits,
    pub choice: Choice,
    /// Whether to report the chosen token's log-probability and how many of the most likely
    /// tokens' beside it (OpenAI's `logprobs`).
    pub logprobs: Option<usize>,
}

/// A row's chosen token and, when asked, its log-probability and the most likely tokens' (best
/// first), from the edited scores before temperature.
#[derive(Debug, Clone, PartialEq)]
pub struct Picked {
    pub token: u32,
    pub logprobs: Option<(f32, Vec<(u32, f32)>)>,
}

/// Every row's next token from `[rows, V]` logits. On a GPU the edits, the choice and the
/// log-probabilities are computed on the device and only ids and the asked-for log-probabilities
/// come back; elsewhere the logits are read once and each row is chosen on the host.
pub fn pick(logits: Tensor<2>, rows: &[RowStep]) -> Vec<Result<Picked, ModelError>> {
    if !crate::backend::is_gpu(&logits.device()) {
        return crate::tensors::host_rows(logits).into_iter().zip(rows).map(|(mut scores, row)| pick_row(&mut scores, row)).collect();
    }
    let edits: Vec<Edits> = rows.iter().map(|r| r.edits.clone()).collect();
    let logits = if edits.iter().any(|e| !e.is_empty()) { edit(logits, &edits) } else { logits };
    let choices: Vec<Choice> = rows.iter().map(|r| r.choice).collect();
    let tokens = choose(logits.clone(), &choices);
    let mut logprobs: Vec<Option<(f32, Vec<(u32, f32)>)>> = vec![None; rows.len()];
    if let Some(most) = rows.iter().filter_map(|r| r.logprobs).max() {
        let found = device_log_probs(logits, &tokens.iter().map(|t| t.unwrap_or(0)).collect::<Vec<_>>(), most);
        for ((slot, row), (chosen, mut top)) in logprobs.iter_mut().zip(rows).zip(found) {
            if let Some(n) = row.logprobs {
                top.truncate(n);
                *slot = Some((chosen, top));
            }
        }
    }
    tokens.into_iter().zip(logprobs).map(|(token, logprobs)| Ok(Picked { token: token.ok_or(ModelError::NothingToDraw)?, logprobs })).collect()
}

/// One row on the host: its edits applied to `scores`, then its token and log-probabilities.
pub fn pick_row(scores: &mut [f32], row: &RowStep) -> Result<Picked, ModelError> {
    row.edits.apply(scores);
    let token = choose_row(scores, row.choice).ok_or(ModelError::NothingToDraw)?;
    Ok(Picked { token, logprobs: row.logprobs.map(|n| log_probs(scores, token, n)) })
}

/// The log-softmax of `scores` at `chosen`, and its `n` best ids, best first (ties in id order).
pub fn log_probs(scores: &[f32], chosen: u32, n: usize) -> (f32, Vec<(u32, f32)>) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_total = max + scores.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (id, &score) in scores.iter().enumerate() {
        if best.len() < n || best.last().is_some_and(|&(_, worst)| score > worst) {
            let at = best.partition_point(|&(_, l)| l >= score);
            best.insert(at, (id as u32, score));
            best.truncate(n);
        }
    }
    let top = best.into_iter().map(|(id, score)| (id, score - log_total)).collect();
    (scores[chosen as usize] - log_total, top)
}

/// [`log_probs`] on the device for every row: the chosen tokens' and the `most` best.
fn device_log_probs(logits: Tensor<2>, tokens: &[u32], most: usize) -> Vec<(f32, Vec<(u32, f32)>)> {
    let rows = tokens.len();
    let device = logits.device();
    let log_probs = crate::log_softmax::log_softmax(logits, None); // [rows, V]
    let chosen = ints(tokens.iter().map(|&t| i64::from(t)).collect(), [rows, 1], &device);
    let chosen = crate::tensors::to_f32s(log_probs.clone().gather(1, chosen));
    let (values, ids) = if most > 0 {
        let (values, ids) = log_probs.topk_with_indices(most, 1); // [rows, most]
        (crate::tensors::to_f32s(values), to_i64s(ids))
    } else {
        (Vec::new(), Vec::new())
    };
    (0..rows)
        .map(|row| {
            let top = (0..most).map(|j| (ids[row * most + j] as u32, values[row * most + j])).collect();
            (chosen[row], top)
        })
        .collect()
}

/// Each row's token from `[rows, V]` logits (already edited). On a GPU it is chosen on the
/// device and only the ids are read back; elsewhere on the host by [`choose_row`].
pub fn choose(logits: Tensor<2>, choices: &[Choice]) -> Vec<Option<u32>> {
    let rows = logits.dims()[0];
    if choices.iter().all(|c| *c == Choice::Argmax) && crate::backend::is_gpu(&logits.device()) {
        return to_i64s(logits.argmax(1).reshape([rows])).into_iter().map(|t| Some(t as u32)).collect();
    }
    #[cfg(feature = "gpu")]
    if crate::backend::is_gpu(&logits.device()) && prefix_tune_shaders::fits(&[logits.shape().num_elements()]) {
        return gpu::choose(logits, choices);
    }
    crate::tensors::host_rows(logits).into_iter().zip(choices).map(|(scores, &choice)| choose_row(&scores, choice)).collect()
}

/// One row's token on the host; `None` for a draw from a row where no token has weight.
pub fn choose_row(scores: &[f32], choice: Choice) -> Option<u32> {
    match choice {
        Choice::Argmax => Some(argmax(scores) as u32),
        Choice::Draw { sampling, uniform } => draw(scores, sampling, uniform).map(|t| t as u32),
    }
}

fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

#[cfg(feature = "gpu")]
mod gpu {
    use burn::backend::fusion::custom::TensorSpec;
    use burn::backend::tensor::FloatTensor;
    use burn::backend::backend_extension;
    use burn::tensor::{DType, Shape, Tensor};
    use prefix_tune_shaders::pick::{self, FLOOR, SETTINGS, TEMPERATURE, TOP_P, UNIFORM};
    use prefix_tune_shaders::{CubeBackend, CubeTensor};

    use super::Choice;
    use crate::tensors::{floats, ints, to_f32s};

    /// `[N]` f32 ids from `[N, V]` logits.
    fn tokens_spec(logits: &TensorSpec) -> TensorSpec {
        TensorSpec::new(Shape::new([logits.shape[0]]), DType::F32)
    }

    #[backend_extension(Cube, Fusion)]
    pub trait CubePick: burn::backend::Backend {
        /// Each row's token (as f32) from f32 logits `[N, V]` and the rows' knobs `[N, 4]`.
        #[fusion(meta = |logits, _knobs| tokens_spec(logits))]
        fn cube_pick(logits: FloatTensor<Self>, knobs: FloatTensor<Self>) -> FloatTensor<Self>;
    }

    impl CubePick for CubeBackend {
        fn cube_pick(logits: CubeTensor, knobs: CubeTensor) -> CubeTensor {
            pick::pick(logits, knobs)
        }
    }

    /// [`super::choose`] on the device: top-k's floors from Burn's top-k, then one kernel.
    pub fn choose(logits: Tensor<2>, choices: &[Choice]) -> Vec<Option<u32>> {
        let [rows, vocab] = logits.dims();
        let device = logits.device();
        let logits = if logits.dtype() == DType::F32 { logits } else { logits.cast(DType::F32) };
        let mut knobs = vec![0.0f32; rows * SETTINGS];
        let mut top_ks = vec![0usize; rows];
        for (row, choice) in choices.iter().enumerate() {
            let settings = &mut knobs[row * SETTINGS..(row + 1) * SETTINGS];
            (settings[TEMPERATURE], settings[FLOOR], settings[TOP_P], settings[UNIFORM]) = match *choice {
                Choice::Argmax => (1.0, f32::NEG_INFINITY, 1.0, -1.0),
                Choice::Draw { sampling, uniform } => {
                    top_ks[row] = sampling.top_k.filter(|&k| k > 0 && k < vocab).unwrap_or(0);
                    (sampling.temperature, f32::NEG_INFINITY, sampling.top_p.unwrap_or(1.0), uniform)
                }
            };
        }
        let mut knobs = floats(knobs, [rows, SETTINGS], &device);
        let most = top_ks.iter().copied().max().unwrap_or(0);
        if most > 0 {
            // The k-th largest raw logit of each row with top-k (−∞ for the others).
            let columns: Vec<i64> = top_ks.iter().map(|&k| k.saturating_sub(1) as i64).collect();
            let kth = logits.clone().topk(most, 1).gather(1, ints(columns, [rows, 1], &device));
            let off = floats(top_ks.iter().map(|&k| if k == 0 { 1.0 } else { 0.0 }).collect(), [rows, 1], &device).greater_elem(0.5);
            knobs = knobs.slice_assign([0..rows, FLOOR..FLOOR + 1], kth.mask_fill(off, f32::NEG_INFINITY));
        }
        let tokens = <burn::backend::Dispatch as CubePick>::cube_pick(logits.into_dispatch(), knobs.into_dispatch());
        // The kernel's -1: nothing to draw from.
        to_f32s(Tensor::<1>::from_dispatch(tokens)).into_iter().map(|t| (t >= 0.0).then_some(t as u32)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device's edits (on the test backend) equal the host's: additions, bans, a forced
    /// row, and rows without edits.
    #[test]
    fn edits_on_the_device_equal_the_hosts() {
        let device = crate::testing::device();
        let (rows, vocab) = (3, 7);
        let values: Vec<f32> = (0..rows * vocab).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let mut edits = vec![Edits::default(); rows];
        edits[0].ban(3);
        edits[0].add(5, 1.5);
        edits[0].add(5, -0.25);
        edits[2].ban(0);
        edits[2].force(4);
        let on_device = crate::tensors::to_f32s(edit(floats(values.clone(), [rows, vocab], &device), &edits));
        let mut on_host = values;
        for (row, e) in on_host.chunks_mut(vocab).zip(&edits) {
            e.apply(row);
        }
        assert_eq!(on_device, on_host);
        assert_eq!(on_host[3], f32::NEG_INFINITY);
        assert_eq!(on_host[5], values_at(5) + 1.25);
        assert_eq!(&on_host[14..], &[f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY]);
    }

    fn values_at(i: usize) -> f32 {
        ((i * 37) % 11) as f32 - 5.0
    }
}
