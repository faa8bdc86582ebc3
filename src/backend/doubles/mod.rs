//! Test and simulation doubles of the backends: nothing here runs in production.
//!
//! - [`memory`]: in-memory queues and stores with the production semantics (checked by
//!   the conformance suite), for tests, benches and `bench --backend memory`;
//! - [`faults`]: a wrapper that fails a share of calls (the demo, the reliability tests);
//! - [`latency`]: wrappers that add latency and a capacity limit (the bench).

pub mod faults;
pub mod latency;
pub mod memory;
