//! Out of GPU memory as one line that names the batch size, not a panic.
//!
//! Burn reports a failed GPU allocation by panicking where the data is read back, with a
//! multi-line chain of causes. A command that sizes its work by a batch runs under [`guard`]
//! with its batch size, and every command under one without (`crate::run`): such a panic
//! becomes [`CliError::OutOfMemory`], and the panic hook ([`quiet_hook`]) keeps its text off
//! stderr. On a thread no guard covers (the server's decoding thread) the hook prints it as one
//! line. Any other panic is printed and re-raised as before.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};

use crate::error::{CliError, Result};

/// The line of a panic message that says an allocation failed, if it does.
pub fn allocation_failure(message: &str) -> Option<String> {
    message
        .lines()
        .map(str::trim)
        .find(|line| line.contains("can't allocate buffer") || line.to_ascii_lowercase().contains("out of memory"))
        .map(str::to_string)
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

thread_local! {
    /// How many [`guard`]s this thread is inside: an allocation failure here is theirs to report.
    static GUARDS: Cell<usize> = const { Cell::new(0) };
}

/// Installs a panic hook that stays silent for an allocation failure a [`guard`] will report,
/// prints one line for one no guard covers, and prints every other panic as Rust's default hook
/// does.
pub fn quiet_hook() {
    let default = panic::take_hook();
    panic::set_hook(Box::new(move |info| match allocation_failure(&payload_text(info.payload())) {
        Some(_) if GUARDS.get() > 0 => {}
        Some(detail) => eprintln!("error: out of GPU memory in thread `{}` ({detail})", std::thread::current().name().unwrap_or("unnamed")),
        None => default(info),
    }));
}

/// Runs `work`; a GPU allocation failure inside it becomes a one-line error naming
/// `batch_size` (where the work has one) and what to do (`advice`, e.g. how to resume).
pub fn guard<T>(batch_size: Option<usize>, advice: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    GUARDS.set(GUARDS.get() + 1);
    let outcome = panic::catch_unwind(AssertUnwindSafe(work));
    GUARDS.set(GUARDS.get() - 1);
    match outcome {
        Ok(result) => result,
        Err(payload) => match allocation_failure(&payload_text(payload.as_ref())) {
            Some(detail) => Err(CliError::OutOfMemory { batch_size, detail, advice: advice.to_string() }),
            None => panic::resume_unwind(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_failure_becomes_one_line_naming_the_batch_size() {
        quiet_hook();
        let message = "Error while reading data\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 153786420000";
        let error = guard(Some(3000), "lower --batch-size", || -> Result<()> { panic!("{message}") }).unwrap_err();
        let text = error.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("batch size 3000") && text.contains("153786420000") && text.contains("lower --batch-size"), "{text}");
        // The innermost guard reports it; one without a batch size says none.
        let nested = guard(None, "outer", || guard(Some(7), "inner", || -> Result<()> { panic!("{message}") })).unwrap_err().to_string();
        assert!(nested.starts_with("out of GPU memory at batch size 7 (") && nested.ends_with("): inner"), "{nested}");
        let without_batch = guard(None, "use --backend flex", || -> Result<()> { panic!("{message}") }).unwrap_err().to_string();
        assert_eq!(without_batch, "out of GPU memory (can't allocate buffer of size: 153786420000): use --backend flex");
        assert_eq!(GUARDS.get(), 0, "every guard left counts itself out");
        // Any other panic is not swallowed.
        assert!(panic::catch_unwind(|| guard(Some(1), "", || -> Result<()> { panic!("index out of bounds") })).is_err());
    }
}
