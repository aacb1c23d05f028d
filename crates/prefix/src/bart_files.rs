//! BART's prefix files: the native export (one matrix per set) and PEFT's seq2seq adapters.
//!
//! | kind | files | holds |
//! |---|---|---|
//! | export | `prefix_config.json` (`architecture: "bart"`) + `prefix.safetensors` with any of `encoder`, `decoder`, `cross`, each `[P_set, 2·L·D]` (paper block order) | the three sets; a missing matrix is a set that is off |
//! | PEFT adapter | `adapter_config.json` (`task_type: SEQ_2_SEQ_LM`) + `adapter_model.safetensors` (`prompt_embeddings`) | the decoder set only, in PEFT's block order and position convention |

use std::path::Path;

use burn::tensor::Device;
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::weights::{save_f32, to_f32, write_atomic, WeightFiles};

use crate::bart::{BartLayout, BartPrefixSets, Stack};
use crate::files::{file_error, read_file_config, read_json, resolve_dir, CONFIG_FILE, PEFT_CONFIG_FILE, PEFT_TENSORS_FILE, TENSORS_FILE};
use crate::{BlockOrder, Layout, Placement, Prefix, PrefixError, PrefixFileConfig};

/// BART prefix sets read from disk.
pub type LoadedBartPrefix = crate::files::Loaded<BartPrefixSets>;

/// Reads BART prefix sets from a native export, a PEFT seq2seq adapter, or a run directory.
pub fn load_bart_prefix(path: &Path, layout: BartLayout, device: &Device) -> Result<LoadedBartPrefix, PrefixError> {
    let dir = resolve_dir(path)?;
    if Stack::ALL.iter().any(|s| dir.join(s.name()).join(CONFIG_FILE).is_file()) {
        return load_states(&dir, layout, device);
    }
    if dir.join(CONFIG_FILE).is_file() {
        load_native(&dir, layout, device)
    } else {
        load_peft(&dir, layout, device)
    }
}

/// A BART run's checkpoint: one training state per set, in `encoder/`, `decoder/`, `cross/`.
fn load_states(dir: &Path, layout: BartLayout, device: &Device) -> Result<LoadedBartPrefix, PrefixError> {
    let read = |stack: Stack| -> Result<Option<Prefix>, PrefixError> {
        let sub = dir.join(stack.name());
        sub.join(CONFIG_FILE).is_file().then(|| crate::files::load_state_dir(&sub, layout.stack(stack), device)).transpose()
    };
    let sets = BartPrefixSets { encoder: read(Stack::Encoder)?, decoder: read(Stack::Decoder)?, cross: read(Stack::Cross)? };
    Ok(LoadedBartPrefix { prefix: sets, base_model: None, path: dir.into() })
}

fn load_native(dir: &Path, layout: BartLayout, device: &Device) -> Result<LoadedBartPrefix, PrefixError> {
    let config_path = dir.join(CONFIG_FILE);
    let config = read_file_config(dir)?;
    if config.architecture != "bart" {
        return Err(file_error(&config_path, "architecture", format!("`{}`: this prefix is not for a BART model", config.architecture)));
    }
    if config.kind != "export" {
        return Err(file_error(&config_path, "kind", "a BART prefix file must be an \"export\""));
    }
    let tensors_path = dir.join(TENSORS_FILE);
    let files = WeightFiles::open(vec![tensors_path.clone()])?;
    if let Some(unknown) = files.names().find(|name| !Stack::ALL.iter().any(|s| s.name() == *name)) {
        return Err(file_error(&tensors_path, unknown, "unknown tensor: a BART prefix holds `encoder`, `decoder` and/or `cross`"));
    }
    let mut sets = BartPrefixSets { encoder: None, decoder: None, cross: None };
    for stack in Stack::ALL {
        if !files.contains(stack.name()) {
            continue;
        }
        let prefix = read_set(&files, &tensors_path, stack, layout.stack(stack), device)?;
        let declared = config.lengths.as_ref().and_then(|lengths| lengths.get(stack.name()).copied());
        if let Some(declared) = declared.filter(|&d| d != prefix.length()) {
            return Err(file_error(&config_path, &format!("lengths.{}", stack.name()), format!("says {declared} but the `{}` matrix has {} rows", stack.name(), prefix.length())));
        }
        *set_mut(&mut sets, stack) = Some(prefix);
    }
    if sets.lengths() == [0, 0, 0] {
        return Err(file_error(&tensors_path, "(tensors)", "holds none of `encoder`, `decoder`, `cross`"));
    }
    Ok(LoadedBartPrefix { prefix: sets, base_model: config.base_model, path: dir.into() })
}

fn set_mut(sets: &mut BartPrefixSets, stack: Stack) -> &mut Option<Prefix> {
    match stack {
        Stack::Encoder => &mut sets.encoder,
        Stack::Decoder => &mut sets.decoder,
        Stack::Cross => &mut sets.cross,
    }
}

/// One set's matrix `[P, 2·L·D]`; its length comes from its rows, its width must be the model's.
fn read_set(files: &WeightFiles, path: &Path, stack: Stack, layout: Layout, device: &Device) -> Result<Prefix, PrefixError> {
    let name = stack.name();
    let (shape, values) = files.view(name, |_, view| (view.shape().to_vec(), to_f32(view)))?;
    let values = values.ok_or_else(|| file_error(path, name, "must be F32, F16 or BF16"))?;
    let width = layout.width();
    match shape.as_slice() {
        &[rows, columns] if rows > 0 && columns == width => Ok(Prefix::from_activations(floats(values, [rows, columns], device), layout)),
        _ => Err(file_error(
            path,
            name,
            format!("shape {shape:?}, but this model's {name} prefix is [P, 2·L·D] = [P, {width}] (L = {}, D = {}) with P ≥ 1", layout.n_layer, layout.d_model()),
        )),
    }
}

fn load_peft(dir: &Path, layout: BartLayout, device: &Device) -> Result<LoadedBartPrefix, PrefixError> {
    let config_path = dir.join(PEFT_CONFIG_FILE);
    if !config_path.is_file() {
        return Err(file_error(dir, "(layout)", format!("not a BART prefix: expected {CONFIG_FILE} (export), {PEFT_CONFIG_FILE} (PEFT adapter) or a run directory with best/")));
    }
    let config = read_json(&config_path)?;
    if config.get("peft_type").and_then(|v| v.as_str()) != Some("PREFIX_TUNING") {
        return Err(file_error(&config_path, "peft_type", "must be PREFIX_TUNING"));
    }
    let number = |field: &str| config.get(field).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| file_error(&config_path, field, "missing or not a number"));
    let decoder = layout.decoder;
    let hint = "PEFT fills it from BART's config, which names the encoder's; set it to the decoder's";
    for (field, found, expected) in [
        ("num_transformer_submodules", number("num_transformer_submodules")?, 2),
        ("num_layers", number("num_layers")?, decoder.n_layer),
        ("num_attention_heads", number("num_attention_heads")?, decoder.n_head),
        ("token_dim", number("token_dim")?, decoder.d_model()),
    ] {
        if found != expected {
            return Err(file_error(&config_path, field, format!("{found}, but this BART's decoder needs {expected} ({hint})")));
        }
    }
    let p = number("num_virtual_tokens")?;
    let tensors_path = dir.join(PEFT_TENSORS_FILE);
    let files = WeightFiles::open(vec![tensors_path.clone()])?;
    let peft_layout = Layout { blocks: BlockOrder::PeftSeq2Seq, ..decoder };
    let why = format!("num_virtual_tokens = {p}, 2·num_layers·token_dim = {}", peft_layout.width());
    let values = files.read("prompt_embeddings", &[p, peft_layout.width()], &why)?;
    let prefix = Prefix::from_activations(floats(values, [p, peft_layout.width()], device), peft_layout);
    let base_model = config.get("base_model_name_or_path").and_then(|v| v.as_str()).map(String::from);
    Ok(LoadedBartPrefix { prefix: BartPrefixSets { encoder: None, decoder: Some(prefix), cross: None }, base_model, path: dir.into() })
}

/// Writes the native export: each set that is on as one matrix, lengths in the config.
pub fn save_bart_export(sets: &BartPrefixSets, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
    let mut tensors = Vec::new();
    let mut lengths = std::collections::BTreeMap::new();
    for stack in Stack::ALL {
        let Some(prefix) = sets.get(stack) else { continue };
        if prefix.layout.blocks != BlockOrder::Paper {
            return Err(PrefixError::Input(format!("the {} prefix is in PEFT's layout (it shifts decoder positions): write it with --format peft", stack.name())));
        }
        let activations = prefix.activations();
        lengths.insert(stack.name().to_string(), prefix.length());
        tensors.push((stack.name().to_string(), activations.dims().to_vec(), to_f32s(activations)));
    }
    let config = PrefixFileConfig {
        format: "prefix-tune".into(),
        kind: "export".into(),
        architecture: "bart".into(),
        base_model: base_model.map(String::from),
        prefix_length: 0,
        n_layer: 0,
        n_head: 0,
        head_dim: 0,
        lengths: Some(lengths),
        prefix: None,
        placement: Placement::Prefix,
        blocks: BlockOrder::Paper,
    };
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, "(directory)", e.to_string()))?;
    save_f32(&dir.join(TENSORS_FILE), &tensors)?;
    write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&config).expect("config serialises").as_bytes())?;
    Ok(())
}

/// Writes a PEFT seq2seq prefix-tuning adapter: only a decoder set in PEFT's layout (PEFT cannot
/// hold encoder or cross-attention prefixes, nor one decoder prefix per layer).
pub fn save_bart_peft(sets: &BartPrefixSets, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
    let prefix = match (&sets.encoder, &sets.decoder, &sets.cross) {
        (None, Some(decoder), None) if decoder.layout.blocks == BlockOrder::PeftSeq2Seq => decoder,
        _ => return Err(PrefixError::Input("a PEFT BART adapter holds only a decoder self-attention prefix in PEFT's layout (train with --prefix-layout peft)".into())),
    };
    crate::files::write_peft_adapter(prefix, "SEQ_2_SEQ_LM", 2, base_model, dir)
}
