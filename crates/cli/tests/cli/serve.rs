//! `prefix-tune serve` over real HTTP on loopback: concurrent requests on several prefixes of
//! different P, each greedy answer equal to `generate` run alone; streaming; every refusal's
//! status; prefixes loaded and unloaded while requests are in flight.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use prefix_tune_model::testing::{fixtures, scratch};

use super::{prefix_tune, reference, stdout_lines};

const KEY: &str = "test-key";

/// A server process, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` on a free port with the two PEFT fixture prefixes of gpt2-a (P = 5 and 7).
fn start(extra: &[&str]) -> Server {
    let prefixes = scratch(&format!("serve-prefixes-{}", extra.len()));
    start_in(&prefixes, "gpt2-a", &["--api-key", KEY], extra, &[])
}

/// Starts `serve` of the fixture `model` over `prefixes` (gpt2-a's two fixture prefixes copied
/// in) with `keys` flags and `env` variables.
fn start_in(prefixes: &std::path::Path, model: &str, keys: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Server {
    for name in ["flat", "mlp"] {
        let dir = prefixes.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixtures().join("peft").join(name).join("adapter").join(file), dir.join(file)).unwrap();
        }
    }
    spawn(model, prefixes, keys, extra, env)
}

/// Starts `serve` of the fixture `model` over the prefixes already in `prefixes`.
fn spawn(model: &str, prefixes: &std::path::Path, keys: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Server {
    let model = fixtures().join(model);
    let mut command = Command::new(env!("CARGO_BIN_EXE_prefix-tune"));
    command.args(["serve", "--model", model.to_str().unwrap(), "--prefixes", prefixes.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    command.args(keys).args(extra).envs(env.iter().copied());
    if cfg!(feature = "flex") {
        command.args(["--backend", "flex"]);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("listening on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, url }
}

/// A prefix directory `dir` with the flat fixture adapter's config; returns where its tensors
/// go, for the caller to write.
fn flat_adapter_config(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixtures().join("peft/flat/adapter/adapter_config.json"), dir.join("adapter_config.json")).unwrap();
    dir.join("adapter_model.safetensors")
}

/// POSTs `body` (with the API key); the status and the JSON (or text) answer.
fn post(server: &Server, path: &str, body: &str) -> (u16, String) {
    let request = ureq::post(&format!("{}{path}", server.url)).set("Authorization", &format!("Bearer {KEY}")).set("Content-Type", "application/json");
    answer(request.send_string(body))
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match result {
        Ok(response) => (response.status(), response.into_string().unwrap()),
        Err(ureq::Error::Status(status, response)) => (status, response.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `generate` alone: the greedy continuation of `prompt` with `prefix`, EOS (514) dropped.
fn alone(prompt: &[u64], prefix: Option<&str>, max_new: usize) -> Vec<u64> {
    let model = fixtures().join("gpt2-a");
    let ids: Vec<String> = prompt.iter().map(u64::to_string).collect();
    let ids = ids.join(",");
    let max = max_new.to_string();
    let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &ids, "--max-new-tokens", &max, "--json"];
    let adapter = prefix.map(|p| fixtures().join("peft").join(p).join("adapter"));
    if let Some(adapter) = &adapter {
        args.extend(["--prefix", adapter.to_str().unwrap()]);
    }
    let line = &stdout_lines(&prefix_tune(&args))[0];
    line["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).filter(|&id| id != 514).collect()
}

#[test]
fn concurrent_requests_on_mixed_prefixes_answer_as_generate_alone() {
    let server = start(&[]);
    let prompts: Vec<Vec<u64>> = serde_json::from_value(reference("gpt2-a")["prompts"].clone()).unwrap();
    let mut cases = Vec::new();
    for (i, prefix) in ["base", "flat", "mlp"].iter().enumerate() {
        for prompt in &prompts {
            let max_new = 8 + 3 * i;
            let expected = alone(prompt, (*prefix != "base").then_some(*prefix), max_new);
            cases.push((prefix.to_string(), prompt.clone(), max_new, expected));
        }
    }
    // All at once: every request shares the batch with others, of other prefixes and lengths.
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(prefix, prompt, max_new, expected)| {
                let server = &server;
                scope.spawn(move || {
                    let body = serde_json::json!({ "model": prefix, "prompt": prompt, "max_tokens": max_new, "temperature": 0, "return_token_ids": true });
                    let (status, text) = post(server, "/v1/completions", &body.to_string());
                    assert_eq!(status, 200, "{text}");
                    let answer = json(&text);
                    let ids: Vec<u64> = serde_json::from_value(answer["choices"][0]["token_ids"].clone()).unwrap();
                    assert_eq!(&ids, expected, "{prefix} {prompt:?}: not what generate gives alone");
                    let finish = answer["choices"][0]["finish_reason"].as_str().unwrap();
                    assert_eq!(finish, if ids.len() < *max_new { "stop" } else { "length" });
                    assert_eq!(answer["object"], "text_completion");
                    assert_eq!(answer["usage"]["prompt_tokens"].as_u64().unwrap() as usize, prompt.len());
                    assert_eq!(answer["usage"]["completion_tokens"].as_u64().unwrap() as usize, ids.len());
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });

    // Streaming gives the same tokens, one event each, then [DONE].
    let (prefix, prompt, max_new, expected) = &cases[5];
    let body = serde_json::json!({ "model": prefix, "prompt": prompt, "max_tokens": max_new, "temperature": 0, "stream": true });
    let (status, text) = post(&server, "/v1/completions", &body.to_string());
    assert_eq!(status, 200);
    let data: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"));
    let streamed: Vec<u64> = data.iter().filter(|d| **d != "[DONE]").flat_map(|d| json(d)["choices"][0]["token_ids"].as_array().cloned().unwrap_or_default()).map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(&streamed, expected);

    let (status, models) = answer(ureq::get(&format!("{}/v1/models", server.url)).set("Authorization", &format!("Bearer {KEY}")).call());
    assert_eq!(status, 200);
    let ids: Vec<String> = json(&models)["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, ["base", "flat", "mlp"]);
    let (_, metrics) = answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call());
    assert!(metrics.contains("prefix_tune_requests_total 10") && metrics.contains("prefix_tune_prefix_requests_total{prefix=\"mlp\"} 3"), "{metrics}");
    assert_eq!(answer(ureq::get(&format!("{}/health", server.url)).call()), (200, "ok".into()));
    let (status, page) = answer(ureq::get(&format!("{}/", server.url)).call());
    assert!(status == 200 && page.contains("/v1/completions"));
}

#[test]
fn bad_requests_get_their_status_and_an_openai_error() {
    // Beside the two fixture prefixes, one whose tensors file is cut short.
    let prefixes = scratch("serve-prefixes-broken");
    let tensors = flat_adapter_config(&prefixes.join("broken"));
    std::fs::write(tensors, b"\x10\0\0\0\0\0\0\0{").unwrap();
    let server = start_in(&prefixes, "gpt2-a", &["--api-key", KEY], &[], &[]);
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"model\": \"base\", \"prompt\": [1, 2".into(), 400, "invalid request body"),
        (r#"{"model": "base", "prompt": [1, 2], "max_tokens": -3}"#.into(), 400, "max_tokens"),
        (r#"{"model": "base", "prompt": [1, 2], "max_tokens": "ten"}"#.into(), 400, "max_tokens"),
        (r#"{"model": "base", "prompt": [1, 2], "top_p": 1.5}"#.into(), 400, "top_p"),
        (r#"{"model": "base", "prompt": [1, 2], "max_token": 5}"#.into(), 400, "max_token"),
        (r#"{"model": "nope", "prompt": [1, 2]}"#.into(), 404, "nope"),
        (r#"{"model": "mlp", "prompt": [1, 2], "max_tokens": 60}"#.into(), 400, "64 positions"),
        (r#"{"model": "base", "prompt": [99999]}"#.into(), 400, "vocabulary"),
        // OpenAI fields not implemented: refused, never silently ignored.
        (r#"{"model": "base", "prompt": [1, 2], "logprobs": 6}"#.into(), 400, "logprobs"),
        (r#"{"model": "base", "prompt": [1, 2], "presence_penalty": 2.5}"#.into(), 400, "presence_penalty"),
        (r#"{"model": "base", "prompt": [1, 2], "logit_bias": {"99999": 1}}"#.into(), 400, "logit_bias"),
        (r#"{"model": "base", "prompt": [1, 2], "logit_bias": {"7": 101}}"#.into(), 400, "logit_bias"),
        // The server's own file at fault: a server error naming the file.
        (r#"{"model": "broken", "prompt": [1, 2]}"#.into(), 500, "broken/adapter_model.safetensors"),
    ];
    // logit_bias reaches the logits: +100 on one token makes every greedy token that one.
    let (status, text) = post(&server, "/v1/completions", r#"{"model": "flat", "prompt": [1, 2], "max_tokens": 4, "temperature": 0, "return_token_ids": true, "logit_bias": {"7": 100}, "frequency_penalty": 0.1}"#);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["token_ids"], serde_json::json!([7, 7, 7, 7]), "{text}");
    // At their defaults they are accepted, as OpenAI's clients send them.
    let (status, text) = post(&server, "/v1/completions", r#"{"model": "base", "prompt": [1, 2], "max_tokens": 1, "logprobs": null, "presence_penalty": 0, "frequency_penalty": 0}"#);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["logprobs"], serde_json::Value::Null);
    assert_eq!(status, 200, "{text}");
    for (body, status, needle) in cases {
        let (got, text) = post(&server, "/v1/completions", &body);
        assert_eq!(got, status, "{}: {text}", &body[..body.len().min(80)]);
        let error = json(&text);
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle) && !message.contains('\n'), "{message}");
        let kind = match status {
            400 => "invalid_request_error",
            404 => "not_found_error",
            _ => "server_error",
        };
        assert_eq!(error["error"]["type"], kind, "{message}");
    }
    let (status, _) = answer(ureq::post(&format!("{}/v1/completions", server.url)).send_string(r#"{"model": "base", "prompt": [1]}"#));
    assert_eq!(status, 401, "no API key");
    // A body over 1 MiB is refused: 413, whether or not the client is still sending it.
    let mut stream = std::net::TcpStream::connect(server.url.trim_start_matches("http://")).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let size = 2 << 20;
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n");
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut writer, head.as_bytes());
        let _ = std::io::Write::write_all(&mut writer, &vec![b' '; size]);
    });
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&reply));
    // The server is still fine.
    let (status, _) = post(&server, "/v1/completions", r#"{"model": "base", "prompt": [1, 2], "max_tokens": 2, "temperature": 0}"#);
    assert_eq!(status, 200);
}

#[test]
fn prefixes_load_and_unload_while_requests_are_in_flight() {
    let server = start(&["--max-batch", "1", "--max-queue", "1", "--throttle-ms", "5"]);
    // A path under --prefixes, relative to it.
    let (status, text) = post(&server, "/v1/prefixes", &serde_json::json!({ "name": "late", "path": "flat" }).to_string());
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["prefix_length"], 5);
    // A long streamed request on it, then the prefix is unloaded mid-way: it finishes anyway.
    let body = serde_json::json!({ "model": "late", "prompt": [5, 6], "max_tokens": 50, "temperature": 0, "stream": true }).to_string();
    let response = ureq::post(&format!("{}/v1/completions", server.url)).set("Authorization", &format!("Bearer {KEY}")).send_string(&body).unwrap();
    let mut reader = BufReader::new(response.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("data: "), "{first}");
    let delete = ureq::delete(&format!("{}/v1/prefixes/late", server.url)).set("Authorization", &format!("Bearer {KEY}")).call().unwrap();
    assert_eq!(delete.status(), 200);
    // While it runs (batch of one, queue of one), more requests are refused with 503.
    let statuses: Vec<(u16, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let server = &server;
                scope.spawn(move || {
                    let result = ureq::post(&format!("{}/v1/completions", server.url))
                        .set("Authorization", &format!("Bearer {KEY}"))
                        .send_string(r#"{"model": "base", "prompt": [7], "max_tokens": 40, "temperature": 0}"#);
                    match result {
                        Ok(r) => (r.status(), false),
                        Err(ureq::Error::Status(s, r)) => (s, r.header("retry-after").is_some()),
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|&(s, retry)| s == 503 && retry), "{statuses:?}");
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]") && rest.contains("\"finish_reason\":\""), "{rest}");
    let (status, _) = post(&server, "/v1/completions", r#"{"model": "late", "prompt": [5, 6]}"#);
    assert_eq!(status, 404, "unloaded");

    // A client that leaves mid-stream frees its row: the server counts it and serves the next.
    let body = r#"{"model": "base", "prompt": [5, 6], "max_tokens": 60, "temperature": 0, "stream": true, "stop": ["\u0000"]}"#;
    let response = ureq::post(&format!("{}/v1/completions", server.url)).set("Authorization", &format!("Bearer {KEY}")).send_string(body).unwrap();
    let mut reader = BufReader::new(response.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    drop(reader);
    let metrics = || answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call()).1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !metrics().contains("prefix_tune_disconnects_total 1") {
        assert!(std::time::Instant::now() < deadline, "the row of a gone client was not freed: {}", metrics());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, _) = post(&server, "/v1/completions", r#"{"model": "base", "prompt": [5], "max_tokens": 2, "temperature": 0}"#);
    assert_eq!(status, 200);
}

/// Nothing a request sends reaches outside `--prefixes`; names are plain identifiers; keys cover
/// every route but the page and `/health`, and come from the environment or a file as well.
#[test]
fn serving_is_safe_by_default() {
    let root = scratch("serve-safe").join("root");
    let outside = scratch("serve-safe").join("outside");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(outside.join("flat")).unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixtures().join("peft/flat/adapter").join(file), outside.join("flat").join(file)).unwrap();
    }
    let key_file = outside.join("key.txt");
    std::fs::write(&key_file, "file-key\n").unwrap();
    let server = start_in(&root, "gpt2-a", &["--api-key-file", key_file.to_str().unwrap()], &[], &[("PREFIX_TUNE_ADMIN_KEY", "admin-key")]);
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("flat"), root.join("link")).unwrap();
    let call = |method: &str, path: &str, key: &str, body: &str| -> (u16, String) {
        let request = ureq::request(method, &format!("{}{path}", server.url)).set("Authorization", &format!("Bearer {key}"));
        answer(if body.is_empty() { request.call() } else { request.send_string(body) })
    };
    let load = |name: &str, path: &str, key: &str| call("POST", "/v1/prefixes", key, &serde_json::json!({ "name": name, "path": path }).to_string());
    let absolute = outside.join("flat");
    let cases = [
        (load("ok", "flat", "admin-key"), 200, "prefix_length"),
        (load("ok2", "flat", "file-key"), 403, "admin key"),
        (load("x", absolute.to_str().unwrap(), "admin-key"), 400, "relative"),
        (load("x", "../outside/flat", "admin-key"), 403, "outside"),
        (load("x", "link", "admin-key"), 403, "outside"),
        (load("x", "missing", "admin-key"), 400, "missing"),
        (load("a b", "flat", "admin-key"), 400, "not a prefix name"),
        (load("<img src=x onerror=alert(1)>", "flat", "admin-key"), 400, "not a prefix name"),
        (load(&"n".repeat(65), "flat", "admin-key"), 400, "not a prefix name"),
        (load("base", "flat", "admin-key"), 400, "base"),
        (call("DELETE", "/v1/prefixes/ok", "file-key", ""), 403, "admin key"),
        (call("GET", "/metrics", "wrong", ""), 401, "API key"),
        (call("GET", "/v1/models", "wrong", ""), 401, "API key"),
    ];
    for ((got, text), status, needle) in cases {
        assert_eq!(got, status, "{text}");
        assert!(text.contains(needle), "`{needle}` not in {text}");
    }
    assert_eq!(call("GET", "/metrics", "file-key", "").0, 200);
    assert_eq!(call("GET", "/health", "", "").0, 200);
    let (status, text) = post_with(&server, "file-key", r#"{"model": "ok", "prompt": [5, 6], "max_tokens": 2, "temperature": 0}"#);
    assert_eq!(status, 200, "{text}");
    assert_eq!(call("DELETE", "/v1/prefixes/ok", "admin-key", "").0, 200);

    // A folder that is not a plain name stops the start, naming it.
    let bad = scratch("serve-bad-name");
    std::fs::create_dir_all(bad.join("has space")).unwrap();
    let model = fixtures().join("gpt2-a");
    let output = prefix_tune(&["serve", "--model", model.to_str().unwrap(), "--prefixes", bad.to_str().unwrap(), "--bind", "127.0.0.1:0"]);
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && message.contains("has space") && message.trim().lines().count() == 1, "{message}");
}

fn post_with(server: &Server, key: &str, body: &str) -> (u16, String) {
    answer(ureq::post(&format!("{}/v1/completions", server.url)).set("Authorization", &format!("Bearer {key}")).send_string(body))
}

/// Prefixes are listed at start and read on first use; past `--max-resident-prefixes` the least
/// recently used is dropped and read again when asked for, with the same answers.
#[test]
fn prefixes_are_read_on_first_use_and_the_least_recently_used_evicted() {
    let server = start(&["--max-resident-prefixes", "1"]);
    let metric = |name: &str| -> u64 {
        let text = answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call()).1;
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("{name} not in {text}")).parse().unwrap()
    };
    assert_eq!((metric("prefix_tune_prefixes_known"), metric("prefix_tune_prefixes_resident")), (2, 0), "listed, not read");
    let ask = |model: &str| {
        let (status, text) = post(&server, "/v1/completions", &serde_json::json!({ "model": model, "prompt": [5, 6, 7], "max_tokens": 6, "temperature": 0, "return_token_ids": true }).to_string());
        assert_eq!(status, 200, "{text}");
        json(&text)["choices"][0]["token_ids"].clone()
    };
    let answers: Vec<_> = ["flat", "mlp", "flat", "flat", "mlp"].iter().map(|m| ask(m)).collect();
    assert_eq!(answers[0], answers[2], "flat read again after its eviction answers the same");
    assert_eq!(answers[1], answers[4]);
    assert_ne!(answers[0], answers[1], "two prefixes, two answers");
    assert_eq!(metric("prefix_tune_prefix_cache_misses_total"), 4);
    assert_eq!(metric("prefix_tune_prefix_cache_hits_total"), 1);
    assert_eq!(metric("prefix_tune_prefix_cache_evictions_total"), 3);
    assert_eq!(metric("prefix_tune_prefixes_resident"), 1);
}

/// `logprobs`: each greedy token's log-probability is the model's, as teacher-forced scoring
/// (`score`, another code path) gives it; the alternatives are the best, best first; streamed
/// chunks carry the same numbers with their text offsets.
#[test]
fn logprobs_are_the_models_and_stream_with_their_offsets() {
    let server = start(&[]);
    let prompt = [5u32, 6, 7];
    let body = serde_json::json!({ "model": "flat", "prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 3, "return_token_ids": true });
    let (status, text) = post(&server, "/v1/completions", &body.to_string());
    assert_eq!(status, 200, "{text}");
    let choice = &json(&text)["choices"][0];
    let ids: Vec<u32> = choice["token_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let logprobs = &choice["logprobs"];
    let token_logprobs: Vec<f64> = logprobs["token_logprobs"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(token_logprobs.len(), ids.len());
    for (step, top) in logprobs["top_logprobs"].as_array().unwrap().iter().enumerate() {
        let mut values: Vec<f64> = top.as_object().unwrap().values().map(|v| v.as_f64().unwrap()).collect();
        values.sort_by(|a, b| b.total_cmp(a));
        assert!(!values.is_empty() && values.len() <= 3 && values[0] <= 0.0);
        assert!((values[0] - token_logprobs[step]).abs() < 1e-5, "greedy picks the most likely: {top} vs {}", token_logprobs[step]);
    }
    // The same tokens scored teacher-forced: their summed NLL is minus the summed logprobs.
    let dir = scratch("serve-logprobs");
    let data = dir.join("generated.jsonl");
    let input: Vec<u32> = prompt.iter().chain(&ids).copied().collect();
    let labels: Vec<i64> = prompt.iter().map(|_| -100).chain(ids.iter().map(|&i| i as i64)).collect();
    std::fs::write(&data, serde_json::json!({ "input_ids": input, "labels": labels }).to_string() + "\n").unwrap();
    let model = fixtures().join("gpt2-a");
    let adapter = fixtures().join("peft/flat/adapter");
    let scored = prefix_tune(&["score", "--model", model.to_str().unwrap(), "--prefix", adapter.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json", "--backend", "flex"]);
    let nll = stdout_lines(&scored)[0]["nll"].as_f64().unwrap();
    let sum: f64 = token_logprobs.iter().sum();
    assert!((sum + nll).abs() < 1e-3 * nll.abs().max(1.0), "served {sum}, scored −{nll}");

    // Streamed: one step per chunk, the same values, offsets that count the text before.
    let streamed = serde_json::json!({ "model": "flat", "prompt": prompt, "max_tokens": 5, "temperature": 0, "logprobs": 3, "stream": true });
    let response = ureq::post(&format!("{}/v1/completions", server.url)).set("Authorization", &format!("Bearer {KEY}")).send_string(&streamed.to_string()).unwrap();
    let (mut values, mut offsets, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for line in BufReader::new(response.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ").filter(|d| d.starts_with('{')) else { continue };
        let chunk = json(data);
        let object = &chunk["choices"][0]["logprobs"];
        if object.is_null() {
            continue;
        }
        values.push(object["token_logprobs"][0].as_f64().unwrap());
        offsets.push(object["text_offset"][0].as_u64().unwrap() as usize);
        tokens.push(object["tokens"][0].as_str().unwrap().to_string());
    }
    assert_eq!(values.len(), token_logprobs.len());
    for (a, b) in values.iter().zip(&token_logprobs) {
        assert!((a - b).abs() < 1e-6);
    }
    let expected: Vec<usize> = tokens.iter().scan(0, |at, t| { let here = *at; *at += t.chars().count(); Some(here) }).collect();
    assert_eq!(offsets, expected);
    assert_eq!(logprobs["text_offset"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>(), expected);
}

/// 64 concurrent greedy requests, each on its own prefix (P from 1 to 12), decoded in batches
/// past the 16- and 32-row kernel switches: each answer is what `generate` gives alone.
#[test]
fn sixty_four_requests_on_sixty_four_prefixes_answer_as_generate_alone() {
    let dir = scratch("serve-64");
    let mut state = 0x2545_f491_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f32 / 1000.0 - 1.0
    };
    let names: Vec<String> = (0..64).map(|i| format!("p{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        let (p, width) = (1 + i % 12, 2 * 3 * 24);
        let prefix = dir.join(name);
        std::fs::create_dir_all(&prefix).unwrap();
        let config = serde_json::json!({ "format": "prefix-tune", "kind": "export", "architecture": "gpt2", "prefix_length": p, "n_layer": 3, "n_head": 4, "head_dim": 6 });
        std::fs::write(prefix.join("prefix_config.json"), config.to_string()).unwrap();
        let values: Vec<f32> = (0..p * width).map(|_| random()).collect();
        prefix_tune_model::weights::save_f32(&prefix.join("prefix.safetensors"), &[("activations".into(), vec![p, width], values)]).unwrap();
    }
    let model = fixtures().join("gpt2-a");
    let cases: Vec<(String, Vec<u64>, Vec<u64>)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let prompt: Vec<u64> = (0..1 + i % 6).map(|k| ((i * 37 + k * 11) % 500) as u64).collect();
            let ids = prompt.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let path = dir.join(name);
            let args = ["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &ids, "--max-new-tokens", "8", "--prefix", path.to_str().unwrap(), "--json", "--backend", "flex"];
            let expected = stdout_lines(&prefix_tune(&args))[0]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).filter(|&id| id != 514).collect();
            (name.clone(), prompt, expected)
        })
        .collect();
    // A slow first step lets the other 63 queue up and join the batch together.
    let server = start_in(&dir, "gpt2-a", &["--api-key", KEY], &["--max-batch", "64", "--throttle-ms", "30"], &[]);
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(name, prompt, expected)| {
                let server = &server;
                scope.spawn(move || {
                    let body = serde_json::json!({ "model": name, "prompt": prompt, "max_tokens": 8, "temperature": 0, "return_token_ids": true });
                    let (status, text) = post(server, "/v1/completions", &body.to_string());
                    assert_eq!(status, 200, "{text}");
                    let ids: Vec<u64> = serde_json::from_value(json(&text)["choices"][0]["token_ids"].clone()).unwrap();
                    assert_eq!(&ids, expected, "{name} {prompt:?}: not what generate gives alone");
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });
    let metrics = answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call()).1;
    let most: usize = metrics.lines().find_map(|l| l.strip_prefix("prefix_tune_batch_size_max ")).unwrap().parse().unwrap();
    assert!(most > 32, "the batch never grew past the 32-row switch: {most} rows at most");
}

/// `--kv-cache-tokens` bounds the keys and values the batch holds: a request joins only when
/// its prefix, prompt and max_tokens fit beside what the running ones may still take, waits
/// until then, and answers as `generate` alone; one that can never fit is a 400 naming the flag.
#[test]
fn a_request_waits_until_its_tokens_fit_in_the_kv_cache() {
    // 4 + 12 = 16 tokens each (no prefix): one fits in 30, two do not.
    let server = start(&["--kv-cache-tokens", "30", "--throttle-ms", "5"]);
    let prompts: Vec<Vec<u64>> = (0..4).map(|i| (0..4).map(|k| (i * 53 + k * 7 + 3) as u64).collect()).collect();
    std::thread::scope(|scope| {
        for prompt in &prompts {
            let server = &server;
            scope.spawn(move || {
                let body = serde_json::json!({ "model": "base", "prompt": prompt, "max_tokens": 12, "temperature": 0, "return_token_ids": true });
                let (status, text) = post(server, "/v1/completions", &body.to_string());
                assert_eq!(status, 200, "{text}");
                let ids: Vec<u64> = serde_json::from_value(json(&text)["choices"][0]["token_ids"].clone()).unwrap();
                assert_eq!(ids, alone(prompt, None, 12), "{prompt:?}: not what generate gives alone");
            });
        }
    });
    let metric = |name: &str| -> usize {
        let text = answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call()).1;
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in {text}")).parse().unwrap()
    };
    assert_eq!(metric("prefix_tune_batch_size_max"), 1, "two requests of 16 tokens ran together in a cache of 30");
    assert_eq!(metric("prefix_tune_kv_cache_tokens_max"), 30);
    // Every slot is free again once the batch is empty.
    let start = std::time::Instant::now();
    while metric("prefix_tune_kv_cache_tokens") != 0 {
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "KV slots still held after every request ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Refused before anything streams.
    for stream in [false, true] {
        let body = serde_json::json!({ "model": "base", "prompt": prompts[0], "max_tokens": 27, "temperature": 0, "stream": stream });
        let (status, text) = post(&server, "/v1/completions", &body.to_string());
        assert_eq!(status, 400, "stream {stream}: {text}");
        assert!(text.contains("31 tokens") && text.contains("--kv-cache-tokens"), "{text}");
    }
}

/// `n` choices, each sampled with its own seed (the request's plus its index), so each equals the
/// one-choice request with that seed; `echo` puts the prompt's text in front, streamed first.
#[test]
fn n_choices_have_their_own_seeds_and_echo_returns_the_prompt() {
    let server = start_in(&scratch("serve-n"), "gpt2-b", &["--api-key", KEY], &[], &[]);
    let request = |n: u32, seed: u64, echo: bool| {
        let body = serde_json::json!({ "model": "base", "prompt": " name : The Vaults", "max_tokens": 6, "temperature": 1.0, "seed": seed, "n": n, "echo": echo, "return_token_ids": true });
        let (status, text) = post(&server, "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{text}");
        json(&text)
    };
    let three = request(3, 5, false);
    let choices = three["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2]);
    for (i, choice) in choices.iter().enumerate() {
        let alone = request(1, 5 + i as u64, false);
        assert_eq!(choice["token_ids"], alone["choices"][0]["token_ids"], "choice {i} is the seed {} sample", 5 + i);
        assert_eq!(choice["text"], alone["choices"][0]["text"]);
    }
    assert_ne!(choices[0]["token_ids"], choices[1]["token_ids"], "two seeds, two samples");
    let completion: u64 = choices.iter().map(|c| c["token_ids"].as_array().unwrap().len() as u64).sum();
    assert_eq!(three["usage"]["completion_tokens"].as_u64().unwrap(), completion);

    let echoed = request(1, 5, true);
    let text = echoed["choices"][0]["text"].as_str().unwrap();
    assert_eq!(text, format!(" name : The Vaults{}", choices[0]["text"].as_str().unwrap()));
    // Streamed: the prompt's text first, then the same tokens, then [DONE].
    let body = serde_json::json!({ "model": "base", "prompt": " name : The Vaults", "max_tokens": 6, "temperature": 1.0, "seed": 5, "n": 2, "echo": true, "stream": true });
    let response = ureq::post(&format!("{}/v1/completions", server.url)).set("Authorization", &format!("Bearer {KEY}")).send_string(&body.to_string()).unwrap();
    let data: Vec<String> = BufReader::new(response.into_reader()).lines().map(Result::unwrap).filter_map(|l| l.strip_prefix("data: ").map(String::from)).collect();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut texts = [String::new(), String::new()];
    for chunk in data.iter().filter(|d| d.starts_with('{')) {
        let choice = &json(chunk)["choices"][0];
        texts[choice["index"].as_u64().unwrap() as usize].push_str(choice["text"].as_str().unwrap());
    }
    assert_eq!(texts[0], text);
    assert_eq!(texts[1], format!(" name : The Vaults{}", choices[1]["text"].as_str().unwrap()));
    let refused = post(&server, "/v1/completions", r#"{"model": "base", "prompt": "x", "echo": true, "logprobs": 1}"#);
    assert!(refused.0 == 400 && refused.1.contains("echo with logprobs"), "{}", refused.1);
    let refused = post(&server, "/v1/completions", r#"{"model": "base", "prompt": "x", "n": 2, "best_of": 3}"#);
    assert!(refused.0 == 400 && refused.1.contains("best_of"), "{}", refused.1);
}

/// vLLM's beam-search fields: the answer is `generate --num-beams`'s, with its length penalty
/// and early stopping, while greedy requests keep decoding in the batch around it.
#[test]
fn beam_search_requests_equal_generate_num_beams() {
    let server = start(&["--throttle-ms", "2"]);
    let model = fixtures().join("gpt2-a");
    let adapter = fixtures().join("peft/mlp/adapter");
    let cases = [(vec![5u64, 6, 7], 3, 0.7, serde_json::json!(true), "true"), (vec![40, 41], 4, 1.3, serde_json::json!("never"), "never"), (vec![9], 2, 1.0, serde_json::json!(false), "false")];
    std::thread::scope(|scope| {
        // A greedy request decoding in the batch all along.
        let greedy = scope.spawn(|| {
            let body = serde_json::json!({ "model": "flat", "prompt": [1, 2], "max_tokens": 20, "temperature": 0, "return_token_ids": true });
            let (status, text) = post(&server, "/v1/completions", &body.to_string());
            assert_eq!(status, 200, "{text}");
            serde_json::from_value::<Vec<u64>>(json(&text)["choices"][0]["token_ids"].clone()).unwrap()
        });
        for (prompt, beams, penalty, early, flag) in &cases {
            let ids = prompt.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            let (beams_text, penalty_text) = (beams.to_string(), penalty.to_string());
            let args = ["generate", "--model", model.to_str().unwrap(), "--prompt-ids", &ids, "--max-new-tokens", "10", "--num-beams", &beams_text, "--length-penalty", &penalty_text, "--early-stopping", flag, "--prefix", adapter.to_str().unwrap(), "--json", "--backend", "flex"];
            let expected: Vec<u64> = stdout_lines(&prefix_tune(&args))[0]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).filter(|&id| id != 514).collect();
            let body = serde_json::json!({ "model": "mlp", "prompt": prompt, "max_tokens": 10, "use_beam_search": true, "best_of": beams, "length_penalty": penalty, "early_stopping": early, "temperature": 0, "return_token_ids": true });
            let (status, text) = post(&server, "/v1/completions", &body.to_string());
            assert_eq!(status, 200, "{text}");
            let got: Vec<u64> = serde_json::from_value(json(&text)["choices"][0]["token_ids"].clone()).unwrap();
            assert_eq!(got, expected, "beams {beams}, length penalty {penalty}, early stopping {flag}");
        }
        let alone = alone(&[1, 2], Some("flat"), 20);
        assert_eq!(greedy.join().unwrap(), alone, "the greedy request beside the searches");
    });
    for (body, needle) in [
        (r#"{"model": "base", "prompt": [1], "use_beam_search": true}"#, "best_of"),
        (r#"{"model": "base", "prompt": [1], "use_beam_search": true, "best_of": 3, "temperature": 0.8}"#, "temperature"),
        (r#"{"model": "base", "prompt": [1], "use_beam_search": true, "best_of": 3, "n": 2}"#, "n"),
        (r#"{"model": "base", "prompt": [1], "length_penalty": 0.8}"#, "use_beam_search"),
        (r#"{"model": "base", "prompt": [1], "use_beam_search": true, "best_of": 3, "early_stopping": "sometimes"}"#, "early_stopping"),
    ] {
        let (status, text) = post(&server, "/v1/completions", body);
        assert!(status == 400 && text.contains(needle), "{body}: {status} {text}");
    }
}

/// BART served: the prompt is the document; its three-prefix files and PEFT adapters are
/// prefixes; greedy, sampled and beam answers equal `generate`'s, requests on different
/// prefixes concurrently.
#[test]
fn bart_serves_its_three_prefix_sets_and_peft_adapters_as_generate() {
    let root = scratch("serve-bart");
    super::bart::three_prefix_export(&root.join("three"));
    let peft = root.join("peft");
    std::fs::create_dir_all(&peft).unwrap();
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixtures().join("bart-a/peft/adapter").join(file), peft.join(file)).unwrap();
    }
    // A slow step lets requests queue up and join the batch together.
    let server = spawn("bart-a", &root, &["--api-key", KEY], &["--throttle-ms", "20"], &[]);
    let model = fixtures().join("bart-a");

    let prompts = super::bart::prompt_ids();
    // (served model, generate's --prefix, extra request fields, generate's flags)
    let sampled = (serde_json::json!({ "temperature": 0.9, "seed": 4 }), vec!["--do-sample", "--temperature", "0.9", "--seed", "4"]);
    let beam = (serde_json::json!({ "use_beam_search": true, "best_of": 3, "length_penalty": 0.8, "temperature": 0 }), vec!["--num-beams", "3", "--length-penalty", "0.8"]);
    let greedy = (serde_json::json!({ "temperature": 0 }), vec![]);
    let mut cases = Vec::new();
    for (name, prefix) in [("base", None), ("three", Some(root.join("three"))), ("peft", Some(peft.clone()))] {
        for (i, (fields, flags)) in [&greedy, &sampled, &beam].iter().enumerate() {
            let prompt = &prompts[i % prompts.len()];
            let mut args = vec!["generate", "--model", model.to_str().unwrap(), "--prompt-ids", prompt, "--max-new-tokens", "6", "--num-beams", "1", "--json", "--backend", "flex"];
            args.extend(flags.iter().copied());
            if let Some(prefix) = &prefix {
                args.extend(["--prefix", prefix.to_str().unwrap()]);
            }
            let expected: Vec<u64> = stdout_lines(&prefix_tune(&args))[0]["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).filter(|&id| id != 2).collect();
            let ids: Vec<u64> = prompt.split(',').map(|t| t.parse().unwrap()).collect();
            let mut body = serde_json::json!({ "model": name, "prompt": ids, "max_tokens": 6, "return_token_ids": true });
            body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
            cases.push((body, expected));
        }
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(body, expected)| {
                let server = &server;
                scope.spawn(move || {
                    let (status, text) = post(server, "/v1/completions", &body.to_string());
                    assert_eq!(status, 200, "{text}");
                    let got: Vec<u64> = serde_json::from_value(json(&text)["choices"][0]["token_ids"].clone()).unwrap();
                    assert_eq!(&got, expected, "{body}: not what generate gives");
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });
    let metrics = answer(ureq::get(&format!("{}/metrics", server.url)).set("Authorization", &format!("Bearer {KEY}")).call()).1;
    let most: usize = metrics.lines().find_map(|l| l.strip_prefix("prefix_tune_batch_size_max ")).unwrap().parse().unwrap();
    assert!(most >= 3, "BART requests on different prefixes never decoded together: {most} rows at most");

    // Logprobs and penalties, in the batch: the checkpoint forces `<s>` (0) first, so its
    // log-probability is 0; logit_bias then forces token 7 until the forced `</s>` at the last.
    let body = serde_json::json!({ "model": "three", "prompt": [5, 6, 9], "max_tokens": 4, "temperature": 0, "logprobs": 2, "logit_bias": { "7": 100 }, "return_token_ids": true });
    let (status, text) = post(&server, "/v1/completions", &body.to_string());
    assert_eq!(status, 200, "{text}");
    let choice = &json(&text)["choices"][0];
    let ids: Vec<u64> = serde_json::from_value(choice["token_ids"].clone()).unwrap();
    assert_eq!(ids, [0, 7, 7], "{text}");
    let logprobs: Vec<f64> = serde_json::from_value(choice["logprobs"]["token_logprobs"].clone()).unwrap();
    assert_eq!(logprobs.len(), 3);
    assert_eq!(logprobs[0], 0.0, "a forced token is certain");
    assert!(logprobs[1..].iter().all(|&l| l > -1e-3 && l <= 0.0), "a +100 bias makes the token all but certain: {logprobs:?}");
    assert_eq!(choice["finish_reason"], "stop", "the checkpoint's forced </s> ends it at max_tokens");
}
/// The Python that drives headless Chromium (Playwright; Debian's chromium is the browser):
/// `$PREFIX_TUNE_PLAYGROUND_PYTHON` (CI sets it after installing both), else `python3` where it
/// has Playwright and `/usr/bin/chromium` exists; `None` where neither.
fn playground_python() -> Option<String> {
    if let Ok(python) = std::env::var("PREFIX_TUNE_PLAYGROUND_PYTHON") {
        return Some(python);
    }
    let has_playwright = Command::new("python3").args(["-c", "import playwright"]).status().is_ok_and(|s| s.success());
    (has_playwright && std::path::Path::new("/usr/bin/chromium").exists()).then(|| "python3".to_string())
}

/// The playground in headless Chromium: a model whose answer is markup
/// (tests/fixtures/gpt2-script answers "Q" with an `<img onerror>` and a `<b>`) shows it as text —
/// nothing parsed out of it, no script run — and the prefix list shows names as text.
#[test]
fn the_playground_shows_model_text_as_text() {
    let Some(python) = playground_python() else {
        eprintln!("skipped: no Chromium with Playwright here (CI installs both; see .ci/run)");
        return;
    };
    let expected = reference("gpt2-script")["text"].as_str().unwrap().to_string();
    assert!(expected.contains("<img") && expected.contains("onerror"));
    let server = spawn("gpt2-script", &scratch("serve-playground"), &[], &[], &[]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/playground_check.py");
    let run = Command::new(&python)
        .arg(&script)
        .arg(format!("{}/", server.url))
        .args(["--prompt", "Q", "--max", "30", "--expect-text", &expected])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let printed = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the playground check failed:\n{printed}");
    assert!(printed.contains("finish: stop"), "{printed}");
}

/// A prefix whose keys and values are NaN makes every score NaN: a sampled request on it ends
/// with an error naming why (HF's sampler refuses such a row too), as does a beam search, a
/// greedy one takes token 0 (as HF's argmax does), and none leaves its KV-cache rows behind:
/// requests after them, on the base model, answer as `generate` alone. The error is the
/// server's (500, `server_error`), not the request's: the request asked nothing wrong.
#[test]
fn a_prefix_with_nan_scores_fails_only_its_own_sampled_requests() {
    let prefixes = scratch("serve-prefixes-nan");
    let tensors = flat_adapter_config(&prefixes.join("nan"));
    prefix_tune_model::weights::save_f32(&tensors, &[("prompt_embeddings".into(), vec![5, 144], vec![f32::NAN; 720])]).unwrap();
    let server = start_in(&prefixes, "gpt2-a", &["--api-key", KEY], &[], &[]);
    let prompt = [5u64, 6, 7];
    let sampled = r#"{"model": "nan", "prompt": [5, 6, 7], "max_tokens": 3, "temperature": 1, "seed": 2}"#;
    let beam = r#"{"model": "nan", "prompt": [5, 6, 7], "max_tokens": 3, "use_beam_search": true, "best_of": 3, "temperature": 0}"#;
    let why = [("sampling: no token has a finite, positive probability", sampled), ("beam search: prompt 0 ended with no hypothesis of finite score", beam)];
    for (message, body) in why {
        let (status, text) = post(&server, "/v1/completions", body);
        assert_eq!((status, json(&text)["error"]["type"].as_str()), (500, Some("server_error")), "{text}");
        assert!(json(&text)["error"]["message"].as_str().unwrap().starts_with(message), "{text}");
    }
    for body in [sampled.to_string(), sampled.replace('}', r#", "stream": true}"#), beam.to_string()] {
        let (status, text) = post(&server, "/v1/completions", &body);
        assert!(text.contains("no token has a finite, positive probability") || text.contains("no hypothesis of finite score"), "{status}: {text}");
        assert!(text.contains(r#""type":"server_error""#), "{status}: {text}");
        let (status, text) = post(&server, "/v1/completions", r#"{"model": "base", "prompt": [5, 6, 7], "max_tokens": 4, "temperature": 0, "return_token_ids": true}"#);
        assert_eq!(status, 200, "{text}");
        assert_eq!(json(&text)["choices"][0]["token_ids"], serde_json::json!(alone(&prompt, None, 4)), "{text}");
    }
    let (status, text) = post(&server, "/v1/completions", r#"{"model": "nan", "prompt": [5, 6, 7], "max_tokens": 3, "temperature": 0, "return_token_ids": true}"#);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["choices"][0]["token_ids"], serde_json::json!([0, 0, 0]), "{text}");
}
