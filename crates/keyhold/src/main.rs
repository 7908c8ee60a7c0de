//! The `keyhold` binary.

fn main() -> std::process::ExitCode {
    keyhold::cli::main()
}
