//! ROUGE-1/2/L F-measures as Google's `rouge-score` (0.1.2) computes them with
//! `use_stemmer=True`: lowercase, every run of non-`[a-z0-9]` becomes a space, tokens longer than
//! 3 characters are Porter-stemmed (NLTK), and the corpus figure is the mean per-document F1.

use crate::porter;
use std::collections::HashMap;

/// Precision, recall and F1 of one (target, prediction) pair.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

/// Mean F-measures over a corpus (fractions in [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RougeScores {
    pub rouge1: f64,
    pub rouge2: f64,
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
}

/// rouge-score's `tokenize.tokenize(text, stemmer)`.
pub fn tokenize(text: &str, stem: bool) -> Vec<String> {
    let lower = text.to_lowercase();
    let cleaned: String =
        lower.chars().map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { ' ' }).collect();
    cleaned
        .split_whitespace()
        .map(|t| if stem && t.len() > 3 { porter::stem(t) } else { t.to_string() })
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .collect()
}

fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for window in tokens.windows(n) {
            *counts.entry(window).or_insert(0) += 1;
        }
    }
    counts
}

/// ROUGE-N of tokenized texts.
pub fn rouge_n(target: &[String], prediction: &[String], n: usize) -> Prf {
    let t = ngrams(target, n);
    let p = ngrams(prediction, n);
    let overlap: usize = t.iter().map(|(g, c)| (*c).min(*p.get(g).unwrap_or(&0))).sum();
    let precision = overlap as f64 / p.values().sum::<usize>().max(1) as f64;
    let recall = overlap as f64 / t.values().sum::<usize>().max(1) as f64;
    Prf { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Longest common subsequence length of two token lists.
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y { prev[j] + 1 } else { cur[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L (sentence-level LCS, not `rougeLsum`) of tokenized texts.
pub fn rouge_l(target: &[String], prediction: &[String]) -> Prf {
    if target.is_empty() || prediction.is_empty() {
        return Prf { precision: 0.0, recall: 0.0, fmeasure: 0.0 };
    }
    let lcs = lcs_len(target, prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / target.len() as f64;
    Prf { precision, recall, fmeasure: fmeasure(precision, recall) }
}

/// Mean ROUGE-1/2/L F1 of predictions against single references (stemmed, as in the paper).
pub fn corpus_rouge(predictions: &[String], references: &[String]) -> RougeScores {
    let n = predictions.len().min(references.len());
    let (mut r1, mut r2, mut rl) = (0.0, 0.0, 0.0);
    for (pred, reference) in predictions.iter().zip(references) {
        let p = tokenize(pred, true);
        let t = tokenize(reference, true);
        r1 += rouge_n(&t, &p, 1).fmeasure;
        r2 += rouge_n(&t, &p, 2).fmeasure;
        rl += rouge_l(&t, &p).fmeasure;
    }
    let d = n.max(1) as f64;
    RougeScores { rouge1: r1 / d, rouge2: r2 / d, rouge_l: rl / d }
}
