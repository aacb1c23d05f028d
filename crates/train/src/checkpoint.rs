//! Directories replaced as a whole: a run killed at any instant (kill -9, power loss while
//! writing) leaves either the old or the new checkpoint complete, never a mix of the two.
//!
//! `dir` is written as `dir.partial`, then `dir` is moved aside to `dir.old`, `dir.partial`
//! becomes `dir`, and `dir.old` is removed. Renames within one directory are atomic, so at any
//! instant `dir` or `dir.old` holds a complete version; [`recover_dir`] puts `dir.old` back when
//! the kill came between the two renames.

use std::path::{Path, PathBuf};

use crate::TrainError;

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn io_error(path: &Path, error: std::io::Error) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), reason: error.to_string() }
}

fn remove_if_present(path: &Path) -> Result<(), TrainError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

/// Flushes a directory's entries (and so the renames in it) to disk.
fn sync_dir(dir: &Path) -> Result<(), TrainError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error(dir, e))
}

/// Writes `dir` anew with `write` (given the staging directory), then swaps it in.
pub fn publish_dir(dir: &Path, write: impl FnOnce(&Path) -> Result<(), TrainError>) -> Result<(), TrainError> {
    let (staging, old) = (sibling(dir, ".partial"), sibling(dir, ".old"));
    remove_if_present(&staging)?;
    std::fs::create_dir_all(&staging).map_err(|e| io_error(&staging, e))?;
    write(&staging)?;
    for entry in std::fs::read_dir(&staging).map_err(|e| io_error(&staging, e))?.flatten() {
        if entry.path().is_file() {
            std::fs::File::open(entry.path()).and_then(|f| f.sync_all()).map_err(|e| io_error(&entry.path(), e))?;
        }
    }
    remove_if_present(&old)?;
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| io_error(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| io_error(dir, e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    remove_if_present(&old)
}

/// Whether a complete version of `dir` exists holding `file`, counting one a kill left aside
/// (which [`recover_dir`] puts back).
pub fn is_published(dir: &Path, file: &str) -> bool {
    dir.join(file).is_file() || sibling(dir, ".old").join(file).is_file()
}

/// After a kill: restores `dir` from `dir.old` if the kill fell between the two renames, and
/// clears what an interrupted publish left behind.
pub fn recover_dir(dir: &Path) -> Result<(), TrainError> {
    let (staging, old) = (sibling(dir, ".partial"), sibling(dir, ".old"));
    if !dir.exists() && old.exists() {
        std::fs::rename(&old, dir).map_err(|e| io_error(&old, e))?;
    }
    remove_if_present(&staging)?;
    remove_if_present(&old)
}
