//! Beam search, as Hugging Face's `generate` runs it (transformers ≥ 4.50): the same
//! candidates, stopping rules and length normalisation, so that beams equal HF's.

use super::*;
use crate::tensors::{host_rows, to_i64s};

/// A candidate continuation: (score, beam it extends, token).
#[derive(Clone, Copy)]
struct Candidate {
    score: f32,
    beam: usize,
    token: u32,
}

/// Scores below any real one: beams that must not be chosen.
const NEG: f32 = -1.0e9;

/// HF's vectorised beam search (transformers ≥ 4.50), step for step.
pub(super) fn beam_search(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    let (prompt_rows, mask) = left_pad(prompts, config.num_beams, config.pad_token_id);
    let mut search = Beams::new(prompt_rows, config);
    let mut logits = decoder.step(&search.running, &mask)?;
    loop {
        let tops = search.candidates(logits);
        let (source_rows, all_hit) = search.advance(tops);
        if all_hit || !keep_searching(&search.heuristic_unsatisfied, &search.finished, config) {
            break;
        }
        decoder.reorder(&source_rows)?;
        let step_ids: Vec<Vec<u32>> = search.running.iter().map(|row| vec![*row.last().expect("non-empty")]).collect();
        let ones = vec![vec![1.0]; step_ids.len()];
        logits = decoder.step(&step_ids, &ones)?;
    }
    search.best()
}

/// Every prompt's beams between two decoding steps.
struct Beams<'a> {
    config: &'a GenerateConfig,
    processors: Vec<LogitsProcessor>,
    batch: usize,
    prompt_len: usize,
    max_length: usize,
    /// Continuations looked at per prompt and step.
    keep: usize,
    /// Running beams, `num_beams` rows per prompt: sequences and cumulative log-probabilities.
    running: Vec<Vec<u32>>,
    running_scores: Vec<f32>,
    /// Finished hypotheses per prompt, best first: (normalised score, sequence).
    finished: Vec<Vec<(f32, Vec<u32>)>>,
    heuristic_unsatisfied: Vec<bool>,
    cur_len: usize,
}

impl<'a> Beams<'a> {
    fn new(prompt_rows: Vec<Vec<u32>>, config: &'a GenerateConfig) -> Self {
        let beams = config.num_beams;
        let batch = prompt_rows.len() / beams;
        let prompt_len = prompt_rows[0].len();
        // Only the first beam is live at the start, so the first step does not pick the same
        // token n times.
        let running_scores = (0..batch * beams).map(|r| if r % beams == 0 { 0.0 } else { NEG }).collect();
        Self {
            config,
            processors: config.processors(),
            batch,
            prompt_len,
            max_length: prompt_len + config.max_new_tokens,
            keep: 2.max(1 + config.eos_token_ids.len()) * beams,
            running: prompt_rows,
            running_scores,
            finished: vec![Vec::new(); batch],
            heuristic_unsatisfied: vec![true; batch],
            cur_len: prompt_len,
        }
    }

    /// Each prompt's `keep` best continuations (best first) from `logits` `[rows, V]`, a row per
    /// running beam. On a GPU they are ranked on the device (log-softmax, the logits processors'
    /// edits, the beams' scores added, top-k over beams × vocabulary), so only `keep` scores and
    /// ids per prompt come back instead of every row's logits.
    fn candidates(&self, logits: Tensor<2>) -> Vec<Vec<Candidate>> {
        if crate::backend::is_gpu(&logits.device()) {
            let edits: Vec<Edits> = self.running.iter().map(|row| edits_for(row, self.prompt_len, &self.processors)).collect();
            return device_candidates(logits, &edits, &self.running_scores, self.batch, self.keep);
        }
        let mut logits = host_rows(logits);
        let beams = self.config.num_beams;
        (0..self.batch)
            .map(|item| {
                let rows = item * beams..(item + 1) * beams;
                top_continuations(&mut logits[rows.clone()], &self.running[rows.clone()], &self.running_scores[rows], self.prompt_len, self.keep, &self.processors)
            })
            .collect()
    }

    /// One step over each prompt's top continuations ([`Beams::candidates`]): the next running
    /// beams, the hypotheses that finished. Returns the row each new beam extends, and whether
    /// every continuation stopped.
    fn advance(&mut self, tops: Vec<Vec<Candidate>>) -> (Vec<usize>, bool) {
        let (config, beams) = (self.config, self.config.num_beams);
        let mut next_running = Vec::with_capacity(self.batch * beams);
        let mut next_scores = Vec::with_capacity(self.batch * beams);
        let mut source_rows = Vec::with_capacity(self.batch * beams);
        let mut all_hit = true;
        for (item, top) in tops.into_iter().enumerate() {
            let rows = item * beams..(item + 1) * beams;
            // Which continuations stop here: EOS, or the length limit for all.
            let hits: Vec<bool> = top.iter().map(|c| self.cur_len + 1 >= self.max_length || config.eos_token_ids.contains(&c.token)).collect();
            all_hit &= hits.iter().all(|&h| h);
            for (row, token, score) in next_beams(&top, &hits, beams, rows.start) {
                next_running.push(extended(&self.running[row], token));
                next_scores.push(score);
                source_rows.push(row);
            }
            let full = self.finished[item].len() == beams && config.early_stopping == EarlyStopping::Eager;
            if self.heuristic_unsatisfied[item] && !full {
                let generated = self.cur_len + 1 - self.prompt_len;
                keep_finished(&mut self.finished[item], &top, &hits, &self.running[rows], generated, config);
            }
        }
        self.cur_len += 1;
        self.running = next_running;
        self.running_scores = next_scores;
        let (generated, most) = (self.cur_len - self.prompt_len, self.max_length - self.prompt_len);
        for item in 0..self.batch {
            self.heuristic_unsatisfied[item] &= can_improve(self.running_scores[item * beams], &self.finished[item], generated, most, config);
        }
        (source_rows, all_hit)
    }

    /// Each prompt's best finished hypothesis, its new tokens only. At max_length every top
    /// beam finishes, unless its scores are NaN: no comparison admits it then.
    fn best(self) -> Result<Vec<Generated>, ModelError> {
        let (prompt_len, eos) = (self.prompt_len, &self.config.eos_token_ids);
        self.finished
            .into_iter()
            .enumerate()
            .map(|(prompt, list)| {
                let (score, sequence) = list.into_iter().next().ok_or(ModelError::NonFiniteScores { prompt })?;
                Ok(Generated { ids: trim_after_eos(&sequence[prompt_len..], eos), score: Some(score) })
            })
            .collect()
    }
}

/// One prompt's next running beams: the best `beams` of its top continuations that did not
/// stop, as (source row, token, cumulative score).
fn next_beams(top: &[Candidate], hits: &[bool], beams: usize, first_row: usize) -> Vec<(usize, u32, f32)> {
    let penalised = |i: usize| top[i].score + if hits[i] { NEG } else { 0.0 };
    let mut order: Vec<usize> = (0..top.len()).collect();
    order.sort_by(|&a, &b| penalised(b).total_cmp(&penalised(a)));
    order.into_iter().take(beams).map(|i| (first_row + top[i].beam, top[i].token, penalised(i))).collect()
}

/// HF's stopping criteria over the batch: some prompt can still improve, and with
/// `early_stopping = true` not every prompt has its `num_beams` finished hypotheses.
fn keep_searching(heuristic_unsatisfied: &[bool], finished: &[Vec<(f32, Vec<u32>)>], config: &GenerateConfig) -> bool {
    let improvement_possible = heuristic_unsatisfied.iter().any(|&u| u);
    let all_full = finished.iter().all(|list| list.len() == config.num_beams);
    improvement_possible && !(all_full && config.early_stopping == EarlyStopping::Eager)
}

/// `sequence` with `token` appended.
fn extended(sequence: &[u32], token: u32) -> Vec<u32> {
    let mut longer = sequence.to_vec();
    longer.push(token);
    longer
}

/// A beam's score as HF ranks finished hypotheses: divided by length^length_penalty.
fn normalised(score: f32, generated: usize, config: &GenerateConfig) -> f32 {
    score / (generated as f32).powf(config.length_penalty)
}

/// One prompt's `keep` best continuations over its beams × the vocabulary, best first. `logits`,
/// `running` and `running_scores` are that prompt's beam rows; logits become log-probabilities
/// with the logits processors applied.
fn top_continuations(logits: &mut [Vec<f32>], running: &[Vec<u32>], running_scores: &[f32], prompt_len: usize, keep: usize, processors: &[LogitsProcessor]) -> Vec<Candidate> {
    let mut top: Vec<Candidate> = Vec::with_capacity(keep + 1);
    for (beam, scores) in logits.iter_mut().enumerate() {
        log_softmax(scores);
        process(scores, &running[beam], prompt_len, processors);
        for (token, &s) in scores.iter().enumerate() {
            let score = s + running_scores[beam];
            if top.len() < keep || score > top[keep - 1].score {
                let at = top.partition_point(|c| c.score >= score);
                top.insert(at, Candidate { score, beam, token: token as u32 });
                top.truncate(keep);
            }
        }
    }
    top
}

/// [`top_continuations`] on the device, for every prompt at once: `logits` `[batch · beams, V]`,
/// each beam's processor edits in `edits` and cumulative score in `running_scores`.
fn device_candidates(logits: Tensor<2>, edits: &[Edits], running_scores: &[f32], batch: usize, keep: usize) -> Vec<Vec<Candidate>> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let beam_scores = crate::tensors::floats(running_scores.to_vec(), [rows], &device);
    // As HF, the processors act on log-probabilities (a ban does not renormalise the rest),
    // before each beam's score is added. A ban is −∞ before or after that addition, so without
    // other edits the scores come in one pass, then the bans.
    let scores = if edits.iter().all(Edits::bans_only) {
        pick::edit(crate::log_softmax::log_softmax(logits, Some(beam_scores)), edits)
    } else {
        pick::edit(crate::log_softmax::log_softmax(logits, None), edits) + beam_scores.unsqueeze_dim::<2>(1)
    }; // [B·beams, V]
    let (values, indices) = scores.reshape([batch, rows / batch * vocab]).topk_with_indices(keep, 1); // [B, keep]
    let (values, indices) = (crate::tensors::to_f32s(values), to_i64s(indices));
    values
        .chunks(keep)
        .zip(indices.chunks(keep))
        .map(|(values, indices)| values.iter().zip(indices).map(|(&score, &at)| Candidate { score, beam: at as usize / vocab, token: (at as usize % vocab) as u32 }).collect())
        .collect()
}

/// Adds to one prompt's finished hypotheses (best first, at most `num_beams`) those among the
/// top `num_beams` candidates that stopped, `generated` tokens long.
fn keep_finished(finished: &mut Vec<(f32, Vec<u32>)>, top: &[Candidate], hits: &[bool], running: &[Vec<u32>], generated: usize, config: &GenerateConfig) {
    for (candidate, _) in top.iter().zip(hits).take(config.num_beams).filter(|(_, hit)| **hit) {
        let score = normalised(candidate.score, generated, config);
        let at = finished.partition_point(|(s, _)| *s >= score);
        finished.insert(at, (score, extended(&running[candidate.beam], candidate.token)));
        finished.truncate(config.num_beams);
    }
}

/// HF's stopping test for one prompt: whether its best running beam (cumulative score
/// `best_running`, `generated` tokens long) could still beat its worst finished hypothesis.
/// With `early_stopping = never` (and a positive length penalty) the best beam is judged at
/// the longest length it could reach, `most_generated`.
fn can_improve(best_running: f32, finished: &[(f32, Vec<u32>)], generated: usize, most_generated: usize, config: &GenerateConfig) -> bool {
    let length = if config.early_stopping == EarlyStopping::Never && config.length_penalty > 0.0 { most_generated } else { generated };
    let worst_finished = if finished.len() == config.num_beams { finished.last().map_or(NEG, |(s, _)| *s) } else { NEG };
    normalised(best_running, length, config) > worst_finished
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device's ranking (what a GPU runs) picks what the host's does, scores included, over
    /// two prompts of three beams whose running scores differ, with HF's processors (n-gram and
    /// bad-word bans, a minimum length) and without.
    #[test]
    fn beams_ranked_on_the_device_equal_the_hosts() {
        let device = crate::testing::device();
        let (batch, beams, vocab, keep) = (2, 3, 50, 6);
        let mut state = 0x9e37_79b9_u32;
        let logits: Vec<f32> = (0..batch * beams * vocab)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 10_000) as f32 / 1000.0 - 5.0
            })
            .collect();
        let running_scores = [0.0, -1.5, -2.25, -0.5, NEG, -3.0];
        // Each row ends in 1 after `1, t`: the 2-gram ban forbids t; 6 is a bad word after 1;
        // with 2 of at least 4 new tokens, EOS (3) is forbidden.
        let running: Vec<Vec<u32>> = (0..batch * beams).map(|r| vec![1, 4 + r as u32 % 2, 1]).collect();
        let processors = [LogitsProcessor::NoRepeatNgram(2), LogitsProcessor::MinNewTokens { min: 4, eos: vec![3] }, LogitsProcessor::BadWords(vec![vec![1, 6]])];
        for processors in [&[][..], &processors[..1], &processors[..]] {
            let edits: Vec<Edits> = running.iter().map(|row| edits_for(row, 1, processors)).collect();
            let tensor = crate::tensors::floats(logits.clone(), [batch * beams, vocab], &device);
            let on_device = device_candidates(tensor, &edits, &running_scores, batch, keep);
            let mut rows: Vec<Vec<f32>> = logits.chunks(vocab).map(<[f32]>::to_vec).collect();
            check_candidates(&on_device, &mut rows, &running, &running_scores, beams, keep, processors);
        }
    }

    fn check_candidates(on_device: &[Vec<Candidate>], rows: &mut [Vec<f32>], running: &[Vec<u32>], running_scores: &[f32], beams: usize, keep: usize, processors: &[LogitsProcessor]) {
        for (item, device_top) in on_device.iter().enumerate() {
            let range = item * beams..(item + 1) * beams;
            let host_top = top_continuations(&mut rows[range.clone()], &running[range.clone()], &running_scores[range], 1, keep, processors);
            assert_eq!(host_top.len(), device_top.len());
            for (h, d) in host_top.iter().zip(device_top) {
                assert_eq!((h.beam, h.token), (d.beam, d.token), "prompt {item}");
                assert!((h.score - d.score).abs() < 1e-4, "prompt {item}: {} vs {}", h.score, d.score);
            }
        }
    }
}
