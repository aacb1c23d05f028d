//! XSUM as JSONL `{document, summary, id}`. The document's line breaks become spaces (the paper's
//! `.source` files hold one document per line); the source is cut to a token budget separately
//! with [`truncate_sources`], since the budget is counted in the model's own tokens.

use crate::error::DataError;
use crate::jsonl::parse_lines;
use crate::{Meta, Pair};
use std::path::Path;

const TASK: &str = "xsum";

#[derive(serde::Deserialize)]
struct Row {
    document: String,
    summary: String,
    #[serde(default)]
    id: Option<String>,
}

/// Cuts a text to at most `max_tokens` tokens of some tokenizer, returning the kept prefix.
pub trait Truncate {
    fn truncate(&self, text: &str, max_tokens: usize) -> String;
}

/// Whitespace tokens: a tokenizer-free budget, handy in tests and for quick looks.
pub struct WhitespaceTruncate;

impl Truncate for WhitespaceTruncate {
    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        text.split_whitespace().take(max_tokens).collect::<Vec<_>>().join(" ")
    }
}

/// Read an XSUM JSONL file into (document, summary) pairs in file order.
pub fn load_file(path: &Path) -> Result<Vec<Pair>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(TASK, path, e))?;
    let rows: Vec<(usize, Row)> = parse_lines(TASK, path, &text)?;
    Ok(rows
        .into_iter()
        .map(|(line, row)| Pair {
            source: row.document.split_whitespace().collect::<Vec<_>>().join(" "),
            target: row.summary.trim().to_string(),
            meta: Meta { id: row.id, line: Some(line), ..Meta::default() },
        })
        .collect())
}

/// Cut every source to `max_tokens` tokens as counted by `truncator`.
pub fn truncate_sources(pairs: &mut [Pair], max_tokens: usize, truncator: &dyn Truncate) {
    for pair in pairs {
        pair.source = truncator.truncate(&pair.source, max_tokens);
    }
}
