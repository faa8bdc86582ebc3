//! Batched deletes: acknowledgements gather into batches of up to 10 (one SQS call each)
//! and are flushed after a short wait, and always before the pool stops.

use std::time::Duration;

use tokio::sync::mpsc;

use super::DomainQueue;
use crate::backend::{Queue, Receipt};
use crate::telemetry::metrics::time_backend;

/// How many acknowledgements may wait for a batch before senders are held back.
const ACK_CHANNEL_CAPACITY: usize = 1024;
/// SQS's batch size limit.
const BATCH: usize = 10;
/// Attempts per batch for entries that failed with a retryable error.
const ATTEMPTS: usize = 3;

/// The sending side: cheap to clone, one per in-flight task.
pub type AckSender = mpsc::Sender<Receipt>;

/// Start the batching task for `queue`. It ends, after a last flush, once every sender is
/// dropped.
pub fn spawn_acker<Q: Queue>(
    queue: DomainQueue<Q>,
    flush_after: Duration,
) -> (AckSender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(ACK_CHANNEL_CAPACITY);
    let handle = tokio::spawn(run(queue, rx, flush_after));
    (tx, handle)
}

async fn run<Q: Queue>(
    queue: DomainQueue<Q>,
    mut rx: mpsc::Receiver<Receipt>,
    flush_after: Duration,
) {
    let mut batch: Vec<Receipt> = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + flush_after;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(receipt)) => batch.push(receipt),
                Ok(None) | Err(_) => break,
            }
        }
        delete(&*queue, std::mem::take(&mut batch)).await;
    }
}

/// Delete a batch, re-trying entries that failed transiently. A delete that still fails is
/// logged: the message becomes visible again and the dedupe store acknowledges it as a
/// duplicate next time, so nothing is applied twice.
async fn delete<Q: Queue>(queue: &Q, mut receipts: Vec<Receipt>) {
    for attempt in 1..=ATTEMPTS {
        match time_backend("queue_delete", queue.delete_batch(&receipts)).await {
            Ok(failures) if failures.failed.is_empty() => return,
            Ok(failures) => {
                let retryable: Vec<Receipt> = failures
                    .failed
                    .iter()
                    .filter(|(_, e)| e.is_retryable())
                    .map(|(r, _)| r.clone())
                    .collect();
                for (receipt, error) in failures.failed.iter().filter(|(_, e)| !e.is_retryable()) {
                    tracing::warn!(queue = queue.name(), ?receipt, %error, "delete failed; the message will be delivered again and acknowledged as a duplicate");
                }
                if retryable.is_empty() {
                    return;
                }
                receipts = retryable;
            }
            Err(error) if error.is_retryable() && attempt < ATTEMPTS => {
                tracing::debug!(queue = queue.name(), %error, "delete batch failed, retrying");
            }
            Err(error) => {
                tracing::warn!(queue = queue.name(), %error, count = receipts.len(), "delete batch failed; the messages will be delivered again and acknowledged as duplicates");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
    }
}
