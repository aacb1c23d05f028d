use std::process::ExitCode;

fn main() -> ExitCode {
    match prefix_tune::run(std::env::args().collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One line, no backtrace: the message names the file and the field at fault.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
