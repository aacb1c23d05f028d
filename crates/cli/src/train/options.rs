//! The options of a run beyond clap's parsing: an options file (`--config`), the run's
//! recorded options on `--resume`.

use std::path::{Path, PathBuf};

use prefix_tune_data::e2e::TargetStyle;

use super::args::TrainArgs;
use crate::error::{CliError, Result};

/// Options a resumed run may change: where it runs and how it reports, not what it computes.
const CHANGEABLE_ON_RESUME: [&str; 4] = ["resume", "config", "backend", "log_every"];

/// The options of `--config FILE` under the command line's: every option the file names and
/// the command line does not type is read from the file, typed by serde into the same
/// [`TrainArgs`] a run records. Returns the options and the ids now given (typed or in the file),
/// which a resumed run checks against its own.
pub(super) fn with_config_file(cli: TrainArgs, given: &[String]) -> Result<(TrainArgs, Vec<String>)> {
    let Some(path) = cli.config.clone() else { return Ok((cli, given.to_vec())) };
    let bad = |key: &str, reason: String| CliError::usage(format!("{}: option `{key}`: {reason}", path.display()));
    let mut merged = serde_json::to_value(&cli).expect("options serialise");
    let mut given = given.to_vec();
    for (key, value) in read_table(&path)? {
        let id = key.replace('-', "_");
        if merged.get(&id).is_none() {
            return Err(bad(&key, "not an option of train".into()));
        }
        if given.contains(&id) {
            continue;
        }
        merged[&id] = typed(&merged, &id, value);
        // One option at a time, so that a bad value is named.
        serde_json::from_value::<TrainArgs>(merged.clone()).map_err(|e| bad(&key, e.to_string()))?;
        given.push(id);
    }
    let args = TrainArgs { config: cli.config, resume: cli.resume, ..serde_json::from_value(merged).expect("each option checked") };
    for (key, p) in [("prefix_dropout", Some(args.prefix_dropout)), ("lm_dropout", args.lm_dropout)] {
        if let Some(p) = p.filter(|p| !(0.0..1.0).contains(p)) {
            return Err(bad(key, format!("{p} is not a dropout probability in [0, 1)")));
        }
    }
    Ok((args, given))
}

/// `value` as the option `id` takes it: a number written as a string (`lr = "5e-5"`, as on the
/// command line) becomes a number where the option is one.
fn typed(merged: &serde_json::Value, id: &str, value: serde_json::Value) -> serde_json::Value {
    let serde_json::Value::String(text) = &value else { return value };
    let Ok(number @ serde_json::Value::Number(_)) = serde_json::from_str(text) else { return value };
    let mut trial = merged.clone();
    trial[id] = number.clone();
    if serde_json::from_value::<TrainArgs>(trial).is_ok() {
        number
    } else {
        value
    }
}

/// A TOML or JSON file of options, as a table.
fn read_table(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let bad = |reason: String| CliError::usage(format!("{}: {reason}", path.display()));
    if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value = toml::from_str(&text).map_err(|e| bad(e.to_string().lines().next().unwrap_or("invalid TOML").to_string()))?;
        return Ok(serde_json::to_value(value).map_err(|e| bad(e.to_string()))?.as_object().cloned().unwrap_or_default());
    }
    serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object of options ({e})")))
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
