//! The options of a run beyond clap's parsing: an options file, the run's recorded options on
//! `--resume`.

use std::path::{Path, PathBuf};

use prefix_tune_data::e2e::TargetStyle;

use super::args::TrainArgs;
use crate::error::{CliError, Result};

/// Options a resumed run may change: where it runs and how it reports, not what it computes.
const CHANGEABLE_ON_RESUME: [&str; 4] = ["resume", "config", "backend", "log_every"];

/// Turns a TOML/JSON options file into `--flag value` arguments placed before the real ones,
/// so the command line overrides the file.
pub fn config_file_args(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let bad = |reason: String| CliError::usage(format!("{}: {reason}", path.display()));
    let table: serde_json::Map<String, serde_json::Value> = if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string().lines().next().unwrap_or("invalid TOML").to_string()))?;
        serde_json::to_value(value).map_err(|e| bad(e.to_string()))?.as_object().cloned().unwrap_or_default()
    } else {
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object of options ({e})")))?
    };
    let mut args = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        match value {
            serde_json::Value::Bool(true) => args.push(flag),
            serde_json::Value::Bool(false) | serde_json::Value::Null => {}
            serde_json::Value::String(s) => args.extend([flag, s]),
            serde_json::Value::Number(n) => args.extend([flag, n.to_string()]),
            other => return Err(bad(format!("option `{key}` has an unsupported value {other}"))),
        }
    }
    Ok(args)
}

/// `path` in one spelling: resolved when it exists (so `./x` and `/abs/../x` compare equal on
/// resume), else made absolute.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// Paths made absolute, so the recorded run resumes from any working directory.
pub(super) fn absolute_paths(mut args: TrainArgs) -> TrainArgs {
    for path in [&mut args.data, &mut args.dev, &mut args.init_from, &mut args.out].into_iter().flatten() {
        *path = absolute(path);
    }
    if let Some(model) = args.model.as_mut().filter(|m| Path::new(m.as_str()).is_dir()) {
        *model = absolute(Path::new(model.as_str())).display().to_string();
    }
    args
}

/// The options of the run in `dir`, as recorded when it started. `cli` holds the flags of this
/// command, `given` the ones the user actually typed: those must agree with the run's.
pub(super) fn resumed_args(dir: &Path, cli: TrainArgs, given: &[String]) -> Result<TrainArgs> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::usage(format!("--resume: {}: {e} (not a run directory?)", path.display())))?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let Some(command) = config.get("command") else {
        // A run from before options were recorded: the command line must give them again.
        return Ok(absolute_paths(TrainArgs { resume: Some(dir.to_path_buf()), ..cli }));
    };
    let mut recorded: TrainArgs = serde_json::from_value(command.clone()).map_err(|e| CliError::usage(format!("{}: `command` is not a set of train options ({e})", path.display())))?;
    let cli = absolute_paths(cli);
    let (ours, theirs) = (serde_json::to_value(&cli).expect("options serialise"), serde_json::to_value(&recorded).expect("options serialise"));
    for id in given.iter().filter(|id| !CHANGEABLE_ON_RESUME.contains(&id.as_str())) {
        if ours[id] != theirs[id] {
            return Err(CliError::usage(format!(
                "--{}: the run in {} was started with {}, not {}; a resumed run keeps its options (start a new run with another --out to change them)",
                id.replace('_', "-"),
                dir.display(),
                theirs[id],
                ours[id]
            )));
        }
    }
    if given.iter().any(|id| id == "backend") {
        recorded.device.backend = cli.device.backend;
    }
    if given.iter().any(|id| id == "log_every") {
        recorded.log_every = cli.log_every;
    }
    recorded.resume = Some(dir.to_path_buf());
    Ok(recorded)
}

/// The E2E reference style the run behind `prefix` (a run directory, or its `best/` or
/// `checkpoint/`) was trained with, if it records one.
pub fn trained_references(prefix: &str) -> Option<TargetStyle> {
    let path = Path::new(prefix);
    [path.join("config.json"), path.parent()?.join("config.json")].iter().find_map(|config| {
        let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(config).ok()?).ok()?;
        serde_json::from_value(value["command"]["references"].clone()).ok()
    })
}
