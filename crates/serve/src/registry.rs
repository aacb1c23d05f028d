//! The prefixes a server knows and the ones resident in memory. Every prefix is known by name
//! from the start (a folder of `--prefixes`) or from `POST /v1/prefixes`; its keys and values are
//! read on first use and kept, the least recently used evicted once `--max-resident-prefixes`
//! are resident, and read again when asked for.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::engine::Served;

/// What a name stands for right now.
pub enum Lookup {
    Resident(Arc<Served>),
    /// Known, not in memory: read it from here, then [`Registry::admit`] it.
    OnDisk(PathBuf),
    Unknown,
}

pub struct Registry {
    /// Resident prefixes at most (`None`: no bound).
    capacity: Option<usize>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    known: BTreeMap<String, PathBuf>,
    /// Each resident prefix with the tick of its last use.
    resident: HashMap<String, (Arc<Served>, u64)>,
    tick: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl Registry {
    pub fn new(capacity: Option<usize>) -> Self {
        Self { capacity: capacity.map(|c| c.max(1)), inner: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("registry lock")
    }

    /// Knows `name` at `path`, without reading it.
    pub fn list(&self, name: String, path: PathBuf) {
        self.lock().known.insert(name, path);
    }

    /// The prefix `name`, counting a hit or a miss.
    pub fn lookup(&self, name: &str) -> Lookup {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((past, used)) = inner.resident.get_mut(name) {
            *used = tick;
            let past = past.clone();
            inner.hits += 1;
            return Lookup::Resident(past);
        }
        match inner.known.get(name).cloned() {
            Some(path) => {
                inner.misses += 1;
                Lookup::OnDisk(path)
            }
            None => Lookup::Unknown,
        }
    }

    /// Keeps `past` resident as `name` (known at `path`), evicting the least recently used
    /// beyond the capacity. Requests in flight keep their own reference to an evicted prefix.
    pub fn admit(&self, name: &str, path: PathBuf, past: Served) -> Arc<Served> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let past = Arc::new(past);
        inner.known.insert(name.to_string(), path);
        inner.resident.insert(name.to_string(), (past.clone(), tick));
        while self.capacity.is_some_and(|c| inner.resident.len() > c) {
            let oldest = inner.resident.iter().min_by_key(|(_, (_, used))| *used).map(|(n, _)| n.clone()).expect("over capacity, so not empty");
            inner.resident.remove(&oldest);
            inner.evictions += 1;
        }
        past
    }

    /// Forgets `name`; whether it was known.
    pub fn remove(&self, name: &str) -> bool {
        let mut inner = self.lock();
        inner.resident.remove(name);
        inner.known.remove(name).is_some()
    }

    /// Every known name, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().known.keys().cloned().collect()
    }

    /// Prometheus lines: resident prefixes, hits, misses and evictions.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP prefix_tune_prefixes_known Prefixes the server can serve.\n# TYPE prefix_tune_prefixes_known gauge\nprefix_tune_prefixes_known {}", inner.known.len());
        let _ = writeln!(out, "# HELP prefix_tune_prefixes_resident Prefixes in memory.\n# TYPE prefix_tune_prefixes_resident gauge\nprefix_tune_prefixes_resident {}", inner.resident.len());
        for (name, help, value) in [
            ("prefix_tune_prefix_cache_hits_total", "Requests whose prefix was in memory.", inner.hits),
            ("prefix_tune_prefix_cache_misses_total", "Requests whose prefix was read from disk.", inner.misses),
            ("prefix_tune_prefix_cache_evictions_total", "Prefixes dropped from memory, least recently used first.", inner.evictions),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in: the registry never looks inside a prefix.
    fn past() -> Served {
        Served::Decoder(prefix_tune_model::Past { layers: Vec::new(), mask: vec![vec![1.0]] })
    }

    #[test]
    fn the_least_recently_used_is_evicted_and_read_again() {
        let registry = Registry::new(Some(2));
        for name in ["a", "b", "c"] {
            registry.list(name.into(), PathBuf::from(name));
        }
        let load = |name: &str| match registry.lookup(name) {
            Lookup::OnDisk(path) => {
                registry.admit(name, path, past());
                "miss"
            }
            Lookup::Resident(_) => "hit",
            Lookup::Unknown => "unknown",
        };
        assert_eq!([load("a"), load("b"), load("a"), load("c"), load("a"), load("b"), load("x")], ["miss", "miss", "hit", "miss", "hit", "miss", "unknown"]);
        let metrics = registry.render();
        for line in ["prefix_tune_prefixes_known 3", "prefix_tune_prefixes_resident 2", "hits_total 2", "misses_total 4", "evictions_total 2"] {
            assert!(metrics.contains(line), "{line} not in {metrics}");
        }
        assert!(registry.remove("a") && !registry.remove("a"));
        assert_eq!(registry.names(), ["b", "c"]);
    }
}
