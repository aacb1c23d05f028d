//! BLEU and NIST exactly as e2e-metrics runs them: `mteval-v13a-sig.pl` on one document, default
//! options (lowercased "western" tokenization, closest reference length, BLEU smoothed with
//! 1/2^k for empty n-gram matches, NIST with n-gram information from all references and the
//! average number of non-empty references per segment). Re-implemented from reading the script.

use regex::Regex;
use std::collections::HashMap;
use std::sync::OnceLock;

/// mteval-v13a `tokenization` (non-international).
pub fn tokenize(text: &str) -> Vec<String> {
    static RES: OnceLock<[Regex; 5]> = OnceLock::new();
    let [punct, before_dot, after_dot, dash, spaces] = RES.get_or_init(|| {
        [
            Regex::new(r"([\{-~\[-` -\&\(-\+:-@/])").unwrap(),
            Regex::new(r"([^0-9])([\.,])").unwrap(),
            Regex::new(r"([\.,])([^0-9])").unwrap(),
            Regex::new(r"([0-9])(-)").unwrap(),
            Regex::new(r"\s+").unwrap(),
        ]
    });
    // The SGML reader first turns every whitespace run into one space.
    let mut t = spaces.replace_all(text, " ").into_owned();
    t = t.replace("<skipped>", "");
    t = t.replace("-\n", "").replace('\n', " ");
    t = t.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    t = format!(" {t} ");
    t.make_ascii_lowercase();
    t = punct.replace_all(&t, " $1 ").into_owned();
    t = before_dot.replace_all(&t, "$1 $2 ").into_owned();
    t = after_dot.replace_all(&t, " $1 $2").into_owned();
    t = dash.replace_all(&t, "$1 $2 ").into_owned();
    t.split_whitespace().map(str::to_string).collect()
}

const MAX_NGRAM: usize = 5;

fn ngram_counts(words: &[String], max_n: usize) -> HashMap<Vec<String>, usize> {
    let mut counts = HashMap::new();
    for i in 0..words.len() {
        for n in 1..=max_n.min(words.len() - i) {
            *counts.entry(words[i..i + n].to_vec()).or_insert(0) += 1;
        }
    }
    counts
}

/// BLEU (4-gram) and NIST (5-gram) of a corpus, as the Perl script prints them (unrounded).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MtevalScores {
    pub bleu: f64,
    pub nist: f64,
}

/// Score `hypotheses[i]` against `references[i]` (any number of references each; empty strings
/// count as absent, as e2e-metrics pads them).
pub fn score(hypotheses: &[String], references: &[Vec<String>]) -> MtevalScores {
    let hyps: Vec<Vec<String>> = hypotheses.iter().map(|h| tokenize(h)).collect();
    let refs: Vec<Vec<Vec<String>>> =
        references.iter().map(|rs| rs.iter().map(|r| tokenize(r)).collect()).collect();
    let information = Information::new(&refs);
    let mut tallies = Tallies::default();
    for (hyp, seg_refs) in hyps.iter().zip(&refs) {
        tallies.add_segment(hyp, seg_refs, &information);
    }
    MtevalScores { bleu: tallies.bleu(), nist: tallies.nist(hyps.len()) }
}

/// NIST information weights, from the n-gram counts of every reference segment.
struct Information {
    counts: HashMap<Vec<String>, usize>,
    total_words: usize,
}

impl Information {
    fn new(refs: &[Vec<Vec<String>>]) -> Self {
        let mut total_words = 0usize;
        let mut counts: HashMap<Vec<String>, usize> = HashMap::new();
        for seg in refs.iter().flatten() {
            total_words += seg.len();
            for (g, c) in ngram_counts(seg, MAX_NGRAM) {
                *counts.entry(g).or_insert(0) += c;
            }
        }
        Self { counts, total_words }
    }

    /// The information of n-gram `g` (seen in the references).
    fn of(&self, g: &[String]) -> f64 {
        let count = self.counts[g] as f64;
        let prefix = &g[..g.len() - 1];
        // Perl tests the prefix string for truth, so a prefix "0" falls back to the word total.
        let denom = if prefix.is_empty() || (prefix.len() == 1 && prefix[0] == "0") {
            self.total_words as f64
        } else {
            self.counts[prefix] as f64
        };
        -(count / denom).ln() / 2f64.ln()
    }
}

/// The corpus-level counts both scores come from, summed segment by segment.
#[derive(Default)]
struct Tallies {
    bleu_match: [usize; 5],
    tst_count: [usize; MAX_NGRAM + 1],
    ref_words: usize,
    ref_length: usize,
    nist_info: [f64; MAX_NGRAM + 1],
    nonempty_refs: usize,
}

impl Tallies {
    fn add_segment(&mut self, hyp: &[String], seg_refs: &[Vec<String>], information: &Information) {
        let tst = ngram_counts(hyp, MAX_NGRAM);
        for n in 1..=MAX_NGRAM {
            self.tst_count[n] += hyp.len().saturating_sub(n - 1);
        }
        let mut ref_max: HashMap<Vec<String>, usize> = HashMap::new();
        let mut closest: Option<usize> = None;
        for r in seg_refs {
            if !r.is_empty() {
                self.nonempty_refs += 1;
            }
            for (g, c) in ngram_counts(r, MAX_NGRAM) {
                let e = ref_max.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
            self.ref_words += r.len();
            closest = Some(match closest {
                None => r.len(),
                Some(cur) => closest_length(cur, r.len(), hyp.len()),
            });
        }
        self.ref_length += closest.unwrap_or(0);
        for (g, c) in &tst {
            if let Some(rc) = ref_max.get(g) {
                let m = (*c).min(*rc);
                if g.len() <= 4 {
                    self.bleu_match[g.len()] += m;
                }
                self.nist_info[g.len()] += information.of(g) * m as f64;
            }
        }
    }

    /// BLEU with the script's default smoothing.
    fn bleu(&self) -> f64 {
        let mut log_sum = 0.0;
        let mut smooth = 1.0;
        for n in 1..=4 {
            let iscore = if self.tst_count[n] == 0 {
                0.0
            } else if self.bleu_match[n] == 0 {
                smooth *= 2.0;
                (1.0 / (smooth * self.tst_count[n] as f64)).ln()
            } else {
                (self.bleu_match[n] as f64 / self.tst_count[n] as f64).ln()
            };
            log_sum += iscore;
        }
        let bp = if self.tst_count[1] > 0 { (1.0 - self.ref_length as f64 / self.tst_count[1] as f64).min(0.0).exp() } else { 0.0 };
        (log_sum / 4.0).exp() * bp
    }

    /// NIST over `segments` hypotheses, with the script's length penalty.
    fn nist(&self, segments: usize) -> f64 {
        let nsys = self.nonempty_refs as f64 / segments.max(1) as f64;
        let ratio = self.tst_count[1] as f64 / (self.ref_words as f64 / nsys);
        let penalty = if ratio >= 1.0 {
            1.0
        } else if ratio <= 0.0 {
            0.0
        } else {
            let beta = -(0.5f64).ln() / 1.5f64.ln() / 1.5f64.ln();
            (-beta * ratio.ln() * ratio.ln()).exp()
        };
        (1..=MAX_NGRAM).map(|n| self.nist_info[n] / self.tst_count[n].max(1) as f64).sum::<f64>() * penalty
    }
}

/// `brevity_penalty_closest`: the reference length closest to the candidate, shorter on ties;
/// empty references are skipped.
fn closest_length(current: usize, reference: usize, candidate: usize) -> usize {
    if reference == 0 {
        return current;
    }
    let d_new = candidate.abs_diff(reference);
    let d_cur = candidate.abs_diff(current);
    if d_new < d_cur || (d_new == d_cur && reference < current) {
        reference
    } else {
        current
    }
}

#[cfg(test)]
mod tests {
    use super::tokenize;

    #[test]
    fn mteval_tokenization() {
        
        assert_eq!(tokenize("3.5 out of 5.").join(" "), "3.5 out of 5 .");
        assert_eq!(tokenize("family-friendly").join(" "), "family-friendly");
    }
}
