//! The paper's xsum recipe (Li & Liang, 2021, Table 6) on BART-large: lr 5e-5, 30 epochs,
//! batch 14, P = 100 for each of the three prefix sets, MLP 800, token-mean loss; decoding with
//! beam 6, length penalty 0.8 and the checkpoint's min/max length.
//!
//! `cargo run --release --example xsum -- --model facebook/bart-large --data DIR` where DIR
//! holds train.jsonl, dev.jsonl and test.jsonl (see crates/data/README.md).

#[path = "recipe.rs"]
#[allow(dead_code)] // each example uses its own recipe
mod recipe;

fn main() {
    recipe::main_for(recipe::XSUM);
}
