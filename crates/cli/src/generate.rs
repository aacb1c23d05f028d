//! `prefix-tune generate`

use crate::error::{CliError, Result};
use clap::Args;
use prefix_tune_model::generate::{EarlyStopping, GenerateConfig, Sampling};
use std::path::Path;

use crate::arch::Architecture;
use crate::models::{self, ModelJob};
use prefix_tune_data::Tokenizer;
use prefix_tune_model::backend::DeviceArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A model directory (config.json + model.safetensors) or a hub name such as gpt2-medium.
    #[arg(long)]
    model: String,
    /// A text prompt (repeatable; all prompts run as one batch). For BART, the document to
    /// summarise (the tokenizer adds `<s> … </s>`).
    #[arg(long = "prompt")]
    prompts: Vec<String>,
    /// A prompt as comma-separated token ids, e.g. 464,2068 (repeatable; after the text prompts).
    #[arg(long = "prompt-ids")]
    prompt_ids: Vec<String>,
    /// New tokens at most (default 20; BART: its checkpoint's max_length − 1).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// EOS is forbidden before this many new tokens (default 0; BART: min_length − 1).
    #[arg(long)]
    min_new_tokens: Option<usize>,
    /// Beam search with this many beams (1 = greedy or sampling; BART: the checkpoint's).
    #[arg(long)]
    num_beams: Option<usize>,
    /// Default 1.0 (BART: the checkpoint's).
    #[arg(long)]
    length_penalty: Option<f32>,
    /// Beam search stopping: true (stop at num_beams finished), false (HF default heuristic), never.
    #[arg(long, value_enum)]
    early_stopping: Option<EarlyStopping>,
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
    /// A banned token sequence as comma-separated ids (repeatable).
    #[arg(long = "bad-words-ids")]
    bad_words_ids: Vec<String>,
    #[arg(long)]
    do_sample: bool,
    /// With --do-sample: only the k most likely tokens.
    #[arg(long, requires = "do_sample")]
    top_k: Option<usize>,
    /// With --do-sample: only the most likely tokens whose mass reaches p, in (0, 1].
    #[arg(long, requires = "do_sample")]
    top_p: Option<f32>,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A prefix: exported, PEFT adapter, training state or run directory. Once for all
    /// prompts, or once per prompt (in order) to run a mixed-task batch.
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
    #[command(flatten)]
    device: DeviceArgs,
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
    let device = args.device.device()?;
    // Every prompt (each expanded to its beams) runs as one batch.
    let batch = (args.prompts.len() + args.prompt_ids.len()) * args.num_beams.unwrap_or(1);
    let advice = "give fewer prompts (or beams) per call";
    crate::out_of_memory::guard(Some(batch), advice, || models::with_model(&args.model.clone(), &device, args.device.dtype, args))
}

impl ModelJob for GenerateArgs {
    type Output = ();

    fn run<M: Architecture>(self, model: M, dir: &Path) -> Result<()> {
        let args = self;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let prompts = prompts::<M>(&args, tokenizer.as_ref(), dir)?;
        let config = decoding_options(&args, model.decoding_defaults(dir)?)?;
        if args.prefixes.len() > 1 && !M::MIXED_PREFIXES {
            return Err(CliError::usage(format!("--prefix: {} takes one prefix for the whole batch (mixed-prefix batches are GPT-2 only)", M::ARCHITECTURE)));
        }
        let prefixes = args.prefixes.iter().map(|path| Ok(model.load_prefix(Path::new(path))?.prefix)).collect::<Result<Vec<_>>>()?;
        let prefixes: Vec<&M::Prefix> = prefixes.iter().collect();
        for output in model.generate(&prompts, &prefixes, &config)? {
            let text = match &tokenizer {
                // BART's outputs start with <s> and end with </s>: text without them, as HF summaries.
                Some(tokenizer) => Some(tokenizer.decode(&output.ids, M::ENCODER_DECODER)?),
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
}

/// The text prompts, then the id prompts.
fn prompts<M: Architecture>(args: &GenerateArgs, tokenizer: Option<&Tokenizer>, dir: &Path) -> Result<Vec<Vec<u32>>> {
    let mut prompts = Vec::new();
    for text in &args.prompts {
        let tokenizer = tokenizer.ok_or_else(|| {
            CliError::usage(format!("{}: no tokenizer (tokenizer.json or vocab.json + merges.txt) for --prompt; use --prompt-ids", dir.display()))
        })?;
        prompts.push(M::prompt_ids(tokenizer, text)?);
    }
    for ids in &args.prompt_ids {
        prompts.push(parse_ids(ids, "--prompt-ids")?);
    }
    if prompts.is_empty() {
        return Err(CliError::usage("give at least one --prompt or --prompt-ids"));
    }
    Ok(prompts)
}

/// The decoding flags over `base` (HF's defaults, or a BART checkpoint's): a flag given wins.
fn decoding_options(args: &GenerateArgs, base: GenerateConfig) -> Result<GenerateConfig> {
    let mut config = base;
    if let Some(n) = args.max_new_tokens {
        config.max_new_tokens = n;
    }
    if let Some(n) = args.min_new_tokens {
        config.min_new_tokens = n;
    }
    if let Some(n) = args.num_beams {
        config.num_beams = n;
    }
    if let Some(lp) = args.length_penalty {
        config.length_penalty = lp;
    }
    if let Some(stop) = args.early_stopping {
        config.early_stopping = stop;
    }
    if let Some(n) = args.no_repeat_ngram_size {
        config.no_repeat_ngram_size = n;
    }
    if !args.bad_words_ids.is_empty() {
        config.bad_words_ids = args.bad_words_ids.iter().map(|s| parse_ids(s, "--bad-words-ids")).collect::<Result<_>>()?;
    }
    if args.do_sample {
        if args.num_beams.is_none() {
            config.num_beams = 1;
        }
        config.sampling = Some(Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed });
    }
    Ok(config)
}
