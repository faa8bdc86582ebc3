//! Ingress counters: plain atomics with a bounded set of labels. The same calls feed the
//! OpenTelemetry request counter ([`crate::telemetry::metrics`]). Never labelled by event
//! id or tenant (unbounded).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::telemetry::metrics;

/// Why a webhook request was not accepted: the bounded reason set, each with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// No `Stripe-Signature` header (or not valid UTF-8). 400.
    MissingSignature,
    /// The header cannot be parsed. 400.
    MalformedSignature,
    /// The header has no `v1` signature. 400.
    NoV1Signature,
    /// No `v1` matches any of the tenant's secrets. 400.
    NoMatchingSignature,
    /// The signed timestamp is outside the tolerance. 400.
    TimestampOutsideTolerance,
    /// The body is larger than the configured limit. 413.
    PayloadTooLarge,
    /// The body could not be read (client went away, bad chunking). 400.
    BodyRead,
    /// The body is not JSON. 400.
    NotJson,
    /// The body is JSON but not a Stripe event (`id`, `type`, `created`, `object: "event"`). 400.
    NotStripeEvent,
    /// The event could not be wrapped into a bus entry (e.g. too large for the bus). 400.
    Envelope,
    /// The path names a tenant with no configured secrets. 404.
    UnknownTenant,
    /// The bus did not accept every entry after retries. 503, so Stripe retries.
    PublishFailed,
    /// The body did not arrive within the body read timeout. 408.
    BodyTimeout,
}

impl RejectReason {
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; 13] = [
        RejectReason::MissingSignature,
        RejectReason::MalformedSignature,
        RejectReason::NoV1Signature,
        RejectReason::NoMatchingSignature,
        RejectReason::TimestampOutsideTolerance,
        RejectReason::PayloadTooLarge,
        RejectReason::BodyRead,
        RejectReason::NotJson,
        RejectReason::NotStripeEvent,
        RejectReason::Envelope,
        RejectReason::UnknownTenant,
        RejectReason::PublishFailed,
        RejectReason::BodyTimeout,
    ];

    /// The bounded label used in metrics and in the `reason` of error answers.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingSignature => "missing_signature_header",
            RejectReason::MalformedSignature => "malformed_signature_header",
            RejectReason::NoV1Signature => "no_v1_signature",
            RejectReason::NoMatchingSignature => "no_matching_signature",
            RejectReason::TimestampOutsideTolerance => "timestamp_outside_tolerance",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::BodyRead => "body_read_error",
            RejectReason::NotJson => "not_json",
            RejectReason::NotStripeEvent => "not_stripe_event",
            RejectReason::Envelope => "envelope_error",
            RejectReason::UnknownTenant => "unknown_tenant",
            RejectReason::PublishFailed => "publish_failed",
            RejectReason::BodyTimeout => "body_read_timeout",
        }
    }

    /// The HTTP status answered for this reason.
    pub fn status(self) -> u16 {
        match self {
            RejectReason::PayloadTooLarge => 413,
            RejectReason::UnknownTenant => 404,
            RejectReason::PublishFailed => 503,
            RejectReason::BodyTimeout => 408,
            _ => 400,
        }
    }

    /// The short `error` text of the JSON answer.
    pub fn error_text(self) -> &'static str {
        match self {
            RejectReason::MissingSignature
            | RejectReason::MalformedSignature
            | RejectReason::NoV1Signature
            | RejectReason::NoMatchingSignature
            | RejectReason::TimestampOutsideTolerance => "invalid signature",
            RejectReason::PayloadTooLarge => "payload too large",
            RejectReason::BodyRead => "could not read body",
            RejectReason::NotJson | RejectReason::NotStripeEvent | RejectReason::Envelope => {
                "invalid event"
            }
            RejectReason::UnknownTenant => "unknown tenant",
            RejectReason::PublishFailed => "temporarily unavailable",
            RejectReason::BodyTimeout => "body not received in time",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of what the ingress did since start. Shared (in an `Arc`) between the server
/// and whoever exports telemetry; updates are relaxed atomics, so reads are approximate
/// snapshots, which is all a counter needs.
#[derive(Debug, Default)]
pub struct IngressCounters {
    accepted: AtomicU64,
    entries_published: AtomicU64,
    publish_retries: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
}

/// A point-in-time copy of [`IngressCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressCountersSnapshot {
    /// Requests answered 200 (every entry accepted by the bus).
    pub accepted: u64,
    /// Bus entries accepted (one or two per accepted request, by publish style).
    pub entries_published: u64,
    /// Publish attempts after the first (re-sends of failed entries).
    pub publish_retries: u64,
    /// Rejected requests by reason, in [`RejectReason::ALL`] order.
    pub rejected: Vec<(RejectReason, u64)>,
}

impl IngressCountersSnapshot {
    /// The count for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

impl IngressCounters {
    /// Count a rejected request.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::get().ingress_request(reason.status(), reason.as_str());
    }

    pub(crate) fn accept(&self, entries: usize) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        metrics::get().ingress_request(200, "accepted");
        self.entries_published
            .fetch_add(entries as u64, Ordering::Relaxed);
    }

    pub(crate) fn retry(&self) {
        self.publish_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Read every counter.
    pub fn snapshot(&self) -> IngressCountersSnapshot {
        IngressCountersSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            entries_published: self.entries_published.load(Ordering::Relaxed),
            publish_retries: self.publish_retries.load(Ordering::Relaxed),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, self.rejected[r.index()].load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_labels_are_unique() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut labels: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RejectReason::ALL.len());
    }

    #[test]
    fn counts_accumulate() {
        let c = IngressCounters::default();
        c.reject(RejectReason::NotJson);
        c.reject(RejectReason::NotJson);
        c.accept(2);
        c.retry();
        let s = c.snapshot();
        assert_eq!(s.rejected(RejectReason::NotJson), 2);
        assert_eq!(s.rejected(RejectReason::UnknownTenant), 0);
        assert_eq!(
            (s.accepted, s.entries_published, s.publish_retries),
            (1, 2, 1)
        );
    }
}
