//! E2E NLG Challenge CSVs (`mr,ref`, CRLF) and the paper's MR linearization:
//! `name[The Vaults], eatType[pub], priceRange[more than £30]` →
//! `name : The Vaults | Type : pub | price : more than £ 30`.

use crate::e2e_split::paper_split;
use crate::error::DataError;
use crate::{Meta, Pair};
use std::path::Path;

const TASK: &str = "e2e";

/// How targets are written. The paper trained on, and scored against, punctuation-split text
/// (its `src1_*.txt` files); the official challenge scorer is meant for the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum TargetStyle {
    /// Split like the paper's files (`family - friendly`, `it 's`). Default: reproduces the paper.
    #[default]
    #[serde(rename = "paper", alias = "PaperSplit")]
    #[value(name = "paper")]
    PaperSplit,
    /// The CSV text as is (whitespace kept): what the official E2E scorer expects.
    #[serde(rename = "original", alias = "Original")]
    Original,
}

/// E2E loading options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct E2eConfig {
    pub target_style: TargetStyle,
}

/// Slot names as the paper writes them; other slots keep their CSV name.
pub fn rename_slot(slot: &str) -> &str {
    match slot {
        "eatType" => "Type",
        "priceRange" => "price",
        "familyFriendly" => "family friendly",
        other => other,
    }
}

/// What is wrong with an E2E meaning representation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MrError {
    #[error("MR slot without '[': {0:?}")]
    NoOpen(String),
    #[error("MR slot without ']': {0:?}")]
    NoClose(String),
    #[error("MR value without slot name: {0:?}")]
    NoSlot(String),
    #[error("empty MR")]
    Empty,
}

/// Parse an MR `slot[value], slot[value]` into (slot, value) pairs in file order.
pub fn parse_mr(mr: &str) -> Result<Vec<(String, String)>, MrError> {
    let mut slots = Vec::new();
    let mut rest = mr.trim();
    while !rest.is_empty() {
        let open = rest.find('[').ok_or_else(|| MrError::NoOpen(rest.to_string()))?;
        let close = rest[open..]
            .find(']')
            .map(|i| i + open)
            .ok_or_else(|| MrError::NoClose(rest.to_string()))?;
        let slot = rest[..open].trim();
        if slot.is_empty() {
            return Err(MrError::NoSlot(rest.to_string()));
        }
        slots.push((slot.to_string(), rest[open + 1..close].to_string()));
        rest = rest[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    if slots.is_empty() {
        return Err(MrError::Empty);
    }
    Ok(slots)
}

/// The paper's source string for one MR: `slot : value | slot : value`, slots renamed and values
/// punctuation-split.
pub fn linearize_mr(mr: &str) -> Result<String, MrError> {
    let slots = parse_mr(mr)?;
    let parts: Vec<String> = slots
        .iter()
        .map(|(slot, value)| format!("{} : {}", rename_slot(slot), paper_split(value)))
        .collect();
    Ok(parts.join(" | "))
}

/// Read an official E2E CSV (header `mr,ref`; extra columns ignored) into pairs in file order.
pub fn load_csv(path: &Path, config: &E2eConfig) -> Result<Vec<Pair>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(TASK, path, e))?;
    parse_csv(path, &bytes, config)
}

/// Parse E2E CSV bytes; `path` is only used in error messages.
pub fn parse_csv(path: &Path, bytes: &[u8], config: &E2eConfig) -> Result<Vec<Pair>, DataError> {
    let bad = |line: usize, message: String| DataError::BadLine {
        task: TASK,
        file: path.to_path_buf(),
        line,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(1, format!("not UTF-8 ({e})")))?;
    let mut records = crate::csv::records(text).map_err(|(line, message)| bad(line, message))?.into_iter();
    let (_, headers) = records.next().ok_or_else(|| DataError::EmptySplit { task: TASK, file: path.to_path_buf() })?;
    let column = |name: &str| {
        headers.iter().position(|h| h.trim_start_matches('\u{feff}').trim() == name).ok_or_else(|| {
            DataError::MissingColumn { task: TASK, file: path.to_path_buf(), line: 1, column: name.into() }
        })
    };
    let (mr_col, ref_col) = (column("mr")?, column("ref")?);
    let mut pairs = Vec::new();
    for (line, record) in records {
        let missing = |name: &str| DataError::MissingColumn {
            task: TASK,
            file: path.to_path_buf(),
            line,
            column: name.into(),
        };
        let mr = record.get(mr_col).ok_or_else(|| missing("mr"))?;
        let reference = record.get(ref_col).ok_or_else(|| missing("ref"))?;
        let source = linearize_mr(mr).map_err(|m| bad(line, m.to_string()))?;
        let target = match config.target_style {
            TargetStyle::PaperSplit => paper_split(reference),
            TargetStyle::Original => reference.to_string(),
        };
        pairs.push(Pair { source, target, meta: Meta { line: Some(line), ..Meta::default() } });
    }
    if pairs.is_empty() {
        return Err(DataError::EmptySplit { task: TASK, file: path.to_path_buf() });
    }
    Ok(pairs)
}
