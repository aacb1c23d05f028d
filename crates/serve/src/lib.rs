//! `prefix-tune serve`: one frozen model, many prefixes, one continuous batch, behind an
//! OpenAI-compatible HTTP API (axum on tokio).

mod access;
mod api;
mod engine;
mod error;
mod logprobs;
mod metrics;
mod models;
mod penalties;
mod registry;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use clap::Args;
use futures_util::stream::{self, Stream, StreamExt};
use prefix_tune_data::Tokenizer;
use prefix_tune_model::generate::Sampling;
use prefix_tune_model::backend::DeviceArgs;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub use error::ServeError;
use error::Result;
use access::{Keys, BASE};
use api::{ApiError, CompletionRequest, Prompt, DEFAULT_MAX_TOKENS};
use engine::{Engine, Event, Job, Served, ServedModel};
use models::{load_model, Facts, Loader};
use metrics::Metrics;
use registry::{Lookup, Registry};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A GPT-2 or BART model directory or hub name, loaded once.
    #[arg(long)]
    model: String,
    /// Every subdirectory is a prefix named after it, in any format --prefix reads; also the
    /// only place `POST /v1/prefixes` loads from (without it, loading from disk is off).
    #[arg(long)]
    prefixes: Option<PathBuf>,
    /// Address to listen on (localhost unless told otherwise; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// Requests without `Authorization: Bearer KEY` get 401 (completions, models, metrics and,
    /// without --admin-key, the prefix routes).
    #[arg(long, env = "PREFIX_TUNE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The API key from the first line of a file.
    #[arg(long, conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// Loading and unloading prefixes needs this key instead (403 without it).
    #[arg(long, env = "PREFIX_TUNE_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// The admin key from the first line of a file.
    #[arg(long, conflicts_with = "admin_key")]
    admin_key_file: Option<PathBuf>,
    /// Rows decoded together at most.
    #[arg(long, default_value_t = 32, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_batch: usize,
    /// Tokens whose keys and values the running batch may hold (each request's prefix, prompt
    /// and max_tokens count from the start; a request that does not fit waits for room).
    /// Default: --max-batch × the model's positions.
    #[arg(long)]
    kv_cache_tokens: Option<usize>,
    /// Requests waiting to join the batch at most; more get 503.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    #[arg(long, default_value_t = 1024)]
    max_prompt_tokens: usize,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Prefixes kept in memory at most: each is read on first use, and the least recently used
    /// is dropped past this many (and read again when asked for). Default: no bound.
    #[arg(long)]
    max_resident_prefixes: Option<usize>,
    #[command(flatten)]
    device: DeviceArgs,
    /// For tests: pause this long after each decoding step, so that timing-dependent behaviour
    /// (a full queue, a client leaving mid-stream) can be observed on any machine.
    #[arg(long, hide = true, default_value_t = 0)]
    throttle_ms: u64,
}

/// What every handler shares.
struct Server {
    prefixes: Registry,
    jobs: SyncSender<Job>,
    tokenizer: Option<Arc<Tokenizer>>,
    /// Reads a prefix of this model from disk.
    loader: Loader,
    /// BART: the prompt is a document (`<s> … </s>`), and a prefix takes no positions.
    encoder_decoder: bool,
    vocab_size: usize,
    n_positions: usize,
    max_prompt_tokens: usize,
    max_new_tokens: usize,
    /// Tokens each KV cache holds at most: a request that could never fit is refused up front.
    kv_cache_tokens: usize,
    keys: Keys,
    /// `--prefixes`, resolved: the one directory prefixes load from.
    prefix_root: Option<PathBuf>,
    metrics: Arc<Metrics>,
    next_id: AtomicU64,
}

type Shared = Arc<Server>;

pub fn run(args: ServeArgs) -> Result<()> {
    let device = args.device.device()?;
    let dir = prefix_tune_model::hub::resolve_model(&args.model)?;
    let (model, loader) = load_model(&dir, &device, args.device.dtype)?;
    let Facts { vocab_size, n_positions, eos, encoder_decoder } = match &model {
        ServedModel::Gpt2(gpt2) => Facts::of(gpt2),
        ServedModel::Bart(bart, _) => Facts::of(bart),
    };
    let tokenizer = Tokenizer::from_dir(&dir)?.map(Arc::new);
    let metrics = Arc::new(Metrics::default());
    let (jobs, queue) = sync_channel(args.max_queue.max(1));
    let kv_cache_tokens = args.kv_cache_tokens.unwrap_or(args.max_batch * n_positions).max(1);
    let server = Arc::new(Server {
        prefixes: Registry::new(args.max_resident_prefixes),
        jobs,
        tokenizer: tokenizer.clone(),
        loader,
        encoder_decoder,
        vocab_size,
        n_positions,
        max_prompt_tokens: args.max_prompt_tokens,
        max_new_tokens: args.max_new_tokens,
        kv_cache_tokens,
        keys: Keys {
            client: access::read_key(args.api_key.clone(), args.api_key_file.as_deref(), "--api-key-file")?,
            admin: access::read_key(args.admin_key.clone(), args.admin_key_file.as_deref(), "--admin-key-file")?,
        },
        prefix_root: args.prefixes.as_deref().map(|dir| dir.canonicalize().map_err(|source| ServeError::Io { path: dir.to_path_buf(), source })).transpose()?,
        metrics: metrics.clone(),
        next_id: AtomicU64::new(0),
    });
    if let Some(dir) = &args.prefixes {
        load_directory(&server, dir)?;
    }
    let engine = Engine { model, tokenizer, eos, skip_special_tokens: encoder_decoder, max_batch: args.max_batch, kv_cache_tokens, metrics, throttle: std::time::Duration::from_millis(args.throttle_ms) };
    std::thread::Builder::new().name("decode".into()).spawn(move || engine.run(queue)).map_err(|e| ServeError::Start { what: "the decoding thread", source: e })?;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| ServeError::Start { what: "the server runtime", source: e })?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind).await.map_err(|e| ServeError::Bind { address: args.bind, source: e })?;
        let address = listener.local_addr().map_err(|e| ServeError::Bind { address: args.bind, source: e })?;
        eprintln!("listening on http://{address} ({} prefixes)", server.prefixes.names().len());
        axum::serve(listener, router(server)).await.map_err(|e| ServeError::Start { what: "the server", source: e })
    })
}

fn router(server: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { Html(include_str!("playground.html")) }))
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(list_models))
        .route("/v1/completions", post(completions))
        .route("/v1/prefixes", post(add_prefix))
        .route("/v1/prefixes/{name}", delete(remove_prefix))
        .layer(DefaultBodyLimit::max(1 << 20))
        .with_state(server)
}

/// Every subdirectory of `dir`, known as a prefix named after it (read on first use).
fn load_directory(server: &Server, dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| ServeError::Io { path: dir.to_path_buf(), source: e })?;
    for entry in entries.flatten().filter(|e| e.path().is_dir()) {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(why) = access::bad_name(&name) {
            return Err(ServeError::Usage(format!("--prefixes {}: {why}; rename the folder", dir.display())));
        }
        server.prefixes.list(name, entry.path());
    }
    Ok(())
}

impl Server {
    /// A prefix as one row of keys/values (all that stays resident per prefix), read off the
    /// async workers.
    async fn read(self: &Arc<Self>, path: &Path) -> std::result::Result<std::result::Result<Served, prefix_tune_prefix::PrefixError>, ApiError> {
        let (server, path) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || (server.loader)(&path)).await.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    /// The request's prefix (none for `base`): from memory, or read from disk on a miss.
    async fn prefix(self: &Arc<Self>, name: &str) -> std::result::Result<Option<Arc<Served>>, ApiError> {
        if name == BASE {
            return Ok(None);
        }
        let path = match self.prefixes.lookup(name) {
            Lookup::Resident(past) => return Ok(Some(past)),
            Lookup::OnDisk(path) => path,
            Lookup::Unknown => return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no prefix named `{name}` (GET /v1/models lists them)"))),
        };
        let past = self.read(&path).await?.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("prefix `{name}`: {e}")))?;
        Ok(Some(self.prefixes.admit(name, path, past)))
    }

    /// Refuses a request whose prefix, prompt and new tokens do not fit the model's positions:
    /// GPT-2's hold all three; BART's encoder holds the prompt, its decoder the new tokens (after
    /// P positions for a PEFT adapter, and the start token).
    fn check_positions(&self, prefix: Option<&Served>, prompt: usize, max_tokens: usize) -> std::result::Result<(), ApiError> {
        let limit = self.n_positions;
        let (needed, what) = match prefix {
            _ if self.encoder_decoder => {
                let offset = match prefix {
                    Some(Served::Seq2Seq(_, offset)) => *offset,
                    _ => 0,
                };
                (prompt.max(offset + 1 + max_tokens), format!("the prompt ({prompt}), or the decoder's {offset} prefix positions + start + max_tokens ({max_tokens}),"))
            }
            _ => {
                let p = prefix.map_or(0, Served::len);
                (p + prompt + max_tokens, format!("prefix ({p}) + prompt ({prompt}) + max_tokens ({max_tokens})"))
            }
        };
        if needed > limit {
            return Err(ApiError::bad_request(format!("{what} exceed the model's {limit} positions")));
        }
        Ok(())
    }

    /// Hands `job` to the decoding thread, or says the queue is full.
    fn submit(&self, job: Job) -> std::result::Result<(), ApiError> {
        match self.jobs.try_send(job) {
            Ok(()) => {
                self.metrics.accepted();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.metrics.rejected();
                let mut error = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is busy: too many requests are waiting; retry shortly");
                error.retry_after = Some(1);
                Err(error)
            }
            Err(TrySendError::Disconnected(_)) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the decoding thread has stopped")),
        }
    }

    /// The prompt as text, for `echo`: as sent, or its ids decoded.
    fn prompt_text(&self, prompt: &Prompt) -> String {
        match prompt {
            Prompt::Text(text) => text.clone(),
            Prompt::Ids(ids) => self.tokenizer.as_ref().and_then(|t| t.decode(ids, false).ok()).unwrap_or_default(),
        }
    }

    /// The request (its first choice) as a job for the engine, or why it is refused.
    fn job(&self, request: &CompletionRequest, prefix: Option<Arc<Served>>, events: tokio::sync::mpsc::UnboundedSender<Event>) -> std::result::Result<Job, ApiError> {
        let prompt = match &request.prompt {
            Prompt::Ids(ids) => ids.clone(),
            Prompt::Text(text) => {
                let tokenizer = self.tokenizer.as_ref().ok_or_else(|| ApiError::bad_request("this model has no tokenizer: send the prompt as a list of token ids"))?;
                let ids = if self.encoder_decoder { tokenizer.encode_with_special_tokens(text) } else { tokenizer.encode(text) };
                ids.map_err(|e| ApiError::bad_request(e.to_string()))?
            }
        };
        if prompt.is_empty() {
            return Err(ApiError::bad_request("prompt is empty"));
        }
        if let Some(bad) = prompt.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(ApiError::bad_request(format!("prompt: token id {bad} is outside the vocabulary of {}", self.vocab_size)));
        }
        if prompt.len() > self.max_prompt_tokens {
            return Err(ApiError::bad_request(format!("prompt has {} tokens; the limit is {} (--max-prompt-tokens)", prompt.len(), self.max_prompt_tokens)));
        }
        let max_tokens = request.max_tokens.map_or(DEFAULT_MAX_TOKENS, |n| n as usize);
        if max_tokens == 0 || max_tokens > self.max_new_tokens {
            return Err(ApiError::bad_request(format!("max_tokens must be between 1 and {} (--max-new-tokens), got {max_tokens}", self.max_new_tokens)));
        }
        self.check_positions(prefix.as_deref(), prompt.len(), max_tokens)?;
        let (growing, fixed) = engine::tokens_held(prefix.as_deref(), prompt.len(), max_tokens, self.encoder_decoder);
        engine::fits_at_all(growing, fixed, self.kv_cache_tokens).map_err(ApiError::bad_request)?;
        let penalties = request.penalties(self.vocab_size)?;
        let logprobs = request.logprobs.map(|n| n as usize);
        let sampling = request.sampling()?;
        let beam = request.beam()?;
        Ok(Job { prompt, prefix, prefix_name: request.model.clone(), max_tokens, sampling, penalties, logprobs, beam, stop: request.stops(), events, arrived: Instant::now() })
    }
}

async fn metrics_text(State(server): State<Shared>, headers: HeaderMap) -> std::result::Result<String, ApiError> {
    server.keys.client(&headers)?;
    Ok(server.metrics.render() + &server.prefixes.render())
}

async fn list_models(State(server): State<Shared>, headers: HeaderMap) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    server.keys.client(&headers)?;
    let names = server.prefixes.names();
    let data: Vec<_> = std::iter::once(BASE.to_string()).chain(names).map(|id| json!({ "id": id, "object": "model", "owned_by": "prefix-tune" })).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// Loads `{"name", "path"}`: a plain name, a path relative to `--prefixes` that stays under it.
async fn add_prefix(State(server): State<Shared>, headers: HeaderMap, body: Bytes) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    server.keys.admin(&headers)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Load {
        name: String,
        path: PathBuf,
    }
    let load: Load = api::parse_body(&body)?;
    if let Some(why) = access::bad_name(&load.name) {
        return Err(ApiError::bad_request(format!("name: {why}")));
    }
    let path = access::under_root(server.prefix_root.as_deref(), &load.path)?;
    let past = server.read(&path).await?.map_err(|e| ApiError::bad_request(e.to_string()))?;
    let length = past.len();
    server.prefixes.admit(&load.name, path, past);
    Ok(Json(json!({ "id": load.name, "object": "model", "prefix_length": length })))
}

async fn remove_prefix(State(server): State<Shared>, headers: HeaderMap, UrlPath(name): UrlPath<String>) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    server.keys.admin(&headers)?;
    // Requests in flight hold their own reference and finish with it.
    match server.prefixes.remove(&name) {
        true => Ok(Json(json!({ "id": name, "deleted": true }))),
        false => Err(ApiError::new(StatusCode::NOT_FOUND, format!("no prefix named `{name}` is loaded"))),
    }
}

async fn completions(State(server): State<Shared>, headers: HeaderMap, body: Bytes) -> std::result::Result<Response, ApiError> {
    server.keys.client(&headers)?;
    let request = CompletionRequest::parse(&body)?;
    let choices = request.choices()?;
    let prefix = server.prefix(&request.model).await?;
    // Checked once; each choice then differs only in its seed and its channel.
    let (sender, events) = unbounded_channel();
    let first = server.job(&request, prefix, sender)?;
    let mut receivers = vec![events];
    let mut jobs = Vec::with_capacity(choices);
    for index in 1..choices {
        let (sender, events) = unbounded_channel();
        // Each choice samples with its own seed: the request's, plus its index.
        let sampling = first.sampling.map(|s| Sampling { seed: s.seed.wrapping_add(index as u64), ..s });
        jobs.push(Job { sampling, events: sender, ..first.clone() });
        receivers.push(events);
    }
    for job in std::iter::once(first).chain(jobs) {
        server.submit(job)?;
    }
    let id = format!("cmpl-{}", server.next_id.fetch_add(1, Ordering::Relaxed));
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let echo = request.echo.unwrap_or(false).then(|| server.prompt_text(&request.prompt));
    let response = Completion { id, model: request.model.clone(), created, echo };
    if request.stream {
        return Ok(Sse::new(response.stream(receivers)).into_response());
    }
    response.collect(receivers, &request).await
}

/// What every chunk or body of one completion response carries.
struct Completion {
    id: String,
    model: String,
    created: u64,
    /// The prompt's text, in front of each choice's (`echo`).
    echo: Option<String>,
}

/// One choice as it arrives.
#[derive(Default)]
struct Choice {
    text: String,
    ids: Vec<u32>,
    steps: Vec<logprobs::StepLogprobs>,
}

impl Completion {
    /// Every choice to its end, as one body.
    async fn collect(self, receivers: Vec<UnboundedReceiver<Event>>, request: &CompletionRequest) -> std::result::Result<Response, ApiError> {
        let (mut choices, mut prompt_tokens, mut completion_tokens) = (Vec::new(), 0, 0);
        for (index, mut events) in receivers.into_iter().enumerate() {
            let mut choice = Choice::default();
            let finish = loop {
                match events.recv().await {
                    Some(Event::Token { id, text, logprobs }) => {
                        choice.text.push_str(&text);
                        choice.ids.push(id);
                        choice.steps.extend(logprobs);
                    }
                    Some(Event::Error(failure)) => return Err(failure.into()),
                    Some(Event::Done { finish_reason, prompt_tokens: prompt, completion_tokens: completion }) => {
                        (prompt_tokens, completion_tokens) = (prompt, completion_tokens + completion);
                        break finish_reason;
                    }
                    None => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request ended without a result")),
                }
            };
            let echo = self.echo.as_deref().unwrap_or("");
            let mut body = json!({ "index": index, "text": format!("{echo}{}", choice.text), "finish_reason": finish, "logprobs": null });
            if request.logprobs.is_some() {
                body["logprobs"] = logprobs::logprobs_object(&choice.steps, echo.chars().count());
            }
            if request.return_token_ids {
                body["token_ids"] = json!(choice.ids);
            }
            choices.push(body);
        }
        let usage = json!({ "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens });
        Ok(Json(json!({ "id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": choices, "usage": usage })).into_response())
    }

    fn chunk(&self, index: usize, text: &str, token: Option<u32>, finish: Option<&str>, logprobs: Option<Value>) -> SseEvent {
        let mut choice = json!({ "index": index, "text": text, "finish_reason": finish, "logprobs": logprobs });
        if let Some(token) = token {
            choice["token_ids"] = json!([token]);
        }
        SseEvent::default().data(json!({ "id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "choices": [choice] }).to_string())
    }

    /// One server-sent event per token of any choice (the echoed prompt first), one with each
    /// choice's finish reason, then `[DONE]`. When the client goes, the stream is dropped and
    /// the engine frees the rows at their next token.
    fn stream(self, receivers: Vec<UnboundedReceiver<Event>>) -> impl Stream<Item = std::result::Result<SseEvent, Infallible>> {
        let choices = receivers.len();
        let echo_offset = self.echo.as_deref().map_or(0, |e| e.chars().count());
        let echoed: Vec<SseEvent> = self.echo.iter().flat_map(|text| (0..choices).map(move |i| (i, text.clone()))).map(|(i, text)| self.chunk(i, &text, None, None, None)).collect();
        let tagged = receivers.into_iter().enumerate().map(|(index, events)| {
            stream::unfold(events, |mut events| async move { events.recv().await.map(|event| (event, events)) }).map(move |event| (index, event)).boxed()
        });
        let mut offsets = vec![echo_offset; choices];
        let mut failed = false;
        let events = stream::select_all(tagged).scan((), move |_, (index, event)| {
            let sse = match event {
                _ if failed => None,
                Event::Token { id, text, logprobs } => {
                    let object = logprobs.as_ref().map(|step| logprobs::logprobs_object(std::slice::from_ref(step), offsets[index]));
                    offsets[index] += logprobs.map_or(0, |step| step.token.chars().count());
                    Some(self.chunk(index, &text, Some(id), None, object))
                }
                Event::Done { finish_reason, .. } => Some(self.chunk(index, "", None, Some(finish_reason), None)),
                Event::Error(failure) => {
                    failed = true;
                    let error = ApiError::from(failure);
                    Some(SseEvent::default().data(json!({ "error": { "message": error.message, "type": error.kind() } }).to_string()))
                }
            };
            futures_util::future::ready(sse)
        });
        stream::iter(echoed).chain(events).chain(stream::once(async { SseEvent::default().data("[DONE]") })).map(Ok::<_, Infallible>)
    }
}
