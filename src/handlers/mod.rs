//! Domain handlers: pure functions from a Stripe event's object to the state changes it
//! implies. The worker stamps each change with the tenant, the as-of time and the
//! tiebreak, and writes it with a conditional "newer wins" upsert, which is what makes
//! handlers idempotent and safe under any arrival order.
//!
//! Add your own handler by implementing [`Handler`] and passing it to the worker next to
//! [`standard_handlers`] (see the README, "Adding a handler").

pub mod customer;
mod fields;
pub mod kinds;
pub mod payment;
pub mod subscription;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::Domain;

/// One record a handler wants stored (see [`crate::backend::StateRecord`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// The record kind, e.g. `subscription`.
    pub kind: String,
    /// The Stripe object id.
    pub id: String,
    /// The customer the object belongs to, when known.
    pub customer: Option<String>,
    /// The record's fields.
    pub doc: Value,
}

/// Why a handler could not turn an object into changes. Always permanent: the same
/// object will fail the same way, so the message goes to the DLQ with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{handler}: {message}")]
pub struct HandlerError {
    /// The handler's name.
    pub handler: String,
    /// What was wrong with the object.
    pub message: String,
}

/// A domain handler. Implementations must be pure: the same event type and object
/// always give the same changes.
pub trait Handler: Send + Sync + 'static {
    /// A stable name; part of the dedupe key, so renaming it re-applies old events.
    fn name(&self) -> &str;

    /// The domain whose queue feeds this handler.
    fn domain(&self) -> Domain;

    /// Whether this handler acts on `event_type` (without the `v1.` prefix).
    fn handles(&self, event_type: &str) -> bool;

    /// The changes that `object` (the event's object, or the hydrated current object)
    /// implies for an event of `event_type`.
    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError>;
}

/// The built-in handlers: subscription, payment and customer.
pub fn standard_handlers() -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(subscription::SubscriptionHandler),
        Arc::new(payment::PaymentHandler),
        Arc::new(customer::CustomerHandler),
    ]
}
