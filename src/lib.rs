//! stripe-worker: turns Stripe billing events into correct, queryable billing state.
//!
//! The pipeline, top to bottom:
//! - [`event`] decodes a queue message (an EventBridge envelope or a bare Stripe event)
//!   into one [`event::NormalisedEvent`];
//! - [`routing`] is the one definition of which domain queue each event type goes to,
//!   rendered as EventBridge patterns and matched by [`pattern`];
//! - [`tenant`] resolves the tenant from trusted channels only;
//! - [`handlers`] turn objects into state changes, [`hydrate`] fetches thin events' objects;
//! - [`ingress`] receives Stripe webhooks, verifies signatures and publishes them to the bus;
//! - [`stripe_api`] is the Stripe API client that hydrates thin events;
//! - [`worker`] polls the queues, dedupes, applies and acknowledges;
//! - [`backend`] holds the seams and their memory, SQLite and AWS implementations;
//! - [`bench`] is the load simulator that runs the worker engine over injected latency;
//! - [`api`] is the read API: billing state over HTTP, a bearer token per tenant.

pub mod api;
pub mod app;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod domain;
pub mod event;
pub mod handlers;
pub mod hydrate;
pub mod ingress;
pub mod ops;
pub mod pattern;
pub mod reconcile;
pub mod retry;
pub mod routing;
pub mod state_view;
pub mod stripe_api;
pub mod stripe_double;
pub mod telemetry;
pub mod tenant;
pub mod worker;
