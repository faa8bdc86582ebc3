//! The SQS semantics every local queue keeps (memory and SQLite), so that tests on them
//! catch what SQS would refuse: batch limits, the dead-letter reason attributes, the
//! redrive after too many receives, stale receipts.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BackendError, BackendResult, DeadLetterReason, dlq_attributes};

/// The most messages one receive or batch call takes (the SQS limit).
pub const MAX_BATCH: usize = 10;

/// The DLQ error kind of a message moved by redrive after too many receives.
pub const MAX_RECEIVE_COUNT_EXCEEDED: &str = "max_receive_count_exceeded";

/// Longest dead-letter reason message kept, in bytes (SQS attribute values allow 256 KiB
/// for the whole message; a bounded reason keeps DLQ listings readable).
pub const MAX_REASON_BYTES: usize = 1024;

/// Wall-clock now, ms since the epoch.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Truncate to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The attributes a dead-lettered message carries.
pub(crate) fn reason_attributes(
    source_queue: &str,
    sent_at_ms: i64,
    receive_count: u32,
    reason: &DeadLetterReason,
    now_ms: i64,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert(dlq_attributes::ERROR_KIND.to_owned(), reason.kind.clone());
    a.insert(
        dlq_attributes::ERROR_MESSAGE.to_owned(),
        truncate(&reason.message, MAX_REASON_BYTES).to_owned(),
    );
    if let Some(h) = &reason.handler {
        a.insert(dlq_attributes::HANDLER.to_owned(), h.clone());
    }
    a.insert(
        dlq_attributes::SOURCE_QUEUE.to_owned(),
        source_queue.to_owned(),
    );
    a.insert(
        dlq_attributes::FIRST_SEEN_MS.to_owned(),
        sent_at_ms.to_string(),
    );
    a.insert(
        dlq_attributes::RECEIVE_COUNT.to_owned(),
        receive_count.to_string(),
    );
    a.insert(
        dlq_attributes::DEAD_LETTERED_MS.to_owned(),
        now_ms.to_string(),
    );
    a
}

/// The reason for a redrive after too many receives.
pub(crate) fn redrive_reason(max_receive_count: u32) -> DeadLetterReason {
    DeadLetterReason {
        kind: MAX_RECEIVE_COUNT_EXCEEDED.to_owned(),
        message: format!("received more than {max_receive_count} times without being deleted"),
        handler: None,
    }
}

/// Reject receive sizes SQS would reject, so tests catch them on every backend.
pub(crate) fn check_max(operation: &'static str, max: usize) -> BackendResult<()> {
    if (1..=MAX_BATCH).contains(&max) {
        Ok(())
    } else {
        Err(BackendError::Permanent {
            operation,
            message: format!("max must be 1..={MAX_BATCH}, got {max}"),
        })
    }
}

/// Reject batches SQS would reject.
pub(crate) fn check_batch(operation: &'static str, len: usize) -> BackendResult<()> {
    if len <= MAX_BATCH {
        Ok(())
    } else {
        Err(BackendError::Permanent {
            operation,
            message: format!("at most {MAX_BATCH} entries per batch, got {len}"),
        })
    }
}

/// The per-entry error for a receipt that does not hold a message.
pub(crate) fn invalid_receipt(operation: &'static str) -> BackendError {
    BackendError::Permanent {
        operation,
        message: "receipt handle is invalid or stale (message deleted or received again)"
            .to_owned(),
    }
}
