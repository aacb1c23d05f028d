//! Infix-tuning (the paper's §7.4): `[x; INFIX; y]`. The trained keys/values sit between
//! the source x and the target side y, so x cannot attend to them and only y can.
//!
//! No new attention code: x runs first and leaves a cache; the infix is appended to that
//! cache like a prefix; y then attends to both. Positions follow: y starts at |x| + P.

use burn::tensor::Tensor;
use prefix_tune_model::generate::Decoder;
use prefix_tune_model::gpt2::{Dropout, Gpt2, Gpt2Decoder};
use prefix_tune_model::{ModelError, Past};

use crate::{Prefix, PrefixError};

/// Where each row's target side starts: its first `separator` (GPT-2: the EOS after the
/// source), which belongs to y so that it predicts the first target token with the infix in
/// view.
fn split_points(ids: &[Vec<u32>], mask: &[Vec<f32>], separator: u32) -> Result<Vec<usize>, PrefixError> {
    ids.iter()
        .zip(mask)
        .enumerate()
        .map(|(row, (ids, mask))| {
            ids.iter()
                .zip(mask)
                .position(|(&id, &m)| m > 0.5 && id == separator)
                .ok_or_else(|| PrefixError::Input(format!("infix: row {row} has no separator token {separator} between source and target")))
        })
        .collect()
}

/// Right-pads row slices into a batch.
fn pad_rows(rows: Vec<(Vec<u32>, Vec<f32>)>, pad: u32) -> (Vec<Vec<u32>>, Vec<Vec<f32>>) {
    let width = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0).max(1);
    rows.into_iter()
        .map(|(mut ids, mut mask)| {
            mask.resize(width, 0.0);
            ids.resize(width, pad);
            (ids, mask)
        })
        .unzip()
}

/// Joins x's cache and the infix: per layer `[x keys ; infix keys]`, masks likewise.
fn with_infix(x_past: Past, infix: Past) -> Past {
    Past {
        layers: x_past.layers.into_iter().zip(infix.layers).map(|(x, inf)| x.append(inf)).collect(),
        mask: x_past.mask.into_iter().zip(infix.mask).map(|(mut x, inf)| {
            x.extend(inf);
            x
        }).collect(),
    }
}

/// Forward of a right-padded batch with the infix after each row's source. Returns the
/// hidden states of the target side `[B, Ty, D]` and where each row's target side starts in
/// the original row (so labels can be cut the same way).
pub fn infix_forward(
    model: &Gpt2,
    prefix: &Prefix,
    ids: &[Vec<u32>],
    mask: &[Vec<f32>],
    separator: u32,
    train: bool,
    dropout: Dropout,
) -> Result<(Tensor<3>, Vec<usize>), PrefixError> {
    let splits = split_points(ids, mask, separator)?;
    let rows = |range: &dyn Fn(usize, usize) -> std::ops::Range<usize>| -> Vec<(Vec<u32>, Vec<f32>)> {
        ids.iter()
            .zip(mask)
            .zip(&splits)
            .map(|((ids, mask), &split)| {
                let r = range(split, ids.len());
                (ids[r.clone()].to_vec(), mask[r].to_vec())
            })
            .collect()
    };
    let (x_ids, x_mask) = pad_rows(rows(&|split, _| 0..split), separator);
    let (y_ids, y_mask) = pad_rows(rows(&|split, len| split..len), separator);
    let (_, x_past) = model.forward_tokens(&x_ids, &x_mask, None, dropout)?;
    let past = with_infix(x_past, prefix.past(ids.len(), train));
    let (hidden, _) = model.forward_tokens(&y_ids, &y_mask, Some(past), dropout)?;
    Ok((hidden, splits))
}

/// Decoding with an infix: prompts end with the separator; the source before it is run
/// first, the infix appended to its cache, then the separator, then generation as usual.
pub struct InfixDecoder<'a> {
    model: &'a Gpt2,
    infix: Past,
    inner: Option<Gpt2Decoder<'a>>,
}

impl<'a> InfixDecoder<'a> {
    /// `infix` has one row per prompt (the search expands it to the beams).
    pub fn new(model: &'a Gpt2, infix: Past) -> Self {
        Self { model, infix, inner: None }
    }
}

impl Decoder for InfixDecoder<'_> {
    fn step(&mut self, ids: &[Vec<u32>], mask: &[Vec<f32>]) -> Result<Tensor<2>, ModelError> {
        if let Some(inner) = &mut self.inner {
            return inner.step(ids, mask);
        }
        // First call: left-padded prompts whose last token is the separator.
        let width = ids[0].len();
        if width < 2 {
            return Err(ModelError::Input("infix decoding needs a source before the separator".into()));
        }
        let source: Vec<Vec<u32>> = ids.iter().map(|r| r[..width - 1].to_vec()).collect();
        let source_mask: Vec<Vec<f32>> = mask.iter().map(|r| r[..width - 1].to_vec()).collect();
        let (_, x_past) = self.model.forward_tokens(&source, &source_mask, None, Dropout::default())?;
        let past = with_infix(x_past, self.infix.clone());
        let mut inner = Gpt2Decoder::new(self.model, Some(past));
        let separator: Vec<Vec<u32>> = ids.iter().map(|r| vec![r[width - 1]]).collect();
        let logits = inner.step(&separator, &vec![vec![1.0]; ids.len()])?;
        self.inner = Some(inner);
        Ok(logits)
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        match &mut self.inner {
            Some(inner) => inner.reorder(rows),
            // Before the first step (expanding prompts to their beams): the infix's rows.
            None => {
                let device = self.model.wte.val().device();
                self.infix = self.infix.clone().select_rows(rows, &device);
                Ok(())
            }
        }
    }
}
