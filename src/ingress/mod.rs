//! The webhook ingress: receives Stripe webhooks over HTTP, verifies their signatures,
//! and publishes them to the event bus as `stripe.webhook` entries.
//!
//! - [`signature`]: pure `Stripe-Signature` parsing and verification;
//! - [`secrets`]: the secret type and per-tenant loading (environment, mounted files);
//! - [`config`]: [`IngressConfig`] with defaults and validation;
//! - [`counters`]: [`IngressCounters`] for telemetry;
//! - [`server`]: the axum routes and [`serve`] with graceful shutdown.
//!
//! Wiring, in the binary:
//! ```text
//! let config = IngressConfig::from_env(secrets_dir)?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! let state = IngressState::new(config, bus)?.with_ready_check(check);
//! let counters = state.counters();
//! serve(listener, state, shutdown).await?;
//! ```

pub mod config;
pub mod counters;
pub mod secrets;
pub mod server;
pub mod signature;

pub use config::{ConfigError, DEFAULT_PUBLISH_BACKOFF, IngressConfig, PublishStyles};
pub use counters::{IngressCounters, IngressCountersSnapshot, RejectReason};
pub use secrets::{SecretsError, WebhookSecret};
pub use server::{Clock, IngressState, LOCAL_BUS_NAME, ReadyCheck, probe_router, router, serve};
pub use signature::{SignatureError, signature_header, verify};
