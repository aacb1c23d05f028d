//! Loader tests on rows copied from the official files (tests/fixtures/data, see its README).

use prefix_tune_data::e2e::{E2eConfig, TargetStyle};
use prefix_tune_data::task::Split;
use prefix_tune_data::xsum::{truncate_sources, WhitespaceTruncate};
use prefix_tune_data::{load, Tokenizer, DataError, Gpt2Encoder, LoadConfig, Task, IGNORE_INDEX};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/data").join(name)
}

fn load_default(task: Task, name: &str) -> prefix_tune_data::Dataset {
    load(task, &fixture(name), &LoadConfig::default()).unwrap()
}

#[test]
fn e2e_fields_renames_and_splitting() {
    let data = load_default(Task::E2e, "e2e_devset_sample.csv");
    assert_eq!(data.pairs.len(), 16);
    assert_eq!(data.pairs[0].source, "name : Alimentum | area : city centre | family friendly : no");
    // Same text as the paper's src1_valid.txt line 1.
    assert_eq!(
        data.pairs[0].target,
        "There is a place in the city centre , Alimentum , that is not family - friendly ."
    );
    assert_eq!(
        data.pairs[10].source,
        "name : Cocum | Type : coffee shop | food : Chinese | price : more than £ 30 | customer rating : high | family friendly : no"
    );
    assert_eq!(
        data.pairs[13].source,
        "name : Cocum | Type : coffee shop | food : Chinese | price : £ 20 - 25 | customer rating : high | family friendly : no"
    );
    // Paper's src1_valid.txt has exactly this target for the row.
    assert_eq!(
        data.pairs[13].target,
        "Cocum is a coffee shop providing Chinese food in the £ 20 - 25 price range . Its customer rating is high ."
    );
}

#[test]
fn e2e_original_targets_keep_csv_text() {
    let config = LoadConfig { e2e: E2eConfig { target_style: TargetStyle::Original }, ..Default::default() };
    let data = load(Task::E2e, &fixture("e2e_devset_sample.csv"), &config).unwrap();
    assert_eq!(
        data.pairs[0].target,
        "There is a place in the city centre, Alimentum, that is not family-friendly."
    );
}

#[test]
fn e2e_groups_references_per_mr_in_order_of_first_appearance() {
    let groups = load_default(Task::E2e, "e2e_devset_sample.csv").groups();
    let sizes: Vec<usize> = groups.iter().map(|g| g.references.len()).collect();
    assert_eq!(sizes, vec![6, 4, 3, 3]);
    assert!(groups[1].source.ends_with("| near : Burger King"));
    assert!(groups[3].source.contains("price : £ 20 - 25"));
}

#[test]
fn e2e_token_ids_match_hf_tokenizers() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("e2e_token_ids.json")).unwrap()).unwrap();
    let data = load_default(Task::E2e, "e2e_devset_sample.csv");
    let pair = &data.pairs[expected["csv_row"].as_u64().unwrap() as usize - 1];
    assert_eq!(pair.source, expected["source"].as_str().unwrap());
    assert_eq!(pair.target, expected["target"].as_str().unwrap());
    assert_eq!(
        prefix_tune_data::gpt2::training_text(&pair.source, &pair.target),
        expected["text"].as_str().unwrap()
    );
    let encoder = Gpt2Encoder::from_file(&fixture("gpt2-tokenizer.json")).unwrap();
    assert_eq!(encoder.eos_id(), 50256);
    let example = encoder.training_example(&pair.source, &pair.target, None).unwrap();
    let ids: Vec<u32> =
        expected["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(example.input_ids, ids);
    // Labels: -100 up to and including the first <|endoftext|>, then the ids.
    let sep = ids.iter().position(|&i| i == 50256).unwrap();
    assert!(example.labels[..=sep].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(example.labels[sep + 1..], ids[sep + 1..].iter().map(|&i| i as i64).collect::<Vec<_>>()[..]);
    assert_eq!(*example.labels.last().unwrap(), 50256);
    // The prompt is the training ids up to the separator.
    assert_eq!(encoder.prompt_ids(&pair.source).unwrap(), ids[..=sep]);
    // block_size truncation keeps labels aligned.
    let short = encoder.training_example(&pair.source, &pair.target, Some(10)).unwrap();
    assert_eq!(short.input_ids.len(), 10);
    assert!(short.labels.iter().all(|&l| l == IGNORE_INDEX));
}

#[test]
fn webnlg_triples_good_lexicalizations_and_seen_flags() {
    let train = load_default(Task::Webnlg, "webnlg_train_sample.xml");
    // 2 + 1 + 5 good lexicalizations; the toFix one is dropped.
    assert_eq!(train.pairs.len(), 8);
    assert_eq!(train.pairs[0].source, " | Aarhus_Airport : cityServed : \"Aarhus, Denmark\"");
    assert_eq!(train.pairs[0].target, "The Aarhus is the airport of Aarhus, Denmark.");
    assert_eq!(
        train.pairs[3].source,
        " | Alan_Shepard : birthPlace : New_Hampshire | Alan_Shepard : nationality : United_States"
    );
    assert!(train.pairs.iter().all(|p| !p.target.contains("(US(")));
    let meta = &train.pairs[3].meta;
    assert_eq!((meta.category.as_deref(), meta.seen, meta.id.as_deref()), (Some("Astronaut"), Some(true), Some("Id10")));

    let test = load_default(Task::Webnlg, "webnlg_test_sample.xml");
    let groups = test.groups();
    let flags: Vec<(&str, Option<bool>)> =
        groups.iter().map(|g| (g.meta.category.as_deref().unwrap(), g.meta.seen)).collect();
    assert_eq!(flags, vec![("Airport", Some(true)), ("Artist", Some(false)), ("CelestialBody", Some(false))]);
    assert_eq!(groups[0].references.len(), 2);
    assert_eq!(groups[2].source, " | (19255)_1994_VK8 : density : 2.0 (gramPerCubicCentimetres)");
}

/// A WebNLG split's own folder (`train/` of the release, XML files by triple count) reads as
/// its files do, whatever split was asked for; the release's root still picks the split's
/// folder, and a folder without XML files is refused naming the accepted names.
#[test]
fn a_webnlg_split_folder_reads_as_its_xml_files() {
    let root = std::env::temp_dir().join(format!("prefix-tune-data-{}-webnlg", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for (folder, file) in [("train/1triples", "webnlg_train_sample.xml"), ("train/2triples", "webnlg_test_sample.xml")] {
        std::fs::create_dir_all(root.join(folder)).unwrap();
        std::fs::copy(fixture(file), root.join(folder).join(file)).unwrap();
    }
    let mut expected = load_default(Task::Webnlg, "webnlg_train_sample.xml").pairs;
    expected.extend(load_default(Task::Webnlg, "webnlg_test_sample.xml").pairs);
    for split in [Split::Train, Split::Dev, Split::Test] {
        let folder = load(Task::Webnlg, &root.join("train"), &LoadConfig { split, ..Default::default() }).unwrap();
        assert_eq!(folder.pairs, expected, "{split:?}");
    }
    let from_root = load(Task::Webnlg, &root, &LoadConfig { split: Split::Train, ..Default::default() }).unwrap();
    assert_eq!(from_root.pairs, expected);
    let dev = load(Task::Webnlg, &root, &LoadConfig { split: Split::Dev, ..Default::default() }).err().unwrap().to_string();
    assert!(dev.contains("accepted names: dev"), "{dev}");
    std::fs::create_dir_all(root.join("empty")).unwrap();
    let empty = load(Task::Webnlg, &root.join("empty"), &LoadConfig::default()).err().unwrap().to_string();
    assert!(empty.contains("no data file found"), "{empty}");
}

#[test]
fn dart_json_and_xml() {
    let dev = load_default(Task::Dart, "dart_dev_sample.json");
    assert_eq!(dev.pairs[0].source, "Mars Hill College : joined : 1973 | Mars Hill College : location : Mars Hill, North Carolina");
    assert_eq!(dev.pairs[0].target, "A school from Mars Hill, North Carolina, joined in 1973.");
    let groups = dev.groups();
    assert_eq!(groups.len(), 3);
    assert!(groups[2].references.len() > 1);

    let test = load_default(Task::Dart, "dart_test_sample.xml");
    assert_eq!(
        test.pairs[0].source,
        "Hawaii Five-O : notes : Episode: The Flight of the Jewels | [TABLECONTEXT] : [title] : Jeff Daniels | [TABLECONTEXT] : title : Hawaii Five-O"
    );
    assert_eq!(test.pairs[0].target, "Jeff Daniels played in the Hawaii Five-O episode The Flight of the Jewels");
}

#[test]
fn xsum_fields_and_truncation() {
    let mut data = load_default(Task::Xsum, "xsum_test_sample.jsonl");
    assert_eq!(data.pairs.len(), 3);
    assert_eq!(data.pairs[0].meta.id.as_deref(), Some("38295789"));
    assert!(data.pairs[0].source.starts_with("The ex-Reading defender denied fraudulent trading charges"));
    assert!(!data.pairs[0].source.contains('\n'));
    truncate_sources(&mut data.pairs, 5, &WhitespaceTruncate);
    assert_eq!(data.pairs[0].source, "The ex-Reading defender denied fraudulent");

    let encoder = Gpt2Encoder::from_file(&fixture("gpt2-tokenizer.json")).unwrap();
    let mut data = load_default(Task::Xsum, "xsum_test_sample.jsonl");
    truncate_sources(&mut data.pairs, 7, &encoder);
    assert_eq!(encoder.encode(&data.pairs[0].source).unwrap().len(), 7);
    assert_eq!(data.pairs[0].source, "The ex-Reading defender denied fraudulent");
}

#[test]
fn generic_jsonl_and_task_names() {
    let bad = load(Task::Jsonl, &fixture("bad_line.jsonl"), &LoadConfig::default());
    assert!(bad.is_err());
    assert_eq!("webnlg".parse::<Task>().unwrap(), Task::Webnlg);
    assert!("nope".parse::<Task>().is_err());
}

#[test]
fn directory_layout_is_resolved_and_missing_names_listed() {
    let dir = fixture("");
    let err = load(Task::E2e, &dir, &LoadConfig { split: Split::Dev, ..Default::default() }).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 1);
    assert!(err.to_string().contains("devset.csv"), "{err}");
}

fn one_line_error(err: DataError, must_contain: &[&str]) {
    let text = err.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    for needle in must_contain {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
}

#[test]
fn bad_inputs_are_one_line_errors_with_file_and_line() {
    let cfg = LoadConfig::default();
    one_line_error(
        load(Task::E2e, &fixture("bad_missing_column.csv"), &cfg).unwrap_err(),
        &["e2e: ", "bad_missing_column.csv line 1", "missing column \"ref\""],
    );
    one_line_error(
        load(Task::Webnlg, &fixture("bad_malformed.xml"), &cfg).unwrap_err(),
        &["webnlg: ", "bad_malformed.xml line 10", "malformed XML"],
    );
    one_line_error(
        load(Task::Jsonl, &fixture("bad_line.jsonl"), &cfg).unwrap_err(),
        &["jsonl: ", "bad_line.jsonl line 3", "not JSON"],
    );
    one_line_error(
        load(Task::Xsum, &fixture("bad_line.jsonl"), &cfg).unwrap_err(),
        &["xsum: ", "bad_line.jsonl line 1"],
    );
    one_line_error(
        load(Task::E2e, &fixture("bad_empty.csv"), &cfg).unwrap_err(),
        &["e2e: ", "bad_empty.csv", "empty split"],
    );
    one_line_error(
        load(Task::E2e, &fixture("no_such_file.csv"), &cfg).unwrap_err(),
        &["e2e: ", "no_such_file.csv"],
    );
}

/// tests/fixtures (the model fixtures, beside the data rows).
fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn tokenizer_matches_hf() {
    let text = std::fs::read_to_string(models().join("tokenizer_cases.json")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Both ways of building the tokenizer: tokenizer.json, and vocab.json + merges.txt.
    let dir = models().join("gpt2-b");
    let from_json = Tokenizer::from_tokenizer_json(&dir.join("tokenizer.json")).unwrap();
    let from_bpe = Tokenizer::from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt")).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        for tokenizer in [&from_json, &from_bpe] {
            let ids = tokenizer.encode(text).unwrap();
            assert_eq!(ids, expected, "ids of {text:?}");
            assert_eq!(tokenizer.decode(&ids, false).unwrap(), text, "round trip of {text:?}");
        }
    }
    assert_eq!(from_json.token_id("<|endoftext|>"), Some(50256));
}

