//! DART v1.1.1: the JSON release (list of `{tripleset, subtree_was_extended, annotations}`) and
//! the test XML (WebNLG layout). The paper's linearization joins triples with ` | ` (no leading
//! separator, unlike WebNLG) as `subject : property : object`, with the property lowercased.

use crate::error::DataError;
use crate::webnlg::{parse_entries, Triple};
use crate::{Meta, Pair};
use std::path::Path;

const TASK: &str = "dart";

#[derive(serde::Deserialize)]
struct JsonItem {
    tripleset: Vec<Vec<String>>,
    annotations: Vec<JsonAnnotation>,
}

#[derive(serde::Deserialize)]
struct JsonAnnotation {
    #[serde(default)]
    source: Option<String>,
    text: String,
}

/// The paper's DART source: `s : p : o | s : p : o`, property lowercased.
pub fn linearize(triples: &[Triple]) -> String {
    let parts: Vec<String> = triples
        .iter()
        .map(|t| format!("{} : {} : {}", t.subject, t.property.to_lowercase(), t.object))
        .collect();
    parts.join(" | ")
}

/// Read a DART JSON file into pairs, one per annotation, in file order.
pub fn load_json(path: &Path) -> Result<Vec<Pair>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(TASK, path, e))?;
    let items: Vec<JsonItem> = serde_json::from_str(&text).map_err(|e| DataError::BadJson {
        task: TASK,
        file: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let mut pairs = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let mut triples = Vec::new();
        for raw in &item.tripleset {
            if raw.len() != 3 {
                return Err(DataError::BadItem {
                    task: TASK,
                    file: path.to_path_buf(),
                    item: index,
                    message: format!("tripleset entry with {} fields, expected 3", raw.len()),
                });
            }
            triples.push(Triple { subject: raw[0].clone(), property: raw[1].clone(), object: raw[2].clone() });
        }
        let source = linearize(&triples);
        for annotation in item.annotations {
            let meta = Meta { category: annotation.source, seen: None, id: None, line: None };
            pairs.push(Pair { source: source.clone(), target: annotation.text, meta });
        }
    }
    Ok(pairs)
}

/// Read the DART test XML (WebNLG layout; every `<lex>` kept, its comment is the text's origin).
pub fn load_xml(path: &Path) -> Result<Vec<Pair>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(TASK, path, e))?;
    let mut pairs = Vec::new();
    for entry in parse_entries(TASK, path, &text)? {
        let source = linearize(&entry.triples);
        for (comment, lex) in entry.lexicalizations {
            let meta = Meta { category: Some(comment), seen: None, id: Some(entry.eid.clone()), line: None };
            pairs.push(Pair { source: source.clone(), target: lex, meta });
        }
    }
    Ok(pairs)
}
