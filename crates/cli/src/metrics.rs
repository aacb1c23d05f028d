//! `prefix-tune metrics`: score a predictions file against a data set's references.

use std::path::PathBuf;

use crate::error::Result;
use clap::Args;
use prefix_tune_data::e2e::TargetStyle;
use prefix_tune_data::Task;
use prefix_tune_eval::{score_predictions, Scores};

#[derive(Args, Debug)]
pub struct MetricsArgs {
    #[arg(long, value_enum)]
    task: Task,
    /// The data file (or official directory) holding the references.
    #[arg(long)]
    data: PathBuf,
    /// One prediction per line, one line per distinct input in order of first appearance.
    #[arg(long)]
    predictions: PathBuf,
    /// E2E references as written in the CSV (`original`, what the official scorer reads) or
    /// punctuation-split like the paper's files (`paper`).
    #[arg(long, value_enum, default_value_t = TargetStyle::Original)]
    references: TargetStyle,
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

pub fn run(args: MetricsArgs) -> Result<()> {
    let scores = score_predictions(args.task, &args.data, &args.predictions, args.references, args.meteor_jar.as_deref())?;
    print_scores(&scores, args.json);
    Ok(())
}
