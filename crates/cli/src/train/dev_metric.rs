//! `--eval-metric`: the best prefix (and early stopping) chosen by a generation metric on the
//! dev set instead of the dev loss. Dev inputs are decoded greedily with the current prefix
//! and scored with the task's official metric.

use std::path::Path;

use prefix_tune_data::e2e::E2eConfig;
use prefix_tune_data::{load, task::Split, LoadConfig};
use prefix_tune_eval::score_groups;
use prefix_tune_train::{DevMetric, TrainError};

use super::args::{DevMetricName, TrainArgs};
use crate::arch::{predict, Architecture, TaskText};
use crate::error::{CliError, Result};

/// Decoding dev prompts in chunks of this many rows.
const CHUNK: usize = 16;

/// The dev metric of a run: checked against the task now, scored at every evaluation.
pub fn build<M: Architecture>(args: &TrainArgs, dir: &Path, model: &M, metric: DevMetricName) -> Result<DevMetric<M>> {
    let task = args.task.ok_or_else(|| CliError::usage("--eval-metric needs --task"))?;
    M::check_dev_task(task)?;
    if !DevMetricName::of(task).contains(&metric) {
        let known: Vec<&str> = DevMetricName::of(task).iter().map(|m| m.field()).collect();
        return Err(CliError::usage(format!("--eval-metric: `{metric}` is not one of {} for {task}", known.join(", "))));
    }
    let dev = args.dev.as_deref().ok_or_else(|| CliError::usage("--eval-metric needs --dev"))?;
    let config = LoadConfig { split: Split::Dev, e2e: E2eConfig { target_style: args.references } };
    let mut groups = load(task, dev, &config)?.groups();
    groups.truncate(args.eval_limit.max(1));
    let text = model.task_text(dir, args.max_length)?;
    let prompts: Vec<Vec<u32>> = groups.iter().map(|g| text.prompt(&g.source)).collect::<Result<_>>()?;
    let generate = model.dev_decoding(dir, &text, task)?;
    Ok(Box::new(move |model: &M, prefix: &M::Prefix| {
        let fail = |e: String| TrainError::Config(format!("--eval-metric: {e}"));
        let mut predictions = Vec::with_capacity(prompts.len());
        for chunk in prompts.chunks(CHUNK) {
            predictions.extend(predict(model, &text, chunk, &[prefix], &generate).map_err(|e| fail(e.to_string()))?);
        }
        let scores = score_groups(task, &groups, &predictions, None).map_err(|e| fail(e.to_string()))?;
        let value = serde_json::to_value(&scores).expect("scores serialise");
        value[metric.field()].as_f64().ok_or_else(|| fail(format!("`{metric}` is not a score of {task}")))
    }))
}
