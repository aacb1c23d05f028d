//! Real-word initialisation (the paper's §7.2): start the prefix from the frozen model's own
//! keys and values for a piece of text such as "table-to-text:".

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Tensor;
use prefix_tune_model::gpt2::{Dropout, Gpt2};

use crate::{Layout, Prefix, PrefixError};

/// The activations `[P, 2·L·D]` that make a prefix behave exactly like the text `ids` placed
/// before the input: its keys and values in every layer.
pub fn text_activations(model: &Gpt2, ids: &[u32]) -> Result<Tensor<2>, PrefixError> {
    if ids.is_empty() {
        return Err(PrefixError::Input("text initialisation needs a non-empty text".into()));
    }
    let (_, past) = model.forward_tokens(&[ids.to_vec()], &[vec![1.0; ids.len()]], None, Dropout::default())?;
    Ok(Layout::gpt2(&model.config).from_layers(&past.layers))
}

impl Prefix {
    /// Sets the prefix so that its activations are (close to) `target`: copied into a flat
    /// prefix; for an MLP, fitted by mean squared error with Adam, as the paper's code does.
    /// `self` must live on an autodiff device for the MLP fit. Returns the final MSE.
    pub fn fit_to(self, target: Tensor<2>, steps: usize, lr: f64) -> (Prefix, f32) {
        if self.mlp.is_none() {
            let mut flat = Prefix::from_activations(target.detach(), self.layout);
            flat.dropout = self.dropout;
            flat.placement = self.placement;
            return (flat, 0.0);
        }
        let target = target.detach();
        let mut prefix = self;
        let mut optimizer = AdamConfig::new().init();
        let mut mse = f32::INFINITY;
        for _ in 0..steps {
            let loss = (prefix.activations() - target.clone()).powf_scalar(2.0).mean();
            mse = prefix_tune_model::tensors::to_f32s(loss.clone().detach())[0];
            let grads = GradientsParams::from_grads(loss.backward(), &prefix);
            prefix = optimizer.step(lr, prefix, grads);
        }
        (prefix, mse)
    }
}

