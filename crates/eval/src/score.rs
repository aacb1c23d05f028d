//! Scoring a predictions file: one line per distinct input of the data file, in order of first
//! appearance (the order of [`prefix_tune_data::Dataset::groups`]).

use crate::error::EvalError;
use crate::{coco, meteor, mteval, multibleu, ptb, rouge_score, ter};
use prefix_tune_data::e2e::{E2eConfig, TargetStyle};
use prefix_tune_data::{load, Group, LoadConfig, Task};
use std::path::Path;

/// Scores of one system output. Fields that do not apply to the task are absent from the JSON.
/// BLEU is on a 0–1 scale for E2E (as mteval prints it) and 0–100 for WebNLG/DART (as
/// multi-bleu.perl prints it); TER is 0–100 as sacrebleu prints it; ROUGE figures are fractions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub task: String,
    /// Number of distinct inputs scored.
    pub items: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bleu: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nist: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meteor: Option<f64>,
    /// sacrebleu TER (WebNLG/DART), lower is better.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge_l: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cider: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge2: Option<f64>,
    /// Why a metric was not computed (e.g. METEOR without a jar).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub skipped: Vec<String>,
    /// E2E: which references were scored against, `original` (the official CSV text, as the
    /// challenge's scorer) or `paper` (punctuation-split like the paper's files).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub references: Option<TargetStyle>,
}

/// Score `predictions_path` against the references of `data_path` (file or official directory;
/// test split) written in `references` style (E2E). `meteor_jar` (or `$METEOR_JAR`) enables METEOR.
pub fn score_predictions(
    task: Task,
    data_path: &Path,
    predictions_path: &Path,
    references: TargetStyle,
    meteor_jar: Option<&Path>,
) -> Result<Scores, EvalError> {
    let config = LoadConfig { e2e: E2eConfig { target_style: references }, ..Default::default() };
    let data = load(task, data_path, &config)?;
    let groups = data.groups();
    let text = std::fs::read_to_string(predictions_path)
        .map_err(|source| EvalError::Io { file: predictions_path.to_path_buf(), source })?;
    let mut predictions: Vec<String> = text.lines().map(|l| l.trim_end_matches('\r').to_string()).collect();
    // A trailing empty line is a file ending, not an extra prediction.
    while predictions.len() > groups.len() && predictions.last().is_some_and(|l| l.trim().is_empty()) {
        predictions.pop();
    }
    if predictions.len() != groups.len() {
        return Err(EvalError::LineCount {
            file: predictions_path.to_path_buf(),
            found: predictions.len(),
            expected: groups.len(),
            data: data.path.clone(),
        });
    }
    let mut scores = score_groups(task, &groups, &predictions, meteor_jar)?;
    if task == Task::E2e {
        scores.references = Some(references);
    }
    Ok(scores)
}

/// Score predictions already in memory (same order as `groups`).
pub fn score_groups(
    task: Task,
    groups: &[Group],
    predictions: &[String],
    meteor_jar: Option<&Path>,
) -> Result<Scores, EvalError> {
    let references: Vec<Vec<String>> = groups.iter().map(|g| g.references.clone()).collect();
    let mut scores = Scores { task: task.name().to_string(), items: groups.len(), ..Default::default() };
    match task {
        Task::E2e => {
            let m = mteval::score(predictions, &references);
            scores.bleu = Some(m.bleu);
            scores.nist = Some(m.nist);
            let hyp_tok: Vec<String> = predictions.iter().map(|p| ptb::tokenize(p)).collect();
            let ref_tok: Vec<Vec<String>> =
                references.iter().map(|rs| rs.iter().map(|r| ptb::tokenize(r)).collect()).collect();
            scores.rouge_l = Some(coco::rouge_l(&hyp_tok, &ref_tok));
            scores.cider = Some(coco::cider_d(&hyp_tok, &ref_tok));
            run_meteor(&mut scores, meteor_jar, &hyp_tok, &ref_tok)?;
        }
        Task::Webnlg | Task::Dart | Task::Jsonl => {
            let lowercase = task == Task::Webnlg;
            scores.bleu = Some(multibleu::bleu(predictions, &references, lowercase));
            run_meteor(&mut scores, meteor_jar, predictions, &references)?;
            scores.ter = Some(ter::corpus_ter(predictions, &references).score);
        }
        Task::Xsum => {
            let firsts: Vec<String> = references.iter().map(|r| r[0].clone()).collect();
            let r = rouge_score::corpus_rouge(predictions, &firsts);
            scores.rouge1 = Some(r.rouge1);
            scores.rouge2 = Some(r.rouge2);
            scores.rouge_l = Some(r.rouge_l);
        }
    }
    Ok(scores)
}

fn run_meteor(
    scores: &mut Scores,
    jar: Option<&Path>,
    hyps: &[String],
    refs: &[Vec<String>],
) -> Result<(), EvalError> {
    match meteor::find_jar(jar) {
        Some(jar) => scores.meteor = Some(meteor::meteor(&jar, hyps, refs)?),
        None => scores
            .skipped
            .push(format!("meteor: no jar (pass its path or set {})", meteor::METEOR_JAR_ENV)),
    }
    Ok(())
}
