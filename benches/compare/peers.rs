//! (being written)

pub fn probe() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
