//! The dead-letter queue seam: list, redrive and purge what a queue dead-lettered. One
//! narrow trait, [`DeadLetterOps`], implemented by every queue backend, and the value
//! types the operations commands (`stripe-worker dlq ...`) work with.
//!
//! Guarantees every implementation keeps, whatever point a call is interrupted at
//! (dropped future, killed process):
//! - no message is lost: a redrive sends a message to the source queue *before* deleting
//!   it from the DLQ, so an interruption leaves it in one of them, or in both (the worker's
//!   dedupe makes the extra copy harmless), never in neither;
//! - listing changes nothing a reader would notice: no message is removed or reordered.
//!   The embedded backends read their table; SQS has no peek, so it receives with a short
//!   visibility timeout and sets the visibility back to 0. That increments the DLQ copy's
//!   receive count, which is harmless because a DLQ has no redrive policy of its own.

use std::collections::BTreeMap;
use std::future::Future;

use super::{BackendResult, dlq_attributes};
use crate::event::decode_message;

/// The prefix of every attribute the worker sets when it dead-letters a message; a
/// redrive removes these (a new failure adds fresh ones).
pub const REASON_ATTRIBUTE_PREFIX: &str = "stripe_worker.";

/// One message in a dead-letter queue, as the operations commands list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMessage {
    /// The message id in the DLQ (the embedded backends keep the source queue's id; SQS
    /// gives the DLQ copy an id of its own).
    pub message_id: String,
    /// The body, unchanged.
    pub body: String,
    /// When it entered the dead-letter queue, ms since the epoch.
    pub sent_at_ms: i64,
    /// The reason attributes ([`dlq_attributes`]) and any others it carried.
    pub attributes: BTreeMap<String, String>,
}

impl DlqMessage {
    /// A reason attribute, when present.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }
}

/// Which dead-lettered messages a redrive moves back to the source queue. Every given
/// condition must hold; [`RedriveFilter::default`] selects every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveFilter {
    /// Only these message ids (empty: any id).
    pub ids: Vec<String>,
    /// Only messages whose [`dlq_attributes::ERROR_KIND`] equals this.
    pub error_kind: Option<String>,
    /// Only messages whose body decodes to an event of this type (the type as the worker
    /// sees it, e.g. `customer.subscription.updated`). Undecodable bodies never match.
    pub event_type: Option<String>,
}

impl RedriveFilter {
    /// Every message.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only messages with this error kind.
    pub fn error_kind(kind: impl Into<String>) -> Self {
        RedriveFilter {
            error_kind: Some(kind.into()),
            ..Self::default()
        }
    }

    /// Only these message ids.
    pub fn ids(ids: impl IntoIterator<Item = String>) -> Self {
        RedriveFilter {
            ids: ids.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether the filter selects every message (so a backend may move the whole DLQ
    /// without looking at each message).
    pub fn is_all(&self) -> bool {
        self.ids.is_empty() && self.error_kind.is_none() && self.event_type.is_none()
    }

    /// Whether a DLQ message is selected.
    pub fn matches(
        &self,
        message_id: &str,
        attributes: &BTreeMap<String, String>,
        body: &str,
    ) -> bool {
        if !self.ids.is_empty() && !self.ids.iter().any(|id| id == message_id) {
            return false;
        }
        if self
            .error_kind
            .as_ref()
            .is_some_and(|kind| attributes.get(dlq_attributes::ERROR_KIND) != Some(kind))
        {
            return false;
        }
        if let Some(event_type) = &self.event_type {
            return decode_message(body.as_bytes()).is_ok_and(|e| &e.event_type == event_type);
        }
        true
    }
}

/// Told how many messages a redrive has moved so far, for progress bars.
pub type RedriveProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// The attributes a redriven message goes back with: its own, without the reason.
pub fn strip_reason(attributes: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    attributes
        .iter()
        .filter(|(k, _)| !k.starts_with(REASON_ATTRIBUTE_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The operations on a queue's dead-letter queue. See the module documentation for what
/// every implementation guarantees when interrupted.
pub trait DeadLetterOps: Send + Sync + 'static {
    /// Up to `limit` messages of the dead-letter queue, oldest first (by the time they
    /// were dead-lettered), without removing or reordering any.
    fn dlq_peek(&self, limit: usize)
    -> impl Future<Output = BackendResult<Vec<DlqMessage>>> + Send;

    /// Move the messages `filter` selects back to the source queue, visible now, with the
    /// reason attributes removed. `progress` hears the running count of moved messages.
    /// Returns how many moved.
    fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        progress: RedriveProgress<'_>,
    ) -> impl Future<Output = BackendResult<u64>> + Send;

    /// Delete every message in the dead-letter queue. Returns how many were deleted.
    fn dlq_purge(&self) -> impl Future<Output = BackendResult<u64>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_their_conditions() {
        let attrs: BTreeMap<String, String> = [
            (
                dlq_attributes::ERROR_KIND.to_owned(),
                "unknown_tenant".to_owned(),
            ),
            ("other".to_owned(), "x".to_owned()),
        ]
        .into();
        assert!(RedriveFilter::all().matches("m1", &attrs, "not json"));
        assert!(RedriveFilter::all().is_all());
        assert!(RedriveFilter::error_kind("unknown_tenant").matches("m1", &attrs, ""));
        assert!(!RedriveFilter::error_kind("decode_error").matches("m1", &attrs, ""));
        assert!(RedriveFilter::ids(["m1".to_owned()]).matches("m1", &attrs, ""));
        assert!(!RedriveFilter::ids(["m2".to_owned()]).matches("m1", &attrs, ""));
        let typed = RedriveFilter {
            event_type: Some("customer.created".into()),
            ..RedriveFilter::error_kind("unknown_tenant")
        };
        assert!(!typed.is_all());
        // An undecodable body has no event type.
        assert!(!typed.matches("m1", &attrs, "not json"));
        assert_eq!(strip_reason(&attrs).len(), 1);
    }
}
