//! The training objectives: what a "loss" of a batch is.

use burn::tensor::{activation::log_softmax, Tensor};
use prefix_tune_model::cross_entropy;
use prefix_tune_model::tensors::{floats, ints};
use prefix_tune_model::{Bart, Gpt2};
use serde::{Deserialize, Serialize};

/// Label that contributes nothing (the source, padding), as in HF.
pub use prefix_tune_data::IGNORE_INDEX as IGNORE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The paper's: sum of target-token NLL per sequence, averaged over the batch. The
    /// published learning rates assume it.
    #[default]
    Paper,
    /// HF's: mean NLL over every target token of the batch.
    Mean,
}

/// The loss of logits `[B, T, V]` against labels `[B][T]` aligned with the inputs (HF
/// convention: the model shifts, so logits at t predict labels at t + 1; -100 is ignored).
/// Returns the loss and the number of target tokens.
pub fn loss(logits: Tensor<3>, labels: &[Vec<i64>], objective: Objective) -> (Tensor<1>, usize) {
    let [batch, seq, _] = logits.dims();
    let device = logits.device();
    let predictions = logits.narrow(1, 0, seq - 1); // [B, T-1, V]
    let mut targets = Vec::with_capacity(batch * (seq - 1));
    let mut weights = Vec::with_capacity(batch * (seq - 1));
    for row in labels {
        for &label in &row[1..] {
            let counted = label != IGNORE;
            targets.push(if counted { label } else { 0 });
            weights.push(if counted { 1.0 } else { 0.0 });
        }
    }
    let count = weights.iter().filter(|&&w| w > 0.0).count();
    let targets = ints(targets, [batch, seq - 1, 1], &device);
    let weights = floats(weights, [batch, seq - 1], &device);
    let log_probs = log_softmax(predictions, 2).gather(2, targets).reshape([batch, seq - 1]); // [B, T-1]
    let total = -(log_probs * weights).sum(); // [1]
    let loss = match objective {
        Objective::Paper => total / batch as f64,
        Objective::Mean => total / count.max(1) as f64,
    };
    (loss, count)
}

/// The same loss as [`loss`], from the final hidden states `[B, T, D]`: the LM head and the
/// softmax run only at the positions whose next token is a target. The vocabulary projection
/// is the largest matmul of a small model's step and the source half of a table-to-text
/// example (E2E) carries no loss, so this skips work that [`loss`] would zero out anyway.
pub fn head_loss(model: &Gpt2, hidden: Tensor<3>, labels: &[Vec<i64>], objective: Objective) -> (Tensor<1>, usize) {
    // The position before a label predicts it.
    loss_at_targets(hidden, labels, objective, 1, |h| model.logits(h))
}

/// An encoder-decoder's loss from the decoder's hidden states `[B, T, D]`: labels are aligned
/// with the decoder inputs (each position predicts its own label), LM head only where a label is.
pub fn seq2seq_head_loss(model: &Bart, hidden: Tensor<3>, labels: &[Vec<i64>], objective: Objective) -> (Tensor<1>, usize) {
    loss_at_targets(hidden, labels, objective, 0, |h| model.logits(h))
}

/// The loss over the labelled positions, each predicted by the hidden state `shift` before it,
/// through `head` (`[1, N, D] → [1, N, V]`).
fn loss_at_targets(hidden: Tensor<3>, labels: &[Vec<i64>], objective: Objective, shift: usize, head: impl Fn(Tensor<3>) -> Tensor<3>) -> (Tensor<1>, usize) {
    let [batch, seq, d_model] = hidden.dims();
    let device = hidden.device();
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (row, row_labels) in labels.iter().enumerate() {
        for (t, &label) in row_labels.iter().enumerate().skip(shift) {
            if label != IGNORE {
                positions.push((row * seq + t - shift) as i64);
                targets.push(label);
            }
        }
    }
    let count = positions.len();
    if count == 0 {
        // Nothing to predict: a zero that still belongs to the graph, so backward works.
        return (hidden.sum() * 0.0, 0);
    }
    let predicting = hidden.reshape([batch * seq, d_model]).select(0, ints(positions, [count], &device)); // [N, D]
    let logits = head(predicting.unsqueeze_dim::<3>(0)).squeeze_dim::<2>(0); // [N, V]
    let targets: Vec<usize> = targets.into_iter().map(|t| t as usize).collect();
    let total = cross_entropy::nll(logits, &targets).sum(); // [1]
    let loss = match objective {
        Objective::Paper => total / batch as f64,
        Objective::Mean => total / count as f64,
    };
    (loss, count)
}
