//! The OpenAI-compatible request and response bodies, checked into a [`Job`], and OpenAI's error
//! object for everything refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prefix_tune_model::generate::{EarlyStopping, Sampling};
use serde::Deserialize;
use serde_json::json;

use crate::engine::Beam;
use crate::error::Failure;
use crate::penalties::Penalties;

/// `POST /v1/completions`. Unknown fields are refused (a typo is not silently ignored); the
/// OpenAI fields we do not implement are accepted at their defaults only, and otherwise refused
/// with a 400 naming them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    pub return_token_ids: bool,
    pub n: Option<u32>,
    pub echo: Option<bool>,
    /// Accepted as OpenAI clients send it; no effect.
    #[allow(dead_code)]
    pub user: Option<String>,
    /// 0 to 5: each generated token's log-probability and this many most likely tokens.
    pub logprobs: Option<u32>,
    /// −2 to 2: subtracted once from every token already generated.
    pub presence_penalty: Option<f32>,
    /// −2 to 2: subtracted per time a token was already generated.
    pub frequency_penalty: Option<f32>,
    /// Token id (as a string key) → −100 to 100, added to its logit.
    pub logit_bias: Option<std::collections::HashMap<String, f32>>,
    pub best_of: Option<u32>,
    /// vLLM's beam search: `best_of` beams, the best returned (as `generate --num-beams`).
    #[serde(default)]
    pub use_beam_search: bool,
    /// Beam search only: HF's length penalty (default 1).
    pub length_penalty: Option<f32>,
    /// Beam search only: true, false (HF's heuristic) or "never".
    pub early_stopping: Option<EarlyStop>,
    /// Accepted as OpenAI clients send it; no effect.
    #[allow(dead_code)]
    pub stream_options: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EarlyStop {
    Flag(bool),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The most alternatives `logprobs` may ask for, as OpenAI's completions.
const MAX_LOGPROBS: u32 = 5;

/// The most beams a beam-search request may ask for (`best_of`).
const MAX_BEAMS: u32 = 16;

/// The most completions one request may ask for (`n`).
const MAX_CHOICES: u32 = 16;

/// OpenAI's default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 16;

/// A refusal: status and one-line message, sent as OpenAI's error object.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), retry_after: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// OpenAI's error `type` for the status.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::SERVICE_UNAVAILABLE => "server_overloaded",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            // The server's fault (a prefix file on its disk that does not load, a model whose
            // scores are NaN), not the request's.
            status if status.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Request(message) => ApiError::bad_request(message),
            Failure::Server(message) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind();
        let body = Json(json!({ "error": { "message": self.message, "type": kind, "param": null, "code": null } }));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert("retry-after", seconds.into());
        }
        response
    }
}

impl CompletionRequest {
    /// Parses a body; on failure, one line naming the field at fault.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        parse_body(body)
    }

    /// Sampling settings, checked: temperature 0 (greedy) to 2, top_p in (0, 1].
    pub fn sampling(&self) -> Result<Option<Sampling>, ApiError> {
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(format!("temperature must be between 0 and 2, got {temperature}")));
        }
        if let Some(top_p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(ApiError::bad_request(format!("top_p must be in (0, 1], got {top_p}")));
        }
        self.refuse_unimplemented()?;
        if temperature == 0.0 {
            return Ok(None);
        }
        let seed = self.seed.unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
        Ok(Some(Sampling { temperature, top_k: self.top_k.map(|k| k as usize), top_p: self.top_p, seed }))
    }

    /// `n`: how many completions of the prompt to return, 1 to 16.
    pub fn choices(&self) -> Result<usize, ApiError> {
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(ApiError::bad_request(format!("n must be between 1 and {MAX_CHOICES}, got {n}")));
        }
        if self.use_beam_search && n != 1 {
            return Err(ApiError::bad_request("n: beam search returns its best beam only (n = 1)"));
        }
        if !self.use_beam_search && self.best_of.is_some_and(|b| b != n) {
            return Err(ApiError::bad_request("best_of is not implemented by this server without use_beam_search: leave it out (or equal to n)"));
        }
        Ok(n as usize)
    }

    /// `use_beam_search` with `best_of` beams, `length_penalty` and `early_stopping`; refused
    /// with what beam search does not combine with.
    pub fn beam(&self) -> Result<Option<Beam>, ApiError> {
        if !self.use_beam_search {
            if self.length_penalty.is_some() || self.early_stopping.is_some() {
                return Err(ApiError::bad_request("length_penalty and early_stopping apply with use_beam_search only"));
            }
            return Ok(None);
        }
        let beams = self.best_of.filter(|&b| b >= 2).ok_or_else(|| ApiError::bad_request("use_beam_search needs best_of, the number of beams (2 or more)"))?;
        if beams > MAX_BEAMS {
            return Err(ApiError::bad_request(format!("best_of: at most {MAX_BEAMS} beams, got {beams}")));
        }
        let sampled = self.temperature.is_some_and(|t| t != 0.0) || self.top_p.is_some() || self.top_k.is_some();
        let adjusted = self.logprobs.is_some() || self.presence_penalty.is_some_and(|p| p != 0.0) || self.frequency_penalty.is_some_and(|p| p != 0.0) || self.logit_bias.as_ref().is_some_and(|b| !b.is_empty());
        if sampled || adjusted {
            return Err(ApiError::bad_request("use_beam_search is deterministic: it takes no temperature, top_p, top_k, logprobs, penalties or logit_bias"));
        }
        let early_stopping = match &self.early_stopping {
            None | Some(EarlyStop::Flag(false)) => EarlyStopping::Heuristic,
            Some(EarlyStop::Flag(true)) => EarlyStopping::Eager,
            Some(EarlyStop::Word(word)) if word == "never" => EarlyStopping::Never,
            Some(EarlyStop::Word(word)) => return Err(ApiError::bad_request(format!("early_stopping: `{word}` is not true, false or \"never\""))),
        };
        Ok(Some(Beam { beams: beams as usize, length_penalty: self.length_penalty.unwrap_or(1.0), early_stopping }))
    }

    /// OpenAI fields this server does not implement, given at other than their defaults.
    fn refuse_unimplemented(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) && self.logprobs.is_some() {
            return Err(ApiError::bad_request("echo with logprobs is not implemented by this server (the prompt's logprobs): use one or the other"));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_LOGPROBS) {
            return Err(ApiError::bad_request(format!("logprobs must be between 0 and {MAX_LOGPROBS}, got {n}")));
        }
        Ok(())
    }

    /// `presence_penalty`, `frequency_penalty` and `logit_bias`, checked against OpenAI's ranges
    /// and the vocabulary.
    pub fn penalties(&self, vocab_size: usize) -> Result<Penalties, ApiError> {
        let mut penalties = Penalties { presence: self.presence_penalty.unwrap_or(0.0), frequency: self.frequency_penalty.unwrap_or(0.0), logit_bias: Vec::new() };
        for (field, value) in [("presence_penalty", penalties.presence), ("frequency_penalty", penalties.frequency)] {
            if !(-2.0..=2.0).contains(&value) {
                return Err(ApiError::bad_request(format!("{field} must be between -2 and 2, got {value}")));
            }
        }
        for (key, &bias) in self.logit_bias.iter().flatten() {
            let id = key.parse::<u32>().ok().filter(|&id| (id as usize) < vocab_size);
            let id = id.ok_or_else(|| ApiError::bad_request(format!("logit_bias: `{key}` is not a token id of the vocabulary of {vocab_size}")))?;
            if !(-100.0..=100.0).contains(&bias) {
                return Err(ApiError::bad_request(format!("logit_bias: {key}: the bias must be between -100 and 100, got {bias}")));
            }
            penalties.logit_bias.push((id, bias));
        }
        penalties.logit_bias.sort_by_key(|&(id, _)| id);
        Ok(penalties)
    }

    pub fn stops(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        }
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }
}

/// A JSON body as `T`, or a 400 naming the field at fault (`max_tokens: invalid value …`).
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { format!("{path}: ") };
        ApiError::bad_request(format!("invalid request body: {field}{}", e.inner()))
    })
}
