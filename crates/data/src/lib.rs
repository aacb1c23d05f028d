//! Data for Prefix-Tuning (Li & Liang 2021): loaders for the official E2E, WebNLG 2017, DART and
//! XSUM files plus a generic JSONL format, the paper's table linearizations, grouping of references
//! per distinct input (the unit of evaluation) and GPT-2 training examples with masked labels.
//!
//! This crate deliberately has no tensor/Burn dependency: it produces strings and token ids.

mod csv;
pub mod dart;
pub mod e2e;
pub mod e2e_split;
pub mod error;
pub mod gpt2;
pub mod jsonl;
pub mod task;
pub mod tokenizer;
pub mod webnlg;
pub mod xsum;

pub use error::DataError;
pub use gpt2::{Example, Gpt2Encoder, END_OF_TEXT, IGNORE_INDEX};
pub use tokenizer::Tokenizer;
pub use task::{load, LoadConfig, Task};

use std::collections::HashMap;
use std::path::PathBuf;

/// Extra facts about a pair that evaluation splits on (WebNLG categories); empty elsewhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// WebNLG/DART category (e.g. "Airport"), when the file has one.
    pub category: Option<String>,
    /// WebNLG: whether the category is one of the 10 seen in training; `None` for other tasks.
    pub seen: Option<bool>,
    /// Entry id in the source file (WebNLG `eid`, XSUM `id`), when there is one.
    pub id: Option<String>,
    /// 1-based line of the source file the pair came from (line-based formats: CSV, JSONL), so
    /// that a problem found later names where to look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

/// One (linearized source, target text) pair — the unit of training.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pair {
    pub source: String,
    /// Target text as the model is trained on it.
    pub target: String,
    pub meta: Meta,
}

/// One distinct input with all its references — the unit of evaluation. Predictions files have
/// one line per `Group`, in this order (first appearance of the source in the file).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub source: String,
    pub references: Vec<String>,
    pub meta: Meta,
}

/// A loaded split: all pairs in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub task: Task,
    /// The file the pairs came from (first file when a directory was loaded).
    pub path: PathBuf,
    pub pairs: Vec<Pair>,
}

impl Dataset {
    /// References grouped per distinct source, in order of first appearance (as the paper's
    /// decoding script and e2e-metrics group them).
    pub fn groups(&self) -> Vec<Group> {
        group_pairs(&self.pairs)
    }
}

/// Group pairs by identical source string, keeping the order of first appearance.
pub fn group_pairs(pairs: &[Pair]) -> Vec<Group> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    for pair in pairs {
        match index.get(pair.source.as_str()) {
            Some(&i) => groups[i].references.push(pair.target.clone()),
            None => {
                index.insert(pair.source.as_str(), groups.len());
                groups.push(Group {
                    source: pair.source.clone(),
                    references: vec![pair.target.clone()],
                    meta: pair.meta.clone(),
                });
            }
        }
    }
    groups
}
