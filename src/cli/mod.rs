//! Command-line entry points (the lead wires these into `main.rs`).

pub mod routes;
