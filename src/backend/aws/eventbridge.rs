//! [`EventBridgeBus`]: the [`Bus`] seam on an EventBridge event bus.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::error::{from_code, from_sdk};
use crate::backend::{BackendError, BackendResult, Bus, BusEntry, PublishFailures};

const OP: &str = "eventbridge.put_events";

/// `PutEvents` takes at most this many entries per request.
const MAX_ENTRIES: usize = 10;

/// A [`Bus`] that publishes with `PutEvents` to one event bus, in requests of at most 10
/// entries and at most [`EventBridgeBus::DEFAULT_MAX_REQUEST_BYTES`] (configurable).
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
    max_request_bytes: usize,
}

/// The size EventBridge counts for one entry: source, detail type, detail and resources
/// in UTF-8 bytes (plus 14 for a time, which these entries never set).
pub fn entry_size(entry: &BusEntry) -> usize {
    entry.source.len()
        + entry.detail_type.len()
        + entry.detail.len()
        + entry.resources.iter().map(String::len).sum::<usize>()
}

impl EventBridgeBus {
    /// EventBridge's limit for one `PutEvents` request, 256 KiB.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;

    /// A bus publishing to `bus_name` (a name or an ARN).
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
            max_request_bytes: Self::DEFAULT_MAX_REQUEST_BYTES,
        }
    }

    /// Use a different request size limit (entries larger than it fail without a call).
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes.max(1);
        self
    }

    /// The bus name (or ARN) events go to.
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    /// Whether the bus exists and this caller may see it (`DescribeEventBus`): the
    /// ingress's readiness check.
    pub async fn describe(&self) -> BackendResult<()> {
        self.client
            .describe_event_bus()
            .name(&self.bus_name)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| from_sdk("eventbridge.describe_event_bus", e))
    }

    /// Group `indexes` into requests within the entry and size limits. Entries too large
    /// for any request are returned apart as failed.
    fn plan(
        &self,
        entries: &[BusEntry],
        indexes: &[usize],
    ) -> (Vec<Vec<usize>>, Vec<(usize, BackendError)>) {
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut oversized = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_bytes = 0;
        for &i in indexes {
            let Some(entry) = entries.get(i) else {
                continue;
            };
            let size = entry_size(entry);
            if size > self.max_request_bytes {
                oversized.push((
                    i,
                    BackendError::Permanent {
                        operation: OP,
                        message: format!(
                            "entry of {size} bytes exceeds the {} byte request limit",
                            self.max_request_bytes
                        ),
                    },
                ));
                continue;
            }
            if current.len() == MAX_ENTRIES || current_bytes + size > self.max_request_bytes {
                batches.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current.push(i);
            current_bytes += size;
        }
        if !current.is_empty() {
            batches.push(current);
        }
        (batches, oversized)
    }

    async fn put_batch(
        &self,
        entries: &[BusEntry],
        batch: &[usize],
    ) -> BackendResult<Vec<(usize, BackendError)>> {
        let request: Vec<PutEventsRequestEntry> = batch
            .iter()
            .filter_map(|&i| entries.get(i))
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(&e.source)
                    .detail_type(&e.detail_type)
                    .detail(&e.detail)
                    .set_resources((!e.resources.is_empty()).then(|| e.resources.clone()))
                    .build()
            })
            .collect();
        let out = self
            .client
            .put_events()
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| from_sdk(OP, e))?;
        let results = out.entries.unwrap_or_default();
        let mut failed = Vec::new();
        for (pos, &i) in batch.iter().enumerate() {
            match results.get(pos) {
                Some(result) => {
                    if let Some(code) = &result.error_code {
                        let message = result.error_message.clone().unwrap_or_default();
                        failed.push((i, from_code(OP, code, message, false)));
                    }
                }
                // Results come in request order, one per entry; a short list leaves the
                // rest unconfirmed, so they count as failed and are sent again.
                None => failed.push((
                    i,
                    BackendError::Transient {
                        operation: OP,
                        message: "no result returned for the entry".to_owned(),
                    },
                )),
            }
        }
        if out.failed_entry_count > 0 && failed.is_empty() {
            tracing::warn!(
                bus = %self.bus_name,
                count = out.failed_entry_count,
                "PutEvents reported failed entries without error codes"
            );
        }
        Ok(failed)
    }

    /// Publish the entries at `indexes`; failures carry indexes into `entries`. `Err` only
    /// if every request failed as a whole.
    async fn publish_indexes(
        &self,
        entries: &[BusEntry],
        indexes: &[usize],
    ) -> BackendResult<Vec<(usize, BackendError)>> {
        let (batches, mut failed) = self.plan(entries, indexes);
        let mut first_error = None;
        let mut any_ok = false;
        for batch in &batches {
            match self.put_batch(entries, batch).await {
                Ok(mut f) => {
                    any_ok = true;
                    failed.append(&mut f);
                }
                Err(e) => {
                    failed.extend(batch.iter().map(|&i| (i, e.clone())));
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (false, Some(e)) = (any_ok, first_error) {
            return Err(e);
        }
        failed.sort_by_key(|(i, _)| *i);
        Ok(failed)
    }
}

impl Bus for EventBridgeBus {
    async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
        let indexes: Vec<usize> = (0..entries.len()).collect();
        let failed = self.publish_indexes(entries, &indexes).await?;
        Ok(PublishFailures { failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(detail_bytes: usize) -> BusEntry {
        BusEntry {
            source: "s".into(),
            detail_type: "d".into(),
            detail: "x".repeat(detail_bytes),
            resources: vec![],
        }
    }

    fn bus(max: usize) -> EventBridgeBus {
        let config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(aws_sdk_eventbridge::config::BehaviorVersion::latest())
            .build();
        EventBridgeBus::new(Client::from_conf(config), "b").with_max_request_bytes(max)
    }

    #[test]
    fn plan_respects_entry_count_and_size_limits() {
        let entries: Vec<BusEntry> = (0..23).map(|_| entry(8)).collect();
        let indexes: Vec<usize> = (0..entries.len()).collect();
        let (batches, oversized) = bus(1 << 20).plan(&entries, &indexes);
        assert!(oversized.is_empty());
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 3]
        );

        // Each entry is 10 bytes: three fit in 35 bytes.
        let (batches, _) = bus(35).plan(&entries[..7], &indexes[..7]);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );

        let mixed = vec![entry(8), entry(100), entry(8)];
        let (batches, oversized) = bus(35).plan(&mixed, &[0, 1, 2]);
        assert_eq!(batches, vec![vec![0, 2]]);
        assert_eq!(oversized.len(), 1);
        assert_eq!(oversized[0].0, 1);
        assert!(!oversized[0].1.is_retryable());
    }

    #[test]
    fn entry_size_counts_utf8_bytes_of_every_part() {
        let e = BusEntry {
            source: "ab".into(),
            detail_type: "é".into(),
            detail: "{}".into(),
            resources: vec!["arn".into()],
        };
        assert_eq!(entry_size(&e), 2 + 2 + 2 + 3);
    }
}
