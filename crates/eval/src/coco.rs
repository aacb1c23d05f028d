//! ROUGE-L and CIDEr-D as the pycocoevalcap copy inside e2e-metrics computes them, on text that
//! is already PTB-tokenized (see [`crate::ptb`]). ROUGE-L: LCS precision/recall against each
//! reference, maxima taken separately, F with beta = 1.2, averaged over segments. CIDEr-D:
//! TF-IDF n-gram vectors (n = 1..4, document frequency over the references of the corpus),
//! clipped cosine with a Gaussian length penalty (sigma = 6), times 10, averaged.

use crate::rouge_score::lcs_len;
use std::collections::HashMap;

/// COCO ROUGE-L of one candidate against its references.
pub fn rouge_l_segment(candidate: &str, references: &[String]) -> f64 {
    const BETA: f64 = 1.2;
    // pycocoevalcap splits on single spaces.
    let c: Vec<&str> = candidate.split(' ').collect();
    let (mut prec_max, mut rec_max) = (0.0f64, 0.0f64);
    for reference in references {
        let r: Vec<&str> = reference.split(' ').collect();
        let lcs = lcs_len(&r, &c) as f64;
        prec_max = prec_max.max(lcs / c.len() as f64);
        rec_max = rec_max.max(lcs / r.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 {
        (1.0 + BETA * BETA) * prec_max * rec_max / (rec_max + BETA * BETA * prec_max)
    } else {
        0.0
    }
}

/// Mean COCO ROUGE-L over a corpus.
pub fn rouge_l(candidates: &[String], references: &[Vec<String>]) -> f64 {
    let total: f64 = candidates.iter().zip(references).map(|(c, r)| rouge_l_segment(c, r)).sum();
    total / candidates.len().max(1) as f64
}

type Counts = HashMap<Vec<String>, f64>;

fn precook(sentence: &str) -> Counts {
    let words: Vec<String> = sentence.split_whitespace().map(str::to_string).collect();
    let mut counts = Counts::new();
    for n in 1..=4 {
        if words.len() >= n {
            for w in words.windows(n) {
                *counts.entry(w.to_vec()).or_insert(0.0) += 1.0;
            }
        }
    }
    counts
}

/// CIDEr-D (as `Cider()` in e2e-metrics / pycocoevalcap): corpus mean.
pub fn cider_d(candidates: &[String], references: &[Vec<String>]) -> f64 {
    const SIGMA: f64 = 6.0;
    let refs: Vec<Vec<Counts>> = references.iter().map(|rs| rs.iter().map(|r| precook(r)).collect()).collect();
    let tests: Vec<Counts> = candidates.iter().map(|c| precook(c)).collect();
    let mut df: HashMap<&Vec<String>, f64> = HashMap::new();
    for seg in &refs {
        let mut seen: std::collections::HashSet<&Vec<String>> = Default::default();
        for r in seg {
            seen.extend(r.keys());
        }
        for g in seen {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let ref_len = (refs.len() as f64).ln();
    fn vectorize<'a>(
        counts: &'a Counts,
        df: &HashMap<&Vec<String>, f64>,
        ref_len: f64,
    ) -> ([HashMap<&'a Vec<String>, f64>; 4], [f64; 4], f64) {
        let mut vec: [HashMap<&'a Vec<String>, f64>; 4] = Default::default();
        let mut norm = [0.0f64; 4];
        let mut length = 0.0;
        for (g, tf) in counts {
            let n = g.len() - 1;
            let d = df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
            let v = tf * (ref_len - d);
            vec[n].insert(g, v);
            norm[n] += v * v;
            if n == 1 {
                length += tf; // pycocoevalcap counts bigrams as the "length"
            }
        }
        (vec, norm.map(f64::sqrt), length)
    }
    let mut total = 0.0;
    for (test, seg_refs) in tests.iter().zip(&refs) {
        let (vh, nh, lh) = vectorize(test, &df, ref_len);
        let mut score = [0.0f64; 4];
        for r in seg_refs {
            let (vr, nr, lr) = vectorize(r, &df, ref_len);
            let delta = lh - lr;
            for n in 0..4 {
                let mut val = 0.0;
                for (g, h) in &vh[n] {
                    let rv = vr[n].get(g).copied().unwrap_or(0.0);
                    val += h.min(rv) * rv;
                }
                if nh[n] != 0.0 && nr[n] != 0.0 {
                    val /= nh[n] * nr[n];
                }
                score[n] += val * (-(delta * delta) / (2.0 * SIGMA * SIGMA)).exp();
            }
        }
        let mean = score.iter().sum::<f64>() / 4.0;
        total += mean / seg_refs.len() as f64 * 10.0;
    }
    total / tests.len().max(1) as f64
}
