//! Checkpoints: the full state of a run written atomically, so that a killed run resumes
//! bit-exactly.

use super::*;

impl<M: PrefixModel> Trainer<M> {
    /// Writes `checkpoint/`: the prefix's full parameterisation, optimizer moments, progress.
    /// The files go to a staging directory that then replaces the old checkpoint, so a kill at
    /// any instant leaves one complete checkpoint (see [`publish_dir`]).
    pub fn checkpoint(&self) -> Result<(), TrainError> {
        publish_dir(&self.out.join("checkpoint"), |dir| self.write_checkpoint(dir))
    }

    pub(super) fn write_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        M::save_state(&self.prefix, &self.config, dir)?;
        if self.config.method == Method::Finetune {
            // What the baseline trains is the model: it goes into the checkpoint.
            (self.model.finetune()?.save)(&self.model, &dir.join("model"))?;
        }
        let moments: Vec<(String, Vec<usize>, Vec<f32>)> = self
            .state
            .to_host()
            .into_iter()
            .map(|(name, values)| {
                let len = values.len();
                (name, vec![len], values)
            })
            .collect();
        save_f32(&dir.join("optimizer.safetensors"), &moments)?;
        let text = serde_json::to_string_pretty(&self.progress).expect("progress serialises");
        write_atomic(&dir.join("trainer_state.json"), text.as_bytes())?;
        Ok(())
    }

    /// On resume: `metrics.jsonl` may hold records of steps after the checkpoint (and a torn
    /// last line) from the run that was killed. Those steps run again, so their old records go.
    pub(super) fn forget_metrics_after_checkpoint(&self) -> Result<(), TrainError> {
        let path = self.out.join("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line).ok().and_then(|r| r["step"].as_u64()).is_some_and(|step| step as usize <= self.progress.optimizer_step)
            })
            .map(|line| format!("{line}\n"))
            .collect();
        Ok(write_atomic(&path, kept.as_bytes())?)
    }
}
