//! The one tokenizer wrapper: a model directory's byte-level BPE (GPT-2's, BART's) through the
//! `tokenizers` crate. From `vocab.json` + `merges.txt`, `<|endoftext|>` is a special token
//! (never split, never merged with neighbours), as Hugging Face's GPT2TokenizerFast.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

use crate::DataError;

pub const END_OF_TEXT: &str = "<|endoftext|>";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Loads `tokenizer.json` from a model directory, or else `vocab.json` + `merges.txt`.
    /// `Ok(None)` when the directory has neither.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>, DataError> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json).map(Some);
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if vocab.is_file() && merges.is_file() {
            return Self::from_vocab_merges(&vocab, &merges).map(Some);
        }
        Ok(None)
    }

    pub fn from_tokenizer_json(path: &Path) -> Result<Self, DataError> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| DataError::Tokenizer { file: path.into(), message: e.to_string() })?;
        Ok(Self { inner, path: path.into() })
    }

    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self, DataError> {
        let error = |e: tokenizers::Error| DataError::Tokenizer { file: vocab.into(), message: e.to_string() };
        let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy()).build().map_err(error)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        inner.add_special_tokens(&[AddedToken::from(END_OF_TEXT, true)]);
        Ok(Self { inner, path: vocab.into() })
    }

    /// Token ids of `text` (no BOS/EOS added: GPT-2 adds none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.ids(text, false)
    }

    /// Token ids of `text` with the special tokens the tokenizer's post-processor adds (BART's
    /// `<s> … </s>`, as HF's `tokenizer(text)`); none for a GPT-2 tokenizer.
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.ids(text, true)
    }

    fn ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, DataError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| DataError::Tokenizer { file: self.path.clone(), message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens kept (as HF `decode(skip_special_tokens=False)`).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, DataError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| DataError::Tokenizer { file: self.path.clone(), message: e.to_string() })
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The byte span in `text` of each token, to cut a text at a token budget.
    pub fn offsets(&self, text: &str) -> Result<Vec<(usize, usize)>, DataError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| DataError::Tokenizer { file: self.path.clone(), message: e.to_string() })?;
        Ok(encoding.get_offsets().to_vec())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
