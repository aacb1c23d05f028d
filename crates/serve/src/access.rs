//! Who may do what, and what a request may name: API keys (the client key for completions,
//! models and metrics; an optional admin key for loading and unloading prefixes), prefix names
//! that are plain identifiers, and prefix paths that stay under the `--prefixes` directory.

use std::path::{Component, Path, PathBuf};

use axum::http::{HeaderMap, StatusCode};

use crate::api::ApiError;
use crate::error::{Result, ServeError};

/// The name `base` is the model without a prefix.
pub const BASE: &str = "base";

/// The longest prefix name.
const MAX_NAME: usize = 64;

/// A key given on the command line, in the environment, or in a file (its first line).
pub fn read_key(flag: Option<String>, file: Option<&Path>, file_flag: &str) -> Result<Option<String>> {
    if let Some(key) = flag {
        return Ok(Some(key));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| ServeError::Io { path: path.to_path_buf(), source })?;
    match text.lines().next().map(str::trim).filter(|k| !k.is_empty()) {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(ServeError::Usage(format!("{file_flag} {}: the file is empty", path.display()))),
    }
}

/// The keys a request is checked against.
#[derive(Debug, Default)]
pub struct Keys {
    pub client: Option<String>,
    pub admin: Option<String>,
}

impl Keys {
    /// Completions, models, metrics: the client key (or the admin key).
    pub fn client(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        match &self.client {
            None => Ok(()),
            Some(key) if bearer(headers) == Some(key.as_str()) => Ok(()),
            Some(_) if self.admin.is_some() && bearer(headers) == self.admin.as_deref() => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong API key: send Authorization: Bearer KEY")),
        }
    }

    /// Loading and unloading prefixes: the admin key where one is set, else the client key.
    pub fn admin(&self, headers: &HeaderMap) -> std::result::Result<(), ApiError> {
        match &self.admin {
            None => self.client(headers),
            Some(key) if bearer(headers) == Some(key.as_str()) => Ok(()),
            Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "loading and unloading prefixes needs the admin key (--admin-key)")),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Why `name` cannot name a prefix, if it cannot: plain identifiers only (letters, digits,
/// `.`, `_`, `-`; at most 64), never `base`, never a path.
pub fn bad_name(name: &str) -> Option<String> {
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_NAME || !plain || name == "." || name == ".." {
        return Some(format!("`{}` is not a prefix name: letters, digits, `.`, `_` and `-`, 1 to {MAX_NAME} of them", name.escape_debug()));
    }
    (name == BASE).then(|| format!("`{BASE}` names the model without a prefix"))
}

/// `path` (relative, from a request) resolved under `root`, links followed: refused when absolute
/// or when it leads outside `root`.
pub fn under_root(root: Option<&Path>, path: &Path) -> std::result::Result<PathBuf, ApiError> {
    let root = root.ok_or_else(|| ApiError::new(StatusCode::FORBIDDEN, "loading prefixes from disk is off: start the server with --prefixes DIR"))?;
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::Prefix(_))) {
        return Err(ApiError::bad_request(format!("path `{}` must be relative to the --prefixes directory", path.display())));
    }
    let full = root.join(path).canonicalize().map_err(|e| ApiError::bad_request(format!("path `{}`: {e}", path.display())))?;
    if !full.starts_with(root) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, format!("path `{}` leads outside the --prefixes directory", path.display())));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_prefixes_directory_nothing_loads_from_disk() {
        let refused = under_root(None, Path::new("flat")).unwrap_err();
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.message.contains("--prefixes"), "{}", refused.message);
    }

    #[test]
    fn names_are_plain_identifiers() {
        for good in ["e2e", "webnlg-v2.1", "A_b"] {
            assert_eq!(bad_name(good), None, "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "base", &"x".repeat(65)] {
            assert!(bad_name(bad).is_some(), "{bad}");
        }
    }
}
