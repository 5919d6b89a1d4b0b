//! The pg_backrest binary: everything lives in the library; main only turns its result into
//! the process exit status.
fn main() -> std::process::ExitCode {
    let code = pg_backrest::main_exit_code();
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
