//! The normalised event: one shape for every way a Stripe event can reach a queue.
//!
//! Decoding is pure (bytes in, [`NormalisedEvent`] or [`DecodeError`] out) and lives in
//! [`decode`]. Everything downstream (dedupe, tenants, handlers) sees only this type.

pub mod decode;
pub mod envelope;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use decode::{DecodeError, decode_message};
pub use envelope::BusEntry;

/// Which path the event took onto the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceKind {
    /// Our own ingress verified a webhook and published it (source `stripe.webhook`).
    Webhook,
    /// A Stripe event destination put it on a partner bus (source
    /// `aws.partner/stripe.com/<destination>`); `destination` is the `ed_...` id.
    Partner { destination: String },
    /// A bare Stripe event with no envelope (local ingest and tools).
    Bare,
}

impl SourceKind {
    /// A short, bounded label for metrics and summaries.
    pub fn label(&self) -> &'static str {
        match self {
            SourceKind::Webhook => "webhook",
            SourceKind::Partner { .. } => "partner",
            SourceKind::Bare => "bare",
        }
    }
}

/// Whether the event carries the full object or only points at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStyle {
    /// The event carries the object as it was when the event happened.
    Snapshot,
    /// The event carries a reference; the worker fetches the object from the Stripe API.
    Thin,
}

/// The event's object: either the full snapshot or a reference to fetch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventObject {
    /// `data.object` of a snapshot event.
    Full { object: Value },
    /// What a thin event points at.
    Reference(ObjectRef),
}

/// A pointer to a Stripe object, as carried by thin events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object id, e.g. `sub_123`.
    pub id: String,
    /// The Stripe object type, e.g. `subscription` (v2 names keep their dots).
    pub object_type: String,
    /// The API path to fetch it from, e.g. `/v1/subscriptions/sub_123`, when the event gave one.
    pub url: Option<String>,
    /// The customer the object belongs to, when the event says (flat webhook thin shape).
    pub customer: Option<String>,
}

/// One Stripe event, whatever envelope and payload style it arrived in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalisedEvent {
    /// The id used for dedupe: the v1 `snapshot_event` of a thin event when present, else the
    /// Stripe `evt_` id. Never the EventBridge envelope id, which changes on replay.
    pub dedupe_id: String,
    /// The Stripe event id as it arrived (differs from `dedupe_id` for thin events that
    /// name their snapshot event).
    pub event_id: String,
    /// The event type without any `v1.` prefix, e.g. `customer.subscription.updated`.
    pub event_type: String,
    /// When Stripe created the event, in milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// Whether the event is from live mode.
    pub livemode: bool,
    /// Which path the event took.
    pub source: SourceKind,
    /// Snapshot or thin.
    pub payload_style: PayloadStyle,
    /// The object, full or referenced.
    pub object: EventObject,
    /// `tenant_id` stamped by our ingress (webhook path only; trusted because only the
    /// ingress publishes with source `stripe.webhook`).
    pub tenant_hint: Option<String>,
    /// The Connect account the event belongs to (`account` of a v1 event, `context` of a
    /// v2 event), e.g. `acct_123`.
    pub connect_account: Option<String>,
    /// The EventBridge `replay-name`, when the event came from an archive replay.
    pub replay_name: Option<String>,
    /// The AWS account of the envelope, when present.
    pub aws_account: Option<String>,
    /// The Stripe API version of a snapshot payload, when present.
    pub api_version: Option<String>,
    /// W3C `traceparent` the ingress put into the detail, to continue its trace.
    pub traceparent: Option<String>,
}
