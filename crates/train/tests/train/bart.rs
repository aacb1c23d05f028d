//! BART through the same learner: the paper's token-mean loss and the gradient of each of the
//! three prefix sets against the hand-built HF reference (scripts/make_bart_fixtures.py), and a
//! frozen BART learning a task through its prefixes.

use prefix_tune_model::burn::module::{Module, Param};
use prefix_tune_model::bart::{generate_bart, load_bart};
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_model::nn::Dropout;
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::testing::bart::{batch as fixture_batch, unpadded_inputs};
use prefix_tune_model::testing::{fixtures, max_abs_diff, read_f32, scratch};
use prefix_tune_model::weights::WeightFiles;
use prefix_tune_prefix::{BartLayout, BartPrefixSets, Init, Prefix, PrefixConfig, Reparam, Stack};
use prefix_tune_train::{Batch, Example, Objective, PrefixModel, Schedule, TrainConfig, Trainer};

use super::{all_weights, device, serial};

/// The fixture's batch as examples: encoder inputs and targets without padding.
fn fixture_examples(reference: &WeightFiles) -> Vec<Example> {
    let batch = fixture_batch(reference);
    unpadded_inputs(&batch)
        .into_iter()
        .zip(&batch.labels)
        .map(|(input_ids, labels)| Example { input_ids, labels: labels.iter().copied().filter(|&l| l >= 0).collect() })
        .collect()
}

#[test]
fn bart_loss_and_each_prefix_sets_gradient_match_the_reference() {
    let device = device();
    let dir = fixtures().join("bart-a");
    let model = load_bart(&dir, &device).unwrap().freeze();
    let reference = WeightFiles::open(vec![dir.join("reference.safetensors")]).unwrap();
    let layout = BartLayout::of(&model.config);
    let set = |stack: Stack| {
        let (shape, values) = read_f32(&reference, &format!("prefix.{}", stack.name()));
        let mut prefix = Prefix::from_activations(floats(values, [shape[0], shape[1]], &device).require_grad(), layout.stack(stack));
        prefix.embedding = Param::from_tensor(prefix.embedding.val().require_grad());
        Some(prefix)
    };
    let sets = BartPrefixSets { encoder: set(Stack::Encoder), decoder: set(Stack::Decoder), cross: set(Stack::Cross) };

    let examples = fixture_examples(&reference);
    let mut config = TrainConfig::new(PrefixConfig::new(1));
    config.pad_token_id = 1;
    config.objective = Objective::Mean;
    let batch: Batch = model.batch(&examples.iter().collect::<Vec<_>>(), &config);
    assert_eq!(batch.decoder_ids, fixture_batch(&reference).decoder_ids, "labels shifted right behind the start token, as HF");

    let (loss, count) = model.loss(Some(&sets), &config, &batch, true, Dropout::default()).unwrap();
    assert_eq!(count, 7 + 4 + 5);
    let (_, expected) = read_f32(&reference, "prefix.loss");
    let ours = to_f32s(loss.clone())[0];
    assert!((ours - expected[0]).abs() < 1e-5, "token-mean loss {ours} vs reference {}", expected[0]);

    let gradients = loss.backward();
    for stack in Stack::ALL {
        let grad = sets.get(stack).unwrap().embedding.val().grad(&gradients).expect("every set gets a gradient");
        let (_, expected) = read_f32(&reference, &format!("prefix.grad.{}", stack.name()));
        let ours: Vec<f32> = grad.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let scale = expected.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        let worst = max_abs_diff(&ours, &expected);
        println!("{} prefix: max |Δgrad| = {worst:e} (largest {scale:e})", stack.name());
        assert!(worst < 1e-5 + 1e-4 * scale, "{} gradient differs by {worst}", stack.name());
    }
}

/// Copy the source: `a b c` → `a b c </s>`, over a small alphabet.
fn copy_task(n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let source: Vec<u32> = (0..3).map(|k| 10 + ((i * 7 + k * 3) % 12) as u32).collect();
            let labels = source.iter().map(|&t| t as i64).chain([2]).collect();
            Example { input_ids: source, labels }
        })
        .collect()
}

#[test]
fn a_frozen_bart_learns_to_copy_through_its_three_prefixes() {
    let _serial = serial();
    let device = device();
    let mut model = load_bart(&fixtures().join("bart-a"), &device).unwrap();
    // As for gpt2-a: the tiny random model's tied head spans a few nats; scaled, a task can be
    // learnt to near zero, and what is tested is whether the prefixes learn it.
    model.shared = model.shared.map(|w| (w * 4.0).detach());
    let before = all_weights(&model);
    device.seed(7);
    let prefix_config = PrefixConfig { length: 6, reparam: Reparam::Mlp { hidden: 64 }, dropout: 0.0, init: Init::Random, placement: Default::default() };
    let sets = BartPrefixSets::init([Some(&prefix_config); 3], BartLayout::of(&model.config), &device).unwrap();
    let mut config = TrainConfig::new(prefix_config);
    config.lr = 1e-2;
    config.batch_size = 8;
    config.max_steps = Some(400);
    config.schedule = Schedule::Constant;
    config.objective = Objective::Mean;
    config.pad_token_id = 1;
    config.lm_dropout = Some(0.0);
    let out = scratch("bart-copy");
    let mut trainer: Trainer<prefix_tune_model::Bart> = Trainer::new(model, sets, config, &out).unwrap();
    trainer.quiet = true;
    let summary = trainer.train(&copy_task(24), &[], None).unwrap();
    let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
    println!("copy task: loss {first:.3} → {last:.3}");
    assert!(last < 0.2 * first && last < 0.3, "loss fell only from {first} to {last}");
    assert_eq!(all_weights(&trainer.model), before, "the frozen BART is bit-identical after training");
    // The run's best/ is a BART export with the three sets.
    let files = WeightFiles::open(vec![out.join("best/prefix.safetensors")]).unwrap();
    for stack in Stack::ALL {
        assert_eq!(read_f32(&files, stack.name()).0, vec![6, BartLayout::of(&trainer.model.config).stack(stack).width()]);
    }
    // And it copies when decoding: greedy search with the trained sets reproduces the sources.
    let plain = trainer.model.valid();
    let sets = trainer.prefix.valid();
    let sources: Vec<Vec<u32>> = copy_task(4).into_iter().map(|e| e.input_ids).collect();
    let mut generate = GenerateConfig::new(2);
    generate.decoder_start_token_id = Some(2);
    generate.pad_token_id = 1;
    generate.max_new_tokens = 6;
    let outputs = generate_bart(&plain, &sources, &sets.past(sources.len(), false), 0, &generate).unwrap();
    for (source, output) in sources.iter().zip(outputs) {
        let expected: Vec<u32> = source.iter().copied().chain([2]).collect();
        assert_eq!(output.ids, expected, "greedy output of a trained copy prefix");
    }
}

#[test]
fn a_bart_run_resumes_bit_for_bit() {
    let _serial = serial();
    let device = device();
    let model = || load_bart(&fixtures().join("bart-a"), &device).unwrap();
    let prefix_config = PrefixConfig { length: 4, reparam: Reparam::Mlp { hidden: 16 }, dropout: 0.1, init: Init::Random, placement: Default::default() };
    let mut config = TrainConfig::new(prefix_config.clone());
    config.lr = 1e-2;
    config.batch_size = 4;
    config.epochs = 2;
    config.pad_token_id = 1;
    config.lm_dropout = Some(0.1);
    config.checkpoint_every = Some(1);
    let fresh = || {
        device.seed(3);
        let short = PrefixConfig { length: 2, ..prefix_config.clone() };
        BartPrefixSets::init([Some(&prefix_config), None, Some(&short)], BartLayout::of(&model().config), &device).unwrap()
    };
    let examples = copy_task(12);
    let bits = |sets: &BartPrefixSets| [sets.encoder.as_ref(), sets.cross.as_ref()].map(|p| to_f32s(p.unwrap().activations().detach()));
    let whole = scratch("bart-resume-whole");
    let mut trainer = Trainer::new(model(), fresh(), config.clone(), &whole).unwrap();
    trainer.quiet = true;
    trainer.train(&examples, &[], None).unwrap();
    let uninterrupted = bits(&trainer.prefix);

    let split = scratch("bart-resume-split");
    let mut first = Trainer::new(model(), fresh(), config, &split).unwrap();
    first.quiet = true;
    first.train(&examples, &[], Some(2)).unwrap();
    drop(first);
    let mut second = Trainer::<prefix_tune_model::Bart>::resume(model(), &split).unwrap();
    second.quiet = true;
    let summary = second.train(&examples, &[], None).unwrap();
    assert_eq!(summary.steps, 6);
    assert!(bits(&second.prefix) == uninterrupted, "not bit-identical after resume");
    assert_eq!(second.prefix.lengths(), [4, 0, 2]);
}
