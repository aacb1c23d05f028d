//! BART's side of `train` and `eval`: documents and summaries as token ids (the tokenizer's
//! `<s> … </s>`), and summaries decoded from a model with its prefix sets.

use std::path::Path;

use crate::error::{CliError, Result};
use prefix_tune_model::bart::generate_bart;
use prefix_tune_model::generate::GenerateConfig;
use prefix_tune_data::Tokenizer;
use prefix_tune_model::Bart;
use prefix_tune_prefix::BartPrefixSets;

/// The model's tokenizer, used as HF's `tokenizer(text, truncation=True, max_length=N)`.
pub struct BartText {
    tokenizer: Tokenizer,
}

impl BartText {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer = Tokenizer::from_dir(dir)?
            .ok_or_else(|| CliError::usage(format!("{}: a BART model needs its tokenizer (tokenizer.json) to read text", dir.display())))?;
        Ok(Self { tokenizer })
    }

    /// `<s> text </s>`, cut to `max_len` tokens with the closing `</s>` kept.
    pub fn ids(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_with_special_tokens(text)?;
        cut_keeping_last(&mut ids, max_len);
        Ok(ids)
    }

    /// Text of generated ids, special tokens dropped, on one line.
    pub fn text(&self, ids: &[u32]) -> Result<String> {
        Ok(self.tokenizer.decode(ids, true)?.trim().replace('\n', " "))
    }
}

/// Cuts `ids` to `max_len` tokens, keeping the last one (BART's closing `</s>`), as HF's
/// truncation does.
pub fn cut_keeping_last(ids: &mut Vec<u32>, max_len: usize) {
    if ids.len() > max_len {
        let last = *ids.last().expect("longer than max_len, so not empty");
        ids.truncate(max_len.saturating_sub(1));
        ids.push(last);
    }
}

/// Summaries of `sources` (token ids) with `sets` (or none), one line each.
pub fn summarise(model: &Bart, text: &BartText, sources: &[Vec<u32>], sets: Option<&BartPrefixSets>, config: &GenerateConfig) -> Result<Vec<String>> {
    let (prefix, offset) = sets.map_or((Default::default(), 0), |s| (s.past(sources.len(), false), s.decoder_offset()));
    generate_bart(model, sources, &prefix, offset, config)?.iter().map(|output| text.text(&output.ids)).collect()
}
