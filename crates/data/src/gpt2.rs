//! GPT-2 training examples in the paper's format: the text ` {source} <|endoftext|> {target}
//! <|endoftext|>` is tokenized with the GPT-2 byte-level BPE, and the labels copy the ids with
//! everything up to and including the first `<|endoftext|>` set to -100, so the loss covers only
//! the target and the final end-of-text token.

use crate::error::DataError;
use crate::xsum::Truncate;
use std::path::Path;

pub use crate::tokenizer::END_OF_TEXT;
use crate::tokenizer::Tokenizer;
/// Label value ignored by the loss (PyTorch's cross-entropy default).
pub const IGNORE_INDEX: i64 = -100;

/// One training example, for every model: token ids and labels, -100 ([`IGNORE_INDEX`]) where
/// nothing is predicted. Decoder-only: `labels` align with `input_ids` (HF convention; the
/// model shifts). Encoder-decoder: `input_ids` is the encoder input, `labels` the target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl Example {
    /// Tokens before the first label: the source and its separator.
    pub fn source_len(&self) -> usize {
        self.labels.iter().position(|&l| l != IGNORE_INDEX).unwrap_or(self.labels.len())
    }

    /// Cuts the source (keeping its last token, the separator) until the example is at most
    /// `max_len` tokens, as HF's `max_length` with the target kept whole. Returns whether
    /// anything was cut; `Err` with the smallest length possible when the target alone is too long.
    pub fn truncate_source(&mut self, max_len: usize) -> Result<bool, usize> {
        let excess = self.input_ids.len().saturating_sub(max_len);
        if excess == 0 {
            return Ok(false);
        }
        let source = self.source_len();
        // The separator (the source's last token) stays: generation prompts end with it.
        let removable = source.saturating_sub(1);
        if excess > removable {
            return Err(self.input_ids.len() - removable);
        }
        let cut = (source - 1 - excess)..(source - 1);
        self.input_ids.drain(cut.clone());
        self.labels.drain(cut);
        Ok(true)
    }
}



/// The text the model is trained on for one pair.
pub fn training_text(source: &str, target: &str) -> String {
    format!(" {source} {END_OF_TEXT} {target} {END_OF_TEXT}")
}

/// The prompt given to the model at generation time (the training text up to the separator).
pub fn prompt_text(source: &str) -> String {
    format!(" {source} {END_OF_TEXT}")
}

/// Mask the labels of everything up to and including the first `eos_id`. If there is no
/// separator (e.g. it was truncated away) every label is masked.
pub fn mask_labels(input_ids: &[u32], eos_id: u32) -> Vec<i64> {
    let cut = input_ids.iter().position(|&id| id == eos_id).map(|i| i + 1).unwrap_or(input_ids.len());
    input_ids.iter().enumerate().map(|(i, &id)| if i < cut { IGNORE_INDEX } else { id as i64 }).collect()
}

/// The model's tokenizer plus the id of `<|endoftext|>`: the paper's GPT-2 examples.
pub struct Gpt2Encoder {
    tokenizer: Tokenizer,
    eos_id: u32,
}

impl Gpt2Encoder {
    /// Load `tokenizer.json` (a file, or a model directory with it or vocab.json + merges.txt).
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let tokenizer = if path.is_dir() {
            Tokenizer::from_dir(path)?.ok_or_else(|| DataError::Tokenizer { file: path.join("tokenizer.json"), message: "no tokenizer.json (or vocab.json + merges.txt) in the model directory".into() })?
        } else {
            Tokenizer::from_tokenizer_json(path)?
        };
        let eos_id = tokenizer.token_id(END_OF_TEXT).ok_or_else(|| DataError::Tokenizer {
            file: tokenizer.path().to_path_buf(),
            message: format!("no {END_OF_TEXT} token in the vocabulary"),
        })?;
        Ok(Self { tokenizer, eos_id })
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Token ids of `text`, no special tokens added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.tokenizer.encode(text)
    }

    /// Text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.tokenizer.decode(ids, false)
    }

    /// One training example; `max_len` truncates like the paper's `block_size`.
    pub fn training_example(
        &self,
        source: &str,
        target: &str,
        max_len: Option<usize>,
    ) -> Result<Example, DataError> {
        let mut input_ids = self.encode(&training_text(source, target))?;
        if let Some(max) = max_len {
            input_ids.truncate(max);
        }
        let labels = mask_labels(&input_ids, self.eos_id);
        Ok(Example { input_ids, labels })
    }

    /// Prompt ids for generation: ` {source} <|endoftext|>`.
    pub fn prompt_ids(&self, source: &str) -> Result<Vec<u32>, DataError> {
        self.encode(&prompt_text(source))
    }
}

impl Truncate for Gpt2Encoder {
    /// Keep the text covered by the first `max_tokens` BPE tokens.
    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        let Ok(offsets) = self.tokenizer.offsets(text) else { return text.to_string() };
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
