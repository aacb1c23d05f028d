//! The paper's xsum recipe (Li & Liang, 2021, Table 6): lr 5e-5, 30 epochs, batch 14,
//! prefix length 100, MLP 800.
//!
//! `cargo run --release --example xsum -- --model gpt2-medium --data DIR` where DIR holds the
//! official files (see crates/data/README.md for where they come from).

#[path = "recipe.rs"]
mod recipe;

fn main() {
    recipe::main_for(recipe::Recipe { task: "xsum", lr: "5e-5", epochs: "30", batch_size: "14", prefix_length: "100", mlp_hidden: "800" });
}
