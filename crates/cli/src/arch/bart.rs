//! BART for the commands: documents in, summaries out (the tokenizer's `<s> … </s>`), the
//! checkpoint's decoding defaults, and three prefix sets (encoder, decoder, cross-attention),
//! each its own P.

use std::path::Path;

use prefix_tune_data::e2e::E2eConfig;
use prefix_tune_data::{load, task::Split, LoadConfig, Task, Tokenizer};
use prefix_tune_model::burn::module::Module;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::bart::generation_defaults;
use prefix_tune_model::Bart;
use prefix_tune_prefix::{BartLayout, BartPrefixSets, BlockOrder, Init, Layout, Placement, PrefixConfig, PrefixedModel};
use prefix_tune_train::{read_seq2seq_jsonl_lines, Example, Method, Objective};

use super::{Architecture, PrefixStart, TaskText};
use crate::error::{CliError, Result};
use crate::train::args::{InitArg, PrefixLayout, TrainArgs};

/// The model's tokenizer, used as HF's `tokenizer(text, truncation=True, max_length=N)`.
pub struct BartText {
    tokenizer: Tokenizer,
    max_source: usize,
}

impl BartText {
    fn from_dir(dir: &Path, max_source: usize) -> Result<Self> {
        let tokenizer = Tokenizer::from_dir(dir)?
            .ok_or_else(|| CliError::usage(format!("{}: a BART model needs its tokenizer (tokenizer.json) to read text", dir.display())))?;
        Ok(Self { tokenizer, max_source })
    }

    /// `<s> text </s>`, cut to `max_len` tokens with the closing `</s>` kept.
    fn ids(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_with_special_tokens(text)?;
        cut_keeping_last(&mut ids, max_len);
        Ok(ids)
    }
}

impl TaskText for BartText {
    fn prompt(&self, source: &str) -> Result<Vec<u32>> {
        self.ids(source, self.max_source)
    }

    fn answer(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?.trim().replace('\n', " "))
    }
}

/// Cuts `ids` to `max_len` tokens, keeping the last one (BART's closing `</s>`), as HF's
/// truncation does.
fn cut_keeping_last(ids: &mut Vec<u32>, max_len: usize) {
    if ids.len() > max_len {
        let last = *ids.last().expect("longer than max_len, so not empty");
        ids.truncate(max_len.saturating_sub(1));
        ids.push(last);
    }
}

impl Architecture for Bart {
    type Text = BartText;
    /// The paper's summarization code averages over target tokens.
    const DEFAULT_OBJECTIVE: Objective = Objective::Mean;

    fn task_text(&self, dir: &Path, max_source: Option<usize>) -> Result<BartText> {
        let positions = self.config.max_position_embeddings;
        BartText::from_dir(dir, max_source.map_or(positions, |n| n.min(positions)))
    }

    fn prompt_ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
        Ok(tokenizer.encode_with_special_tokens(text)?)
    }

    fn decoding_defaults(&self, dir: &Path) -> Result<GenerateConfig> {
        Ok(generation_defaults(dir)?)
    }

    /// The checkpoint's min/max length and forced tokens, the paper's beam 6 and length
    /// penalty 0.8.
    fn paper_decoding(&self, dir: &Path, _text: &BartText, _task: Task) -> Result<GenerateConfig> {
        Ok(GenerateConfig { num_beams: 6, length_penalty: 0.8, ..generation_defaults(dir)? })
    }

    fn dev_decoding(&self, dir: &Path, _text: &BartText, _task: Task) -> Result<GenerateConfig> {
        Ok(GenerateConfig { num_beams: 1, ..generation_defaults(dir)? })
    }

    fn prefix_start(args: &TrainArgs, _dir: &Path) -> Result<PrefixStart> {
        if args.placement != Placement::Prefix {
            return Err(CliError::usage("--placement: BART trains prefixes only (the infix and embedding-only ablations are GPT-2's)"));
        }
        if args.method != Method::Prefix {
            return Err(CliError::usage("--method finetune: the fine-tuning baseline is GPT-2 only"));
        }
        let init = match &args.init {
            InitArg::Random => Init::Random,
            InitArg::Zero => Init::Zero,
            other => return Err(CliError::usage(format!("--init: `{other}`: BART prefixes start random or zero"))),
        };
        Ok(PrefixStart { init, text_ids: None, length: args.prefix_length })
    }

    fn initial_prefix(&self, args: &TrainArgs, base: &PrefixConfig, _start: &PrefixStart, device: &Device) -> Result<BartPrefixSets> {
        let layout = BartLayout::of(&self.config);
        if let Some(path) = &args.init_from {
            return Ok(self.load_prefix(path)?.prefix.set_require_grad(true));
        }
        if args.prefix_layout == PrefixLayout::Peft {
            return peft_decoder_set(args, base, layout, device);
        }
        let configs = set_lengths(args)?.map(|length| (length > 0).then(|| PrefixConfig { length, ..base.clone() }));
        let [encoder, decoder, cross] = &configs;
        Ok(BartPrefixSets::init([encoder.as_ref(), decoder.as_ref(), cross.as_ref()], layout, device)?)
    }

    fn run_examples(&self, args: &TrainArgs, dir: &Path, _prefix_length: usize) -> Result<(Vec<Example>, Vec<Example>)> {
        let data = args.data.as_deref().ok_or_else(|| CliError::usage("--data is required"))?;
        let train = check(read_examples(args, data, Split::Train, dir, self)?, args, self)?;
        let dev = match &args.dev {
            Some(path) => check(read_examples(args, path, Split::Dev, dir, self)?, args, self)?,
            None => Vec::new(),
        };
        Ok((train, dev))
    }

    fn check_dev_task(task: Task) -> Result<()> {
        if task != Task::Xsum {
            return Err(CliError::usage("--eval-metric: a BART run scores its dev summaries with --task xsum"));
        }
        Ok(())
    }

    fn read_scored(path: &Path) -> Result<Vec<(usize, Example)>> {
        Ok(read_seq2seq_jsonl_lines(path)?)
    }
}

/// `--prefix-layout peft`: the decoder's self-attention only, in PEFT's block order.
fn peft_decoder_set(args: &TrainArgs, base: &PrefixConfig, layout: BartLayout, device: &Device) -> Result<BartPrefixSets> {
    if args.encoder_prefix_length.is_some_and(|l| l > 0) || args.cross_prefix_length.is_some_and(|l| l > 0) {
        return Err(CliError::usage("--prefix-layout peft: PEFT has no encoder or cross-attention prefix; drop --encoder/--cross-prefix-length"));
    }
    let length = args.decoder_prefix_length.unwrap_or(args.prefix_length);
    let peft = Layout { blocks: BlockOrder::PeftSeq2Seq, ..layout.decoder };
    let decoder = PrefixConfig { length, ..base.clone() }.init(peft, device)?;
    Ok(BartPrefixSets { encoder: None, decoder: Some(decoder), cross: None })
}

/// The three sets' lengths: each flag, else --prefix-length; 0 turns a set off.
fn set_lengths(args: &TrainArgs) -> Result<[usize; 3]> {
    let lengths = [args.encoder_prefix_length, args.decoder_prefix_length, args.cross_prefix_length].map(|l| l.unwrap_or(args.prefix_length));
    if lengths == [0, 0, 0] {
        return Err(CliError::usage("--encoder/--decoder/--cross-prefix-length: every set is off; at least one needs a length"));
    }
    Ok(lengths)
}

/// The most tokens an encoder input may have: `--max-length`, else the model's positions.
fn max_source(args: &TrainArgs, model: &Bart) -> Result<usize> {
    let positions = model.config.max_position_embeddings;
    match args.max_length {
        Some(n) if n > positions => Err(CliError::usage(format!("--max-length {n}: at most {positions} tokens fit (max_position_embeddings)"))),
        Some(n) => Ok(n),
        None => Ok(positions),
    }
}

/// One file's examples (document ids, summary ids) and where each came from.
fn read_examples(args: &TrainArgs, path: &Path, split: Split, dir: &Path, model: &Bart) -> Result<Vec<(String, Example)>> {
    let Some(task) = args.task else {
        return Ok(read_seq2seq_jsonl_lines(path)?.into_iter().map(|(line, e)| (format!("{} line {line}", path.display()), e)).collect());
    };
    let text = BartText::from_dir(dir, max_source(args, model)?)?;
    let data = load(task, path, &LoadConfig { split, e2e: E2eConfig { target_style: args.references } })?;
    data.pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let origin = match pair.meta.line {
                Some(line) => format!("{} line {line}", data.path.display()),
                None => format!("{} example {}", data.path.display(), i + 1),
            };
            let input_ids = text.prompt(&pair.source)?;
            let labels = text.ids(&pair.target, usize::MAX)?.into_iter().map(i64::from).collect();
            Ok((origin, Example { input_ids, labels }))
        })
        .collect()
}

/// Every example checked against the model: ids in the vocabulary, a target that fits the
/// decoder's positions, a document that fits the encoder's (cut with --max-length).
fn check(examples: Vec<(String, Example)>, args: &TrainArgs, model: &Bart) -> Result<Vec<Example>> {
    let (vocab, positions, source_len) = (model.config.vocab_size, model.config.max_position_embeddings, max_source(args, model)?);
    examples
        .into_iter()
        .map(|(origin, mut example)| {
            let bad = example.input_ids.iter().map(|&i| i as i64).chain(example.labels.iter().copied()).find(|&id| id >= vocab as i64);
            if let Some(id) = bad {
                return Err(CliError::usage(format!("{origin}: token id {id} is outside the model's vocabulary of {vocab}")));
            }
            if example.labels.len() > positions {
                return Err(CliError::usage(format!("{origin}: a target of {} tokens does not fit the decoder's {positions} positions", example.labels.len())));
            }
            if example.input_ids.len() > source_len {
                if args.max_length.is_none() {
                    return Err(CliError::usage(format!("{origin}: {} tokens, more than the {positions} positions of the encoder; --max-length N cuts documents to fit", example.input_ids.len())));
                }
                cut_keeping_last(&mut example.input_ids, source_len);
            }
            Ok(example)
        })
        .collect()
}
