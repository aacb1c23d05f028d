//! `bench matmul` on wgpu (lavapipe in CI): every kernel of `shaders/` it times, and the tuner's
//! choice, is held to Burn's product of the same operands, and says so in its report.

use std::process::Command;

use super::{stdout_lines, wgpu_env};

/// A kernel that a GPU ran wrongly would still report a time; the report's `…_error` beside
/// each time is what tells. On lavapipe each is within f32 rounding of Burn's product, and at
/// least one differs from it in its last bits (the LM head's 50,257-deep input gradient, summed
/// in another order), so the check measures something. That sum's rounding alone reaches about
/// √50,257 · 2⁻²⁴ ≈ 1.3e-5 of its largest value (1.1e-5 seen on lavapipe, where 1e-5 was asked);
/// a kernel that computed something else is off by far more than 1e-4.
#[test]
fn bench_matmul_holds_each_kernel_to_burns_product_on_wgpu() {
    let Some(vulkan) = wgpu_env() else { return };
    let args = ["bench", "--backend", "wgpu", "--shape", "tiny", "matmul", "--batch-size", "1", "--seq-len", "8", "--repeats", "1"];
    let output = Command::new(env!("CARGO_BIN_EXE_prefix-tune")).args(args).envs(vulkan).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("is off Burn's product"), "{stderr}");
    let report = stdout_lines(&output).pop().expect("a JSON report");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 10, "the step's ten products");
    let mut largest: f64 = 0.0;
    for result in results {
        let product = result["product"].as_str().unwrap();
        let times: Vec<&str> = result.as_object().unwrap().keys().filter_map(|key| key.strip_suffix("_ms")).filter(|k| k.starts_with("shaders_") || *k == "tuned").collect();
        assert_eq!(times.len(), 15, "{product}: 7 blocks, each also without the split of K, and the tuned choice: {times:?}");
        for kernel in times {
            let error = result[format!("{kernel}_error")].as_f64().unwrap_or_else(|| panic!("{product}: no {kernel}_error"));
            assert!((0.0..1e-4).contains(&error), "{product}: {kernel} off Burn's product by {error}");
            largest = largest.max(error);
        }
    }
    assert!(largest > 0.0, "every kernel gave Burn's bits exactly: the check would not see a wrong one either");
    println!("largest difference from Burn's product: {largest:.1e} of the largest value");
}

/// `bench train` reports what the GPU's allocator holds: at least the model's weights in use
/// (the tiny shape's 50,257 × 64 token embedding alone is 12.3 MiB), more reserved, and more
/// reserved for a larger batch; on the CPU backend, nothing (`null`).
#[test]
fn bench_train_reports_the_gpu_memory_it_holds() {
    let Some(vulkan) = wgpu_env() else { return };
    let memory = |backend: &str, batch: &str| {
        let args = ["bench", "--backend", backend, "--shape", "tiny", "train", "--steps", "1", "--batch-size", batch, "--seq-len", "32"];
        let output = Command::new(env!("CARGO_BIN_EXE_prefix-tune")).args(args).envs(vulkan.clone()).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        stdout_lines(&output).pop().expect("a JSON report")["gpu_memory"].clone()
    };
    let weights_mib = ((50_257 + 1024) * 64 + 2 * (64 * 192 + 64 * 64 + 2 * 64 * 256)) as f64 * 4.0 / (1 << 20) as f64;
    let (small, large) = (memory("wgpu", "1"), memory("wgpu", "8"));
    for report in [&small, &large] {
        let (in_use, reserved) = (report["in_use_mib"].as_f64().unwrap(), report["reserved_mib"].as_f64().unwrap());
        assert!(in_use >= weights_mib && in_use < 2.0 * weights_mib, "{report}: the weights are {weights_mib:.1} MiB");
        assert!(reserved >= in_use, "{report}");
    }
    assert!(large["reserved_mib"].as_f64() > small["reserved_mib"].as_f64(), "batch 8 {large} against batch 1 {small}");
    assert_eq!(memory("flex", "1"), serde_json::Value::Null);
}
