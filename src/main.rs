//! The `stripe-worker` binary: all logic is in the library.

/// Per-message allocations dominate the worker's own CPU time; see `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stripe_worker::cli::main()
}
