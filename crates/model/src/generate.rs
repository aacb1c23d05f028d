//! Decoding with Hugging Face `generate` semantics: greedy, beam search and sampling, batched
//! over prompts of different lengths (left-padded, as HF requires for decoder-only models).
//!
//! The search runs on the host over the last position's logits; the model side is the
//! [`Decoder`] trait, so GPT-2 and an encoder-decoder share one implementation.

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::ModelError;

/// When beam search may stop, as HF's `early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EarlyStopping {
    /// Stop a prompt as soon as `num_beams` hypotheses are finished (`True`).
    #[value(name = "true")]
    Eager,
    /// Stop when the best running beam, at its current length, cannot beat the worst finished
    /// one (`False`, HF's default).
    #[default]
    #[value(name = "false")]
    Heuristic,
    /// Stop only when no running beam can improve, judged at `max_length` (`"never"`).
    Never,
}

/// Every decoding knob, with HF's defaults.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// New tokens to produce at most (default 20).
    pub max_new_tokens: usize,
    /// EOS is forbidden until this many new tokens exist (default 0).
    pub min_new_tokens: usize,
    /// 1 = greedy or sampling; more = beam search (default 1).
    pub num_beams: usize,
    /// Beam scores are divided by length^length_penalty (default 1.0).
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// No n-gram of this size may occur twice (0 = off).
    pub no_repeat_ngram_size: usize,
    /// Token sequences that must never be generated.
    pub bad_words_ids: Vec<Vec<u32>>,
    /// Tokens that end a sequence (GPT-2: 50256).
    pub eos_token_ids: Vec<u32>,
    /// Token used to pad prompts and finished rows (GPT-2 has none: HF uses EOS).
    pub pad_token_id: u32,
    /// The first decoder token of an encoder-decoder model (BART: 2, `</s>`).
    pub decoder_start_token_id: Option<u32>,
    /// The token forced right after the decoder start (bart-large-*: 0, `<s>`).
    pub forced_bos_token_id: Option<u32>,
    /// The token forced as the last one when `max_new_tokens` is reached (BART: 2).
    pub forced_eos_token_id: Option<u32>,
    pub sampling: Option<Sampling>,
}

/// Sampling instead of argmax (greedy only; HF order: temperature, top-k, top-p).
#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    pub seed: u64,
}

impl GenerateConfig {
    pub fn new(eos_token_id: u32) -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            eos_token_ids: vec![eos_token_id],
            pad_token_id: eos_token_id,
            decoder_start_token_id: None,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            sampling: None,
        }
    }

    /// The config HF's `generate` would use for these kwargs (or a `generation_config.json`).
    /// For an encoder-decoder model `max_length`/`min_length` count the decoder start token, so
    /// they become `max_new_tokens + 1`/`min_new_tokens + 1`; a decoder-only model needs
    /// `max_new_tokens` (its `max_length` would depend on the prompt). Unknown keys are ignored.
    pub fn from_hf(kwargs: &serde_json::Value, encoder_decoder: bool) -> Result<Self, String> {
        let uint = |key: &str| -> Result<Option<usize>, String> {
            match kwargs.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| format!("`{key}` must be a non-negative integer, got {v}")),
            }
        };
        let token = |key: &str| -> Result<Option<u32>, String> { Ok(uint(key)?.map(|n| n as u32)) };
        let eos_ids: Vec<u32> = match kwargs.get("eos_token_id") {
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(|v| v.as_u64()).map(|n| n as u32).collect(),
            _ => token("eos_token_id")?.into_iter().collect(),
        };
        let eos = *eos_ids.first().ok_or("`eos_token_id` is missing")?;
        let mut config = GenerateConfig::new(eos);
        config.eos_token_ids = eos_ids;
        config.pad_token_id = token("pad_token_id")?.unwrap_or(eos);
        config.decoder_start_token_id = token("decoder_start_token_id")?;
        config.forced_bos_token_id = token("forced_bos_token_id")?;
        config.forced_eos_token_id = token("forced_eos_token_id")?;
        let start = usize::from(encoder_decoder);
        config.max_new_tokens = match (uint("max_new_tokens")?, uint("max_length")?) {
            (Some(n), _) => n,
            (None, Some(max)) if encoder_decoder => max.saturating_sub(start),
            // HF's default max_length is 20, the start token included.
            (None, None) if encoder_decoder => 20 - start,
            _ => config.max_new_tokens,
        };
        config.min_new_tokens = match (uint("min_new_tokens")?, uint("min_length")?) {
            (Some(n), _) => n,
            (None, Some(min)) if encoder_decoder => min.saturating_sub(start),
            _ => 0,
        };
        config.num_beams = uint("num_beams")?.unwrap_or(1);
        config.no_repeat_ngram_size = uint("no_repeat_ngram_size")?.unwrap_or(0);
        if let Some(lp) = kwargs.get("length_penalty").and_then(|v| v.as_f64()) {
            config.length_penalty = lp as f32;
        }
        config.early_stopping = match kwargs.get("early_stopping") {
            Some(serde_json::Value::Bool(true)) => EarlyStopping::Eager,
            Some(serde_json::Value::String(s)) if s == "never" => EarlyStopping::Never,
            _ => EarlyStopping::Heuristic,
        };
        if let Some(serde_json::Value::Array(words)) = kwargs.get("bad_words_ids") {
            config.bad_words_ids = words
                .iter()
                .map(|w| w.as_array().map(|ids| ids.iter().filter_map(|v| v.as_u64()).map(|n| n as u32).collect()).unwrap_or_default())
                .collect();
        }
        Ok(config)
    }

    /// HF's logits processors this config asks for, in HF's order (each forbids or forces
    /// tokens; forcing ones come last so that they win).
    pub fn processors(&self) -> Vec<LogitsProcessor> {
        let mut list = Vec::new();
        if self.no_repeat_ngram_size > 0 {
            list.push(LogitsProcessor::NoRepeatNgram(self.no_repeat_ngram_size));
        }
        // HF drops a bad word that is exactly an EOS token.
        let bad: Vec<Vec<u32>> = self.bad_words_ids.iter().filter(|w| !(w.len() == 1 && self.eos_token_ids.contains(&w[0]))).cloned().collect();
        if !bad.is_empty() {
            list.push(LogitsProcessor::BadWords(bad));
        }
        if self.min_new_tokens > 0 {
            list.push(LogitsProcessor::MinNewTokens { min: self.min_new_tokens, eos: self.eos_token_ids.clone() });
        }
        if let Some(bos) = self.forced_bos_token_id {
            list.push(LogitsProcessor::ForcedBos(bos));
        }
        if let Some(eos) = self.forced_eos_token_id {
            list.push(LogitsProcessor::ForcedEos { last: self.max_new_tokens, eos });
        }
        list
    }

    fn validate(&self) -> Result<(), ModelError> {
        if self.num_beams == 0 {
            return Err(ModelError::Input("num_beams must be at least 1".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(ModelError::Input("max_new_tokens must be at least 1".into()));
        }
        if self.sampling.is_some() && self.num_beams > 1 {
            return Err(ModelError::Input("sampling with beam search is not supported: use --num-beams 1 with --do-sample".into()));
        }
        if let Some(sampling) = self.sampling {
            if sampling.temperature <= 0.0 {
                return Err(ModelError::Input(format!("temperature must be positive, got {}", sampling.temperature)));
            }
            if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
                return Err(ModelError::Input(format!("top_p must be in (0, 1], got {}", sampling.top_p)));
            }
        }
        Ok(())
    }
}

/// One prompt's output: the new tokens (prompt excluded; EOS kept when generated) and, for
/// beam search, HF's `sequences_scores` (the length-normalised log-probability).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub ids: Vec<u32>,
    pub score: Option<f32>,
}

/// The model side of decoding: feed tokens, get the last position's logits.
pub trait Decoder {
    /// Runs `ids` (`[rows][T]`, left-padded, `mask` 1 for real tokens) after whatever the
    /// decoder has seen so far; returns each row's logits at the last position, `[rows][V]`.
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ModelError>;

    /// Keeps rows `rows` of the state in that order (beam reordering; rows may repeat).
    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError>;
}

/// Generates for every prompt. `decoder` holds one row per prompt (any prefix, an encoder's
/// output); for beam search its rows are expanded here to one per beam, each prompt's beams
/// adjacent.
pub fn generate(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    config.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(index) = prompts.iter().position(Vec::is_empty) {
        return Err(ModelError::Input(format!("prompt {index} is empty: give at least one token")));
    }
    if config.num_beams > 1 {
        decoder.reorder(&crate::past::repeat_rows(prompts.len(), config.num_beams))?;
        beam_search(decoder, prompts, config)
    } else {
        greedy_or_sample(decoder, prompts, config)
    }
}

/// Left-pads prompts to one length, each repeated `copies` times.
fn left_pad(prompts: &[Vec<u32>], copies: usize, pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    for prompt in prompts {
        let padding = width - prompt.len();
        let row: Vec<u32> = std::iter::repeat_n(pad, padding).chain(prompt.iter().copied()).collect();
        let row_mask: Vec<f32> = std::iter::repeat_n(0.0, padding).chain(std::iter::repeat_n(1.0, prompt.len())).collect();
        for _ in 0..copies {
            ids.push(row.clone());
            mask.push(row_mask.clone());
        }
    }
    (ids, mask)
}

fn greedy_or_sample(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    let (mut sequences, mask) = left_pad(prompts, 1, config.pad_token_id);
    let prompt_len = sequences[0].len();
    let mut rng = config.sampling.map(|s| StdRng::seed_from_u64(s.seed));
    let mut finished = vec![false; prompts.len()];
    let processors = config.processors();
    let mut logits = decoder.step(&sequences, &mask)?;
    for step in 0..config.max_new_tokens {
        let mut next = Vec::with_capacity(sequences.len());
        for (row, scores) in logits.iter_mut().enumerate() {
            if finished[row] {
                next.push(config.pad_token_id);
                continue;
            }
            process(scores, &sequences[row], prompt_len, &processors);
            let token = match (&mut rng, config.sampling) {
                (Some(rng), Some(sampling)) => sample(scores, sampling, rng),
                _ => argmax(scores),
            };
            next.push(token as u32);
        }
        for (row, &token) in next.iter().enumerate() {
            sequences[row].push(token);
            if config.eos_token_ids.contains(&token) {
                finished[row] = true;
            }
        }
        if finished.iter().all(|&f| f) || step + 1 == config.max_new_tokens {
            break;
        }
        let step_ids: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        let ones = vec![vec![1.0]; step_ids.len()];
        logits = decoder.step(&step_ids, &ones)?;
    }
    Ok(sequences
        .into_iter()
        .map(|row| Generated { ids: trim_after_eos(&row[prompt_len..], &config.eos_token_ids), score: None })
        .collect())
}

/// New tokens up to and including the first EOS.
fn trim_after_eos(ids: &[u32], eos: &[u32]) -> Vec<u32> {
    match ids.iter().position(|t| eos.contains(t)) {
        Some(end) => ids[..=end].to_vec(),
        None => ids.to_vec(),
    }
}

/// One of HF's logits processors: it changes one row's scores given the row so far.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsProcessor {
    /// No n-gram of this size may occur twice.
    NoRepeatNgram(usize),
    /// These token sequences must never be completed.
    BadWords(Vec<Vec<u32>>),
    /// EOS is forbidden until `min` new tokens exist.
    MinNewTokens { min: usize, eos: Vec<u32> },
    /// The first token after a one-token decoder prompt is this one (HF: at `cur_len == 1`).
    ForcedBos(u32),
    /// The `last`-th new token is this one (HF: at `cur_len == max_length - 1`).
    ForcedEos { last: usize, eos: u32 },
}

impl LogitsProcessor {
    /// `sequence` is the whole row so far, left padding included, as in HF; `generated` how many
    /// of its tokens are new.
    pub fn apply(&self, scores: &mut [f32], sequence: &[u32], generated: usize) {
        match self {
            LogitsProcessor::NoRepeatNgram(n) => {
                let n = *n;
                if sequence.len() >= n {
                    let suffix = &sequence[sequence.len() + 1 - n..];
                    for window in sequence.windows(n) {
                        if &window[..n - 1] == suffix {
                            scores[window[n - 1] as usize] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            LogitsProcessor::BadWords(words) => {
                for word in words {
                    if let Some((&last, head)) = word.split_last() {
                        if sequence.ends_with(head) {
                            scores[last as usize] = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            LogitsProcessor::MinNewTokens { min, eos } => {
                if generated < *min {
                    for &token in eos {
                        scores[token as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            LogitsProcessor::ForcedBos(bos) => {
                if sequence.len() == 1 {
                    force(scores, *bos);
                }
            }
            LogitsProcessor::ForcedEos { last, eos } => {
                if generated + 1 == *last {
                    force(scores, *eos);
                }
            }
        }
    }
}

/// Every score −∞ but `token`'s, which becomes 0 (HF's forced-token processors).
fn force(scores: &mut [f32], token: u32) {
    scores.fill(f32::NEG_INFINITY);
    scores[token as usize] = 0.0;
}

/// Applies every processor of `config` to one row's scores.
fn process(scores: &mut [f32], sequence: &[u32], prompt_len: usize, processors: &[LogitsProcessor]) {
    for processor in processors {
        processor.apply(scores, sequence, sequence.len() - prompt_len);
    }
}

/// The next token from one row's raw logits: argmax, or a seeded draw (temperature, top-k,
/// top-p) when `sampling` is given: what `generate` does per row, for callers that run their own
/// loop (the server's continuous batch).
pub fn next_token(scores: &mut [f32], sampling: Option<(Sampling, &mut StdRng)>) -> u32 {
    match sampling {
        Some((sampling, rng)) => sample(scores, sampling, rng) as u32,
        None => argmax(scores) as u32,
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

fn log_softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = max + sum.ln();
    for s in scores.iter_mut() {
        *s -= log_sum;
    }
}

/// Temperature, then top-k, then top-p (nucleus), then a draw: HF's warper order.
fn sample(scores: &mut [f32], sampling: Sampling, rng: &mut StdRng) -> usize {
    for s in scores.iter_mut() {
        *s /= sampling.temperature;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if sampling.top_k > 0 && sampling.top_k < scores.len() {
        for &i in &order[sampling.top_k..] {
            scores[i] = f32::NEG_INFINITY;
        }
    }
    if sampling.top_p < 1.0 {
        let max = scores[order[0]];
        let total: f32 = order.iter().map(|&i| (scores[i] - max).exp()).sum();
        // Keep the smallest set of most likely tokens whose mass reaches top_p (at least one).
        let mut mass = 0.0;
        let mut keep = 0;
        for &i in &order {
            keep += 1;
            mass += (scores[i] - max).exp() / total;
            if mass >= sampling.top_p {
                break;
            }
        }
        for &i in &order[keep..] {
            scores[i] = f32::NEG_INFINITY;
        }
    }
    let max = scores[order[0]];
    let weights: Vec<f32> = scores.iter().map(|&s| (s - max).exp()).collect();
    let total: f32 = weights.iter().sum();
    let mut draw = rng.random::<f32>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if draw < w {
            return i;
        }
        draw -= w;
    }
    order[0]
}

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
fn beam_search(decoder: &mut dyn Decoder, prompts: &[Vec<u32>], config: &GenerateConfig) -> Result<Vec<Generated>, ModelError> {
    let beams = config.num_beams;
    let batch = prompts.len();
    let (prompt_rows, mask) = left_pad(prompts, beams, config.pad_token_id);
    let prompt_len = prompt_rows[0].len();
    let max_length = prompt_len + config.max_new_tokens;
    let keep = 2.max(1 + config.eos_token_ids.len()) * beams;

    // Running beams per prompt: sequences and cumulative log-probabilities; only the first
    // beam is live at the start so the first step does not pick the same token n times.
    let mut running: Vec<Vec<u32>> = prompt_rows;
    let mut running_scores: Vec<f32> = (0..batch * beams).map(|r| if r % beams == 0 { 0.0 } else { NEG }).collect();
    // Finished hypotheses per prompt, best first: (normalised score, sequence).
    let mut finished: Vec<Vec<(f32, Vec<u32>)>> = vec![Vec::new(); batch];
    let mut heuristic_unsatisfied = vec![true; batch];
    let processors = config.processors();

    let mut logits = decoder.step(&running, &mask)?;
    let mut cur_len = prompt_len;
    loop {
        let mut next_running = Vec::with_capacity(batch * beams);
        let mut next_scores = Vec::with_capacity(batch * beams);
        let mut source_rows = Vec::with_capacity(batch * beams);
        let mut all_hit = true;
        for item in 0..batch {
            let rows = item * beams..(item + 1) * beams;
            let top = top_continuations(&mut logits[rows.clone()], &running[rows.clone()], &running_scores[rows.clone()], prompt_len, keep, &processors);
            // Which continuations stop here: EOS, or the length limit for all.
            let hits: Vec<bool> = top.iter().map(|c| cur_len + 1 >= max_length || config.eos_token_ids.contains(&c.token)).collect();
            all_hit &= hits.iter().all(|&h| h);

            for (row, token, score) in next_beams(&top, &hits, beams, rows.start) {
                next_running.push(extended(&running[row], token));
                next_scores.push(score);
                source_rows.push(row);
            }

            let full = finished[item].len() == beams && config.early_stopping == EarlyStopping::Eager;
            if heuristic_unsatisfied[item] && !full {
                let generated = cur_len + 1 - prompt_len;
                keep_finished(&mut finished[item], &top, &hits, &running[rows], generated, config);
            }
        }
        cur_len += 1;
        running = next_running;
        running_scores = next_scores;

        for item in 0..batch {
            heuristic_unsatisfied[item] &= can_improve(running_scores[item * beams], &finished[item], cur_len - prompt_len, max_length - prompt_len, config);
        }
        if all_hit || !keep_searching(&heuristic_unsatisfied, &finished, config) {
            break;
        }
        decoder.reorder(&source_rows)?;
        let step_ids: Vec<Vec<u32>> = running.iter().map(|row| vec![*row.last().expect("non-empty")]).collect();
        let ones = vec![vec![1.0]; step_ids.len()];
        logits = decoder.step(&step_ids, &ones)?;
    }

    Ok(finished
        .into_iter()
        .map(|list| {
            let (score, sequence) = list.into_iter().next().expect("at max_length every top beam finishes");
            Generated { ids: trim_after_eos(&sequence[prompt_len..], &config.eos_token_ids), score: Some(score) }
        })
        .collect())
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
