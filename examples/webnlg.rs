//! The paper's webnlg recipe (Li & Liang, 2021, Table 6): lr 5e-5, 5 epochs, batch 5,
//! prefix length 5, MLP 512.
//!
//! `cargo run --release --example webnlg -- --model gpt2-medium --data DIR` where DIR holds the
//! official files (see crates/data/README.md for where they come from).

#[path = "recipe.rs"]
#[allow(dead_code)] // each example uses its own recipe
mod recipe;

fn main() {
    recipe::main_for(recipe::WEBNLG);
}
