//! The Tercom edit count of one hypothesis against one reference, with the search heuristics of
//! sacrebleu 2.x (`sacrebleu/metrics/lib_ter.py`), so that counts agree with sacrebleu exactly,
//! including the cases where its heuristics give a non-optimal count.
//!
//! Edits are word insertions, deletions and substitutions (cost 1 each) plus block shifts (cost
//! 1 each). Shifts are found greedily: each round tries every admissible move of a block of up to
//! [`MAX_SHIFT_SIZE`] words that also occurs in the reference, applies the one that lowers the
//! edit distance most, and stops when none helps or [`MAX_SHIFT_CANDIDATES`] moves were tried.
//! The edit distance only fills a band of the matrix around its (length-scaled) diagonal, so
//! very misaligned pairs can get a larger distance than plain Levenshtein; we keep that band
//! because the shift choice and so the final count depend on it.

use std::cmp::Reverse;

/// Longest block moved by one shift.
pub const MAX_SHIFT_SIZE: usize = 10;
/// A block is not matched to a reference position further than this from its own position.
pub const MAX_SHIFT_DIST: usize = 50;
/// Half-width of the band of the edit-distance matrix that is filled.
pub const BEAM_WIDTH: usize = 25;
/// Shift candidates tried per sentence pair before the search gives up (sacrebleu's own limit).
pub const MAX_SHIFT_CANDIDATES: usize = 1000;

/// Cells outside the band; large but far from overflowing when a few edits are added to it.
const INFINITY: i64 = 10_000_000_000_000_000;

/// How a matrix cell was reached. The preference on equal cost (diagonal, then consuming a
/// hypothesis word, then consuming a reference word) decides the alignment and so which shifts
/// are tried; it is sacrebleu's order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Match,
    Substitute,
    /// The hypothesis word has no reference counterpart.
    HypOnly,
    /// The reference word has no hypothesis counterpart.
    RefOnly,
    /// Outside the band, never filled.
    Unset,
}

/// Edits (shifts plus word edits) turning `hyp` into `reference`. An empty reference costs one
/// deletion per hypothesis word.
pub fn edits(hyp: &[&str], reference: &[&str]) -> usize {
    if reference.is_empty() {
        return hyp.len();
    }
    let band = Band::new(reference, hyp.len());
    let mut words = hyp.to_vec();
    let mut shifts = 0;
    let mut tried = 0;
    loop {
        let (gain, shifted) = best_shift(&words, reference, &band, &mut tried);
        // sacrebleu drops the round's best shift when the candidate budget ran out during it.
        if tried >= MAX_SHIFT_CANDIDATES || gain <= 0 {
            break;
        }
        shifts += 1;
        words = shifted.expect("a positive gain comes with a shift");
    }
    let distance = band.matrix(&words).cost_at_end();
    shifts + distance as usize
}

/// The band of the edit-distance matrix filled for hypotheses of one length (shifts keep the
/// length, so one band serves a whole sentence pair).
struct Band<'r> {
    reference: &'r [&'r str],
    hyp_len: usize,
    ratio: f64,
    width: usize,
}

impl<'r> Band<'r> {
    fn new(reference: &'r [&'r str], hyp_len: usize) -> Self {
        let ratio = if hyp_len == 0 { 1.0 } else { reference.len() as f64 / hyp_len as f64 };
        // A band narrower than half the length ratio could miss the previous row entirely.
        let width = if (BEAM_WIDTH as f64) < ratio / 2.0 {
            (ratio / 2.0 + BEAM_WIDTH as f64).ceil() as usize
        } else {
            BEAM_WIDTH
        };
        Band { reference, hyp_len, ratio, width }
    }

    /// Columns filled in row `i` (1-based hypothesis position); the last row is filled to the end.
    fn columns(&self, i: usize) -> std::ops::Range<usize> {
        let diagonal = (i as f64 * self.ratio).floor() as usize;
        let low = diagonal.saturating_sub(self.width);
        let high = if i == self.hyp_len { self.reference.len() + 1 } else { (diagonal + self.width).min(self.reference.len() + 1) };
        low..high.max(low)
    }

    /// Row `i` of the matrix from row `i - 1`, with how each cell was reached when `steps` is given.
    fn fill_row(&self, i: usize, word: &str, prev: &[i64], row: &mut [i64], mut steps: Option<&mut [Step]>) {
        row.fill(INFINITY);
        if let Some(s) = steps.as_deref_mut() {
            s.fill(Step::Unset);
        }
        for j in self.columns(i) {
            let (cost, step) = if j == 0 {
                (prev[0] + 1, Step::HypOnly)
            } else {
                let diagonal = if word == self.reference[j - 1] { (prev[j - 1], Step::Match) } else { (prev[j - 1] + 1, Step::Substitute) };
                let mut best = (row[j], Step::Unset);
                for option in [diagonal, (prev[j] + 1, Step::HypOnly), (row[j - 1] + 1, Step::RefOnly)] {
                    if option.0 < best.0 {
                        best = option;
                    }
                }
                best
            };
            row[j] = cost;
            if let Some(s) = steps.as_deref_mut() {
                s[j] = step;
            }
        }
    }

    fn first_row(&self) -> Vec<i64> {
        (0..=self.reference.len() as i64).collect()
    }

    /// The whole matrix for `hyp`, with steps, for the alignment and for reuse of its rows.
    fn matrix(&self, hyp: &[&str]) -> Matrix {
        let width = self.reference.len() + 1;
        let mut costs = vec![self.first_row()];
        let mut steps = vec![vec![Step::RefOnly; width]];
        for (i, word) in hyp.iter().enumerate() {
            let (mut row, mut step_row) = (vec![0; width], vec![Step::Unset; width]);
            self.fill_row(i + 1, word, &costs[i], &mut row, Some(&mut step_row));
            costs.push(row);
            steps.push(step_row);
        }
        Matrix { costs, steps }
    }

    /// Edit distance of `hyp`, starting from row `shared` of `base` (whose hypothesis has the
    /// same first `shared` words), costs only.
    fn distance_from(&self, hyp: &[&str], base: &Matrix, shared: usize) -> i64 {
        let mut prev = base.costs[shared].clone();
        let mut row = vec![0; prev.len()];
        for (i, word) in hyp.iter().enumerate().skip(shared) {
            self.fill_row(i + 1, word, &prev, &mut row, None);
            std::mem::swap(&mut prev, &mut row);
        }
        prev[self.reference.len()]
    }
}

struct Matrix {
    costs: Vec<Vec<i64>>,
    steps: Vec<Vec<Step>>,
}

impl Matrix {
    fn cost_at_end(&self) -> i64 {
        *self.costs.last().and_then(|r| r.last()).expect("matrix has a cell")
    }

    /// The cheapest path, from the first words on.
    fn path(&self) -> Vec<Step> {
        let (mut i, mut j) = (self.costs.len() - 1, self.costs[0].len() - 1);
        let mut path = Vec::with_capacity(i + j);
        while i > 0 || j > 0 {
            let step = self.steps[i][j];
            match step {
                Step::Match | Step::Substitute => (i, j) = (i - 1, j - 1),
                Step::HypOnly => i -= 1,
                Step::RefOnly => j -= 1,
                // Only reachable from an infinite end cell, which the last full row rules out.
                Step::Unset => break,
            }
            path.push(step);
        }
        path.reverse();
        path
    }
}

/// For each reference word, the hypothesis position it is aligned to or follows (-1 before the
/// first); and which reference and hypothesis words are not matched.
struct Alignment {
    hyp_of_ref: Vec<isize>,
    ref_wrong: Vec<bool>,
    hyp_wrong: Vec<bool>,
}

fn align(path: &[Step]) -> Alignment {
    let mut a = Alignment { hyp_of_ref: Vec::new(), ref_wrong: Vec::new(), hyp_wrong: Vec::new() };
    let mut h: isize = -1;
    for step in path {
        match step {
            Step::Match | Step::Substitute => {
                h += 1;
                a.hyp_of_ref.push(h);
                let wrong = *step == Step::Substitute;
                a.ref_wrong.push(wrong);
                a.hyp_wrong.push(wrong);
            }
            Step::HypOnly => {
                h += 1;
                a.hyp_wrong.push(true);
            }
            Step::RefOnly => {
                a.hyp_of_ref.push(h);
                a.ref_wrong.push(true);
            }
            Step::Unset => {}
        }
    }
    a
}

/// Blocks `(hyp start, ref start, length)` equal in both, in sacrebleu's order: by hypothesis
/// start, then reference start, then length.
fn shared_blocks(hyp: &[&str], reference: &[&str]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for h in 0..hyp.len() {
        for r in 0..reference.len() {
            if h.abs_diff(r) > MAX_SHIFT_DIST {
                continue;
            }
            let mut len = 0;
            while len < MAX_SHIFT_SIZE && h + len < hyp.len() && r + len < reference.len() && hyp[h + len] == reference[r + len] {
                len += 1;
                out.push((h, r, len));
            }
        }
    }
    out
}

/// `words` with the block `start..start + len` moved so that it begins before the word now at
/// `target` (a target inside the block moves it right by `target - start`).
fn shift<'w>(words: &[&'w str], start: usize, len: usize, target: usize) -> Vec<&'w str> {
    let n = words.len();
    let at = |a: usize, b: usize| &words[a.min(n)..b.min(n).max(a.min(n))];
    let block = &words[start..start + len];
    if target < start {
        [&words[..target], block, &words[target..start], &words[start + len..]].concat()
    } else if target > start + len {
        [&words[..start], &words[start + len..target], block, &words[target..]].concat()
    } else {
        [&words[..start], at(start + len, len + target), block, at(len + target, n)].concat()
    }
}

/// The best shift of one round: its gain in edit distance and the shifted words. Ties go to the
/// longer block, then the earlier block, then the earlier target (Tercom's ranking).
fn best_shift<'w>(words: &[&'w str], reference: &[&str], band: &Band, tried: &mut usize) -> (i64, Option<Vec<&'w str>>) {
    let base = band.matrix(words);
    let before = base.cost_at_end();
    let a = align(&base.path());
    // Ranking key (higher is better) and the shifted words.
    type Key = (i64, usize, Reverse<usize>, Reverse<usize>);
    let mut best: Option<(Key, Vec<&str>)> = None;
    for (h, r, len) in shared_blocks(words, reference) {
        // Only move words that are wrong where they are, to a place where the reference is wrong.
        if !a.hyp_wrong[h..h + len].iter().any(|&w| w) || !a.ref_wrong[r..r + len].iter().any(|&w| w) {
            continue;
        }
        let aligned = a.hyp_of_ref[r];
        if aligned >= h as isize && aligned < (h + len) as isize {
            continue;
        }
        let mut previous = None;
        // Targets: before the hypothesis word aligned to each reference word from r - 1 on.
        for k in (r as isize - 1)..(r + len) as isize {
            let target = if k < 0 { 0 } else { (a.hyp_of_ref[k as usize] + 1) as usize };
            if previous == Some(target) {
                continue;
            }
            previous = Some(target);
            let shifted = shift(words, h, len, target);
            let shared = words.iter().zip(&shifted).take_while(|(x, y)| x == y).count();
            let gain = before - band.distance_from(&shifted, &base, shared);
            *tried += 1;
            let key = (gain, len, Reverse(h), Reverse(target));
            if best.as_ref().is_none_or(|(b, _)| key > *b) {
                best = Some((key, shifted));
            }
        }
        if *tried >= MAX_SHIFT_CANDIDATES {
            break;
        }
    }
    match best {
        Some(((gain, ..), shifted)) => (gain, Some(shifted)),
        None => (0, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn identical_is_zero_and_empty_sides_count_words() {
        assert_eq!(edits(&words("a b c"), &words("a b c")), 0);
        assert_eq!(edits(&[], &words("a b c")), 3);
        assert_eq!(edits(&words("a b"), &[]), 2);
    }

    #[test]
    fn a_moved_block_costs_one_shift() {
        // Plain Levenshtein needs 4 edits; one shift of "d e" suffices.
        assert_eq!(edits(&words("d e a b c"), &words("a b c d e")), 1);
    }

    #[test]
    fn shift_moves_blocks_both_ways() {
        let w = words("a b c d e");
        assert_eq!(shift(&w, 3, 2, 0), words("d e a b c"));
        assert_eq!(shift(&w, 0, 2, 5), words("c d e a b"));
        assert_eq!(shift(&w, 0, 2, 1), words("c a b d e"));
        assert_eq!(shift(&w, 3, 2, 4), words("a b c d e"));
    }
}
