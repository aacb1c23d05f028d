//! What a run reports: metrics.jsonl, the loss chart, progress on a terminal or a log line.

use super::*;

impl<M: PrefixModel> Trainer<M> {
    /// `loss.png` from `metrics.jsonl` (the whole run, resumed parts included).
    pub(super) fn plot(&self) -> Result<(), TrainError> {
        let text = std::fs::read_to_string(self.out.join("metrics.jsonl")).unwrap_or_default();
        let metric_key = self.dev_metric.as_ref().map(|(name, _)| format!("dev_{name}"));
        let (mut train, mut dev, mut metric) = (Vec::new(), Vec::new(), Vec::new());
        for record in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let step = record["step"].as_f64().unwrap_or(0.0);
            let push = |key: &str, into: &mut Vec<(f64, f64)>| {
                if let Some(value) = record[key].as_f64() {
                    into.push((step, value));
                }
            };
            push("loss", &mut train);
            push("dev_loss", &mut dev);
            if let Some(key) = &metric_key {
                push(key, &mut metric);
            }
        }
        let title = format!("prefix-tune: {}", self.out.display());
        let curves = crate::plot::Curves {
            title: &title,
            train_loss: &train,
            dev_loss: &dev,
            dev_metric: self.dev_metric.as_ref().map(|(name, _)| (name.as_str(), metric.as_slice())),
        };
        let path = self.out.join("loss.png");
        Ok(crate::plot::plot_run(&path, &curves)?)
    }

    pub(super) fn append_metrics(&self, record: &serde_json::Value) -> Result<(), TrainError> {
        let path = self.out.join("metrics.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
        writeln!(file, "{record}").map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
    }

    pub(super) fn log_line(&self, line: &str) {
        match (&self.bar, self.quiet) {
            (_, true) => {}
            (Some(bar), false) => bar.println(line),
            (None, false) => eprintln!("{line}"),
        }
    }

    /// The opening line, and a progress bar when stderr is a terminal.
    pub(super) fn start_progress(&mut self, examples: usize, total_steps: usize) {
        let (trainable, total) = self.param_counts();
        self.log_line(&format!(
            "training {trainable} parameters of {total} ({:.4}% of the model); {examples} examples, {total_steps} steps",
            100.0 * trainable as f64 / total as f64,
        ));
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total_steps as u64).with_position(self.progress.optimizer_step as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} steps  {msg}  {elapsed} elapsed, ETA {eta}") {
            bar.set_style(style.progress_chars("=> "));
        }
        self.bar = Some(bar);
    }

    pub(super) fn report_progress(&self, loss: f64, tokens_per_second: f64, elapsed: f64, total_steps: usize) {
        if self.quiet {
            return;
        }
        let step = self.progress.optimizer_step;
        let message = format!("loss {loss:.4}  {tokens_per_second:.0} tok/s");
        match &self.bar {
            Some(bar) => {
                bar.set_position(step as u64);
                bar.set_message(message);
            }
            // A log file gets whole lines, not carriage returns.
            None if step % self.log_every.max(1) == 0 || step == total_steps => {
                let eta = elapsed / step.max(1) as f64 * total_steps.saturating_sub(step) as f64;
                eprintln!("step {step}/{total_steps}  {message}  ETA {eta:.0}s");
            }
            None => {}
        }
    }
}
