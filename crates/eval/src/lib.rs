//! Generation metrics that match the official scorers on the same inputs, and a
//! predictions-file scorer for the `prefix-tune metrics` command.
//!
//! | task | metrics | official scorer reproduced |
//! |---|---|---|
//! | e2e | BLEU, NIST | e2e-metrics → `mteval-v13a-sig.pl` ([`mteval`]) |
//! | e2e | ROUGE-L, CIDEr(-D) | e2e-metrics' pycocoevalcap on PTB-tokenized text ([`coco`], [`ptb`]) |
//! | e2e, webnlg, dart | METEOR 1.5 | the jar itself ([`meteor`]), skipped without a jar |
//! | webnlg, dart | BLEU | `multi-bleu.perl` (`-lc` for WebNLG) ([`multibleu`]) |
//! | webnlg, dart | TER | sacrebleu's `TER()` at its defaults ([`ter`], search in [`tercom`]) |
//! | xsum | ROUGE-1/2/L | Google `rouge-score` with the Porter stemmer ([`rouge_score`]) |

pub mod coco;
pub mod error;
pub mod meteor;
pub mod mteval;
pub mod multibleu;
pub mod porter;
pub mod ptb;
pub mod rouge_score;
pub mod score;
pub mod ter;
pub mod tercom;

pub use error::EvalError;
pub use score::{score_groups, score_predictions, Scores};
