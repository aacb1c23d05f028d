//! Corpus BLEU as Moses' `multi-bleu.perl` (used by the WebNLG 2017 and DART evaluation
//! scripts): whitespace tokens, clipped n-gram matches against several references, the
//! reference length closest to each hypothesis (shorter on ties), no smoothing (0 if any n-gram
//! precision is 0), optional lowercasing (`-lc`, used for WebNLG). Returned ×100 like the script.

use std::collections::HashMap;

fn counts(words: &[&str], n: usize) -> HashMap<Vec<String>, usize> {
    let mut map = HashMap::new();
    if words.len() >= n {
        for w in words.windows(n) {
            *map.entry(w.iter().map(|s| s.to_string()).collect()).or_insert(0) += 1;
        }
    }
    map
}

/// multi-bleu.perl BLEU (0–100).
pub fn bleu(hypotheses: &[String], references: &[Vec<String>], lowercase: bool) -> f64 {
    let prep = |s: &str| if lowercase { s.to_lowercase() } else { s.to_string() };
    let (mut correct, mut total) = ([0usize; 5], [0usize; 5]);
    let (mut length_translation, mut length_reference) = (0usize, 0usize);
    for (hyp, refs) in hypotheses.iter().zip(references) {
        let hyp = prep(hyp);
        let words: Vec<&str> = hyp.split_whitespace().collect();
        let refs: Vec<String> = refs.iter().map(|r| prep(r)).collect();
        let ref_words: Vec<Vec<&str>> = refs.iter().map(|r| r.split_whitespace().collect()).collect();
        let mut closest: Option<(usize, usize)> = None; // (diff, length)
        for r in &ref_words {
            let diff = words.len().abs_diff(r.len());
            closest = match closest {
                None => Some((diff, r.len())),
                Some((d, l)) if diff < d || (diff == d && r.len() < l) => Some((diff, r.len())),
                keep => keep,
            };
        }
        length_translation += words.len();
        length_reference += closest.map(|c| c.1).unwrap_or(0);
        for n in 1..=4 {
            let mut ref_max: HashMap<Vec<String>, usize> = HashMap::new();
            for r in &ref_words {
                for (g, c) in counts(r, n) {
                    let e = ref_max.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            for (g, c) in counts(&words, n) {
                correct[n] += c.min(*ref_max.get(&g).unwrap_or(&0));
                total[n] += c;
            }
        }
    }
    let mut log_sum = 0.0;
    for n in 1..=4 {
        if total[n] == 0 || correct[n] == 0 {
            return 0.0;
        }
        log_sum += (correct[n] as f64 / total[n] as f64).ln();
    }
    let bp = if length_translation < length_reference && length_translation > 0 {
        (1.0 - length_reference as f64 / length_translation as f64).exp()
    } else if length_translation == 0 {
        0.0
    } else {
        1.0
    };
    100.0 * bp * (log_sum / 4.0).exp()
}
