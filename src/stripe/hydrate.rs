//! The hydration seam: fetching the current object a thin event points at.

use futures::future::BoxFuture;
use serde_json::Value;

use crate::event::ObjectRef;

/// Why an object could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HydrateError {
    /// Worth retrying later: timeouts, 429, 5xx, connection failures.
    #[error("fetching {object_id}: transient failure: {message}")]
    Transient { object_id: String, message: String },
    /// Never worth retrying: 401, 403, 404, a missing API key, an unusable reference.
    #[error("fetching {object_id}: {message}")]
    Permanent {
        object_id: String,
        /// A short, bounded code used as the DLQ reason, e.g. `stripe_not_found`.
        code: &'static str,
        message: String,
    },
}

/// Fetches the current version of a Stripe object for a tenant.
///
/// Chosen at run time (the Stripe API, or the in-process Stripe double of the demo), so
/// it is object-safe and boxes its future; the cost is one allocation per thin event,
/// next to an HTTP round trip.
pub trait Hydrator: Send + Sync + 'static {
    /// Fetch the object `reference` points at. `context` is the Stripe-Context (the
    /// Connect account) the event came from.
    fn fetch<'a>(
        &'a self,
        tenant: &'a str,
        reference: &'a ObjectRef,
        context: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Value, HydrateError>>;
}
