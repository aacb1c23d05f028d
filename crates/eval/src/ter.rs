//! Corpus TER as sacrebleu 2.x computes it with `sacrebleu.metrics.TER()` at its defaults:
//! `case_sensitive=False` (text is lowercased), `normalized=False` (no Tercom punctuation
//! tokenization), `no_punct=False`, `asian_support=False`. Words are then the whitespace-split
//! tokens of the lowercased text, exactly as given (so "India." is one word).
//!
//! Per sentence, the edit count is the smallest over the references ([`crate::tercom::edits`])
//! and the length is the *average* reference length; the corpus score is total edits over total
//! average length, ×100 as sacrebleu prints it (the prefix-tuning paper's tables show the
//! fraction, i.e. this ÷100). Lower is better.

use crate::tercom;

/// Corpus TER with the totals it is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ter {
    /// 100 × edits / ref_length; 100 when all references are empty but a hypothesis is not.
    pub score: f64,
    /// Sum over sentences of the fewest edits to any of the sentence's references.
    pub edits: usize,
    /// Sum over sentences of the mean reference length in words.
    pub ref_length: f64,
}

/// sacrebleu's default TER preprocessing: lowercase, split on whitespace. Python's `str.split`
/// also splits on the information separators U+001C–U+001F, which Rust's `is_whitespace` does not.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// `(edits, mean reference length)` of one hypothesis. A sentence without references is scored
/// as against one empty reference (sacrebleu itself divides by zero there).
pub fn sentence_stats(hypothesis: &str, references: &[String]) -> (usize, f64) {
    let hyp = words(hypothesis);
    let hyp: Vec<&str> = hyp.iter().map(String::as_str).collect();
    if references.is_empty() {
        return (hyp.len(), 0.0);
    }
    let mut best = usize::MAX;
    let mut total_len = 0usize;
    for reference in references {
        let r = words(reference);
        let r: Vec<&str> = r.iter().map(String::as_str).collect();
        best = best.min(tercom::edits(&hyp, &r));
        total_len += r.len();
    }
    (best, total_len as f64 / references.len() as f64)
}

/// Corpus TER of `hypotheses` against their references (any number per sentence).
pub fn corpus_ter(hypotheses: &[String], references: &[Vec<String>]) -> Ter {
    let (mut edits, mut ref_length) = (0usize, 0.0f64);
    for (hyp, refs) in hypotheses.iter().zip(references) {
        let (e, l) = sentence_stats(hyp, refs);
        edits += e;
        ref_length += l;
    }
    let fraction = if ref_length > 0.0 {
        edits as f64 / ref_length
    } else if edits > 0 {
        1.0
    } else {
        0.0
    };
    Ter { score: 100.0 * fraction, edits, ref_length }
}
