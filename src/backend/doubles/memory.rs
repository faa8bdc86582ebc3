//! In-memory backends for tests and benchmarks: the same semantics as the SQLite and AWS
//! backends (checked by `tests/it/conformance/`), nothing durable.
//!
//! Each store is one mutex around plain collections; the critical sections are short and
//! never held across an `.await`, which keeps them fast enough for the 50,000 events/s
//! benchmark. Queue visibility uses [`tokio::time::Instant`], so tests on a paused Tokio
//! clock drive visibility timeouts and delays deterministically; `sent_at_ms` and the DLQ
//! timestamps are wall-clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::dead_letter::{DeadLetterOps, RedriveProgress, strip_reason};
pub use crate::backend::dead_letter::{DlqMessage, RedriveFilter};
use crate::backend::queue_rules::{
    check_batch, check_max, invalid_receipt, reason_attributes, redrive_reason, wall_ms,
};
use crate::backend::{
    ApplyOutcome, Archive, BackendError, BackendResult, BatchFailures, Claim, DeadLetterReason,
    DedupeKey, DedupeStore, EventWrite, FencingToken, Marker, Queue, QueueSpec, QueueStats,
    Receipt, ReceivedMessage, StateRecord, StateStore, WriteOutcome, blocked_by, dlq_attributes,
};

/// Lock, ignoring poisoning: every critical section leaves the data consistent before
/// anything that could panic, so a poisoned lock's data is still good.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------

/// A message stored in a memory queue.
#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    sent_at_ms: i64,
    receive_count: u32,
    /// The receipt of the latest receive; only it may delete or change the message.
    receipt: Option<String>,
    /// When the message becomes receivable (`None`: it is in `ready`).
    visible_at: Option<Instant>,
    attributes: BTreeMap<String, String>,
}

/// One queue's messages. Receivable messages sit in `ready` (by sequence, so oldest
/// first); in-flight and delayed ones in `waiting` by the time they become receivable.
/// A receive first moves every due message from `waiting` to `ready`, so both operations
/// are O(log n) per message.
#[derive(Debug, Default)]
struct Lane {
    messages: HashMap<u64, Stored>,
    ready: BTreeSet<u64>,
    waiting: BTreeSet<(Instant, u64)>,
}

impl Lane {
    fn insert(&mut self, seq: u64, msg: Stored) {
        match msg.visible_at {
            Some(at) => {
                self.waiting.insert((at, seq));
            }
            None => {
                self.ready.insert(seq);
            }
        }
        self.messages.insert(seq, msg);
    }

    fn remove(&mut self, seq: u64) -> Option<Stored> {
        let msg = self.messages.remove(&seq)?;
        match msg.visible_at {
            Some(at) => self.waiting.remove(&(at, seq)),
            None => self.ready.remove(&seq),
        };
        Some(msg)
    }

    /// Move every message whose visibility time passed into `ready`.
    fn promote(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(m) = self.messages.get_mut(&seq) {
                m.visible_at = None;
                self.ready.insert(seq);
            }
        }
    }

    /// Make a message invisible until `at` (or visible now when `at <= now`).
    fn set_visible_at(&mut self, seq: u64, at: Instant, now: Instant) {
        let Some(m) = self.messages.get_mut(&seq) else {
            return;
        };
        match m.visible_at {
            Some(old) => {
                self.waiting.remove(&(old, seq));
            }
            None => {
                self.ready.remove(&seq);
            }
        }
        if at <= now {
            m.visible_at = None;
            self.ready.insert(seq);
        } else {
            m.visible_at = Some(at);
            self.waiting.insert((at, seq));
        }
    }

    fn next_visible_at(&self) -> Option<Instant> {
        self.waiting.first().map(|&(at, _)| at)
    }

    fn stats(&self, now: Instant, now_ms: i64) -> QueueStats {
        let mut s = QueueStats {
            visible: self.ready.len() as u64,
            ..QueueStats::default()
        };
        for &(at, seq) in &self.waiting {
            let Some(m) = self.messages.get(&seq) else {
                continue;
            };
            if at <= now {
                s.visible += 1;
            } else if m.receive_count == 0 {
                s.delayed += 1;
            } else {
                s.in_flight += 1;
            }
        }
        s.oldest_age_secs = self
            .messages
            .values()
            .map(|m| m.sent_at_ms)
            .min()
            .map(|oldest| u64::try_from((now_ms - oldest).max(0) / 1000).unwrap_or(0));
        s
    }
}

#[derive(Debug, Default)]
struct QueueInner {
    main: Lane,
    dlq: Lane,
}

/// An in-memory queue with SQS semantics and its own dead-letter queue.
///
/// Receives take receivable messages in send order (a message released or timed out
/// takes its original place). Receipts are `<seq>.<nonce>`, new on every receive; only
/// the latest deletes or changes the message. A message already received
/// `max_receive_count` times moves to the DLQ on the next receive that would take it,
/// with [`MAX_RECEIVE_COUNT_EXCEEDED`] as its error kind. Every call is cancel-safe: the
/// only await is the long-poll wait, before anything is taken.
#[derive(Debug)]
pub struct MemoryQueue {
    spec: QueueSpec,
    inner: Mutex<QueueInner>,
    /// Wakes long polls when a message may have become receivable.
    arrived: Notify,
    next_seq: AtomicU64,
    /// Random per queue, so message ids differ across queues and runs.
    id_prefix: String,
}

impl MemoryQueue {
    /// An empty queue (and empty DLQ) with `spec`'s name, visibility timeout and redrive
    /// limit.
    pub fn new(spec: QueueSpec) -> Self {
        MemoryQueue {
            spec,
            inner: Mutex::new(QueueInner::default()),
            arrived: Notify::new(),
            next_seq: AtomicU64::new(1),
            id_prefix: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The spec the queue was created with.
    pub fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    fn seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Receipts are `<seq>.<nonce>`: the sequence finds the message, the nonce (fresh
    /// per receive) proves the receipt is the latest one.
    fn parse_receipt(r: &Receipt) -> Option<u64> {
        r.0.split_once('.').and_then(|(seq, _)| seq.parse().ok())
    }

    /// One non-waiting receive attempt.
    fn try_receive(&self, max: usize) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        inner.main.promote(now);
        while out.len() < max {
            let Some(seq) = inner.main.ready.pop_first() else {
                break;
            };
            let Some(m) = inner.main.messages.get_mut(&seq) else {
                continue;
            };
            if m.receive_count >= self.spec.max_receive_count {
                // SQS redrive: this receive would exceed the limit, so the message goes
                // to the DLQ instead of being delivered.
                if let Some(m) = inner.main.messages.remove(&seq) {
                    let reason = redrive_reason(self.spec.max_receive_count);
                    let now_ms = wall_ms();
                    let mut attributes = m.attributes.clone();
                    attributes.extend(reason_attributes(
                        &self.spec.name,
                        m.sent_at_ms,
                        m.receive_count,
                        &reason,
                        now_ms,
                    ));
                    let dead = Stored {
                        sent_at_ms: now_ms,
                        receive_count: 0,
                        receipt: None,
                        visible_at: None,
                        attributes,
                        ..m
                    };
                    inner.dlq.insert(seq, dead);
                }
                continue;
            }
            m.receive_count += 1;
            let receipt = format!("{seq}.{}", self.seq());
            m.receipt = Some(receipt.clone());
            let at = now + self.spec.visibility_timeout;
            m.visible_at = Some(at);
            inner.main.waiting.insert((at, seq));
            out.push(ReceivedMessage {
                message_id: m.id.clone(),
                receipt: Receipt(receipt),
                body: m.body.clone(),
                receive_count: m.receive_count,
                sent_at_ms: m.sent_at_ms,
                attributes: m.attributes.clone(),
            });
        }
        let next = inner.main.next_visible_at();
        (out, next)
    }
}

/// The memory queue's DLQ operations are single critical sections: nothing to interrupt.
impl DeadLetterOps for MemoryQueue {
    /// Peeking neither hides nor counts (unlike a receive).
    async fn dlq_peek(&self, limit: usize) -> BackendResult<Vec<DlqMessage>> {
        let g = lock(&self.inner);
        let mut seqs: Vec<u64> = g.dlq.messages.keys().copied().collect();
        seqs.sort_unstable();
        Ok(seqs
            .into_iter()
            .take(limit)
            .filter_map(|seq| g.dlq.messages.get(&seq))
            .map(|m| DlqMessage {
                message_id: m.id.clone(),
                body: m.body.clone(),
                sent_at_ms: m.sent_at_ms,
                attributes: m.attributes.clone(),
            })
            .collect())
    }

    /// Moved messages get their receive count reset and `sent_at_ms` back to the
    /// first-seen time.
    async fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        progress: RedriveProgress<'_>,
    ) -> BackendResult<u64> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let mut chosen: Vec<u64> = inner
            .dlq
            .messages
            .iter()
            .filter(|(_, m)| filter.matches(&m.id, &m.attributes, &m.body))
            .map(|(&seq, _)| seq)
            .collect();
        chosen.sort_unstable();
        for &seq in &chosen {
            if let Some(m) = inner.dlq.remove(seq) {
                let first_seen = m
                    .attributes
                    .get(dlq_attributes::FIRST_SEEN_MS)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(m.sent_at_ms);
                let attributes = strip_reason(&m.attributes);
                inner.main.insert(
                    seq,
                    Stored {
                        sent_at_ms: first_seen,
                        receive_count: 0,
                        receipt: None,
                        visible_at: None,
                        attributes,
                        ..m
                    },
                );
            }
        }
        drop(g);
        if !chosen.is_empty() {
            self.arrived.notify_waiters();
        }
        let moved = chosen.len() as u64;
        progress(moved);
        Ok(moved)
    }

    async fn dlq_purge(&self) -> BackendResult<u64> {
        let mut g = lock(&self.inner);
        let n = g.dlq.messages.len() as u64;
        g.dlq = Lane::default();
        Ok(n)
    }
}

impl Queue for MemoryQueue {
    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        check_max("receive", max)?;
        let deadline = Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a send between the look and the
            // wait is not missed.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let (got, next_visible) = self.try_receive(max);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            let wake = next_visible.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        check_batch("delete_batch", receipts.len())?;
        let mut failures = BatchFailures::default();
        let mut g = lock(&self.inner);
        for r in receipts {
            let current = Self::parse_receipt(r).filter(|seq| {
                g.main
                    .messages
                    .get(seq)
                    .is_some_and(|m| m.receipt.as_deref() == Some(r.0.as_str()))
            });
            match current {
                Some(seq) => {
                    g.main.remove(seq);
                }
                None => failures
                    .failed
                    .push((r.clone(), invalid_receipt("delete_batch"))),
            }
        }
        Ok(failures)
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        check_batch("change_visibility_batch", entries.len())?;
        let now = Instant::now();
        let mut failures = BatchFailures::default();
        let mut released = false;
        let mut g = lock(&self.inner);
        for (r, timeout) in entries {
            let current = Self::parse_receipt(r).filter(|seq| {
                g.main
                    .messages
                    .get(seq)
                    .is_some_and(|m| m.receipt.as_deref() == Some(r.0.as_str()))
            });
            match current {
                Some(seq) => {
                    g.main.set_visible_at(seq, now + *timeout, now);
                    released |= timeout.is_zero();
                }
                None => failures
                    .failed
                    .push((r.clone(), invalid_receipt("change_visibility_batch"))),
            }
        }
        drop(g);
        if released {
            self.arrived.notify_waiters();
        }
        Ok(failures)
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        let now_ms = wall_ms();
        let mut attributes = message.attributes.clone();
        attributes.extend(reason_attributes(
            &self.spec.name,
            message.sent_at_ms,
            message.receive_count,
            reason,
            now_ms,
        ));
        let dead = Stored {
            id: message.message_id.clone(),
            body: message.body.clone(),
            sent_at_ms: now_ms,
            receive_count: 0,
            receipt: None,
            visible_at: None,
            attributes,
        };
        let seq = self.seq();
        let mut g = lock(&self.inner);
        // Send to the DLQ first, then delete: with one lock both happen together, and a
        // stale receipt only skips the delete (the message stays for redelivery, as on
        // SQS where the delete would fail).
        g.dlq.insert(seq, dead);
        let current = Self::parse_receipt(&message.receipt).filter(|s| {
            g.main
                .messages
                .get(s)
                .is_some_and(|m| m.receipt.as_deref() == Some(message.receipt.0.as_str()))
        });
        match current {
            Some(seq) => {
                g.main.remove(seq);
            }
            None => tracing::warn!(
                queue = %self.spec.name,
                message_id = %message.message_id,
                "dead-lettered a message whose receipt is stale; it stays in the queue too"
            ),
        }
        Ok(())
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        let seq = self.seq();
        // Unique without a random draw per message: the queue's random prefix and the
        // sequence number (this is the hot path of the in-memory benchmark).
        let id = format!("{}-{seq}", self.id_prefix);
        let now = Instant::now();
        let msg = Stored {
            id: id.clone(),
            body: body.to_owned(),
            sent_at_ms: wall_ms(),
            receive_count: 0,
            receipt: None,
            visible_at: (!delay.is_zero()).then(|| now + delay),
            attributes: BTreeMap::new(),
        };
        lock(&self.inner).main.insert(seq, msg);
        if delay.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(id)
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        let now = Instant::now();
        let now_ms = wall_ms();
        let g = lock(&self.inner);
        Ok((g.main.stats(now, now_ms), g.dlq.stats(now, now_ms)))
    }
}

// ---------------------------------------------------------------------------------------
// Dedupe and state
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum DedupeEntry {
    InProgress { token: FencingToken, until_ms: i64 },
    Done { until_ms: i64 },
}

type StateKey = (String, String, String);

/// The applied-markers, claims and records of one store, under one lock: an apply takes
/// it once for the marker and every record, which makes it atomic.
#[derive(Debug, Default)]
struct StoreData {
    ledger: HashMap<DedupeKey, DedupeEntry>,
    records: BTreeMap<StateKey, StateRecord>,
    /// (tenant, customer, kind, id) for `by_customer`.
    by_customer: BTreeSet<(String, String, String, String)>,
}

type SharedData = std::sync::Arc<Mutex<StoreData>>;

impl StoreData {
    /// Whether `key` may be taken now: absent, applied past retention, or a claim whose
    /// lease ended. Otherwise what blocks it.
    fn blocker(&self, key: &DedupeKey, now_ms: i64) -> Option<ApplyOutcome> {
        match self.ledger.get(key) {
            Some(DedupeEntry::InProgress { until_ms, .. }) if *until_ms >= now_ms => {
                Some(blocked_by(false, *until_ms))
            }
            Some(DedupeEntry::Done { until_ms }) if *until_ms >= now_ms => {
                Some(blocked_by(true, *until_ms))
            }
            _ => None,
        }
    }

    fn holds(&self, key: &DedupeKey, token: &FencingToken) -> bool {
        matches!(self.ledger.get(key), Some(DedupeEntry::InProgress { token: t, .. }) if t == token)
    }

    fn put_if_newer(&mut self, record: &StateRecord) -> WriteOutcome {
        let key = (
            record.tenant.clone(),
            record.kind.clone(),
            record.id.clone(),
        );
        if let Some(existing) = self.records.get(&key) {
            if !record.supersedes(existing) {
                return WriteOutcome::Stale;
            }
            if let Some(old) = customer_index_key(existing) {
                self.by_customer.remove(&old);
            }
        }
        if let Some(new) = customer_index_key(record) {
            self.by_customer.insert(new);
        }
        self.records.insert(key, record.clone());
        WriteOutcome::Written
    }
}

/// An in-memory dedupe store: claims in the map an apply of its [`MemoryState`] writes
/// markers to (see [`MemoryDedupe::state`]), so every claim is atomic with applies.
#[derive(Debug)]
pub struct MemoryDedupe {
    data: SharedData,
    /// Tokens are this store's random prefix and a counter: unique per claim without a
    /// random draw per claim.
    token_prefix: String,
    next_token: AtomicU64,
    /// [`crate::backend::ReconcileStore`] checkpoints by (tenant, name).
    checkpoints: Mutex<BTreeMap<(String, String), String>>,
}

impl Default for MemoryDedupe {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryDedupe {
    /// An empty store.
    pub fn new() -> Self {
        MemoryDedupe {
            data: SharedData::default(),
            token_prefix: uuid::Uuid::new_v4().simple().to_string(),
            next_token: AtomicU64::new(1),
            checkpoints: Mutex::new(BTreeMap::new()),
        }
    }

    /// The state store whose applies write their markers where this store claims: the
    /// pair a worker with lease handlers needs.
    pub fn state(&self) -> MemoryState {
        MemoryState {
            data: std::sync::Arc::clone(&self.data),
        }
    }

    /// How many keys are stored (claims and markers, expired ones included).
    pub fn len(&self) -> usize {
        lock(&self.data).ledger.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lease_end(now_ms: i64, d: Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl DedupeStore for MemoryDedupe {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        let mut g = lock(&self.data);
        match g.blocker(key, now_ms) {
            Some(ApplyOutcome::HeldElsewhere { until_ms }) => {
                return Ok(Claim::InProgressElsewhere { until_ms });
            }
            Some(_) => return Ok(Claim::AlreadyDone),
            None => {}
        }
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        let token = FencingToken(format!("{}-{n}", self.token_prefix));
        g.ledger.insert(
            key.clone(),
            DedupeEntry::InProgress {
                token: token.clone(),
                until_ms: lease_end(now_ms, lease),
            },
        );
        Ok(Claim::Claimed(token))
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        let mut g = lock(&self.data);
        if !g.holds(key, token) {
            return Err(BackendError::LeaseLost {
                operation: "dedupe_renew",
            });
        }
        g.ledger.insert(
            key.clone(),
            DedupeEntry::InProgress {
                token: token.clone(),
                until_ms: lease_end(now_ms, lease),
            },
        );
        Ok(())
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        let mut g = lock(&self.data);
        if g.holds(key, token) {
            g.ledger.remove(key);
        }
        Ok(())
    }
}

impl crate::backend::ReconcileStore for MemoryDedupe {
    async fn was_applied(&self, key: &DedupeKey, now_ms: i64) -> BackendResult<bool> {
        Ok(matches!(
            lock(&self.data).ledger.get(key),
            Some(DedupeEntry::Done { until_ms }) if *until_ms >= now_ms
        ))
    }

    async fn checkpoint(&self, tenant: &str, name: &str) -> BackendResult<Option<String>> {
        Ok(lock(&self.checkpoints)
            .get(&(tenant.to_owned(), name.to_owned()))
            .cloned())
    }

    async fn set_checkpoint(
        &self,
        tenant: &str,
        name: &str,
        value: Option<&str>,
    ) -> BackendResult<()> {
        let key = (tenant.to_owned(), name.to_owned());
        let mut checkpoints = lock(&self.checkpoints);
        match value {
            Some(value) => checkpoints.insert(key, value.to_owned()),
            None => checkpoints.remove(&key),
        };
        Ok(())
    }
}

/// An in-memory state store; `export` and `by_customer` come out in key order because the
/// maps are ordered.
#[derive(Debug, Default)]
pub struct MemoryState {
    data: SharedData,
}

impl MemoryState {
    /// An empty store, with its own markers (see [`MemoryDedupe::state`] for one that
    /// shares them with a dedupe store).
    pub fn new() -> Self {
        Self::default()
    }
}

fn customer_index_key(r: &StateRecord) -> Option<(String, String, String, String)> {
    r.customer
        .as_ref()
        .map(|c| (r.tenant.clone(), c.clone(), r.kind.clone(), r.id.clone()))
}

impl StateStore for MemoryState {
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        let mut g = lock(&self.data);
        match write.marker {
            Marker::IfAbsent => {
                if let Some(blocked) = g.blocker(write.key, write.now_ms) {
                    return Ok(blocked);
                }
            }
            Marker::Fenced(token) => {
                if !g.holds(write.key, token) {
                    return Err(BackendError::LeaseLost {
                        operation: "state_apply",
                    });
                }
            }
            Marker::Overwrite => {}
        }
        g.ledger.insert(
            write.key.clone(),
            DedupeEntry::Done {
                until_ms: lease_end(write.now_ms, write.retention),
            },
        );
        Ok(ApplyOutcome::Applied(
            write.records.iter().map(|r| g.put_if_newer(r)).collect(),
        ))
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        Ok(lock(&self.data).put_if_newer(record))
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        let key = (tenant.to_owned(), kind.to_owned(), id.to_owned());
        Ok(lock(&self.data).records.get(&key).cloned())
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        let g = lock(&self.data);
        let from = (
            tenant.to_owned(),
            customer.to_owned(),
            String::new(),
            String::new(),
        );
        Ok(g.by_customer
            .range(from..)
            .take_while(|(t, c, _, _)| t == tenant && c == customer)
            .filter_map(|(t, _, k, i)| g.records.get(&(t.clone(), k.clone(), i.clone())))
            .cloned()
            .collect())
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        let g = lock(&self.data);
        Ok(match tenant {
            None => g.records.values().cloned().collect(),
            Some(t) => g
                .records
                .range((t.to_owned(), String::new(), String::new())..)
                .take_while(|((rt, _, _), _)| rt == t)
                .map(|(_, r)| r.clone())
                .collect(),
        })
    }

    /// A range over the tenant's records of `kind` after `after`, filtered by status: a
    /// scan of the kind, which is what a test double needs, not an index.
    async fn by_kind_status(
        &self,
        tenant: &str,
        kind: &str,
        status: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<Vec<StateRecord>> {
        use std::ops::Bound;
        let g = lock(&self.data);
        let key = |id: &str| (tenant.to_owned(), kind.to_owned(), id.to_owned());
        let from = match after {
            Some(after) => Bound::Excluded(key(after)),
            None => Bound::Included(key("")),
        };
        Ok(g.records
            .range((from, Bound::Unbounded))
            .take_while(|((t, k, _), _)| t == tenant && k == kind)
            .map(|(_, r)| r)
            .filter(|r| crate::backend::record_status(&r.doc) == Some(status))
            .take(limit)
            .cloned()
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------------------

/// An in-memory archive of envelopes by time (append order breaks ties).
#[derive(Debug, Default)]
pub struct MemoryArchive {
    entries: Mutex<BTreeMap<(i64, u64), String>>,
    next_seq: AtomicU64,
}

impl MemoryArchive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Archive for MemoryArchive {
    async fn append(&self, envelope: &str, time_ms: i64) -> BackendResult<()> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.entries).insert((time_ms, seq), envelope.to_owned());
        Ok(())
    }

    async fn range(&self, from_ms: i64, to_ms: i64) -> BackendResult<Vec<String>> {
        if from_ms >= to_ms {
            return Ok(Vec::new());
        }
        Ok(lock(&self.entries)
            .range((from_ms, 0)..(to_ms, 0))
            .map(|(_, e)| e.clone())
            .collect())
    }
}
