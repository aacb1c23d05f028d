//! The continuous batch: one thread owns the frozen model and decodes every running request one
//! token per step, whatever its prefix — GPT-2's, or BART's with each row's own encoder,
//! decoder and cross-attention prefix. (Beam searches are decoded one at a time by the same
//! thread, as `generate` decodes them.)
//!
//! The KV cache is written in place ([`KvCache`]): a request joins at the next step with its
//! prompt prefilled alone behind its own prefix (BART: encoded alone, its cross-attention
//! memory and decoder prefix written into their own slots), so nobody else's keys are copied; it leaves when it is done or its client is gone, and its slots are
//! free again. A request is admitted only when every token it may come to hold (prefix,
//! prompt, completion) fits beside what the running ones may still take: `--kv-cache-tokens`
//! bounds the cache, and a request that does not fit waits. No autodiff graph: the model lives
//! on a plain device.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefix_tune_data::Tokenizer;
use prefix_tune_model::generate::pick::{self, Choice, Edits, Picked, RowStep};
use prefix_tune_model::generate::{edits_for, EarlyStopping, GenerateConfig, LogitsProcessor, Sampling};
use prefix_tune_model::gpt2::generate_gpt2;
use prefix_tune_model::nn::Dropout;
use prefix_tune_model::bart::{generate_bart, BartPrefix};
use prefix_tune_model::{Bart, Gpt2, KvCache, ModelError, Past};
use rand::{rngs::StdRng, SeedableRng};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::Failure;
use crate::logprobs::StepLogprobs;
use crate::metrics::Metrics;
use crate::penalties::Penalties;

/// One completion to run.
#[derive(Clone)]
pub struct Job {
    pub prompt: Vec<u32>,
    /// The prefix's keys/values for one row (`None`: the base model), taken when the request
    /// arrived: unloading the prefix later does not touch it.
    pub prefix: Option<Arc<Served>>,
    pub prefix_name: String,
    pub max_tokens: usize,
    pub sampling: Option<Sampling>,
    pub penalties: Penalties,
    /// Each token's log-probability and this many alternatives (`None`: not asked for).
    pub logprobs: Option<usize>,
    /// Beam search instead of the batch's token-by-token decoding.
    pub beam: Option<Beam>,
    pub stop: Vec<String>,
    pub events: UnboundedSender<Event>,
    pub arrived: Instant,
}

/// A prefix as the decoding thread uses it: its keys and values for one row.
#[derive(Debug, Clone)]
pub enum Served {
    /// GPT-2's, in front of every layer's self-attention; its length takes positions.
    Decoder(Past),
    /// BART's three sets (any may be off), and the decoder's first position (P for a PEFT
    /// adapter, else 0).
    Seq2Seq(BartPrefix, usize),
}

impl Served {
    /// Virtual tokens, over every set.
    pub fn len(&self) -> usize {
        match self {
            Served::Decoder(past) => past.len(),
            Served::Seq2Seq(sets, _) => [&sets.encoder, &sets.decoder, &sets.cross].iter().map(|set| set.as_ref().map_or(0, Past::len)).sum(),
        }
    }
}

/// The frozen model a server decodes with.
pub enum ServedModel {
    Gpt2(Gpt2),
    /// BART, and its checkpoint's decoding defaults (`generate`'s).
    Bart(Bart, GenerateConfig),
}

/// A beam-search request (`use_beam_search`): searched alone, as `generate --num-beams`, and
/// its tokens sent when the search is over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beam {
    pub beams: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
}

/// What a request's client receives, in order: tokens, then one `Done` (or an `Error`).
#[derive(Debug, Clone)]
pub enum Event {
    Token { id: u32, text: String, logprobs: Option<StepLogprobs> },
    Done { finish_reason: &'static str, prompt_tokens: usize, completion_tokens: usize },
    Error(Failure),
}

/// A request in the batch.
struct Row {
    job: Job,
    generated: Vec<u32>,
    /// Bytes of the decoded text already sent.
    sent: usize,
    rng: Option<StdRng>,
    /// The token to feed at the next step.
    next: u32,
    /// Its next token's position (BART's decoder; GPT-2's come from its cache).
    position: usize,
    /// Tokens it may come to hold in the (decoder's) KV cache: prefix, prompt and completion.
    budget: usize,
    /// The checkpoint's logits processors (BART's `generate` defaults), and the decoder
    /// prompt they count from (BART: the start token).
    processors: Vec<LogitsProcessor>,
    start: Vec<u32>,
}

impl Row {
    fn new(job: Job, budget: usize) -> Self {
        let rng = job.sampling.map(|s| StdRng::seed_from_u64(s.seed));
        Row { job, generated: Vec::new(), sent: 0, rng, next: 0, position: 0, budget, processors: Vec::new(), start: Vec::new() }
    }
}

/// The running batch's keys and values.
enum Caches {
    Gpt2(KvCache),
    /// BART's decoder keys (prefix, tokens fed) and cross-attention memory (cross prefix,
    /// encoder keys), row for row.
    Bart { decoder: KvCache, cross: KvCache },
}

impl Caches {
    /// The cache that grows as rows decode.
    fn growing(&self) -> &KvCache {
        match self {
            Caches::Gpt2(cache) | Caches::Bart { decoder: cache, .. } => cache,
        }
    }

    fn keep(&mut self, rows: &[usize]) {
        match self {
            Caches::Gpt2(cache) => cache.keep(rows),
            Caches::Bart { decoder, cross } => {
                decoder.keep(rows);
                cross.keep(rows);
            }
        }
    }

    /// Room for a row that may hold `budget` growing tokens and `fixed` in cross memory,
    /// beside what the running `rows` may still take.
    fn fits(&self, budget: usize, fixed: usize, rows: &[Row]) -> bool {
        let cross_fits = match self {
            Caches::Gpt2(_) => true,
            Caches::Bart { cross, .. } => fixed <= cross.available(),
        };
        let growing = self.growing();
        cross_fits && budget + still_to_take(rows, growing) <= growing.available()
    }
}

pub struct Engine {
    pub model: ServedModel,
    /// Decodes the text sent with each token (none: ids only).
    pub tokenizer: Option<Arc<Tokenizer>>,
    pub eos: u32,
    /// Text without the model's special tokens (BART's `<s>`): as `generate` prints it.
    pub skip_special_tokens: bool,
    pub max_batch: usize,
    /// Tokens each KV cache holds at most (GPT-2's, BART's decoder keys and its cross memory).
    pub kv_cache_tokens: usize,
    pub metrics: Arc<Metrics>,
    /// A pause after each step (tests only; zero otherwise).
    pub throttle: Duration,
}

impl Engine {
    /// Runs until every sender of `jobs` is gone.
    pub fn run(self, jobs: Receiver<Job>) {
        let mut rows: Vec<Row> = Vec::new();
        let (capacity, limit) = (self.max_batch * 128, self.kv_cache_tokens);
        let mut caches = match &self.model {
            ServedModel::Gpt2(model) => Caches::Gpt2(model.kv_cache(capacity, limit)),
            ServedModel::Bart(model, _) => Caches::Bart { decoder: model.kv_cache(capacity, limit), cross: model.kv_cache(capacity, limit) },
        };
        // A request whose tokens do not fit in the cache yet: it joins first once they do.
        let mut waiting: Option<Job> = None;
        loop {
            // Admit: wait for work only when there is none running.
            while rows.len() < self.max_batch {
                let job = match waiting.take() {
                    Some(job) => job,
                    None => match self.receive(&jobs, rows.is_empty()) {
                        Some(Ok(job)) => job,
                        Some(Err(())) => return,
                        None => break,
                    },
                };
                if job.beam.is_some() {
                    self.alone(job);
                    continue;
                }
                let encoder_decoder = matches!(self.model, ServedModel::Bart(..));
                let (budget, fixed) = tokens_held(job.prefix.as_deref(), job.prompt.len(), job.max_tokens, encoder_decoder);
                if let Err(why) = fits_at_all(budget, fixed, self.kv_cache_tokens) {
                    let _ = job.events.send(Event::Error(Failure::Request(why)));
                    continue;
                }
                if !caches.fits(budget, fixed, &rows) {
                    waiting = Some(job);
                    break;
                }
                if let Some(row) = self.join(job, budget, &mut caches) {
                    rows.push(row);
                }
            }
            self.metrics.batch_size(rows.len());
            self.metrics.kv_cache(caches.growing().used(), self.kv_cache_tokens);
            if rows.is_empty() {
                continue;
            }
            self.step(&mut rows, &mut caches);
            if !self.throttle.is_zero() {
                std::thread::sleep(self.throttle);
            }
        }
    }

    /// The next job: waited for when nothing runs (`idle`), else only one already queued.
    /// `None`: none yet; `Some(Err)`: every sender is gone.
    fn receive(&self, jobs: &Receiver<Job>, idle: bool) -> Option<Result<Job, ()>> {
        let received = if idle {
            match jobs.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => Ok(job),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => Err(()),
            }
        } else {
            jobs.try_recv().map_err(|_| ()).ok().map(Ok)?
        };
        if received.is_ok() {
            self.metrics.queued(-1);
        }
        Some(received)
    }

    /// Prefills `job` alone behind its own prefix into its own slots of `caches`; GPT-2's
    /// first token is sent here, BART's comes with the next step (its start token fed).
    fn join(&self, job: Job, budget: usize, caches: &mut Caches) -> Option<Row> {
        let mut row = Row::new(job, budget);
        let joined = match (&self.model, caches) {
            (ServedModel::Gpt2(model), Caches::Gpt2(cache)) => self.prefill_gpt2(model, &mut row, cache),
            (ServedModel::Bart(model, defaults), Caches::Bart { decoder, cross }) => prefill_bart(model, defaults, &mut row, decoder, cross),
            _ => unreachable!("the caches are made for the served model"),
        };
        match joined {
            Ok(alive) => alive.then_some(row),
            Err(e) => {
                let _ = row.job.events.send(Event::Error(e.into()));
                None
            }
        }
    }

    /// GPT-2: the prompt behind its prefix, alone, written into its own slots; its first token
    /// sent. False when that token ended it.
    fn prefill_gpt2(&self, model: &Gpt2, row: &mut Row, cache: &mut KvCache) -> Result<bool, ModelError> {
        let prefix = decoder_past(row.job.prefix.as_deref());
        let mask = vec![vec![1.0; row.job.prompt.len()]];
        let (hidden, past) = model.forward_tokens(&[row.job.prompt.clone()], &mask, prefix, Dropout::default())?;
        cache.push(past)?;
        let seq = hidden.dims()[1];
        let logits = model.logits(hidden.narrow(1, seq - 1, 1)); // [1, 1, V]
        let vocab = logits.dims()[2];
        let picked = match pick::pick(logits.reshape([1, vocab]), &[self.row_step(row)]).remove(0) {
            Ok(picked) => picked,
            Err(e) => {
                // Nothing to draw from: its slots go back with the error.
                cache.pop();
                return Err(e);
            }
        };
        if self.emit(row, picked) {
            return Ok(true);
        }
        // Done at its first token: its slots go back.
        cache.pop();
        Ok(false)
    }

    /// One decoding step of every row; finished rows leave the batch and free their slots.
    fn step(&self, rows: &mut Vec<Row>, caches: &mut Caches) {
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| vec![r.next]).collect();
        let logits = match (&self.model, &mut *caches) {
            (ServedModel::Gpt2(model), Caches::Gpt2(cache)) => {
                model.next_logits(&ids, &vec![vec![1.0]; rows.len()], cache)
            }
            (ServedModel::Bart(model, _), Caches::Bart { decoder, cross }) => {
                let positions: Vec<usize> = rows.iter().map(|r| r.position).collect();
                model.decode_cached(&ids, &positions, decoder, cross, Dropout::default()).map(|hidden| model.logits(hidden).squeeze_dim::<2>(1))
            }
            _ => unreachable!("the caches are made for the served model"),
        };
        let logits = match logits {
            Ok(logits) => logits, // [rows, V]
            Err(e) => {
                let failure = Failure::from(e);
                for row in rows.drain(..) {
                    let _ = row.job.events.send(Event::Error(failure.clone()));
                }
                caches.keep(&[]);
                return;
            }
        };
        let steps: Vec<RowStep> = rows.iter_mut().map(|row| self.row_step(row)).collect();
        let picks = pick::pick(logits, &steps);
        let alive: Vec<bool> = rows
            .iter_mut()
            .zip(picks)
            .map(|(row, picked)| match picked {
                Ok(picked) => {
                    row.position += 1;
                    self.emit(row, picked)
                }
                // This row's request ends with the error; the others go on.
                Err(e) => {
                    let _ = row.job.events.send(Event::Error(e.into()));
                    false
                }
            })
            .collect();
        if alive.iter().all(|&a| a) {
            return;
        }
        caches.keep(&(0..rows.len()).filter(|&i| alive[i]).collect::<Vec<_>>());
        let mut alive = alive.into_iter();
        rows.retain(|_| alive.next().unwrap_or(false));
    }

    /// A beam search, decoded alone as `generate --num-beams` decodes it, then its tokens sent
    /// as a stream would send them.
    fn alone(&self, job: Job) {
        let mut config = match &self.model {
            ServedModel::Gpt2(model) => GenerateConfig { pad_token_id: model.config.pad(), ..GenerateConfig::new(self.eos) },
            ServedModel::Bart(_, defaults) => GenerateConfig { num_beams: 1, ..defaults.clone() },
        };
        config.max_new_tokens = job.max_tokens;
        config.sampling = job.sampling;
        if let Some(beam) = job.beam {
            (config.num_beams, config.length_penalty, config.early_stopping, config.sampling) = (beam.beams, beam.length_penalty, beam.early_stopping, None);
        }
        let prompts = [job.prompt.clone()];
        let found = match (&self.model, job.prefix.as_deref()) {
            (ServedModel::Gpt2(model), prefix) => generate_gpt2(model, &prompts, decoder_past(prefix), &config),
            (ServedModel::Bart(model, _), Some(Served::Seq2Seq(sets, offset))) => generate_bart(model, &prompts, sets, *offset, &config),
            (ServedModel::Bart(model, _), _) => generate_bart(model, &prompts, &BartPrefix::default(), 0, &config),
        };
        let ids = match found {
            Ok(mut outputs) => outputs.remove(0).ids,
            Err(e) => {
                let _ = job.events.send(Event::Error(e.into()));
                return;
            }
        };
        let mut row = Row::new(job, 0);
        for id in ids {
            if !self.send(&mut row, id, None) {
                return;
            }
        }
        // A search ends at EOS or at max_tokens, and `send` has said so; should it end short of
        // both, the client still gets its end.
        self.finish(&row, "stop");
    }

    /// How the row's next token is chosen: the checkpoint's logits processors and the request's
    /// penalties and `logit_bias` as edits, then the argmax or a draw from the row's generator.
    fn row_step(&self, row: &mut Row) -> RowStep {
        let mut edits = match row.processors.is_empty() {
            true => Edits::default(),
            false => edits_for(&[row.start.as_slice(), &row.generated].concat(), row.start.len(), &row.processors),
        };
        row.job.penalties.edit(&mut edits, &row.generated);
        let choice = Choice::next(row.job.sampling.zip(row.rng.as_mut()));
        RowStep { edits, choice, logprobs: row.job.logprobs }
    }

    /// Sends the row's chosen token (and its log-probabilities, as text); false when the row is
    /// done (or its client left).
    fn emit(&self, row: &mut Row, picked: Picked) -> bool {
        let text = |id: u32| self.tokenizer.as_ref().and_then(|t| t.decode(&[id], false).ok()).unwrap_or_else(|| id.to_string());
        let logprobs = picked.logprobs.map(|(logprob, top)| StepLogprobs { token: text(picked.token), logprob, top: top.into_iter().map(|(id, l)| (text(id), l)).collect() });
        self.send(row, picked.token, logprobs)
    }

    /// Sends `token` (and its `logprobs`) to the row's client; false when the row is done (EOS,
    /// a stop string, max_tokens) or its client left.
    fn send(&self, row: &mut Row, token: u32, logprobs: Option<StepLogprobs>) -> bool {
        let finish = if token == self.eos {
            Some("stop")
        } else {
            row.generated.push(token);
            row.next = token;
            self.metrics.tokens(1);
            let text = self.tokenizer.as_ref().and_then(|t| t.decode(&row.generated, self.skip_special_tokens).ok()).unwrap_or_default();
            let stop_at = row.job.stop.iter().filter_map(|s| text.find(s.as_str())).min();
            // Hold back an incomplete UTF-8 character (and text a stop string may still claim).
            let end = stop_at.unwrap_or(if text.ends_with('\u{FFFD}') { row.sent } else { text.len() });
            let piece = text.get(row.sent..end.max(row.sent)).unwrap_or("").to_string();
            row.sent = end.max(row.sent);
            if row.job.events.send(Event::Token { id: token, text: piece, logprobs }).is_err() {
                self.metrics.disconnected();
                return false;
            }
            if stop_at.is_some() {
                Some("stop")
            } else if row.generated.len() >= row.job.max_tokens {
                Some("length")
            } else {
                None
            }
        };
        let Some(finish_reason) = finish else { return true };
        self.finish(row, finish_reason);
        false
    }

    /// Tells the row's client why it ended, and counts the request.
    fn finish(&self, row: &Row, finish_reason: &'static str) {
        let done = Event::Done { finish_reason, prompt_tokens: row.job.prompt.len(), completion_tokens: row.generated.len() };
        let _ = row.job.events.send(done);
        self.metrics.finished(&row.job.prefix_name, row.job.arrived.elapsed());
    }
}

/// BART: the document encoded alone behind the row's encoder prefix, its cross-attention
/// memory (cross prefix, encoder keys) and its decoder prefix written into their own slots;
/// the start token is fed at the next step, at the decoder's first position (P for a PEFT
/// adapter), with the checkpoint's logits processors as `generate` applies them.
fn prefill_bart(model: &Bart, defaults: &GenerateConfig, row: &mut Row, decoder: &mut KvCache, cross: &mut KvCache) -> Result<bool, ModelError> {
    let (sets, offset) = match row.job.prefix.as_deref() {
        Some(Served::Seq2Seq(sets, offset)) => (sets.clone(), *offset),
        _ => (BartPrefix::default(), 0),
    };
    let start = defaults.decoder_start_token_id.ok_or_else(|| ModelError::Input("an encoder-decoder model needs decoder_start_token_id".into()))?;
    let memory = model.encode_tokens(&[row.job.prompt.clone()], &[vec![1.0; row.job.prompt.len()]], &sets, Dropout::default())?;
    cross.push(memory)?;
    if let Err(e) = decoder.push_prefix(sets.decoder, 1) {
        cross.pop();
        return Err(e);
    }
    let config = GenerateConfig { max_new_tokens: row.job.max_tokens, ..defaults.clone() };
    (row.next, row.position, row.processors, row.start) = (start, offset, config.processors(), vec![start]);
    Ok(true)
}

/// The tokens a request may come to hold in the growing KV cache (GPT-2: prefix, prompt and
/// completion; BART's decoder: its prefix, the start token and completion), and in BART's cross
/// memory (cross prefix and prompt).
pub fn tokens_held(prefix: Option<&Served>, prompt: usize, max_tokens: usize, encoder_decoder: bool) -> (usize, usize) {
    match prefix {
        Some(Served::Seq2Seq(sets, _)) => {
            let len = |set: &Option<Past>| set.as_ref().map_or(0, Past::len);
            (len(&sets.decoder) + 1 + max_tokens, len(&sets.cross) + prompt)
        }
        _ if encoder_decoder => (1 + max_tokens, prompt),
        prefix => (prefix.map_or(0, Served::len) + prompt + max_tokens, 0),
    }
}

/// Whether a request holding `growing` and `fixed` tokens ([`tokens_held`]) can ever fit in
/// caches of `limit` tokens; if not, why, naming the flag.
pub fn fits_at_all(growing: usize, fixed: usize, limit: usize) -> Result<(), String> {
    let most = growing.max(fixed);
    if most > limit {
        return Err(format!("this request may hold {most} tokens (prefix, prompt and max_tokens) but the KV cache holds {limit} (--kv-cache-tokens)"));
    }
    Ok(())
}

/// Slots the running rows may still take: each row's budget less what it holds.
fn still_to_take(rows: &[Row], cache: &KvCache) -> usize {
    rows.iter().enumerate().map(|(i, row)| row.budget.saturating_sub(cache.mask(i).len())).sum()
}

/// GPT-2's keys and values of `prefix` (an encoder-decoder's never reach a GPT-2).
fn decoder_past(prefix: Option<&Served>) -> Option<Past> {
    match prefix {
        Some(Served::Decoder(past)) => Some(past.clone()),
        _ => None,
    }
}
