//! Support for this workspace's tests: where the fixtures are, which device tests run on.
//! (Public so every crate's test binary shares it; nothing here is for users.)

use std::path::PathBuf;

use burn::tensor::Device;

use crate::Backend;

pub mod bart;

/// Held by a test while it seeds and draws from the backend's random generator, which is one
/// per process: tests run on parallel threads, and another test's draws in between would change
/// what a seed gives.
pub fn random_draws() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `tests/fixtures` at the workspace root (produced by scripts/make_fixtures.py).
pub fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
}

/// Names the backend [`device`] gives instead of the CPU's: [`run_on_wgpu`] sets it to run a
/// test binary's parity tests on wgpu.
pub const TEST_BACKEND_VAR: &str = "PREFIX_TUNE_TEST_BACKEND";

/// The CPU backend when compiled in (as in CI), else the first compiled backend; the backend
/// [`TEST_BACKEND_VAR`] names where it is set.
pub fn device() -> Device {
    if let Ok(name) = std::env::var(TEST_BACKEND_VAR) {
        return crate::backend::device(Some(&name)).unwrap_or_else(|e| panic!("{TEST_BACKEND_VAR}={name}: {e}"));
    }
    let backend = if Backend::Flex.is_compiled() { Backend::Flex } else { Backend::compiled()[0] };
    backend.device().expect("a compiled-in backend")
}

/// The environment a child process needs to run on Vulkan (Mesa's lavapipe where installed, as
/// CI does), or `None` when the machine has no Vulkan driver.
pub fn vulkan_env() -> Option<Vec<(&'static str, String)>> {
    let lavapipe = std::path::Path::new("/usr/share/vulkan/icd.d/lvp_icd.json");
    let icd = std::env::var("VK_ICD_FILENAMES").ok().or_else(|| lavapipe.exists().then(|| lavapipe.display().to_string()))?;
    let runtime = std::env::temp_dir().join("prefix-tune-xdg");
    std::fs::create_dir_all(&runtime).expect("temp dir is writable");
    Some(vec![("VK_ICD_FILENAMES", icd), ("XDG_RUNTIME_DIR", runtime.display().to_string())])
}

/// Runs the ignored test `child` of the current test binary on the wgpu backend, in a child
/// process with [`vulkan_env`] (so that a driver crash fails the calling test only), asserts it
/// passed and returns what it printed; `None` (after saying why) where this build has no wgpu
/// backend or the machine no Vulkan driver.
pub fn run_on_vulkan(child: &str) -> Option<String> {
    run_tests_on_vulkan(&["--ignored", child], 1, &[])
}

/// Runs the tests `names` (exact names) of the current test binary again with [`device`] on
/// the wgpu backend, in a child process with [`vulkan_env`], asserts that each passed without
/// skipping, and prints what they printed: how the parity tests against HF and PEFT hold on a
/// GPU backend. Says why not where [`run_on_vulkan`] would.
pub fn run_on_wgpu(names: &[&str]) {
    if let Some(stdout) = run_tests_on_vulkan(names, names.len(), &[(TEST_BACKEND_VAR, "wgpu")]) {
        assert!(!stdout.contains("skipped"), "a test skipped on wgpu: {stdout}");
        println!("on wgpu, {} tests passed:\n{stdout}", names.len());
    }
}

/// Runs this test binary on `filters` (`--ignored` and exact names) with [`vulkan_env`] and
/// `env`, one test at a time, and asserts that `count` tests ran and passed.
fn run_tests_on_vulkan(filters: &[&str], count: usize, env: &[(&str, &str)]) -> Option<String> {
    if crate::backend::device(Some("wgpu")).is_err() {
        println!("skipped: built without the wgpu feature");
        return None;
    }
    let Some(vulkan) = vulkan_env() else {
        println!("skipped: no Vulkan driver (install mesa-vulkan-drivers for lavapipe)");
        return None;
    };
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(filters)
        .args(["--exact", "--nocapture", "--test-threads", "1"])
        .envs(vulkan.iter().cloned())
        .envs(env.iter().copied())
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let passed = format!("{count} passed; 0 failed");
    assert!(output.status.success() && stdout.contains(&passed), "{filters:?} on {}: {stdout}\n{}", vulkan[0].1, String::from_utf8_lossy(&output.stderr));
    Some(stdout)
}

/// A fresh, empty directory under the system's temp dir for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prefix-tune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// The largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The PEFT fixture's parameters and references for `variant` (`flat` or `mlp`).
pub fn peft_params(variant: &str) -> crate::weights::WeightFiles {
    crate::weights::WeightFiles::open(vec![fixtures().join("peft").join(variant).join("params.safetensors")]).expect("fixture readable")
}

/// The PEFT fixture's `reference.json` for `variant`.
pub fn peft_reference(variant: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("peft").join(variant).join("reference.json")).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A float tensor of a fixture file: shape and values.
pub fn read_f32(files: &crate::weights::WeightFiles, name: &str) -> (Vec<usize>, Vec<f32>) {
    files.view(name, |_, v| (v.shape().to_vec(), crate::weights::to_f32(v).expect("float tensor"))).expect("tensor in fixture")
}
