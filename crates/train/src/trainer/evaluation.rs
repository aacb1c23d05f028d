//! Evaluation on the dev set: the dev loss (or metric) and the best prefix kept.

use super::*;

impl<M: PrefixModel> Trainer<M> {
    pub(super) fn evaluate_and_keep_best(&mut self, dev: &[Example]) -> Result<(), TrainError> {
        let dev_loss = self.evaluate(dev)?;
        let mut record = serde_json::json!({ "step": self.progress.optimizer_step, "dev_loss": dev_loss });
        let improved = match &mut self.dev_metric {
            Some((name, metric)) => {
                // Decoding needs no graph either: plain views, as in `evaluate`.
                let value = metric(&self.model.valid(), &self.prefix.valid())?;
                record[format!("dev_{name}")] = value.into();
                let improved = self.progress.best_dev_metric.is_none_or(|best| value > best);
                if improved {
                    self.progress.best_dev_metric = Some(value);
                }
                improved
            }
            None => self.progress.best_dev_loss.is_none_or(|best| dev_loss < best),
        };
        if self.progress.best_dev_loss.is_none_or(|best| dev_loss < best) {
            self.progress.best_dev_loss = Some(dev_loss);
        }
        if improved {
            self.progress.evaluations_without_improvement = 0;
            self.save_best()?;
        } else {
            self.progress.evaluations_without_improvement += 1;
            if self.config.patience.is_some_and(|p| self.progress.evaluations_without_improvement >= p) {
                self.progress.stopped_early = true;
            }
        }
        record["best"] = improved.into();
        record["peak_rss_mib"] = peak_rss_mib().into();
        self.log_line(&format!("step {}: dev loss {dev_loss:.4}{}", self.progress.optimizer_step, if improved { " (best so far)" } else { "" }));
        self.append_metrics(&record)
    }

    /// `best/`: the prefix as an export, or for the fine-tuning baseline the whole model in
    /// Hugging Face layout. Swapped in whole, like the checkpoint.
    pub(super) fn save_best(&self) -> Result<(), TrainError> {
        publish_dir(&self.out.join("best"), |dir| match self.config.method {
            Method::Prefix => M::save_export(&self.prefix, self.config.base_model.as_deref(), dir),
            Method::Finetune => (self.model.finetune()?.save)(&self.model, dir),
        })
    }
}
