//! The task switch: which loader reads a file, and where the official files of a split live when
//! a directory is given instead of a file.

use crate::e2e::E2eConfig;
use crate::error::DataError;
use crate::{dart, e2e, jsonl, webnlg, xsum, Dataset, Pair};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The data sets of the paper plus a generic one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    E2e,
    #[value(alias = "webnlg2017")]
    #[serde(alias = "webnlg2017")]
    Webnlg,
    Dart,
    Xsum,
    Jsonl,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::E2e => "e2e",
            Task::Webnlg => "webnlg",
            Task::Dart => "dart",
            Task::Xsum => "xsum",
            Task::Jsonl => "jsonl",
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "e2e" => Ok(Task::E2e),
            "webnlg" | "webnlg2017" => Ok(Task::Webnlg),
            "dart" => Ok(Task::Dart),
            "xsum" => Ok(Task::Xsum),
            "jsonl" => Ok(Task::Jsonl),
            other => Err(DataError::UnknownTask(other.to_string())),
        }
    }
}

/// Which split to pick when a directory is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Dev,
    #[default]
    Test,
}

/// Loader options.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LoadConfig {
    /// Split to read when `path` is a directory (ignored for a file).
    pub split: Split,
    pub e2e: E2eConfig,
}

/// File names accepted inside a data directory, per task and split, in order of preference.
/// WebNLG train/dev are folders of XML files (`train/1triples/*.xml` …), read in sorted order.
pub fn accepted_names(task: Task, split: Split) -> &'static [&'static str] {
    use Split::*;
    match (task, split) {
        (Task::E2e, Train) => &["trainset.csv", "train.csv"],
        (Task::E2e, Dev) => &["devset.csv", "dev.csv"],
        (Task::E2e, Test) => &["testset_w_refs.csv", "test.csv"],
        (Task::Webnlg, Train) => &["train"],
        (Task::Webnlg, Dev) => &["dev"],
        (Task::Webnlg, Test) => &["test/testdata_with_lex.xml", "testdata_with_lex.xml"],
        (Task::Dart, Train) => &["dart-v1.1.1-full-train.json", "dart-v1.1.1-train-reconstructed.json"],
        (Task::Dart, Dev) => &["dart-v1.1.1-full-dev.json"],
        (Task::Dart, Test) => &["dart-v1.1.1-full-test.json", "dart-v1.1.1-full-test.xml"],
        (Task::Xsum | Task::Jsonl, Train) => &["train.jsonl"],
        (Task::Xsum | Task::Jsonl, Dev) => &["dev.jsonl", "validation.jsonl", "val.jsonl"],
        (Task::Xsum | Task::Jsonl, Test) => &["test.jsonl"],
    }
}

/// Load a split: `path` is a data file, or the official directory (see [`accepted_names`]).
/// Errors on an empty result, so a wrong file never passes silently as an empty data set.
pub fn load(task: Task, path: &Path, config: &LoadConfig) -> Result<Dataset, DataError> {
    let file = resolve(task, path, config.split)?;
    let pairs = if file.is_dir() {
        let mut files = Vec::new();
        collect_xml(&file, &mut files).map_err(|e| DataError::io(task.name(), &file, e))?;
        files.sort();
        let mut pairs = Vec::new();
        for f in &files {
            pairs.extend(webnlg::load_file(f)?);
        }
        pairs
    } else {
        load_file(task, &file, config)?
    };
    if pairs.is_empty() {
        return Err(DataError::EmptySplit { task: task.name(), file });
    }
    Ok(Dataset { task, path: file, pairs })
}

fn load_file(task: Task, file: &Path, config: &LoadConfig) -> Result<Vec<Pair>, DataError> {
    let is_xml = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml"));
    match task {
        Task::E2e => e2e::load_csv(file, &config.e2e),
        Task::Webnlg => webnlg::load_file(file),
        Task::Dart if is_xml => dart::load_xml(file),
        Task::Dart => dart::load_json(file),
        Task::Xsum => xsum::load_file(file),
        Task::Jsonl => jsonl::load_file(file),
    }
}

fn resolve(task: Task, path: &Path, split: Split) -> Result<PathBuf, DataError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.exists() {
        return Err(DataError::io(task.name(), path, std::io::ErrorKind::NotFound.into()));
    }
    let names = accepted_names(task, split);
    if let Some(found) = names.iter().map(|n| path.join(n)).find(|p| p.exists()) {
        return Ok(found);
    }
    if task == Task::Webnlg && is_webnlg_split_folder(path) {
        return Ok(path.to_path_buf());
    }
    Err(DataError::NotFound { task: task.name(), file: path.to_path_buf(), accepted: names.join(", ") })
}

/// A WebNLG split's own folder (`train/`, `dev/`: XML files under `1triples/` …) given as
/// `--data`: it holds XML files and none of the release's names of any split, so it is not the
/// release's root or its `test/`.
fn is_webnlg_split_folder(path: &Path) -> bool {
    let splits = [Split::Train, Split::Dev, Split::Test];
    let names_a_split = splits.iter().flat_map(|&s| accepted_names(Task::Webnlg, s)).any(|n| path.join(n).exists());
    let mut files = Vec::new();
    !names_a_split && collect_xml(path, &mut files).is_ok() && !files.is_empty()
}

fn collect_xml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            collect_xml(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "xml") {
            out.push(p);
        }
    }
    Ok(())
}
