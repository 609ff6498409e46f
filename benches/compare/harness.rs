//! (being written)

pub fn main() -> std::process::ExitCode {
    if std::env::var("PEERS_PROBE").is_ok() {
        return super::peers::probe();
    }
    std::process::ExitCode::SUCCESS
}
