//! OpenAI's `presence_penalty`, `frequency_penalty` and `logit_bias`, applied to a row's logits
//! before its next token is chosen (greedy or sampled), as OpenAI defines them:
//! `logit[j] += bias[j] − count[j]·frequency_penalty − (count[j] > 0)·presence_penalty`, with
//! `count[j]` the times token j was generated so far in this completion.

use std::collections::HashMap;

use prefix_tune_model::generate::pick::Edits;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Penalties {
    pub presence: f32,
    pub frequency: f32,
    /// (token id, bias), ids inside the vocabulary.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Penalties {
    /// Adds to `edits` what these penalties do to a row's logits, for the tokens `generated` so
    /// far (ids outside the vocabulary are refused when the request is read).
    pub fn edit(&self, edits: &mut Edits, generated: &[u32]) {
        if self.presence != 0.0 || self.frequency != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &id in generated {
                *counts.entry(id).or_default() += 1;
            }
            for (id, count) in counts {
                edits.add(id, -(count as f32 * self.frequency + self.presence));
            }
        }
        for &(id, bias) in &self.logit_bias {
            edits.add(id, bias);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_presence_and_bias_as_openai_defines_them() {
        let penalties = Penalties { presence: 0.5, frequency: 0.25, logit_bias: vec![(0, 2.0), (3, -100.0)] };
        let apply = |penalties: &Penalties, logits: &mut [f32], generated: &[u32]| {
            let mut edits = Edits::default();
            penalties.edit(&mut edits, generated);
            edits.apply(logits);
        };
        let mut logits = [1.0, 2.0, 3.0, 4.0];
        apply(&penalties, &mut logits, &[2, 2, 1]);
        assert_eq!(logits, [3.0, 2.0 - 0.25 - 0.5, 3.0 - 0.5 - 0.5, -96.0]);
        let mut untouched = [1.0, 2.0];
        apply(&Penalties::default(), &mut untouched, &[0, 1, 1]);
        assert_eq!(untouched, [1.0, 2.0], "no penalty by default");
    }
}
