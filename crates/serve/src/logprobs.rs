//! OpenAI's `logprobs` for completions: per generated token its log-probability and the `n`
//! most likely tokens at that step, from the distribution the token was chosen from (after
//! penalties and `logit_bias`, before temperature), and the `logprobs` object of a response.

use serde_json::{json, Map, Value};

/// One step's log-probabilities: the chosen token's, and the `n` most likely (best first).
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogprobs {
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// The `logprobs` object of OpenAI's completions for `steps`, whose text starts `offset`
/// characters into the completion.
pub fn logprobs_object(steps: &[StepLogprobs], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(steps.len());
    for step in steps {
        text_offset.push(offset);
        offset += step.token.chars().count();
    }
    let top: Vec<Value> = steps.iter().map(|s| Value::Object(s.top.iter().map(|(t, l)| (t.clone(), json!(l))).collect::<Map<_, _>>())).collect();
    json!({
        "tokens": steps.iter().map(|s| s.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": steps.iter().map(|s| s.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": text_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_at_the_chosen_token_and_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let total = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        let (chosen, top) = prefix_tune_model::generate::pick::log_probs(&logits, 2, 3);
        assert!((chosen - (2.0 - total)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3, 2], "best first, ties in id order");
        assert!((top[0].1 - (3.0 - total)).abs() < 1e-6);
        let steps = [
            StepLogprobs { token: "Hé".into(), logprob: -0.5, top: vec![("Hé".into(), -0.5)] },
            StepLogprobs { token: " x".into(), logprob: -1.0, top: vec![(" x".into(), -1.0)] },
        ];
        let object = logprobs_object(&steps, 3);
        assert_eq!(object["text_offset"], json!([3, 5]), "offsets count characters");
        assert_eq!(object["tokens"], json!(["Hé", " x"]));
        assert_eq!(object["top_logprobs"][1][" x"], json!(-1.0));
    }
}
