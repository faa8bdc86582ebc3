//! Everything that talks to Stripe's API, or stands in for it:
//!
//! - [`api`]: the HTTP client (per-key pacing, the one retry layer for Stripe calls,
//!   retrieve and list endpoints), with its keys loaded like the ingress's secrets;
//! - [`hydrate`]: the seam the worker fetches thin events' objects through;
//! - [`double`]: the Stripe double, in process for the demo and served over HTTP for
//!   tests of the real client.

pub mod api;
pub mod double;
pub mod hydrate;
