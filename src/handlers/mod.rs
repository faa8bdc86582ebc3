//! Domain handlers: pure functions from a Stripe event's object to the state changes it
//! implies. The worker stamps each change with the tenant, the as-of time and the
//! tiebreak, and writes it with a conditional "newer wins" upsert, which is what makes
//! handlers idempotent and safe under any arrival order.
//!
//! Add your own handler by implementing [`Handler`] and passing it to the worker next to
//! [`standard_handlers`] (see the README, "Adding a handler").

pub mod adjustment;
pub mod catalog;
pub mod customer;
pub mod customer_terms;
mod fields;
pub mod kinds;
pub mod payment;
pub mod raw;
pub mod schedule;
pub mod subscription;

use std::future::Future;
use std::pin::Pin;
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

/// Why a handler's effect outside the store failed, and whether another try may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{handler}: {message}")]
pub struct EffectError {
    /// The handler's name.
    pub handler: String,
    /// What went wrong.
    pub message: String,
    /// Whether a later attempt may succeed (the message is retried), or never (it goes
    /// to the DLQ with this reason).
    pub retryable: bool,
}

/// A handler's effect outside the store, run before its changes are written.
pub type Effect<'a> = Pin<Box<dyn Future<Output = Result<(), EffectError>> + Send + 'a>>;

/// A domain handler. Its [`changes`](Handler::changes) must be pure: the same event type
/// and object always give the same changes.
///
/// A handler that only shapes state (every built-in one) needs nothing more: the worker
/// writes its changes and the event's applied-marker in one transaction, so a crash can
/// never apply it twice. A handler that also acts on another system says so with
/// [`acts_outside_store`](Handler::acts_outside_store): the worker then holds a lease on
/// the event while [`effect`](Handler::effect) runs (renewed while it runs, released when
/// it stops), and writes its changes only while it still holds the lease. The effect may
/// still run twice after a crash (a lease cannot undo what reached the other system), so
/// it must be idempotent there, e.g. by sending the event id as an idempotency key.
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

    /// Whether this handler acts outside the store (see [`Handler::effect`]); false for
    /// pure projections, which need no lease.
    fn acts_outside_store(&self) -> bool {
        false
    }

    /// The handler's effect outside the store for this event, run under the event's
    /// lease before the changes are written. Only called when
    /// [`acts_outside_store`](Handler::acts_outside_store) says so.
    fn effect<'a>(&'a self, _event_type: &'a str, _object: &'a Value) -> Effect<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The built-in handlers, in [`Domain::ALL`] order: subscription, subscription schedule
/// and catalogue (subscription queue); payment and adjustment (payment queue); customer
/// and customer terms (customer queue). Each event type has at most one of them.
pub fn standard_handlers() -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(subscription::SubscriptionHandler),
        Arc::new(schedule::ScheduleHandler),
        Arc::new(catalog::CatalogHandler),
        Arc::new(payment::PaymentHandler),
        Arc::new(adjustment::AdjustmentHandler),
        Arc::new(customer::CustomerHandler),
        Arc::new(customer_terms::CustomerTermsHandler),
    ]
}
