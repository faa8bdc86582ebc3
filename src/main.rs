//! The `stripe-worker` binary: all logic is in the library.

fn main() -> std::process::ExitCode {
    stripe_worker::cli::main()
}
