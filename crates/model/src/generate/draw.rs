//! A seeded draw on the host by the rules of the device's kernel (`shaders/pick.rs`), in its
//! order of summation, so that from the same logits a seed draws the same token on the CPU and
//! on a GPU (see [`super::pick`] for the rules: temperature, top-k, top-p, the draw).

use super::Sampling;

/// The lowest raw score top-k keeps: the k-th largest (−∞ when top-k is off or keeps all).
fn top_k_floor(scores: &[f32], top_k: Option<usize>) -> f32 {
    match top_k.filter(|&k| k > 0 && k < scores.len()) {
        Some(k) => {
            let mut values = scores.to_vec();
            let (_, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            *kth
        }
        None => f32::NEG_INFINITY,
    }
}

/// The threads of the device kernel's cube, whose order of summation the host follows.
const THREADS: usize = 256;

/// The sum of `value` over `(index, value)` pairs in increasing index order, in the device's
/// order: thread `u` sums the indices `u, u + 256, …`, then the 256 partial sums are halved
/// pairwise. Indices left out are zeros, which change no sum.
fn strided_sum(values: impl Iterator<Item = (usize, f32)>) -> f32 {
    let mut partial = [0.0f32; THREADS];
    for (i, value) in values {
        partial[i % THREADS] += value;
    }
    let mut half = THREADS / 2;
    while half > 0 {
        for unit in 0..half {
            partial[unit] = partial[unit] + partial[unit + half];
        }
        half /= 2;
    }
    partial[0]
}

/// A float's bits as an unsigned integer that orders as the floats do.
fn ordered(x: f32) -> u32 {
    let bits = x.to_bits();
    if bits >= 0x8000_0000 { !bits } else { bits | 0x8000_0000 }
}

fn from_ordered(key: u32) -> f32 {
    f32::from_bits(if key >= 0x8000_0000 { key & 0x7fff_ffff } else { !key })
}

/// One row as the draw sees it: each token's scaled score `s = x / T` (−∞ where top-k removes
/// it) and weight `exp(s − max)` (0 there), each computed once with the device's expressions;
/// the device recomputes them in every pass, to the same bits.
struct Row {
    scaled: Vec<f32>,
    weights: Vec<f32>,
    max: f32,
    /// The tokens with weight, in increasing order: the only ones a sum needs.
    weighted: Vec<usize>,
}

impl Row {
    fn new(raw: &[f32], temperature: f32, floor: f32) -> Self {
        let scaled: Vec<f32> = raw.iter().map(|&x| if x >= floor { x / temperature } else { f32::NEG_INFINITY }).collect();
        let max = scaled.iter().copied().fold(f32::MIN, f32::max);
        let weights: Vec<f32> = scaled.iter().map(|&s| if s == f32::NEG_INFINITY { 0.0 } else { (s - max).exp() }).collect();
        let weighted = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
        Row { scaled, weights, max, weighted }
    }

    /// The weight of the tokens whose scaled score is strictly above `above`.
    fn mass_above(&self, above: f32) -> f32 {
        strided_sum(self.weighted.iter().filter(|&&i| self.scaled[i] > above).map(|&i| (i, self.weights[i])))
    }

    /// Top-p's threshold: the smallest scaled score `t` whose mass strictly above is below
    /// `top_p` of the total, by bisection over ordered keys (at least the top token stays).
    fn top_p_threshold(&self, top_p: f32) -> f32 {
        let total = self.mass_above(f32::MIN);
        let (mut low, mut high) = (ordered(f32::MIN), ordered(self.max));
        while low < high {
            let middle = low + (high - low) / 2;
            if self.mass_above(from_ordered(middle)) < top_p * total {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        from_ordered(high)
    }
}

/// The weight a draw gives each token of a row of raw scores, as the device computes them:
/// `exp(s/T − max)` for the tokens top-k and top-p keep, 0 for the others.
pub fn kept_weights(scores: &[f32], sampling: Sampling) -> Vec<f32> {
    let floor = top_k_floor(scores, sampling.top_k);
    let row = Row::new(scores, sampling.temperature, floor);
    let threshold = match sampling.top_p.filter(|&p| p < 1.0) {
        Some(top_p) => row.top_p_threshold(top_p),
        None => f32::MIN,
    };
    row.scaled.iter().zip(&row.weights).map(|(&s, &w)| if s >= threshold { w } else { 0.0 }).collect()
}

/// A seeded draw from one row's scores (see the module's rules), summed in the device's order:
/// chunks of `⌈V/256⌉` tokens, the running sum over the chunks' sums to the chunk where it
/// passes `uniform · total`, then token by token. Should rounding leave the target unreached,
/// the last token with weight is taken. `None` where no token has weight: the scores are NaN
/// (or +∞), or every token is banned; HF's `torch.multinomial` refuses such a row too.
pub(super) fn draw(scores: &[f32], sampling: Sampling, uniform: f32) -> Option<usize> {
    let weights = kept_weights(scores, sampling);
    let chunk = weights.len().div_ceil(THREADS).max(1);
    let sums: Vec<f32> = weights.chunks(chunk).map(|c| c.iter().fold(0.0, |sum, &w| sum + w)).collect();
    let total = sums.iter().fold(0.0f32, |total, &sum| total + sum);
    if !(total > 0.0) {
        return None;
    }
    let target = uniform * total;
    let (mut running, mut last_chunk) = (0.0f32, 0);
    for (c, &sum) in sums.iter().enumerate().filter(|(_, &sum)| sum > 0.0) {
        last_chunk = c;
        if running + sum <= target {
            running += sum;
            continue;
        }
        for (i, &w) in weights.iter().enumerate().skip(c * chunk).take(chunk) {
            running += w;
            if w > 0.0 && running > target {
                return Some(i);
            }
        }
    }
    let last = weights.iter().enumerate().skip(last_chunk * chunk).take(chunk).filter(|(_, &w)| w > 0.0).last();
    last.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> Sampling {
        Sampling { temperature, top_k, top_p, seed: 0 }
    }

    /// Top-k keeps the k-th largest score's ties (HF removes `scores < kth`); top-p keeps a
    /// token when the mass strictly above it is below p, ties together.
    #[test]
    fn top_k_and_top_p_keep_what_hfs_rules_keep() {
        let scores = [2.0f32, 1.0, 1.0, 0.0, 3.0];
        assert_eq!(top_k_floor(&scores, Some(2)), 2.0);
        assert_eq!(top_k_floor(&scores, Some(3)), 1.0, "the tie at the 3rd place keeps both 1.0s");
        assert_eq!(top_k_floor(&scores, Some(5)), f32::NEG_INFINITY);
        // Probabilities 0.5, 0.25, 0.125, 0.125 in vocabulary order (scores are log weights).
        let s = [-(2f32.ln()), -(4f32.ln()), -(8f32.ln()), -(8f32.ln())];
        let kept = |top_p: f32| -> Vec<bool> { kept_weights(&s, sampling(1.0, None, Some(top_p))).iter().map(|&w| w > 0.0).collect() };
        assert_eq!(kept(0.45), [true, false, false, false], "0.5 alone reaches p = 0.45");
        assert_eq!(kept(0.6), [true, true, false, false], "above 0.25 is 0.5 < 0.6: kept");
        assert_eq!(kept(0.8), [true, true, true, true], "above each 0.125 is 0.75 < 0.8: both kept");
        assert_eq!(kept(0.7), [true, true, false, false]);
        // With top-p 0.6 only tokens 0 and 1 remain, weights 2:1: uniforms below 2/3 give 0.
        let draw_with = |u: f32| draw(&s, sampling(1.0, None, Some(0.6)), u);
        assert_eq!((draw_with(0.0), draw_with(0.66), draw_with(0.67), draw_with(0.999)), (Some(0), Some(0), Some(1), Some(1)));
        // Temperature 0.5 squares the weights: 4:1 between tokens 0 and 1 after top-k 2.
        let draw_hot = |u: f32| draw(&s, sampling(0.5, Some(2), None), u);
        assert_eq!((draw_hot(0.79), draw_hot(0.81)), (Some(0), Some(1)));
        // Over 1,000 tokens (four chunks' worth) the draw is still the inverse of the cumulative sum.
        let flat = vec![0.0f32; 1000];
        assert_eq!((draw(&flat, sampling(1.0, None, None), 0.0), draw(&flat, sampling(1.0, None, None), 0.5004), draw(&flat, sampling(1.0, None, None), 0.9999)), (Some(0), Some(500), Some(999)));
        // Nothing to draw from: a row of NaN, of +∞, or every token banned.
        for row in [[f32::NAN; 4], [f32::INFINITY; 4], [f32::NEG_INFINITY; 4]] {
            assert_eq!(draw(&row, sampling(1.0, None, None), 0.5), None, "{row:?}");
        }
    }
}
