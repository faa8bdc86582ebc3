//! Operations on a running deployment, on either backend: queue depths
//! ([`queues`]), dead-letter inspection, redrive and purge ([`dlq`]), archive replay
//! ([`replay`]) and backfill of events Stripe never delivered ([`backfill`]).
//!
//! Every operation is safe to interrupt at any point: none holds a message anywhere but
//! in a queue. Redrive sends before it deletes, replay and backfill only publish (the
//! worker's dedupe absorbs a repeat), and listing changes nothing a reader would notice.
//! Long operations report progress on an [`indicatif::ProgressBar`] the caller passes
//! (hidden in tests); results are plain values that serialise to JSON and print as
//! tables.

pub mod backfill;
pub mod dlq;
pub mod queues;
pub mod replay;

use crate::backend::BackendError;
use crate::domain::Domain;
use crate::event::envelope::EnvelopeError;
use crate::stripe::hydrate::HydrateError;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A queue, store, bus or archive call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The Stripe API call failed (after its own retries).
    #[error("Stripe API: {0}")]
    Stripe(#[from] HydrateError),
    /// An event from the Stripe API could not be made into a bus entry.
    #[error("building a bus entry: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Publishing to the bus failed after retries.
    #[error("publishing to the bus: {0}")]
    Publish(String),
    /// No dead-lettered message with this id.
    #[error("no message `{id}` in the {domain} dead-letter queue")]
    NotFound {
        /// The domain whose DLQ was searched.
        domain: Domain,
        /// The id asked for.
        id: String,
    },
    /// A bad argument (time window, replay name).
    #[error("{0}")]
    Invalid(String),
    /// A replay ended in a state other than completed.
    #[error("replay {name} ended {state}: {reason}")]
    ReplayFailed {
        /// The replay name.
        name: String,
        /// Its final state.
        state: String,
        /// The reason the service gave.
        reason: String,
    },
}

/// Format ms since the epoch as RFC 3339 (whole seconds), or `-` when out of range.
pub(crate) fn time_text(ms: i64) -> String {
    crate::event::envelope::rfc3339_seconds(ms).unwrap_or_else(|_| "-".to_owned())
}

/// Whole seconds at or after `ms` (ms since the epoch): a window start in Stripe's
/// `created`, which has whole seconds, so a partial second before the start stays out.
pub(crate) fn ceil_secs(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0)
}

/// Parse an RFC 3339 time into ms since the epoch.
pub fn parse_time(text: &str) -> Result<i64, OpsError> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| OpsError::Invalid(format!("`{text}` is not an RFC 3339 time: {e}")))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| OpsError::Invalid(format!("`{text}` is out of range")))
}

/// Render rows as a left-aligned table with a header, columns two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(
                ' ',
                w.saturating_sub(cell.chars().count()),
            ));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_rfc3339() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert_eq!(
            parse_time("2024-01-01T01:00:00.5+01:00").unwrap(),
            1_704_067_200_500
        );
        assert!(matches!(parse_time("yesterday"), Err(OpsError::Invalid(_))));
    }

    #[test]
    fn windows_round_up_to_whole_seconds() {
        assert_eq!(ceil_secs(1_000), 1);
        assert_eq!(ceil_secs(1_001), 2);
        assert_eq!(ceil_secs(-1), 0);
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    BB\nxyz  1\nq    22\n");
    }
}
