//! `prefix-tune train` on BART: three prefix sets (encoder, decoder, cross-attention), each its
//! own P, trained on documents → summaries through the same learner as GPT-2.

use std::path::Path;

use prefix_tune_data::e2e::E2eConfig;
use prefix_tune_data::{load, task::Split, LoadConfig, Task};
use prefix_tune_eval::score_groups;
use prefix_tune_model::burn::module::Module;
use prefix_tune_model::burn::tensor::Device;
use prefix_tune_model::{load_bart, Bart};
use prefix_tune_prefix::{load_bart_prefix, BartLayout, BartPrefixSets, BlockOrder, Init, Layout, Placement, PrefixConfig};
use prefix_tune_train::{read_seq2seq_jsonl_lines, DevMetric, Example, Method, Objective, TrainConfig, TrainError};

use crate::error::{CliError, Result};
use crate::models;
use crate::seq2seq::{cut_keeping_last, summarise, BartText};
use crate::train::{run_trainer, train_config, PrefixLayout, TrainArgs};

pub fn run(args: &TrainArgs, dir: &Path, model_name: &str, device: &Device) -> Result<()> {
    let mut model = load_bart(dir, device)?;
    if crate::train::frozen_in_bf16(args)? {
        model.pack_bf16().map_err(CliError::usage)?;
    }
    let init = check_options(args)?;
    let metric = match &args.eval_metric {
        Some(name) => Some((name.clone(), dev_metric(args, dir, &model, name)?)),
        None => None,
    };
    let (train, dev) = load_examples(args, dir, &model)?;
    let fresh = |model: Bart| -> Result<(Bart, BartPrefixSets, TrainConfig)> {
        let reparam = args.reparam.with_hidden(args.mlp_hidden);
        let base = PrefixConfig { length: args.prefix_length, reparam, dropout: args.prefix_dropout, init, placement: Placement::Prefix };
        let sets = initial_sets(args, &base, &model, device)?;
        let (pad, eos) = (model.config.pad_token_id.unwrap_or(1), model.config.eos_token_id.unwrap_or(2));
        let mut config = train_config(args, base, pad, eos, model_name);
        // The paper's summarization code averages over target tokens.
        config.objective = args.loss.unwrap_or(Objective::Mean);
        Ok((model, sets, config))
    };
    run_trainer(args, model, fresh, metric, &train, &dev)
}

/// What BART's prefixes do not offer, refused before anything runs; the initial values.
fn check_options(args: &TrainArgs) -> Result<Init> {
    if args.placement != Placement::Prefix {
        return Err(CliError::usage("--placement: BART trains prefixes only (the infix and embedding-only ablations are GPT-2's)"));
    }
    if args.method != Method::Prefix {
        return Err(CliError::usage("--method finetune: the fine-tuning baseline is GPT-2 only"));
    }
    match args.init.as_str() {
        "random" => Ok(Init::Random),
        "zero" => Ok(Init::Zero),
        other => Err(CliError::usage(format!("--init: `{other}`: BART prefixes start random or zero"))),
    }
}

/// The three sets' lengths: each flag, else --prefix-length; 0 turns a set off.
fn set_lengths(args: &TrainArgs) -> Result<[usize; 3]> {
    let lengths = [args.encoder_prefix_length, args.decoder_prefix_length, args.cross_prefix_length].map(|l| l.unwrap_or(args.prefix_length));
    if lengths == [0, 0, 0] {
        return Err(CliError::usage("--encoder/--decoder/--cross-prefix-length: every set is off; at least one needs a length"));
    }
    Ok(lengths)
}

fn initial_sets(args: &TrainArgs, base: &PrefixConfig, model: &Bart, device: &Device) -> Result<BartPrefixSets> {
    let layout = BartLayout::of(&model.config);
    if let Some(path) = &args.init_from {
        return Ok(load_bart_prefix(path, layout, device)?.sets.set_require_grad(true));
    }
    if args.prefix_layout == PrefixLayout::Peft {
        // PEFT prefixes the decoder's self-attention only, in its own block order.
        if args.encoder_prefix_length.is_some_and(|l| l > 0) || args.cross_prefix_length.is_some_and(|l| l > 0) {
            return Err(CliError::usage("--prefix-layout peft: PEFT has no encoder or cross-attention prefix; drop --encoder/--cross-prefix-length"));
        }
        let length = args.decoder_prefix_length.unwrap_or(args.prefix_length);
        let peft = Layout { blocks: BlockOrder::PeftSeq2Seq, ..layout.decoder };
        let decoder = PrefixConfig { length, ..base.clone() }.init(peft, device)?;
        return Ok(BartPrefixSets { encoder: None, decoder: Some(decoder), cross: None });
    }
    let configs = set_lengths(args)?.map(|length| (length > 0).then(|| PrefixConfig { length, ..base.clone() }));
    let [encoder, decoder, cross] = &configs;
    Ok(BartPrefixSets::init([encoder.as_ref(), decoder.as_ref(), cross.as_ref()], layout, device)?)
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
    let text = BartText::from_dir(dir)?;
    let data = load(task, path, &LoadConfig { split, e2e: E2eConfig { target_style: args.references } })?;
    let (source_len, target_len) = (max_source(args, model)?, usize::MAX);
    data.pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let origin = match pair.meta.line {
                Some(line) => format!("{} line {line}", data.path.display()),
                None => format!("{} example {}", data.path.display(), i + 1),
            };
            let input_ids = text.ids(&pair.source, source_len)?;
            let labels = text.ids(&pair.target, target_len)?.into_iter().map(i64::from).collect();
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

fn load_examples(args: &TrainArgs, dir: &Path, model: &Bart) -> Result<(Vec<Example>, Vec<Example>)> {
    let data = args.data.as_deref().ok_or_else(|| CliError::usage("--data is required"))?;
    let train = check(read_examples(args, data, Split::Train, dir, model)?, args, model)?;
    let dev = match &args.dev {
        Some(path) => check(read_examples(args, path, Split::Dev, dir, model)?, args, model)?,
        None => Vec::new(),
    };
    Ok((train, dev))
}

/// ROUGE of greedy summaries of the dev documents (with the checkpoint's length limits).
fn dev_metric(args: &TrainArgs, dir: &Path, model: &Bart, metric: &str) -> Result<DevMetric<Bart>> {
    if args.task != Some(Task::Xsum) {
        return Err(CliError::usage("--eval-metric: a BART run scores its dev summaries with --task xsum"));
    }
    let known = ["rouge1", "rouge2", "rouge_l"];
    if !known.contains(&metric) {
        return Err(CliError::usage(format!("--eval-metric: `{metric}` is not one of {}", known.join(", "))));
    }
    let dev = args.dev.as_deref().ok_or_else(|| CliError::usage("--eval-metric needs --dev"))?;
    let mut groups = load(Task::Xsum, dev, &LoadConfig { split: Split::Dev, e2e: E2eConfig::default() })?.groups();
    groups.truncate(args.eval_limit.max(1));
    let text = BartText::from_dir(dir)?;
    let source_len = max_source(args, model)?;
    let sources: Vec<Vec<u32>> = groups.iter().map(|g| text.ids(&g.source, source_len)).collect::<Result<_>>()?;
    let mut generate = models::checkpoint_generation(dir)?;
    generate.num_beams = 1;
    let metric = metric.to_string();
    Ok(Box::new(move |model, sets| {
        let fail = |e: String| TrainError::Config(format!("--eval-metric: {e}"));
        let mut predictions = Vec::with_capacity(sources.len());
        for chunk in sources.chunks(16) {
            predictions.extend(summarise(model, &text, chunk, Some(sets), &generate).map_err(|e| fail(e.to_string()))?);
        }
        let scores = score_groups(Task::Xsum, &groups, &predictions, None).map_err(|e| fail(e.to_string()))?;
        serde_json::to_value(&scores).expect("scores serialise")[&metric].as_f64().ok_or_else(|| fail(format!("`{metric}` is not an XSUM score")))
    }))
}
