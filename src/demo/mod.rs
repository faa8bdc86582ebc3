//! The demo's data: a deterministic generator of realistic Stripe event streams
//! ([`generator`]) and its own model of the state they should produce ([`expected`]).
//!
//! The demo publishes the generated events, lets the worker apply them (hydrating thin
//! ones from the [`crate::stripe::double::StripeDouble`] loaded with the stream's final
//! objects), then compares the stored state with the model.

pub mod expected;
pub mod generator;
mod shapes;

pub use expected::{ExpectedState, Facts, Mismatch};
pub use generator::{GeneratedEvent, GeneratedStream, GeneratorConfig, generate};
pub mod runner;
