//! Generation with prefixes of any placement, one per prompt or one for all.

use prefix_tune_model::generate::{generate, GenerateConfig, Generated};
use prefix_tune_model::gpt2::{generate_gpt2, Dropout, Gpt2};
use prefix_tune_model::Past;

use crate::{stack_pasts, InfixDecoder, Placement, Prefix, PrefixError};

/// The past for `rows` prompts: one prefix for all, or one per prompt (a mixed-task batch,
/// where each row attends only to its own prefix, whatever its length).
pub fn prefixed_past(model: &Gpt2, prefixes: &[&Prefix], rows: usize) -> Result<Past, PrefixError> {
    match prefixes {
        [one] => Ok(one.past_through(model, rows, false, Dropout::default())),
        many if many.len() == rows => {
            Ok(stack_pasts(many.iter().map(|prefix| prefix.past_through(model, 1, false, Dropout::default())).collect()))
        }
        many => Err(PrefixError::Input(format!("{} prefixes for {rows} prompts: give one prefix for all, or one per prompt", many.len()))),
    }
}

/// Continues `prompts` with `prefixes` (none, one, or one per prompt). An infix needs its
/// prompts to end with the separator (` {source} <|endoftext|>`), and one infix for all.
pub fn generate_prefixed(model: &Gpt2, prompts: &[Vec<u32>], prefixes: &[&Prefix], config: &GenerateConfig) -> Result<Vec<Generated>, PrefixError> {
    if prefixes.is_empty() {
        return Ok(generate_gpt2(model, prompts, None, config)?);
    }
    let infix = prefixes.iter().any(|p| p.placement == Placement::Infix);
    if !infix {
        let past = prefixed_past(model, prefixes, prompts.len())?;
        return Ok(generate_gpt2(model, prompts, Some(past), config)?);
    }
    let [infix] = prefixes else {
        return Err(PrefixError::Input("an infix cannot be mixed with other prefixes in one batch".into()));
    };
    let mut decoder = InfixDecoder::new(model, infix.past(prompts.len(), false));
    Ok(generate(&mut decoder, prompts, config)?)
}
