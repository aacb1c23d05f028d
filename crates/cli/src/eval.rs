//! `prefix-tune eval`: decode a split with the paper's settings, write the predictions and
//! the official scores.

use std::path::PathBuf;

use clap::Args;
use prefix_tune_data::{load, task::Split, Gpt2Encoder, LoadConfig, Task};
use prefix_tune_eval::score_groups;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::{backend, load_gpt2};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    model: String,
    /// The prefix to evaluate (export, PEFT adapter, training state or run directory).
    #[arg(long)]
    prefix: Option<String>,
    /// e2e, webnlg, dart, xsum or jsonl.
    #[arg(long)]
    task: String,
    /// A data file or the official directory.
    #[arg(long)]
    data: PathBuf,
    /// Split to read from a directory: train, dev or test.
    #[arg(long, default_value = "test")]
    split: String,
    /// Beams (paper: 5 for table-to-text, 6 for XSUM).
    #[arg(long)]
    num_beams: Option<usize>,
    #[arg(long)]
    length_penalty: Option<f32>,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Evaluate only the first N distinct inputs.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    meteor_jar: Option<PathBuf>,
    #[arg(long)]
    backend: Option<String>,
    /// Writes predictions.txt and scores.json here.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: EvalArgs) -> Result<(), String> {
    let task: Task = args.task.parse().map_err(|e: prefix_tune_data::DataError| e.to_string())?;
    let split = match args.split.as_str() {
        "train" => Split::Train,
        "dev" => Split::Dev,
        "test" => Split::Test,
        other => return Err(format!("--split: `{other}` is not train, dev or test")),
    };
    let device = backend::device(args.backend.as_deref()).map_err(|e| e.to_string())?;
    let dir = resolve_model(&args.model).map_err(|e| e.to_string())?;
    let model = load_gpt2(&dir, &device).map_err(|e| e.to_string())?;
    let encoder = Gpt2Encoder::from_file(&dir).map_err(|e| e.to_string())?;
    let data = load(task, &args.data, &LoadConfig { split, ..Default::default() }).map_err(|e| e.to_string())?;
    let mut groups = data.groups();
    if let Some(limit) = args.limit {
        groups.truncate(limit);
    }

    // The paper's decoding: beam 5 for table-to-text; beam 6, length penalty 0.8 for XSUM.
    let (beams, penalty, max_new) = match task {
        Task::Xsum => (6, 0.8, 60),
        _ => (5, 1.0, 100),
    };
    let mut config = GenerateConfig::new(encoder.eos_id());
    config.num_beams = args.num_beams.unwrap_or(beams);
    config.length_penalty = args.length_penalty.unwrap_or(penalty);
    config.max_new_tokens = args.max_new_tokens.unwrap_or(max_new);
    config.pad_token_id = encoder.eos_id();

    let prefixes = crate::prefixes::load_prefixes(&model, args.prefix.as_slice(), &device)?;
    let prefixes: Vec<&_> = prefixes.iter().collect();
    let mut predictions = Vec::with_capacity(groups.len());
    for chunk in groups.chunks(args.batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|g| encoder.prompt_ids(&g.source)).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
        predictions.extend(crate::prefixes::predict(&model, &encoder, &prompts, &prefixes, &config)?);
        eprint!("\rdecoded {}/{}", predictions.len(), groups.len());
    }
    eprintln!();
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let predictions_path = args.out.join("predictions.txt");
    std::fs::write(&predictions_path, predictions.join("\n") + "\n").map_err(|e| format!("{}: {e}", predictions_path.display()))?;
    let scores = score_groups(task, &groups, &predictions, args.meteor_jar.as_deref()).map_err(|e| e.to_string())?;
    let scores_path = args.out.join("scores.json");
    std::fs::write(&scores_path, serde_json::to_string_pretty(&scores).expect("scores serialise")).map_err(|e| format!("{}: {e}", scores_path.display()))?;
    crate::metrics::print_scores(&scores, true);
    Ok(())
}
