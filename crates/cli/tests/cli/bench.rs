//! `bench matmul` on wgpu (lavapipe in CI): every kernel of `shaders/` it times, and the tuner's
//! choice, is held to Burn's product of the same operands, and says so in its report.

use std::process::Command;

use super::{stdout_lines, wgpu_env};

/// A kernel that a GPU ran wrongly would still report a time; the report's `…_error` beside
/// each time is what tells. On lavapipe each is within f32 rounding of Burn's product, and at
/// least one differs from it in its last bits (the LM head's 50,257-deep input gradient, summed
/// in another order), so the check measures something.
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
            assert!((0.0..1e-5).contains(&error), "{product}: {kernel} off Burn's product by {error}");
            largest = largest.max(error);
        }
    }
    assert!(largest > 0.0, "every kernel gave Burn's bits exactly: the check would not see a wrong one either");
    println!("largest difference from Burn's product: {largest:.1e} of the largest value");
}
