use std::process::ExitCode;

fn main() -> ExitCode {
    keep_freed_memory();
    no_library_backtraces();
    prefix_tune::out_of_memory::quiet_hook();
    match prefix_tune::run(std::env::args().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, no backtrace: the message names the file and the field at fault.
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// glibc serves every allocation above 32 MiB with a fresh `mmap` and unmaps it on free, so a
/// tensor of that size (an optimizer moment of the prefix MLP, a batch of logits) costs a page
/// fault per 4 KiB, every step. Served from the heap and kept there, the pages are reused:
/// `bench train` 74–83 → 89 tok/s on flex, peak RSS unchanged (1,078 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// With `RUST_BACKTRACE=1` in the environment, every `std::backtrace::Backtrace::capture` walks
/// the stack, and the SPIR-V compiler (pliron, under cubecl-spirv) builds and discards error
/// values that capture one for each constant of each kernel it compiles: 0.6–0.7 s of a 2.8 s
/// beam-5 `generate` on lavapipe (`--features vulkan`). Library backtraces are off unless
/// `RUST_LIB_BACKTRACE` asks for them; a panic's still follows `RUST_BACKTRACE`.
fn no_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Called first in `main`, before any other thread exists.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
