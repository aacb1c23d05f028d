//! JSON Lines reading shared by the XSUM and generic loaders: one object per non-blank line,
//! errors carry the 1-based line number.

use crate::error::DataError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Generic `{"source": ..., "target": ...}` line.
#[derive(Debug, Clone, serde::Deserialize)]
struct SourceTarget {
    source: String,
    target: String,
}

/// Parse every non-blank line of `text` as a `T`, returning (line number, value).
pub fn parse_lines<T: DeserializeOwned>(
    task: &'static str,
    path: &Path,
    text: &str,
) -> Result<Vec<(usize, T)>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).map_err(|e| DataError::BadJson {
            task,
            file: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push((i + 1, value));
    }
    Ok(out)
}

/// Read a generic JSONL file of `{"source","target"}` objects into pairs.
pub fn load_file(path: &Path) -> Result<Vec<crate::Pair>, DataError> {
    const TASK: &str = "jsonl";
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(TASK, path, e))?;
    let rows: Vec<(usize, SourceTarget)> = parse_lines(TASK, path, &text)?;
    Ok(rows
        .into_iter()
        .map(|(line, r)| crate::Pair { source: r.source, target: r.target, meta: crate::Meta { line: Some(line), ..Default::default() } })
        .collect())
}
