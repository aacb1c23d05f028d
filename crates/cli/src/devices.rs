//! `prefix-tune devices`: the backends this build has, the adapters this machine offers, and
//! what `--backend auto` picks.

use prefix_tune_model::backend::{self, Backend};

use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// One JSON object instead of lines of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DevicesArgs) -> Result<()> {
    let compiled: Vec<&str> = Backend::compiled().into_iter().map(Backend::name).collect();
    let adapters = backend::adapters();
    let auto = backend::resolve(None);
    if args.json {
        let mut report = serde_json::json!({ "compiled": compiled, "adapters": adapters });
        match &auto {
            Ok(resolved) => report["auto"] = resolved.to_string().into(),
            Err(error) => report["auto_error"] = error.to_string().into(),
        }
        println!("{report}");
        return Ok(());
    }
    println!("backends compiled in: {}", compiled.join(", "));
    if adapters.is_empty() {
        println!("wgpu adapters: none (no Vulkan, Metal or DX12 driver answered)");
    }
    for adapter in &adapters {
        let note = if adapter.kind.is_gpu() { "" } else { "  [used only with --backend wgpu]" };
        println!("wgpu adapter: {adapter}, driver {}{note}", if adapter.driver.is_empty() { "?" } else { &adapter.driver });
    }
    match auto {
        Ok(resolved) => println!("--backend auto (the default): {resolved}"),
        Err(error) => println!("--backend auto (the default): {error}"),
    }
    Ok(())
}
