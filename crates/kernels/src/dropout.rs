//! Dropout's keep mask, drawn on all cores.
//!
//! Burn's CPU backend draws a Bernoulli tensor one value at a time from one ChaCha generator:
//! 12% of the CPU time of a GPT-2 training step with dropout, all of it on the calling thread.
//! Here value `i` of a mask is a hash of `(seed, i)` (SplitMix64's finaliser), so blocks of it
//! are drawn in parallel and the mask depends on the seed alone, not on the number of cores.

use rayon::prelude::*;

/// Values per task.
const BLOCK: usize = 1 << 14;

/// `len` values, each 1.0 with probability `1 − p` and 0.0 otherwise.
pub fn keep_mask(seed: u64, len: usize, p: f64) -> Vec<f32> {
    assert!((0.0..=1.0).contains(&p), "dropout::keep_mask: p = {p} is not a probability");
    // Kept when a uniform 24-bit draw falls below (1 − p)·2²⁴.
    let threshold = ((1.0 - p) * (1u64 << 24) as f64).round() as u64;
    let mut mask = vec![0.0f32; len];
    mask.par_chunks_mut(BLOCK).enumerate().for_each(|(block, values)| {
        let first = (block * BLOCK) as u64;
        for (i, value) in values.iter_mut().enumerate() {
            let draw = mix(seed.wrapping_add((first + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))) >> 40;
            *value = if draw < threshold { 1.0 } else { 0.0 };
        }
    });
    mask
}

/// SplitMix64's output function: a bijection of u64 whose bits look independent.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_one_minus_p_depend_on_the_seed_alone_and_look_independent() {
        let len = 1_000_003;
        for p in [0.1, 0.5] {
            let mask = keep_mask(7, len, p);
            assert!(mask.iter().all(|&v| v == 0.0 || v == 1.0));
            let kept = mask.iter().sum::<f32>() as f64 / len as f64;
            // Binomial standard deviation ≈ 0.0005 at this length.
            assert!((kept - (1.0 - p)).abs() < 0.003, "p = {p}: kept {kept}");
            // Neighbours are uncorrelated: P(both kept) ≈ (1 − p)².
            let both = mask.windows(2).filter(|w| w[0] == 1.0 && w[1] == 1.0).count() as f64 / (len - 1) as f64;
            assert!((both - (1.0 - p) * (1.0 - p)).abs() < 0.003, "p = {p}: pairs kept {both}");
            assert_eq!(mask, keep_mask(7, len, p), "the same seed draws the same mask");
            let other = keep_mask(8, len, p);
            assert!(mask.iter().zip(&other).filter(|(a, b)| a != b).count() > len / 10, "another seed draws another mask");
            // A prefix of a longer mask is the shorter mask: blocks do not depend on the split.
            assert_eq!(&keep_mask(7, len + 5_000, p)[..len], &mask[..]);
        }
        assert!(keep_mask(1, 1000, 0.0).iter().all(|&v| v == 1.0));
        assert!(keep_mask(1, 1000, 1.0).iter().all(|&v| v == 0.0), "p = 1 drops all, as Bernoulli(0)");
    }
}
