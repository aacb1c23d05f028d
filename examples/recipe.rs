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
}

/// `--model M --data DIR [--out DIR] [any other train flag …]`: trains on the official
/// train split, keeps the best prefix on dev, decodes test with the paper's beam settings and
/// writes predictions and scores under `--out` (default `runs/<task>`).
pub fn main_for(recipe: Recipe) {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let take = |args: &mut Vec<String>, flag: &str| -> Option<String> {
        let at = args.iter().position(|a| a == flag)?;
        let value = args.get(at + 1).cloned();
        args.drain(at..(at + 2).min(args.len()));
        value
    };
    let (Some(model), Some(data)) = (take(&mut args, "--model"), take(&mut args, "--data")) else {
        eprintln!("usage: cargo run --release --example {} -- --model gpt2-medium --data DIR [--out DIR] [train flags]", recipe.task);
        std::process::exit(2);
    };
    let out = take(&mut args, "--out").unwrap_or_else(|| format!("runs/{}", recipe.task));
    let backend: Vec<String> = take(&mut args, "--backend").map(|b| vec!["--backend".into(), b]).unwrap_or_default();
    let run = |words: Vec<String>| {
        if let Err(message) = prefix_tune::run(words) {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    };
    let s = |x: &str| x.to_string();
    let mut train = vec![
        s("prefix-tune"), s("train"), s("--model"), model.clone(), s("--task"), s(recipe.task),
        s("--data"), data.clone(), s("--dev"), data.clone(), s("--out"), out.clone(),
        s("--lr"), s(recipe.lr), s("--epochs"), s(recipe.epochs), s("--batch-size"), s(recipe.batch_size),
        s("--prefix-length"), s(recipe.prefix_length), s("--reparam"), s("mlp"), s("--mlp-hidden"), s(recipe.mlp_hidden),
        s("--schedule"), s("linear"), s("--optimizer"), s("adamw"), s("--loss"), s("paper"),
    ];
    train.extend(backend.clone());
    train.extend(args);
    run(train);
    let mut eval = vec![
        s("prefix-tune"), s("eval"), s("--model"), model, s("--prefix"), out.clone(), s("--task"), s(recipe.task),
        s("--data"), data, s("--split"), s("test"), s("--out"), format!("{out}/test"),
    ];
    eval.extend(backend);
    run(eval);
}
