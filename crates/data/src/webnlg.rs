//! WebNLG Challenge 2017 XML (`benchmark/entries/entry`) and the paper's linearization: every
//! triple written as ` | subject : property : object` (note the leading ` | `, also before the
//! first triple), entity names kept exactly as in the file (underscores and quotes included), as
//! the paper's training code does. Only lexicalizations with `comment="good"` are kept.

use crate::error::DataError;
use crate::{Meta, Pair};
use std::path::Path;

const TASK: &str = "webnlg";

/// The 10 categories of the training data; test entries of any other category are "unseen".
pub const SEEN_CATEGORIES: [&str; 10] = [
    "Airport",
    "Astronaut",
    "Building",
    "City",
    "ComicsCharacter",
    "Food",
    "Monument",
    "SportsTeam",
    "University",
    "WrittenWork",
];

/// One `subject | property | object` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triple {
    pub subject: String,
    pub property: String,
    pub object: String,
}

/// One `<entry>` of a WebNLG-style XML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub category: String,
    pub eid: String,
    pub triples: Vec<Triple>,
    /// (comment, text) of each `<lex>`.
    pub lexicalizations: Vec<(String, String)>,
}

/// Whether a category is one of the training categories.
pub fn is_seen_category(category: &str) -> bool {
    SEEN_CATEGORIES.contains(&category)
}

/// The paper's WebNLG source: ` | s : p : o` for each triple.
pub fn linearize(triples: &[Triple]) -> String {
    triples.iter().map(|t| format!(" | {} : {} : {}", t.subject, t.property, t.object)).collect()
}

/// Parse the entries of one WebNLG-layout XML file (`task` names the data set in errors).
pub fn parse_entries(task: &'static str, path: &Path, text: &str) -> Result<Vec<Entry>, DataError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| DataError::BadXml {
        task,
        file: path.to_path_buf(),
        line: e.pos().row as usize,
        message: e.to_string(),
    })?;
    let line_of = |node: roxmltree::Node| doc.text_pos_at(node.range().start).row as usize;
    let mut entries = Vec::new();
    for entry in doc.descendants().filter(|n| n.has_tag_name("entry")) {
        let missing = |field: &str| DataError::BadLine {
            task,
            file: path.to_path_buf(),
            line: line_of(entry),
            message: format!("entry without {field}"),
        };
        let category = entry.attribute("category").ok_or_else(|| missing("category"))?.to_string();
        let eid = entry.attribute("eid").ok_or_else(|| missing("eid"))?.to_string();
        let mut triples = Vec::new();
        for set in entry.children().filter(|n| n.has_tag_name("modifiedtripleset")) {
            for mtriple in set.children().filter(|n| n.has_tag_name("mtriple")) {
                let raw = mtriple.text().unwrap_or("");
                let parts: Vec<&str> = raw.splitn(3, " | ").collect();
                if parts.len() != 3 {
                    return Err(DataError::BadLine {
                        task,
                        file: path.to_path_buf(),
                        line: line_of(mtriple),
                        message: format!("mtriple is not \"subject | property | object\": {raw:?}"),
                    });
                }
                triples.push(Triple {
                    subject: parts[0].trim().to_string(),
                    property: parts[1].trim().to_string(),
                    object: parts[2].trim().to_string(),
                });
            }
        }
        if triples.is_empty() {
            return Err(missing("modifiedtripleset/mtriple"));
        }
        let lexicalizations = entry
            .children()
            .filter(|n| n.has_tag_name("lex"))
            .map(|n| {
                let text: String = n.descendants().filter(|d| d.is_text()).filter_map(|d| d.text()).collect();
                (n.attribute("comment").unwrap_or("").to_string(), text.trim().to_string())
            })
            .collect();
        entries.push(Entry { category, eid, triples, lexicalizations });
    }
    Ok(entries)
}

/// Read one WebNLG 2017 XML file into pairs (one per good lexicalization), in file order.
pub fn load_file(path: &Path) -> Result<Vec<Pair>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(TASK, path, e))?;
    let entries = parse_entries(TASK, path, &text)?;
    let mut pairs = Vec::new();
    for entry in entries {
        let source = linearize(&entry.triples);
        let meta = Meta {
            seen: Some(is_seen_category(&entry.category)),
            category: Some(entry.category.clone()),
            id: Some(entry.eid.clone()),
            line: None,
        };
        for (comment, lex) in &entry.lexicalizations {
            if comment == "good" && !lex.is_empty() {
                pairs.push(Pair { source: source.clone(), target: lex.clone(), meta: meta.clone() });
            }
        }
    }
    Ok(pairs)
}
