//! Prefix files: the native export, PEFT adapters, and the full training parameterisation.
//!
//! | kind | files | holds |
//! |---|---|---|
//! | export | `prefix_config.json` + `prefix.safetensors` (`activations` [P, 2·L·D]) | what inference needs |
//! | PEFT adapter | `adapter_config.json` + `adapter_model.safetensors` (`prompt_embeddings` [P, 2·L·D]) | the same, PEFT's names |
//! | state | `prefix_config.json` + `prefix.safetensors` (embedding and MLP) | what training resumes from |
//!
//! A training run directory holds `best/` (an export); any reader accepts it too.

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};
use prefix_tune_model::tensors::{floats, to_f32s};
use prefix_tune_model::weights::{save_f32, write_atomic, WeightFiles};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{BlockOrder, Layout, Placement, Prefix, PrefixConfig, PrefixError, PrefixMlp, Reparam};

pub const CONFIG_FILE: &str = "prefix_config.json";
pub const TENSORS_FILE: &str = "prefix.safetensors";
pub const PEFT_CONFIG_FILE: &str = "adapter_config.json";
pub const PEFT_TENSORS_FILE: &str = "adapter_model.safetensors";

/// `prefix_config.json`, for GPT-2's one prefix and BART's sets alike.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrefixFileConfig {
    /// Always "prefix-tune".
    pub format: String,
    /// "export" (activations only) or "state" (full parameterisation).
    pub kind: String,
    pub architecture: String,
    #[serde(default)]
    pub base_model: Option<String>,
    /// One prefix's P and shape (GPT-2, or one set of a BART run's state).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_length: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n_layer: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub n_head: usize,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub head_dim: usize,
    /// A BART export: the P of each set that is on, by name (`encoder`, `decoder`, `cross`);
    /// the shapes are the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lengths: Option<std::collections::BTreeMap<String, usize>>,
    /// For a state: the configuration it was trained with.
    #[serde(default)]
    pub prefix: Option<PrefixConfig>,
    /// Where the activations go (prefix unless an ablation).
    #[serde(default)]
    pub placement: Placement,
    /// Which column blocks feed which layer (the paper's, or PEFT's encoder-decoder order).
    #[serde(default, skip_serializing_if = "is_paper")]
    pub blocks: BlockOrder,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_paper(blocks: &BlockOrder) -> bool {
    *blocks == BlockOrder::Paper
}

impl PrefixFileConfig {
    pub fn layout(&self) -> Layout {
        Layout { blocks: self.blocks, ..Layout::new(self.n_layer, self.n_head, self.head_dim) }
    }
}

/// A prefix (GPT-2's [`Prefix`] or BART's [`crate::BartPrefixSets`]) read from disk, with what
/// the file says about the model it belongs to.
pub struct Loaded<P> {
    pub prefix: P,
    pub base_model: Option<String>,
    pub path: PathBuf,
}

pub type LoadedPrefix = Loaded<Prefix>;

pub(crate) fn file_error(path: &Path, field: &str, reason: impl Into<String>) -> PrefixError {
    PrefixError::File { path: path.into(), field: field.into(), reason: reason.into() }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, PrefixError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, "(file)", e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file_error(path, "(json)", format!("not valid JSON: {e}")))
}

/// `prefix_config.json` in `dir`, typed; its `format` checked.
pub(crate) fn read_file_config(dir: &Path) -> Result<PrefixFileConfig, PrefixError> {
    let path = dir.join(CONFIG_FILE);
    let config: PrefixFileConfig = serde_json::from_value(read_json(&path)?).map_err(|e| file_error(&path, "(fields)", e.to_string()))?;
    if config.format != "prefix-tune" {
        return Err(file_error(&path, "format", format!("`{}` is not \"prefix-tune\"", config.format)));
    }
    Ok(config)
}

/// Reads a prefix from any of the layouts above; checks it against `expected` (the model's)
/// when given.
pub fn load_prefix(path: &Path, expected: Option<Layout>, device: &Device) -> Result<LoadedPrefix, PrefixError> {
    let dir = resolve_dir(path)?;
    if dir.join(CONFIG_FILE).is_file() {
        return load_native(&dir, expected, device);
    }
    if dir.join(PEFT_CONFIG_FILE).is_file() {
        return load_peft(&dir, expected, device);
    }
    Err(file_error(
        &dir,
        "(layout)",
        format!("not a prefix: expected {CONFIG_FILE} (export or training state), {PEFT_CONFIG_FILE} (PEFT adapter) or a run directory with best/"),
    ))
}

/// The directory of a prefix: `path` itself, the folder of a file inside it, or a run
/// directory's `best/`.
pub(crate) fn resolve_dir(path: &Path) -> Result<PathBuf, PrefixError> {
    let dir = if path.is_file() { path.parent().unwrap_or(Path::new(".")).to_path_buf() } else { path.to_path_buf() };
    if !dir.is_dir() {
        return Err(file_error(path, "(path)", "no such prefix file or directory"));
    }
    let is_prefix = dir.join(CONFIG_FILE).is_file() || dir.join(PEFT_CONFIG_FILE).is_file();
    Ok(if !is_prefix && dir.join("best").is_dir() { dir.join("best") } else { dir })
}

/// The names a config file gives a layout's three sizes, and their values: ours
/// (`prefix_config.json`), or PEFT's, whose third is the model's width, not a head's.
type LayoutFields = fn(Layout) -> [(&'static str, usize); 3];

fn native_fields(l: Layout) -> [(&'static str, usize); 3] {
    [("n_layer", l.n_layer), ("n_head", l.n_head), ("head_dim", l.head_dim)]
}

fn peft_fields(l: Layout) -> [(&'static str, usize); 3] {
    [("num_layers", l.n_layer), ("num_attention_heads", l.n_head), ("token_dim", l.n_head * l.head_dim)]
}

/// A prefix for another model is refused naming the file's own field.
fn check_layout(path: &Path, found: Layout, expected: Option<Layout>, fields: LayoutFields) -> Result<(), PrefixError> {
    let Some(expected) = expected else { return Ok(()) };
    for ((field, f), (_, e)) in fields(found).into_iter().zip(fields(expected)) {
        if f != e {
            return Err(file_error(path, field, format!("the prefix was made for {field} = {f} but the model has {e}: it belongs to another model")));
        }
    }
    Ok(())
}

fn read_matrix(files: &WeightFiles, path: &Path, name: &str, shape: [usize; 2], why: &str, device: &Device) -> Result<Tensor<2>, PrefixError> {
    let values = files.read(name, &shape, why).map_err(|e| match e {
        prefix_tune_model::ModelError::MissingTensor { .. } => file_error(path, name, "missing tensor"),
        other => PrefixError::Model(other),
    })?;
    Ok(floats(values, shape, device))
}

fn read_vector(files: &WeightFiles, path: &Path, name: &str, len: usize, device: &Device) -> Result<Tensor<1>, PrefixError> {
    let values = files.read(name, &[len], "MLP width").map_err(|e| match e {
        prefix_tune_model::ModelError::MissingTensor { .. } => file_error(path, name, "missing tensor"),
        other => PrefixError::Model(other),
    })?;
    Ok(floats(values, [len], device))
}

fn load_native(dir: &Path, expected: Option<Layout>, device: &Device) -> Result<LoadedPrefix, PrefixError> {
    let config = read_file_config(dir)?;
    if config.architecture == "bart" {
        return Err(file_error(&dir.join(CONFIG_FILE), "architecture", "`bart`: this prefix is for a BART model, not GPT-2"));
    }
    read_native(dir, config, expected, device)
}

/// One prefix's training state (or export) in `dir`, checked against `layout`: a GPT-2 run's
/// checkpoint, or one set of a BART run's.
pub fn load_state_dir(dir: &Path, layout: Layout, device: &Device) -> Result<Prefix, PrefixError> {
    let mut prefix = read_native(dir, read_file_config(dir)?, Some(layout), device)?.prefix;
    // The shape is the model's; the block order is the file's.
    prefix.layout = Layout { blocks: prefix.layout.blocks, ..layout };
    Ok(prefix)
}

fn read_native(dir: &Path, config: PrefixFileConfig, expected: Option<Layout>, device: &Device) -> Result<LoadedPrefix, PrefixError> {
    let config_path = dir.join(CONFIG_FILE);
    for (field, value) in [("prefix_length", config.prefix_length), ("n_layer", config.n_layer), ("n_head", config.n_head), ("head_dim", config.head_dim)] {
        if value == 0 {
            return Err(file_error(&config_path, field, "missing, or 0: must be at least 1"));
        }
    }
    check_layout(&config_path, config.layout(), expected, native_fields)?;
    let layout = config.layout();
    let tensors_path = dir.join(TENSORS_FILE);
    let files = WeightFiles::open(vec![tensors_path.clone()])?;
    let p = config.prefix_length;
    let width = config.placement.width(layout);
    let why = format!("prefix_length = {p}, width {width} for a {:?} placement", config.placement);
    let mut prefix = match config.kind.as_str() {
        "export" => Prefix::from_activations(read_matrix(&files, &tensors_path, "activations", [p, width], &why, device)?, layout),
        "state" => {
            let prefix_config = config
                .prefix
                .clone()
                .ok_or_else(|| file_error(&config_path, "prefix", "a training state must record its prefix configuration"))?;
            match prefix_config.reparam {
                Reparam::Flat => {
                    let embedding = read_matrix(&files, &tensors_path, "embedding", [p, width], &why, device)?;
                    Prefix { embedding: Param::from_tensor(embedding), mlp: None, layout, dropout: prefix_config.dropout, placement: config.placement }
                }
                Reparam::Mlp { hidden } => {
                    let d = layout.d_model();
                    let linear = |name: &str, d_in: usize, d_out: usize| -> Result<Linear, PrefixError> {
                        let why = format!("MLP {d_in} → {d_out}");
                        Ok(Linear {
                            weight: Param::from_tensor(read_matrix(&files, &tensors_path, &format!("{name}.weight"), [d_in, d_out], &why, device)?),
                            bias: Some(Param::from_tensor(read_vector(&files, &tensors_path, &format!("{name}.bias"), d_out, device)?)),
                        })
                    };
                    let mlp = PrefixMlp { hidden: linear("mlp.hidden", d, hidden)?, output: linear("mlp.output", hidden, width)? };
                    let embedding = read_matrix(&files, &tensors_path, "embedding", [p, d], &why, device)?;
                    Prefix { embedding: Param::from_tensor(embedding), mlp: Some(mlp), layout, dropout: prefix_config.dropout, placement: config.placement }
                }
            }
        }
        other => return Err(file_error(&config_path, "kind", format!("`{other}` is not \"export\" or \"state\""))),
    };
    prefix.placement = config.placement;
    Ok(LoadedPrefix { prefix, base_model: config.base_model, path: dir.into() })
}

fn load_peft(dir: &Path, expected: Option<Layout>, device: &Device) -> Result<LoadedPrefix, PrefixError> {
    let config_path = dir.join(PEFT_CONFIG_FILE);
    let config = read_json(&config_path)?;
    let field = |name: &str| config.get(name).and_then(|v| v.as_u64()).map(|v| v as usize);
    match config.get("peft_type").and_then(|v| v.as_str()) {
        Some("PREFIX_TUNING") => {}
        Some(other) => return Err(file_error(&config_path, "peft_type", format!("`{other}` is not PREFIX_TUNING"))),
        None => return Err(file_error(&config_path, "peft_type", "missing")),
    }
    let require = |name: &str| field(name).ok_or_else(|| file_error(&config_path, name, "missing or not a number"));
    let p = require("num_virtual_tokens")?;
    if p == 0 {
        return Err(file_error(&config_path, "num_virtual_tokens", "must be at least 1"));
    }
    let n_layer = require("num_layers")?;
    let n_head = require("num_attention_heads")?;
    let token_dim = require("token_dim")?;
    if let Some(submodules) = field("num_transformer_submodules") {
        if submodules != 1 {
            return Err(file_error(&config_path, "num_transformer_submodules", format!("{submodules} is not supported for GPT-2 (expected 1)")));
        }
    }
    if n_head == 0 || token_dim % n_head != 0 {
        return Err(file_error(&config_path, "num_attention_heads", format!("token_dim = {token_dim} is not divisible by {n_head} heads")));
    }
    let layout = Layout::new(n_layer, n_head, token_dim / n_head);
    check_layout(&config_path, layout, expected, peft_fields)?;
    let tensors_path = dir.join(PEFT_TENSORS_FILE);
    let files = WeightFiles::open(vec![tensors_path.clone()])?;
    let why = format!("num_virtual_tokens = {p}, 2·num_layers·token_dim = {}", layout.width());
    let activations = read_matrix(&files, &tensors_path, "prompt_embeddings", [p, layout.width()], &why, device)?;
    let base_model = config.get("base_model_name_or_path").and_then(|v| v.as_str()).map(String::from);
    Ok(LoadedPrefix { prefix: Prefix::from_activations(activations, layout), base_model, path: dir.into() })
}

/// Writes the activations only (MLP dropped): the file users ship.
pub fn save_export(prefix: &Prefix, base_model: Option<&str>, architecture: &str, dir: &Path) -> Result<(), PrefixError> {
    let layout = prefix.layout;
    let activations = prefix.activations();
    let [p, width] = activations.dims();
    let mut config = file_config("export", architecture, base_model, p, layout, None);
    config.placement = prefix.placement;
    write_dir(dir, &config, &[("activations".into(), vec![p, width], to_f32s(activations))])
}

/// Writes the full parameterisation (MLP included), for resuming training.
pub fn save_state(prefix: &Prefix, prefix_config: &PrefixConfig, base_model: Option<&str>, architecture: &str, dir: &Path) -> Result<(), PrefixError> {
    let mut tensors = vec![("embedding".to_string(), prefix.embedding.val().dims().to_vec(), to_f32s(prefix.embedding.val()))];
    if let Some(mlp) = &prefix.mlp {
        for (name, linear) in [("mlp.hidden", &mlp.hidden), ("mlp.output", &mlp.output)] {
            tensors.push((format!("{name}.weight"), linear.weight.val().dims().to_vec(), to_f32s(linear.weight.val())));
            let bias = linear.bias.as_ref().expect("prefix MLP layers have biases").val();
            tensors.push((format!("{name}.bias"), bias.dims().to_vec(), to_f32s(bias)));
        }
    }
    let mut config = file_config("state", architecture, base_model, prefix.length(), prefix.layout, Some(prefix_config.clone()));
    config.placement = prefix.placement;
    write_dir(dir, &config, &tensors)
}

fn file_config(kind: &str, architecture: &str, base_model: Option<&str>, p: usize, layout: Layout, prefix: Option<PrefixConfig>) -> PrefixFileConfig {
    PrefixFileConfig {
        format: "prefix-tune".into(),
        kind: kind.into(),
        architecture: architecture.into(),
        base_model: base_model.map(String::from),
        prefix_length: p,
        n_layer: layout.n_layer,
        n_head: layout.n_head,
        head_dim: layout.head_dim,
        prefix,
        placement: Placement::Prefix,
        blocks: layout.blocks,
        lengths: None,
    }
}

fn write_dir(dir: &Path, config: &PrefixFileConfig, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), PrefixError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, "(directory)", e.to_string()))?;
    save_f32(&dir.join(TENSORS_FILE), tensors)?;
    let text = serde_json::to_string_pretty(config).expect("config serialises");
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

/// Writes a PEFT prefix-tuning adapter (`prefix_projection` false: the file holds activations).
pub fn save_peft(prefix: &Prefix, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
    if prefix.placement != Placement::Prefix {
        return Err(PrefixError::Input(format!("PEFT adapters hold prefixes only, not a {:?} ablation", prefix.placement)));
    }
    write_peft_adapter(prefix, "CAUSAL_LM", 1, base_model, dir)
}

/// `adapter_model.safetensors` (`prompt_embeddings`) and `adapter_config.json` for `prefix`'s
/// activations: a decoder-only adapter (`CAUSAL_LM`, one submodule) or an encoder-decoder one
/// (`SEQ_2_SEQ_LM`, two).
pub(crate) fn write_peft_adapter(prefix: &Prefix, task_type: &str, submodules: usize, base_model: Option<&str>, dir: &Path) -> Result<(), PrefixError> {
    let layout = prefix.layout;
    let activations = prefix.activations();
    let [p, width] = activations.dims();
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, "(directory)", e.to_string()))?;
    save_f32(&dir.join(PEFT_TENSORS_FILE), &[("prompt_embeddings".into(), vec![p, width], to_f32s(activations))])?;
    let config = json!({
        "peft_type": "PREFIX_TUNING",
        "task_type": task_type,
        "auto_mapping": null,
        "base_model_name_or_path": base_model,
        "revision": null,
        "inference_mode": true,
        "num_virtual_tokens": p,
        "token_dim": layout.d_model(),
        "num_transformer_submodules": submodules,
        "num_attention_heads": layout.n_head,
        "num_layers": layout.n_layer,
        "encoder_hidden_size": layout.d_model(),
        "prefix_projection": false,
        "modules_to_save": null,
    });
    let text = serde_json::to_string_pretty(&config).expect("config serialises");
    write_atomic(&dir.join(PEFT_CONFIG_FILE), text.as_bytes())?;
    Ok(())
}
