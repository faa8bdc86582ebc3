//! demo
pub mod expected;
pub mod generator;
