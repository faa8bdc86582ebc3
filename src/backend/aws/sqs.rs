//! [`SqsQueue`]: the [`Queue`] seam on an SQS standard queue and its dead-letter queue.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};

use super::error::{from_code, from_sdk};
use crate::backend::dead_letter::{
    DeadLetterOps, DlqMessage, RedriveFilter, RedriveProgress, strip_reason,
};
use crate::backend::{
    BackendError, BackendResult, BatchFailures, DeadLetterReason, Queue, QueueStats, Receipt,
    ReceivedMessage, dlq_attributes,
};

/// SQS takes at most this many entries per batch call and messages per receive.
const MAX_BATCH: usize = 10;
/// The longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;
/// The longest visibility timeout SQS allows (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// The longest send delay SQS allows (15 minutes).
const MAX_DELAY_SECS: u64 = 900;
/// SQS allows at most 10 message attributes per message.
const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// How much of a dead-letter reason message is kept: enough to diagnose, small next to
/// the 256 KiB message limit the body shares with the attributes.
const MAX_REASON_BYTES: usize = 1024;

/// The URLs of a queue and its dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrls {
    /// The queue the worker receives from.
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
}

/// How long listing and redriving hold the DLQ messages they received before the
/// visibility goes back to 0 (or, if interrupted, lapses by itself).
pub const DEFAULT_DLQ_HOLD: Duration = Duration::from_secs(30);

/// A [`Queue`] on SQS. Cheap to clone (the client is shared).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    name: String,
    urls: QueueUrls,
    /// See [`DEFAULT_DLQ_HOLD`].
    dlq_hold: Duration,
}

impl SqsQueue {
    /// A queue at known URLs; its name is the last segment of the queue URL.
    pub fn new(client: Client, urls: QueueUrls) -> Self {
        let name = urls
            .queue
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&urls.queue)
            .to_owned();
        SqsQueue {
            client,
            name,
            urls,
            dlq_hold: DEFAULT_DLQ_HOLD,
        }
    }

    /// Hold received DLQ messages this long while listing or redriving (see
    /// [`DEFAULT_DLQ_HOLD`]); an interrupted listing leaves them invisible at most this long.
    pub fn with_dlq_hold(mut self, hold: Duration) -> Self {
        self.dlq_hold = hold.max(Duration::from_secs(1));
        self
    }

    /// Look up the URLs of queue `name` and dead-letter queue `dlq_name` (`GetQueueUrl`).
    /// A queue that does not exist is a [`BackendError::Permanent`].
    pub async fn resolve(client: Client, name: &str, dlq_name: &str) -> BackendResult<SqsQueue> {
        let (queue, dlq) =
            futures::try_join!(queue_url(&client, name), queue_url(&client, dlq_name))?;
        Ok(SqsQueue {
            client,
            name: name.to_owned(),
            urls: QueueUrls { queue, dlq },
            dlq_hold: DEFAULT_DLQ_HOLD,
        })
    }

    /// The queue and dead-letter queue URLs.
    pub fn urls(&self) -> &QueueUrls {
        &self.urls
    }

    /// The SQS client, for callers that need an operation the seam does not offer.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn queue_stats(&self, url: &str) -> BackendResult<QueueStats> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| from_sdk("sqs.get_queue_attributes", e))?;
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(QueueStats {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            // SQS reports the oldest message's age only as a CloudWatch metric.
            oldest_age_secs: None,
        })
    }

    async fn delete_chunk(&self, url: &str, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        let mut entries = Vec::with_capacity(receipts.len());
        for (i, receipt) in receipts.iter().enumerate() {
            // Ids are indexes: the same receipt twice in one batch must not collide
            // (SQS rejects the whole batch for duplicate ids).
            let entry = DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&receipt.0)
                .build()
                .map_err(|e| permanent("sqs.delete_message_batch", e))?;
            entries.push(entry);
        }
        let out = self
            .client
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| from_sdk("sqs.delete_message_batch", e))?;
        let ok: Vec<&str> = out.successful.iter().map(|s| s.id.as_str()).collect();
        Ok(collect_failures(
            "sqs.delete_message_batch",
            receipts,
            &ok,
            &out.failed,
        ))
    }

    async fn visibility_chunk(
        &self,
        url: &str,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        let mut request = Vec::with_capacity(entries.len());
        for (i, (receipt, timeout)) in entries.iter().enumerate() {
            let entry = ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&receipt.0)
                .visibility_timeout(clamp_secs(*timeout, MAX_VISIBILITY_SECS))
                .build()
                .map_err(|e| permanent("sqs.change_message_visibility_batch", e))?;
            request.push(entry);
        }
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| from_sdk("sqs.change_message_visibility_batch", e))?;
        let receipts: Vec<Receipt> = entries.iter().map(|(r, _)| r.clone()).collect();
        let ok: Vec<&str> = out.successful.iter().map(|s| s.id.as_str()).collect();
        Ok(collect_failures(
            "sqs.change_message_visibility_batch",
            &receipts,
            &ok,
            &out.failed,
        ))
    }
}

impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        self.receive_from(&self.urls.queue, max, wait, None).await
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        let unique = unique_entries(receipts.iter().map(|r| (r.clone(), ())));
        let unique: Vec<Receipt> = unique.into_iter().map(|(r, ())| r).collect();
        let chunks: Vec<&[Receipt]> = unique.chunks(MAX_BATCH).collect();
        let mut results = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            results.push(self.delete_chunk(&self.urls.queue, chunk).await);
        }
        let merged = merge_chunks(&chunks, results, |r| r.clone())?;
        Ok(expand_duplicates(merged, receipts.iter()))
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        let unique = unique_entries(entries.iter().cloned());
        let chunks: Vec<&[(Receipt, Duration)]> = unique.chunks(MAX_BATCH).collect();
        let mut results = Vec::with_capacity(chunks.len());
        for chunk in &chunks {
            results.push(self.visibility_chunk(&self.urls.queue, chunk).await);
        }
        let merged = merge_chunks(&chunks, results, |(r, _)| r.clone())?;
        Ok(expand_duplicates(merged, entries.iter().map(|(r, _)| r)))
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        let attributes = dead_letter_attributes(&self.name, message, reason, now_ms())?;
        self.client
            .send_message()
            .queue_url(&self.urls.dlq)
            .message_body(&message.body)
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| from_sdk("sqs.dead_letter.send_message", e))?;
        self.client
            .delete_message()
            .queue_url(&self.urls.queue)
            .receipt_handle(&message.receipt.0)
            .send()
            .await
            .map_err(|e| from_sdk("sqs.dead_letter.delete_message", e))?;
        Ok(())
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.urls.queue)
            .message_body(body)
            .delay_seconds(clamp_secs(delay, MAX_DELAY_SECS))
            .send()
            .await
            .map_err(|e| from_sdk("sqs.send_message", e))?;
        out.message_id.ok_or_else(|| BackendError::Transient {
            operation: "sqs.send_message",
            message: "SQS accepted the message without returning its id".to_owned(),
        })
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        futures::try_join!(
            self.queue_stats(&self.urls.queue),
            self.queue_stats(&self.urls.dlq)
        )
    }
}

impl SqsQueue {
    /// Receive from `url` (the queue or its DLQ), with the queue's own visibility timeout
    /// unless `visibility` is given.
    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait: Duration,
        visibility: Option<Duration>,
    ) -> BackendResult<Vec<ReceivedMessage>> {
        let max = max.clamp(1, MAX_BATCH) as i32;
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max)
            .wait_time_seconds(clamp_secs(wait, MAX_WAIT_SECS))
            .set_visibility_timeout(visibility.map(|v| clamp_secs(v, MAX_VISIBILITY_SECS)))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| from_sdk("sqs.receive_message", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let converted = convert_message(m);
                if converted.is_none() {
                    tracing::warn!(queue = %self.name, "SQS returned a message without id or receipt handle; skipped");
                }
                converted
            })
            .collect())
    }

    /// One receive from the DLQ, holding what it returns for [`Self::with_dlq_hold`]. The
    /// one-second long poll asks every SQS server, so an empty answer means the DLQ has
    /// nothing visible left.
    async fn dlq_receive(&self) -> BackendResult<Vec<ReceivedMessage>> {
        self.receive_from(
            &self.urls.dlq,
            MAX_BATCH,
            Duration::from_secs(1),
            Some(self.dlq_hold),
        )
        .await
    }

    /// Make held DLQ messages visible again. A failure is only logged: the hold lapses by
    /// itself a little later.
    async fn dlq_release(&self, receipts: Vec<Receipt>) {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries: Vec<(Receipt, Duration)> =
                chunk.iter().map(|r| (r.clone(), Duration::ZERO)).collect();
            match self.visibility_chunk(&self.urls.dlq, &entries).await {
                Ok(f) if f.failed.is_empty() => {}
                Ok(f) => tracing::warn!(
                    queue = %self.name,
                    failed = f.failed.len(),
                    "could not release some DLQ messages; they become visible when the hold lapses"
                ),
                Err(error) => tracing::warn!(
                    queue = %self.name,
                    %error,
                    "could not release DLQ messages; they become visible when the hold lapses"
                ),
            }
        }
    }

    /// Send up to 10 dead-lettered messages back to the queue, without their reason
    /// attributes. Returns, per message, whether SQS accepted it.
    async fn send_back(&self, messages: &[ReceivedMessage]) -> BackendResult<Vec<bool>> {
        let mut entries = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let mut attributes = HashMap::new();
            for (k, v) in strip_reason(&m.attributes) {
                if v.is_empty() {
                    continue;
                }
                let value = MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(v)
                    .build()
                    .map_err(|e| permanent("sqs.redrive", e))?;
                attributes.insert(k, value);
            }
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes((!attributes.is_empty()).then_some(attributes))
                    .build()
                    .map_err(|e| permanent("sqs.redrive", e))?,
            );
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(&self.urls.queue)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| from_sdk("sqs.redrive.send_message_batch", e))?;
        for f in &out.failed {
            tracing::warn!(
                queue = %self.name,
                code = %f.code,
                message = f.message.as_deref().unwrap_or(""),
                "redrive: SQS did not accept a message; it stays in the DLQ"
            );
        }
        Ok((0..messages.len())
            .map(|i| out.successful.iter().any(|s| s.id == i.to_string()))
            .collect())
    }

    async fn queue_arn(&self, url: &str) -> BackendResult<String> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| from_sdk("sqs.get_queue_attributes", e))?;
        out.attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| BackendError::Permanent {
                operation: "sqs.get_queue_attributes",
                message: format!("no QueueArn for {url}"),
            })
    }

    /// Redrive the whole DLQ with a server-side `StartMessageMoveTask`, following it to
    /// the end. `Ok(None)` when the service does not offer it (the caller moves the
    /// messages itself). The task moves messages unchanged, reason attributes included:
    /// harmless, since a new failure overwrites them. Interrupting this leaves the task
    /// running on the server, which loses nothing.
    async fn move_task(&self, progress: RedriveProgress<'_>) -> BackendResult<Option<u64>> {
        let source = self.queue_arn(&self.urls.dlq).await?;
        let destination = self.queue_arn(&self.urls.queue).await?;
        let started = self
            .client
            .start_message_move_task()
            .source_arn(&source)
            .destination_arn(&destination)
            .send()
            .await;
        if let Err(error) = started {
            tracing::info!(
                queue = %self.name,
                error = %from_sdk("sqs.start_message_move_task", error),
                "StartMessageMoveTask is not available; moving the messages one batch at a time"
            );
            return Ok(None);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let out = self
                .client
                .list_message_move_tasks()
                .source_arn(&source)
                .max_results(1)
                .send()
                .await
                .map_err(|e| from_sdk("sqs.list_message_move_tasks", e))?;
            let Some(task) = out.results.unwrap_or_default().into_iter().next() else {
                continue;
            };
            let moved = u64::try_from(task.approximate_number_of_messages_moved).unwrap_or(0);
            progress(moved);
            match task.status.as_deref() {
                Some("COMPLETED") => return Ok(Some(moved)),
                Some(status @ ("FAILED" | "CANCELLED")) => {
                    return Err(BackendError::Permanent {
                        operation: "sqs.start_message_move_task",
                        message: format!(
                            "move task {status} after {moved} messages: {}",
                            task.failure_reason.unwrap_or_default()
                        ),
                    });
                }
                _ => {}
            }
        }
    }

    /// Redrive by receive, send, delete, in batches of 10. Messages the filter skips are
    /// held until the pass ends, so each is looked at once; the pass also ends when a
    /// receive brings only messages already looked at (the hold lapsed on a large DLQ).
    async fn redrive_by_batches(
        &self,
        filter: &RedriveFilter,
        progress: RedriveProgress<'_>,
        held: &mut HashMap<String, Receipt>,
    ) -> BackendResult<u64> {
        let mut seen = std::collections::HashSet::new();
        let mut moved = 0u64;
        loop {
            let batch = self.dlq_receive().await?;
            if batch.is_empty() {
                return Ok(moved);
            }
            let fresh = batch.iter().any(|m| !seen.contains(&m.message_id));
            let (chosen, others): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|m| filter.matches(&m.message_id, &m.attributes, &m.body));
            for m in others {
                seen.insert(m.message_id.clone());
                held.insert(m.message_id, m.receipt);
            }
            if !chosen.is_empty() {
                // Send first, then delete what SQS accepted: an interruption in between
                // leaves a copy in both queues, never in neither.
                let accepted = self.send_back(&chosen).await?;
                let mut done = Vec::new();
                for (m, ok) in chosen.into_iter().zip(accepted) {
                    seen.insert(m.message_id.clone());
                    if ok {
                        done.push(m.receipt);
                    } else {
                        held.insert(m.message_id, m.receipt);
                    }
                }
                if !done.is_empty() {
                    let failed = self.delete_chunk(&self.urls.dlq, &done).await?;
                    for (_, error) in &failed.failed {
                        tracing::warn!(
                            queue = %self.name,
                            %error,
                            "redrive: sent back but not deleted from the DLQ; it is in both"
                        );
                    }
                    moved += (done.len() - failed.failed.len()) as u64;
                }
                progress(moved);
            }
            if !fresh {
                return Ok(moved);
            }
        }
    }
}

/// SQS has no peek: listing receives with a short hold and releases what it received.
impl DeadLetterOps for SqsQueue {
    /// Which messages SQS returns first is up to SQS; the ones returned are sorted by the
    /// time they were dead-lettered. Each listed message's DLQ receive count goes up by
    /// one (the DLQ has no redrive policy, so that changes nothing else).
    async fn dlq_peek(&self, limit: usize) -> BackendResult<Vec<DlqMessage>> {
        let mut out: Vec<DlqMessage> = Vec::new();
        let mut held: HashMap<String, Receipt> = HashMap::new();
        let result = async {
            while out.len() < limit {
                let batch = self.dlq_receive().await?;
                if batch.is_empty() {
                    break;
                }
                let mut fresh = false;
                for m in batch {
                    if held.insert(m.message_id.clone(), m.receipt).is_none() {
                        fresh = true;
                        out.push(DlqMessage {
                            message_id: m.message_id,
                            body: m.body,
                            sent_at_ms: m.sent_at_ms,
                            attributes: m.attributes,
                        });
                    }
                }
                if !fresh {
                    break;
                }
            }
            Ok::<(), BackendError>(())
        }
        .await;
        self.dlq_release(held.into_values().collect()).await;
        result?;
        out.sort_by(|a, b| {
            let at = |m: &DlqMessage| {
                m.attribute(dlq_attributes::DEAD_LETTERED_MS)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(m.sent_at_ms)
            };
            (at(a), &a.message_id).cmp(&(at(b), &b.message_id))
        });
        out.truncate(limit);
        Ok(out)
    }

    /// With no filter, a server-side move task when the service offers one; otherwise
    /// receive, send back, delete, in batches.
    async fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        progress: RedriveProgress<'_>,
    ) -> BackendResult<u64> {
        if filter.is_all()
            && let Some(moved) = self.move_task(progress).await?
        {
            return Ok(moved);
        }
        let mut held = HashMap::new();
        let result = self.redrive_by_batches(filter, progress, &mut held).await;
        self.dlq_release(held.into_values().collect()).await;
        result
    }

    /// Receive and delete until the DLQ is empty (exact counts, unlike `PurgeQueue`, which
    /// also may run only once a minute).
    async fn dlq_purge(&self) -> BackendResult<u64> {
        let mut deleted = 0u64;
        loop {
            let batch = self.dlq_receive().await?;
            if batch.is_empty() {
                return Ok(deleted);
            }
            let receipts: Vec<Receipt> = batch.into_iter().map(|m| m.receipt).collect();
            let failed = self.delete_chunk(&self.urls.dlq, &receipts).await?;
            deleted += (receipts.len() - failed.failed.len()) as u64;
        }
    }
}

async fn queue_url(client: &Client, name: &str) -> BackendResult<String> {
    let out = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| from_sdk("sqs.get_queue_url", e))?;
    out.queue_url.ok_or_else(|| BackendError::Permanent {
        operation: "sqs.get_queue_url",
        message: format!("no URL returned for queue `{name}`"),
    })
}

fn convert_message(m: Message) -> Option<ReceivedMessage> {
    let system = m.attributes.unwrap_or_default();
    let number =
        |name: MessageSystemAttributeName| system.get(&name).and_then(|v| v.parse::<i64>().ok());
    let attributes = m
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        // Binary attributes have no string form; nothing in the pipeline sends them.
        .filter_map(|(k, v)| v.string_value.map(|s| (k, s)))
        .collect::<BTreeMap<_, _>>();
    Some(ReceivedMessage {
        message_id: m.message_id?,
        receipt: Receipt(m.receipt_handle?),
        body: m.body.unwrap_or_default(),
        receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .max(1),
        sent_at_ms: number(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
        attributes,
    })
}

/// The message attributes of a dead-lettered copy: the reason, then as many of the
/// original's own attributes as fit in SQS's limit of 10.
fn dead_letter_attributes(
    source_queue: &str,
    message: &ReceivedMessage,
    reason: &DeadLetterReason,
    now_ms: i64,
) -> BackendResult<HashMap<String, MessageAttributeValue>> {
    fn put(
        out: &mut HashMap<String, MessageAttributeValue>,
        name: &str,
        data_type: &str,
        value: String,
    ) -> BackendResult<()> {
        // SQS rejects empty attribute values.
        let value = if value.is_empty() {
            "-".to_owned()
        } else {
            value
        };
        let attr = MessageAttributeValue::builder()
            .data_type(data_type)
            .string_value(value)
            .build()
            .map_err(|e| permanent("sqs.dead_letter", e))?;
        out.insert(name.to_owned(), attr);
        Ok(())
    }
    let mut out = HashMap::new();
    put(
        &mut out,
        dlq_attributes::ERROR_KIND,
        "String",
        reason.kind.clone(),
    )?;
    put(
        &mut out,
        dlq_attributes::ERROR_MESSAGE,
        "String",
        truncate(&reason.message, MAX_REASON_BYTES).to_owned(),
    )?;
    if let Some(handler) = &reason.handler {
        put(&mut out, dlq_attributes::HANDLER, "String", handler.clone())?;
    }
    put(
        &mut out,
        dlq_attributes::SOURCE_QUEUE,
        "String",
        source_queue.to_owned(),
    )?;
    put(
        &mut out,
        dlq_attributes::FIRST_SEEN_MS,
        "Number",
        message.sent_at_ms.to_string(),
    )?;
    put(
        &mut out,
        dlq_attributes::RECEIVE_COUNT,
        "Number",
        message.receive_count.to_string(),
    )?;
    put(
        &mut out,
        dlq_attributes::DEAD_LETTERED_MS,
        "Number",
        now_ms.to_string(),
    )?;
    for (name, value) in &message.attributes {
        if out.len() >= MAX_MESSAGE_ATTRIBUTES {
            break;
        }
        if !out.contains_key(name) && !value.is_empty() {
            put(&mut out, name, "String", value.clone())?;
        }
    }
    Ok(out)
}

/// Per-entry failures of one batch call: entries SQS reported failed, and entries it
/// reported neither way (treated as failed so the caller retries them).
fn collect_failures(
    operation: &'static str,
    receipts: &[Receipt],
    ok: &[&str],
    failed: &[BatchResultErrorEntry],
) -> BatchFailures {
    let mut out = BatchFailures::default();
    for (i, receipt) in receipts.iter().enumerate() {
        let id = i.to_string();
        if let Some(f) = failed.iter().find(|f| f.id == id) {
            let message = f.message.clone().unwrap_or_default();
            // `SenderFault = false` means SQS's side failed: worth another try.
            out.failed.push((
                receipt.clone(),
                from_code(operation, &f.code, message, !f.sender_fault),
            ));
        } else if !ok.contains(&id.as_str()) {
            out.failed.push((
                receipt.clone(),
                BackendError::Transient {
                    operation,
                    message: "SQS reported the entry neither successful nor failed".to_owned(),
                },
            ));
        }
    }
    out
}

/// One entry per receipt, in first-seen order, keeping the last value given for it: SQS
/// (and the emulator) may reject a batch naming the same receipt twice.
fn unique_entries<V>(entries: impl Iterator<Item = (Receipt, V)>) -> Vec<(Receipt, V)> {
    let mut out: Vec<(Receipt, V)> = Vec::new();
    for (receipt, value) in entries {
        match out.iter_mut().find(|(r, _)| *r == receipt) {
            Some(existing) => existing.1 = value,
            None => out.push((receipt, value)),
        }
    }
    out
}

/// Report a failed receipt once for every time the caller listed it.
fn expand_duplicates<'a>(
    failures: BatchFailures,
    requested: impl Iterator<Item = &'a Receipt>,
) -> BatchFailures {
    let mut out = BatchFailures::default();
    for receipt in requested {
        if let Some((_, err)) = failures.failed.iter().find(|(r, _)| r == receipt) {
            out.failed.push((receipt.clone(), err.clone()));
        }
    }
    out
}

/// Combine the results of consecutive batch calls. If every call failed as a whole the
/// first error is returned; otherwise whole-call failures become per-entry failures so
/// the entries that did succeed are not retried.
fn merge_chunks<T>(
    chunks: &[&[T]],
    results: Vec<BackendResult<BatchFailures>>,
    receipt: impl Fn(&T) -> Receipt,
) -> BackendResult<BatchFailures> {
    if !results.is_empty() && results.iter().all(Result::is_err) {
        if let Some(Err(e)) = results.into_iter().next() {
            return Err(e);
        }
        return Ok(BatchFailures::default());
    }
    let mut out = BatchFailures::default();
    for (chunk, result) in chunks.iter().zip(results) {
        match result {
            Ok(mut failures) => out.failed.append(&mut failures.failed),
            Err(e) => out
                .failed
                .extend(chunk.iter().map(|entry| (receipt(entry), e.clone()))),
        }
    }
    Ok(out)
}

fn clamp_secs(d: Duration, max: u64) -> i32 {
    // Round up so that a sub-second wish is not turned into "now".
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    // `max` is at most 43 200, so the cast cannot truncate.
    secs.min(max) as i32
}

fn truncate(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn permanent(operation: &'static str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent {
        operation,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(attributes: &[(&str, &str)]) -> ReceivedMessage {
        ReceivedMessage {
            message_id: "m1".into(),
            receipt: Receipt("r1".into()),
            body: "{}".into(),
            receive_count: 3,
            sent_at_ms: 1_700_000_000_000,
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn dead_letter_attributes_carry_the_reason_within_limits() {
        let reason = DeadLetterReason {
            kind: "decode_error".into(),
            message: "é".repeat(2000),
            handler: None,
        };
        let extra: Vec<(String, String)> =
            (0..8).map(|i| (format!("x{i}"), "v".to_owned())).collect();
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let attrs = dead_letter_attributes("q", &message(&extra), &reason, 42).unwrap();
        assert_eq!(attrs.len(), MAX_MESSAGE_ATTRIBUTES);
        let text = |k: &str| attrs[k].string_value.clone().unwrap();
        assert_eq!(text(dlq_attributes::ERROR_KIND), "decode_error");
        assert!(text(dlq_attributes::ERROR_MESSAGE).len() <= MAX_REASON_BYTES);
        assert_eq!(text(dlq_attributes::SOURCE_QUEUE), "q");
        assert_eq!(text(dlq_attributes::RECEIVE_COUNT), "3");
        assert_eq!(text(dlq_attributes::FIRST_SEEN_MS), "1700000000000");
        assert_eq!(text(dlq_attributes::DEAD_LETTERED_MS), "42");
        assert!(!attrs.contains_key(dlq_attributes::HANDLER));
    }

    #[test]
    fn whole_call_failures_of_some_chunks_become_entry_failures() {
        let receipts: Vec<Receipt> = (0..12).map(|i| Receipt(format!("r{i}"))).collect();
        let chunks: Vec<&[Receipt]> = receipts.chunks(MAX_BATCH).collect();
        let err = BackendError::Throttled {
            operation: "op",
            message: "slow".into(),
        };
        let merged = merge_chunks(
            &chunks,
            vec![Ok(BatchFailures::default()), Err(err.clone())],
            Receipt::clone,
        )
        .unwrap();
        assert_eq!(merged.failed.len(), 2);
        assert_eq!(merged.failed[0].0, Receipt("r10".into()));
        let all_failed = merge_chunks(&chunks, vec![Err(err.clone()), Err(err)], Receipt::clone);
        assert!(all_failed.unwrap_err().is_throttle());
    }

    #[test]
    fn duplicate_receipts_are_sent_once_and_reported_each_time() {
        let a = Receipt("a".into());
        let b = Receipt("b".into());
        let unique = unique_entries([(a.clone(), 1), (b.clone(), 2), (a.clone(), 3)].into_iter());
        assert_eq!(unique, vec![(a.clone(), 3), (b.clone(), 2)]);
        let failures = BatchFailures {
            failed: vec![(
                a.clone(),
                BackendError::Transient {
                    operation: "op",
                    message: "m".into(),
                },
            )],
        };
        let expanded = expand_duplicates(failures, [a.clone(), b, a.clone()].iter());
        assert_eq!(expanded.failed.len(), 2);
        assert!(expanded.failed.iter().all(|(r, _)| *r == a));
    }

    #[test]
    fn durations_round_up_and_clamp() {
        assert_eq!(clamp_secs(Duration::from_millis(1), 20), 1);
        assert_eq!(clamp_secs(Duration::ZERO, 20), 0);
        assert_eq!(clamp_secs(Duration::from_secs(3600), 20), 20);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
