//! GPT-2 training examples in the paper's format: the text ` {source} <|endoftext|> {target}
//! <|endoftext|>` is tokenized with the GPT-2 byte-level BPE, and the labels copy the ids with
//! everything up to and including the first `<|endoftext|>` set to -100, so the loss covers only
//! the target and the final end-of-text token.

use crate::error::DataError;
use crate::xsum::Truncate;
use std::path::{Path, PathBuf};

/// GPT-2's end-of-text token, also used by the paper as the source/target separator.
pub const EOS_TOKEN: &str = "<|endoftext|>";
/// Label value ignored by the loss (PyTorch's cross-entropy default).
pub const IGNORE_INDEX: i64 = -100;

/// Token ids and labels for one training pair; both have the same length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrainingExample {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// The text the model is trained on for one pair.
pub fn training_text(source: &str, target: &str) -> String {
    format!(" {source} {EOS_TOKEN} {target} {EOS_TOKEN}")
}

/// The prompt given to the model at generation time (the training text up to the separator).
pub fn prompt_text(source: &str) -> String {
    format!(" {source} {EOS_TOKEN}")
}

/// Mask the labels of everything up to and including the first `eos_id`. If there is no
/// separator (e.g. it was truncated away) every label is masked.
pub fn mask_labels(input_ids: &[u32], eos_id: u32) -> Vec<i64> {
    let cut = input_ids.iter().position(|&id| id == eos_id).map(|i| i + 1).unwrap_or(input_ids.len());
    input_ids.iter().enumerate().map(|(i, &id)| if i < cut { IGNORE_INDEX } else { id as i64 }).collect()
}

/// The GPT-2 tokenizer (HF `tokenizer.json`) plus the id of `<|endoftext|>`.
pub struct Gpt2Encoder {
    tokenizer: tokenizers::Tokenizer,
    eos_id: u32,
    path: PathBuf,
}

impl Gpt2Encoder {
    /// Load `tokenizer.json` (a file, or a directory that holds one).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
        let err = |message: String| DataError::Tokenizer { file: file.clone(), message };
        let tokenizer = tokenizers::Tokenizer::from_file(&file).map_err(|e| err(e.to_string()))?;
        let eos_id = tokenizer
            .token_to_id(EOS_TOKEN)
            .ok_or_else(|| err(format!("no {EOS_TOKEN} token in the vocabulary")))?;
        Ok(Self { tokenizer, eos_id, path: file })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Token ids of `text`, no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| DataError::Tokenizer { file: self.path.clone(), message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| DataError::Tokenizer { file: self.path.clone(), message: e.to_string() })
    }

    /// One training example; `max_len` truncates like the paper's `block_size`.
    pub fn training_example(
        &self,
        source: &str,
        target: &str,
        max_len: Option<usize>,
    ) -> Result<TrainingExample, DataError> {
        let mut input_ids = self.encode(&training_text(source, target))?;
        if let Some(max) = max_len {
            input_ids.truncate(max);
        }
        let labels = mask_labels(&input_ids, self.eos_id);
        Ok(TrainingExample { input_ids, labels })
    }

    /// Prompt ids for generation: ` {source} <|endoftext|>`.
    pub fn prompt_ids(&self, source: &str) -> Result<Vec<u32>, DataError> {
        self.encode(&prompt_text(source))
    }
}

impl Truncate for Gpt2Encoder {
    /// Keep the text covered by the first `max_tokens` BPE tokens.
    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        let Ok(encoding) = self.tokenizer.encode(text, false) else { return text.to_string() };
        let offsets = encoding.get_offsets();
        if offsets.len() <= max_tokens {
            return text.to_string();
        }
        if max_tokens == 0 {
            return String::new();
        }
        let end = offsets[max_tokens - 1].1.min(text.len());
        let mut end = end;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }
}
