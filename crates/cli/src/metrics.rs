//! `prefix-tune metrics`: score a predictions file against a data set's references.

use std::path::PathBuf;

use clap::Args;
use prefix_tune_data::Task;
use prefix_tune_eval::{score_predictions, Scores};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// e2e, webnlg, dart, xsum or jsonl.
    #[arg(long)]
    task: String,
    /// The data file (or official directory) holding the references.
    #[arg(long)]
    data: PathBuf,
    /// One prediction per line, one line per distinct input in order of first appearance.
    #[arg(long)]
    predictions: PathBuf,
    /// meteor-1.5.jar, to run METEOR through Java (else $METEOR_JAR; skipped when absent).
    #[arg(long)]
    meteor_jar: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn print_scores(scores: &Scores, json: bool) {
    if json {
        println!("{}", serde_json::to_string(scores).expect("scores serialise"));
        return;
    }
    let value = serde_json::to_value(scores).expect("scores serialise");
    for (name, value) in value.as_object().into_iter().flatten() {
        println!("{name:>10}: {value}");
    }
}

pub fn run(args: MetricsArgs) -> Result<(), String> {
    let task: Task = args.task.parse().map_err(|e: prefix_tune_data::DataError| e.to_string())?;
    let scores = score_predictions(task, &args.data, &args.predictions, args.meteor_jar.as_deref()).map_err(|e| e.to_string())?;
    print_scores(&scores, args.json);
    Ok(())
}
