//! stripe-worker: turns Stripe billing events into correct, queryable billing state.
//!
//! The pipeline, top to bottom (the README's "Code map" has the whole tree):
//! - [`ingress`] receives Stripe webhooks, verifies signatures and publishes them to the bus;
//! - [`event`] decodes a queue message (an EventBridge envelope or a bare Stripe event)
//!   into one [`event::NormalisedEvent`], and builds bus entries;
//! - [`routing`] is the one definition of which domain queue each event type goes to,
//!   rendered as EventBridge patterns and matched by [`pattern`];
//! - [`tenant`] resolves the tenant from trusted channels only;
//! - [`handlers`] turn objects into state changes;
//! - [`worker`] is assembled by [`worker::Worker::build`]: it polls the queues, dedupes,
//!   applies and acknowledges;
//! - [`backend`] holds the seams and their SQLite and AWS implementations, with the test
//!   and simulation doubles apart in [`backend::doubles`];
//! - [`stripe`] talks to the Stripe API (the client, the hydration seam, the double);
//! - [`reconcile`] keeps the state equal to Stripe (import, verify, sweep, same-second ties);
//! - [`retry`] is the one retry vocabulary and says which layer retries each remote;
//! - [`api`] is the read API: billing state over HTTP, a bearer token per tenant;
//! - [`ops`], [`cli`], [`telemetry`], [`config`] are the operator's side; [`demo`] and
//!   [`bench`] run the whole engine on generated streams.

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
pub mod ingress;
pub mod ops;
pub mod pattern;
pub mod reconcile;
pub mod retry;
pub mod routing;
pub mod state_view;
pub mod stripe;
pub mod telemetry;
pub mod tenant;
pub mod worker;
