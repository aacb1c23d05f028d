//! Shared by the recipes: run the paper's settings for one task through `prefix-tune`.
//! (Included by each example with `#[path]`; not an example itself.)

/// The paper's Table 6 row for a task.
pub struct Recipe {
    pub task: &'static str,
    pub lr: &'static str,
    pub epochs: &'static str,
    pub batch_size: &'static str,
    pub prefix_length: &'static str,
    /// MLP width: 512 for table-to-text, 800 for summarization.
    pub mlp_hidden: &'static str,
    /// The paper's loss: the per-sequence sum for GPT-2's table-to-text, the token mean for
    /// BART's summarization.
    pub loss: &'static str,
    /// The model the paper used, for the usage line.
    pub model: &'static str,
}

pub const E2E: Recipe = Recipe { task: "e2e", lr: "8e-5", epochs: "5", batch_size: "10", prefix_length: "5", mlp_hidden: "512", loss: "paper", model: "gpt2-medium" };
pub const WEBNLG: Recipe = Recipe { task: "webnlg", lr: "5e-5", epochs: "5", batch_size: "5", prefix_length: "5", mlp_hidden: "512", loss: "paper", model: "gpt2-medium" };
pub const DART: Recipe = Recipe { task: "dart", lr: "5e-5", epochs: "10", batch_size: "5", prefix_length: "10", mlp_hidden: "512", loss: "paper", model: "gpt2-medium" };
/// BART-large with three prefix sets of P = 100; decoding (beam 6, length penalty 0.8, the
/// checkpoint's min/max length) is `eval`'s default for BART.
pub const XSUM: Recipe = Recipe { task: "xsum", lr: "5e-5", epochs: "30", batch_size: "14", prefix_length: "100", mlp_hidden: "800", loss: "mean", model: "facebook/bart-large" };

/// `--model M --data DIR [--out DIR] [any other train flag …]`: trains on the official
/// train split, keeps the best prefix on dev, decodes test with the paper's beam settings and
/// writes predictions and scores under `--out` (default `runs/<task>`).
pub fn main_for(recipe: Recipe) {
    if let Err(message) = run(&recipe, std::env::args().skip(1).collect()) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

/// The recipe over `args` (the example's arguments): train, then evaluate on test.

pub fn run(recipe: &Recipe, mut args: Vec<String>) -> Result<(), String> {
    let take = |args: &mut Vec<String>, flag: &str| -> Option<String> {
        let at = args.iter().position(|a| a == flag)?;
        let value = args.get(at + 1).cloned();
        args.drain(at..(at + 2).min(args.len()));
        value
    };
    let (Some(model), Some(data)) = (take(&mut args, "--model"), take(&mut args, "--data")) else {
        return Err(format!("usage: cargo run --release --example {} -- --model {} --data DIR [--out DIR] [train flags]", recipe.task, recipe.model));
    };
    let out = take(&mut args, "--out").unwrap_or_else(|| format!("runs/{}", recipe.task));
    let backend: Vec<String> = take(&mut args, "--backend").map(|b| vec!["--backend".into(), b]).unwrap_or_default();
    let run = |words: Vec<String>| prefix_tune::run(words).map_err(|e| e.to_string());
    let s = |x: &str| x.to_string();
    let mut train = vec![
        s("prefix-tune"), s("train"), s("--model"), model.clone(), s("--task"), s(recipe.task),
        s("--data"), data.clone(), s("--dev"), data.clone(), s("--out"), out.clone(),
        s("--lr"), s(recipe.lr), s("--epochs"), s(recipe.epochs), s("--batch-size"), s(recipe.batch_size),
        s("--prefix-length"), s(recipe.prefix_length), s("--reparam"), s("mlp"), s("--mlp-hidden"), s(recipe.mlp_hidden),
        s("--schedule"), s("linear"), s("--optimizer"), s("adamw"), s("--loss"), s(recipe.loss),
    ];
    train.extend(backend.clone());
    train.extend(args);
    run(train)?;
    let mut eval = vec![
        s("prefix-tune"), s("eval"), s("--model"), model, s("--prefix"), out.clone(), s("--task"), s(recipe.task),
        s("--data"), data, s("--split"), s("test"), s("--out"), format!("{out}/test"),
    ];
    eval.extend(backend);
    run(eval)
}
