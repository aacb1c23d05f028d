//! `prefix-tune generate`

use crate::error::{CliError, Result};
use clap::Args;
use prefix_tune_model::generate::{EarlyStopping, GenerateConfig, Sampling};
use prefix_tune_prefix::generate_prefixed;
use prefix_tune_model::hub::resolve_model;
use prefix_tune_model::tokenizer::Gpt2Tokenizer;
use prefix_tune_model::{backend, load_gpt2};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A model directory (config.json + model.safetensors) or a hub name such as gpt2-medium.
    #[arg(long)]
    model: String,
    /// A text prompt (repeatable; all prompts run as one batch).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A prompt as comma-separated token ids, e.g. 464,2068 (repeatable; after the text prompts).
    #[arg(long = "prompt-ids")]
    prompt_ids: Vec<String>,
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    min_new_tokens: usize,
    /// Beam search with this many beams (1 = greedy or sampling).
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// Beam search stopping: true (stop at num_beams finished), false (HF default heuristic), never.
    #[arg(long, value_enum, default_value_t = EarlyStopping::Heuristic)]
    early_stopping: EarlyStopping,
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram_size: usize,
    /// A banned token sequence as comma-separated ids (repeatable).
    #[arg(long = "bad-words-ids")]
    bad_words_ids: Vec<String>,
    #[arg(long)]
    do_sample: bool,
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A prefix: exported, PEFT adapter, training state or run directory. Once for all
    /// prompts, or once per prompt (in order) to run a mixed-task batch.
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    /// wgpu, vulkan, metal, cuda or flex (default: the first compiled in).
    #[arg(long)]
    backend: Option<String>,
    /// One JSON object per prompt: {"ids": [...], "text": "...", "score": ...}.
    #[arg(long)]
    json: bool,
}

pub fn parse_ids(text: &str, what: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(|part| part.trim().parse::<u32>().map_err(|_| CliError::usage(format!("{what}: `{part}` in `{text}` is not a token id"))))
        .collect()
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let device = backend::device(args.backend.as_deref())?;
    let dir = resolve_model(&args.model)?;
    let model = load_gpt2(&dir, &device)?;
    let tokenizer = Gpt2Tokenizer::from_dir(&dir)?;

    let mut prompts = Vec::new();
    for text in &args.prompts {
        let tokenizer = tokenizer.as_ref().ok_or_else(|| {
            CliError::usage(format!("{}: no tokenizer (tokenizer.json or vocab.json + merges.txt) for --prompt; use --prompt-ids", dir.display()))
        })?;
        prompts.push(tokenizer.encode(text)?);
    }
    for ids in &args.prompt_ids {
        prompts.push(parse_ids(ids, "--prompt-ids")?);
    }
    if prompts.is_empty() {
        return Err(CliError::usage("give at least one --prompt or --prompt-ids"));
    }

    let eos = model.config.eos_token_id.unwrap_or(50256);
    let mut config = GenerateConfig::new(eos);
    config.pad_token_id = model.config.pad_token_id.unwrap_or(eos);
    config.max_new_tokens = args.max_new_tokens;
    config.min_new_tokens = args.min_new_tokens;
    config.num_beams = args.num_beams;
    config.length_penalty = args.length_penalty;
    config.early_stopping = args.early_stopping;
    config.no_repeat_ngram_size = args.no_repeat_ngram_size;
    config.bad_words_ids = args.bad_words_ids.iter().map(|s| parse_ids(s, "--bad-words-ids")).collect::<Result<_>>()?;
    if args.do_sample {
        config.sampling = Some(Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed });
    }

    let prefixes = crate::prefixes::load_prefixes(&model, &args.prefixes, &device)?;
    let prefixes: Vec<&_> = prefixes.iter().collect();
    let outputs = generate_prefixed(&model, &prompts, &prefixes, &config)?;
    for output in outputs {
        let text = match &tokenizer {
            Some(tokenizer) => Some(tokenizer.decode(&output.ids, false)?),
            None => None,
        };
        if args.json {
            let line = serde_json::json!({ "ids": output.ids, "text": text, "score": output.score });
            println!("{line}");
        } else {
            println!("{}", text.unwrap_or_else(|| format!("{:?}", output.ids)));
        }
    }
    Ok(())
}
