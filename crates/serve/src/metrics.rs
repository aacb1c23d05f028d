//! `GET /metrics`: Prometheus text — requests, tokens, queue depth, batch size, per-prefix
//! counts and a latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Default)]
pub struct Metrics {
    requests: AtomicU64,
    rejected: AtomicU64,
    tokens: AtomicU64,
    disconnects: AtomicU64,
    queue: AtomicI64,
    batch: AtomicU64,
    batch_max: AtomicU64,
    kv_used: AtomicU64,
    kv_limit: AtomicU64,
    /// Per prefix: finished requests.
    per_prefix: Mutex<BTreeMap<String, u64>>,
    /// Counts per bucket (cumulative at render), then the sum of seconds and the count.
    latency: Mutex<([u64; BUCKETS.len()], f64, u64)>,
}

impl Metrics {
    pub fn accepted(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.queued(1);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn queued(&self, delta: i64) {
        self.queue.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn queue_depth(&self) -> i64 {
        self.queue.load(Ordering::Relaxed)
    }

    pub fn tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub fn batch_size(&self, rows: usize) {
        self.batch.store(rows as u64, Ordering::Relaxed);
        self.batch_max.fetch_max(rows as u64, Ordering::Relaxed);
    }

    /// Tokens held in the KV cache, and the most it may hold.
    pub fn kv_cache(&self, used: usize, limit: usize) {
        self.kv_used.store(used as u64, Ordering::Relaxed);
        self.kv_limit.store(limit as u64, Ordering::Relaxed);
    }

    pub fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finished(&self, prefix: &str, latency: Duration) {
        *self.per_prefix.lock().expect("metrics lock").entry(prefix.to_string()).or_default() += 1;
        let seconds = latency.as_secs_f64();
        let mut histogram = self.latency.lock().expect("metrics lock");
        if let Some(bucket) = BUCKETS.iter().position(|&b| seconds <= b) {
            histogram.0[bucket] += 1;
        }
        histogram.1 += seconds;
        histogram.2 += 1;
    }

    /// The Prometheus exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(&mut out, "prefix_tune_requests_total", "Completion requests accepted.", self.requests.load(Ordering::Relaxed));
        counter(&mut out, "prefix_tune_rejected_total", "Requests refused because the queue was full.", self.rejected.load(Ordering::Relaxed));
        counter(&mut out, "prefix_tune_generated_tokens_total", "Tokens generated.", self.tokens.load(Ordering::Relaxed));
        counter(&mut out, "prefix_tune_disconnects_total", "Requests whose client left before the end.", self.disconnects.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP prefix_tune_queue_depth Requests waiting to join the batch.\n# TYPE prefix_tune_queue_depth gauge\nprefix_tune_queue_depth {}", self.queue_depth().max(0));
        let _ = writeln!(out, "# HELP prefix_tune_batch_size Rows in the running batch.\n# TYPE prefix_tune_batch_size gauge\nprefix_tune_batch_size {}", self.batch.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP prefix_tune_batch_size_max The most rows decoded together since start.\n# TYPE prefix_tune_batch_size_max gauge\nprefix_tune_batch_size_max {}", self.batch_max.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP prefix_tune_kv_cache_tokens Tokens whose keys and values the running batch holds.\n# TYPE prefix_tune_kv_cache_tokens gauge\nprefix_tune_kv_cache_tokens {}", self.kv_used.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP prefix_tune_kv_cache_tokens_max Tokens the KV cache may hold (--kv-cache-tokens).\n# TYPE prefix_tune_kv_cache_tokens_max gauge\nprefix_tune_kv_cache_tokens_max {}", self.kv_limit.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP prefix_tune_prefix_requests_total Finished requests per prefix.\n# TYPE prefix_tune_prefix_requests_total counter");
        for (prefix, count) in self.per_prefix.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "prefix_tune_prefix_requests_total{{prefix=\"{}\"}} {count}", prefix.replace('"', "'"));
        }
        let (buckets, sum, count) = *self.latency.lock().expect("metrics lock");
        let _ = writeln!(out, "# HELP prefix_tune_request_seconds Time from arrival to the last token.\n# TYPE prefix_tune_request_seconds histogram");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(out, "prefix_tune_request_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "prefix_tune_request_seconds_bucket{{le=\"+Inf\"}} {count}\nprefix_tune_request_seconds_sum {sum}\nprefix_tune_request_seconds_count {count}");
        out
    }
}
