//! [`DynamoDedupe`] and [`DynamoState`]: the dedupe and state seams on DynamoDB. Claims and
//! state writes are one conditional write each (no read-modify-write); an event's apply is
//! one `TransactWriteItems` over both tables.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};

use super::error::{from_code, from_sdk};
use crate::backend::{
    ApplyOutcome, BackendError, BackendResult, Claim, DedupeKey, DedupeStore, EventWrite,
    FencingToken, Marker, StateRecord, StateStore, WriteOutcome, blocked_by,
};

/// Attribute and index names of the two tables, shared with [`super::setup`].
pub mod schema {
    /// Dedupe table: the partition key, [`crate::backend::DedupeKey::storage_key`].
    pub const DEDUPE_KEY: &str = "key";
    /// Dedupe table: `in_progress` or `done`.
    pub const DEDUPE_STATUS: &str = "status";
    /// Dedupe table: the fencing token of the current holder.
    pub const DEDUPE_TOKEN: &str = "token";
    /// Dedupe table: when an `in_progress` lease ends, ms since the epoch.
    pub const DEDUPE_LEASE_UNTIL: &str = "lease_until_ms";
    /// Dedupe table: when the record stops counting, ms since the epoch (compared in the
    /// claim condition with millisecond precision).
    pub const DEDUPE_EXPIRES_AT_MS: &str = "expires_at_ms";
    /// Both tables' TTL attribute: epoch seconds, for DynamoDB's sweeper only; claims
    /// never rely on it having run.
    pub const TTL_ATTRIBUTE: &str = "expires_at";
    /// Dedupe table: a checkpoint's value ([`crate::backend::ReconcileStore`]), on items
    /// whose key starts with [`CHECKPOINT_KEY_PREFIX`].
    pub const CHECKPOINT_VALUE: &str = "value";
    /// Dedupe table: the key prefix of checkpoint items. `~` is not allowed in tenant
    /// names, and every dedupe key starts with its tenant, so the two never meet.
    pub const CHECKPOINT_KEY_PREFIX: &str = "checkpoint~";

    /// State table: partition key, the tenant.
    pub const STATE_PARTITION_KEY: &str = "tenant";
    /// State table: sort key, `<kind>#<id>`.
    pub const STATE_SORT_KEY: &str = "record";
    /// State table: the global secondary index for per-customer queries.
    pub const STATE_CUSTOMER_INDEX: &str = "by_customer";
    /// State table: the customer index's partition key, `<tenant>#<customer>`, present only
    /// on records with a customer (a sparse index).
    pub const STATE_CUSTOMER_KEY: &str = "tenant_customer";
    /// State table: the global secondary index for records by kind and status (the read
    /// API's lists), sort key [`STATE_ID`].
    pub const STATE_KIND_STATUS_INDEX: &str = "by_kind_status";
    /// State table: the kind-status index's partition key, `<tenant>#<kind>#<status>`,
    /// present only on records whose document has a `status` (a sparse index).
    pub const STATE_KIND_STATUS_KEY: &str = "tenant_kind_status";
    /// State table: the object id (also the kind-status index's sort key).
    pub const STATE_ID: &str = "id";
}

use schema::*;

const STATUS_IN_PROGRESS: &str = "in_progress";
const STATUS_DONE: &str = "done";
/// The condition under which a key may be taken (claimed, or marked applied): absent, a
/// claim whose lease ended, or a record past retention.
const TAKEABLE: &str = "attribute_not_exists(#key) \
     OR (#status = :in_progress AND #lease < :now) \
     OR #expires < :now";
/// The condition of a fenced write: the claim is still ours.
const HELD: &str = "#token = :token AND #status = :in_progress";
/// The "newer wins" condition of a state write: absent, strictly later, or same time and
/// larger tiebreak.
const NEWER: &str = "attribute_not_exists(#pk) OR #as_of < :as_of \
     OR (#as_of = :as_of AND #tiebreak < :tiebreak)";
/// The most items one `TransactWriteItems` may hold (DynamoDB's limit).
const MAX_TRANSACTION_ITEMS: usize = 100;
/// What one transaction's items may weigh, estimated, kept well below DynamoDB's 4 MB so
/// attribute names and expressions fit too.
const MAX_TRANSACTION_BYTES: usize = 3_000_000;
/// An abandoned `in_progress` claim stays this long after its lease for diagnosis before
/// the TTL sweeper may remove it; an expired lease is claimable at once regardless.
const IN_PROGRESS_KEEP_MS: i64 = 24 * 60 * 60 * 1000;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Epoch seconds for the TTL attribute, rounded up so the sweeper never acts early.
fn ttl_secs(ms: i64) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) > 0)
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn corrupt(operation: &'static str, what: String) -> BackendError {
    BackendError::Permanent {
        operation,
        message: format!("unreadable item: {what}"),
    }
}

fn is_conditional_check_failed<E>(err: &SdkError<E>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    super::error::service_code(err) == Some("ConditionalCheckFailedException")
}

/// The names and values of the [`HELD`] condition for `token`.
fn held(token: &FencingToken) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
    (
        HashMap::from([
            ("#token".to_owned(), DEDUPE_TOKEN.to_owned()),
            ("#status".to_owned(), DEDUPE_STATUS.to_owned()),
        ]),
        HashMap::from([
            (":token".to_owned(), s(&token.0)),
            (":in_progress".to_owned(), s(STATUS_IN_PROGRESS)),
        ]),
    )
}

/// What a dedupe item that failed the [`TAKEABLE`] condition means: applied already, or
/// claimed until its lease ends.
fn blocker(
    operation: &'static str,
    item: Option<&HashMap<String, AttributeValue>>,
) -> BackendResult<ApplyOutcome> {
    let Some(item) = item else {
        return Err(BackendError::Transient {
            operation,
            message: "condition failed but the blocking item was not returned".to_owned(),
        });
    };
    match get_s(item, DEDUPE_STATUS) {
        Some(STATUS_DONE) => Ok(blocked_by(true, 0)),
        Some(STATUS_IN_PROGRESS) => {
            let until_ms = get_n(item, DEDUPE_LEASE_UNTIL)
                .ok_or_else(|| corrupt(operation, format!("`{DEDUPE_LEASE_UNTIL}` missing")))?;
            Ok(blocked_by(false, until_ms))
        }
        other => Err(corrupt(operation, format!("unknown status {other:?}"))),
    }
}

/// A [`DedupeStore`] on one DynamoDB table with partition key `key` (string).
///
/// A claim is one `PutItem` whose condition admits an absent key, an expired lease or an
/// expired record; when it fails, `ReturnValuesOnConditionCheckFailure=ALL_OLD` hands back
/// the blocking item, so telling "done" from "held elsewhere" costs no second read.
#[derive(Debug, Clone)]
pub struct DynamoDedupe {
    client: Client,
    table: String,
}

impl DynamoDedupe {
    /// The dedupe store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDedupe {
            client,
            table: table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl DedupeStore for DynamoDedupe {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        const OP: &str = "dynamodb.dedupe.claim";
        let token = FencingToken::new();
        let lease_until = now_ms.saturating_add(duration_ms(lease));
        let expires_ms = lease_until.saturating_add(IN_PROGRESS_KEEP_MS);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(DEDUPE_KEY, s(key.storage_key()))
            .item(DEDUPE_STATUS, s(STATUS_IN_PROGRESS))
            .item(DEDUPE_TOKEN, s(&token.0))
            .item(DEDUPE_LEASE_UNTIL, n(lease_until))
            .item(DEDUPE_EXPIRES_AT_MS, n(expires_ms))
            .item(TTL_ATTRIBUTE, n(ttl_secs(expires_ms)))
            .condition_expression(TAKEABLE)
            .expression_attribute_names("#key", DEDUPE_KEY)
            .expression_attribute_names("#status", DEDUPE_STATUS)
            .expression_attribute_names("#lease", DEDUPE_LEASE_UNTIL)
            .expression_attribute_names("#expires", DEDUPE_EXPIRES_AT_MS)
            .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
            .expression_attribute_values(":now", n(now_ms))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(Claim::Claimed(token)),
            Err(err) => err,
        };
        let old = match err.as_service_error() {
            Some(PutItemError::ConditionalCheckFailedException(ccf)) => ccf.item.clone(),
            _ => return Err(from_sdk(OP, err)),
        };
        Ok(match blocker(OP, old.as_ref())? {
            ApplyOutcome::HeldElsewhere { until_ms } => Claim::InProgressElsewhere { until_ms },
            _ => Claim::AlreadyDone,
        })
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        const OP: &str = "dynamodb.dedupe.renew";
        let lease_until = now_ms.saturating_add(duration_ms(lease));
        let expires_ms = lease_until.saturating_add(IN_PROGRESS_KEEP_MS);
        let (names, values) = held(token);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(DEDUPE_KEY, s(key.storage_key()))
            .update_expression("SET #lease = :lease, #expires = :expires, #ttl = :ttl")
            .condition_expression(HELD)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .expression_attribute_names("#lease", DEDUPE_LEASE_UNTIL)
            .expression_attribute_names("#expires", DEDUPE_EXPIRES_AT_MS)
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":expires", n(expires_ms))
            .expression_attribute_values(":ttl", n(ttl_secs(expires_ms)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_conditional_check_failed(&err) => {
                Err(BackendError::LeaseLost { operation: OP })
            }
            Err(err) => Err(from_sdk(OP, err)),
        }
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        const OP: &str = "dynamodb.dedupe.release";
        let (names, values) = held(token);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(DEDUPE_KEY, s(key.storage_key()))
            .condition_expression(HELD)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            // A stale release does nothing, by contract.
            Err(err) if is_conditional_check_failed(&err) => Ok(()),
            Err(err) => Err(from_sdk(OP, err)),
            Ok(_) => Ok(()),
        }
    }
}

fn checkpoint_key(tenant: &str, name: &str) -> String {
    format!("{CHECKPOINT_KEY_PREFIX}{tenant}#{name}")
}

impl crate::backend::ReconcileStore for DynamoDedupe {
    async fn was_applied(&self, key: &DedupeKey, now_ms: i64) -> BackendResult<bool> {
        const OP: &str = "dynamodb.dedupe.was_applied";
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(DEDUPE_KEY, s(key.storage_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk(OP, e))?
            .item;
        Ok(item.is_some_and(|item| {
            get_s(&item, DEDUPE_STATUS) == Some(STATUS_DONE)
                && get_n(&item, DEDUPE_EXPIRES_AT_MS).is_some_and(|until| until >= now_ms)
        }))
    }

    async fn checkpoint(&self, tenant: &str, name: &str) -> BackendResult<Option<String>> {
        const OP: &str = "dynamodb.checkpoint.get";
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(DEDUPE_KEY, s(checkpoint_key(tenant, name)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk(OP, e))?
            .item;
        match item {
            None => Ok(None),
            Some(item) => get_s(&item, CHECKPOINT_VALUE)
                .map(|v| Some(v.to_owned()))
                .ok_or_else(|| corrupt(OP, format!("`{CHECKPOINT_VALUE}` missing"))),
        }
    }

    async fn set_checkpoint(
        &self,
        tenant: &str,
        name: &str,
        value: Option<&str>,
    ) -> BackendResult<()> {
        const OP: &str = "dynamodb.checkpoint.set";
        let key = s(checkpoint_key(tenant, name));
        match value {
            // No TTL attribute: a checkpoint stays until it is cleared.
            Some(value) => self
                .client
                .put_item()
                .table_name(&self.table)
                .item(DEDUPE_KEY, key)
                .item(CHECKPOINT_VALUE, s(value))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| from_sdk(OP, e)),
            None => self
                .client
                .delete_item()
                .table_name(&self.table)
                .key(DEDUPE_KEY, key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| from_sdk(OP, e)),
        }
    }
}

/// A [`StateStore`] on one DynamoDB table.
///
/// Keys: partition key `tenant`, sort key `record` = `<kind>#<id>`, so a tenant's export is
/// one paginated `Query`; a sparse global secondary index `by_customer` on
/// `tenant_customer` = `<tenant>#<customer>` (sort key `record`) serves per-customer
/// reads; a sparse index `by_kind_status` on `tenant_kind_status` =
/// `<tenant>#<kind>#<status>` (sort key `id`, on records whose document has a `status`)
/// serves [`StateStore::by_kind_status`]. The document is stored as a JSON string in `doc`.
/// The index reads are eventually consistent; `get` and `export` read consistently.
///
/// [`StateStore::apply`] writes the applied-marker into the dedupe table (the one
/// [`DynamoDedupe`] claims in) in the same `TransactWriteItems` as the records.
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    table: String,
    dedupe_table: String,
}

impl DynamoState {
    /// The state store on `table`, keeping applied-markers in `dedupe_table`.
    pub fn new(client: Client, table: impl Into<String>, dedupe_table: impl Into<String>) -> Self {
        DynamoState {
            client,
            table: table.into(),
            dedupe_table: dedupe_table.into(),
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    async fn query_all(
        &self,
        operation: &'static str,
        index: Option<&str>,
        key_attribute: &str,
        key_value: String,
    ) -> BackendResult<Vec<StateRecord>> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                // Global secondary indexes cannot be read consistently.
                .consistent_read(index.is_none())
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", key_attribute)
                .expression_attribute_values(":pk", s(key_value.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk(operation, e))?;
            for item in out.items.unwrap_or_default() {
                records.push(record_from_item(operation, &item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(records)
    }

    async fn scan_all(&self, operation: &'static str) -> BackendResult<Vec<StateRecord>> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk(operation, e))?;
            for item in out.items.unwrap_or_default() {
                records.push(record_from_item(operation, &item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(records)
    }
}

/// The sort key of a record: `<kind>#<id>`.
fn sort_key(kind: &str, id: &str) -> String {
    format!("{kind}#{id}")
}

/// The customer index key: `<tenant>#<customer>`.
fn customer_key(tenant: &str, customer: &str) -> String {
    format!("{tenant}#{customer}")
}

/// The kind-status index key: `<tenant>#<kind>#<status>`.
fn kind_status_key(tenant: &str, kind: &str, status: &str) -> String {
    format!("{tenant}#{kind}#{status}")
}

fn record_from_item(
    operation: &'static str,
    item: &HashMap<String, AttributeValue>,
) -> BackendResult<StateRecord> {
    let text = |name: &str| {
        get_s(item, name)
            .map(str::to_owned)
            .ok_or_else(|| corrupt(operation, format!("`{name}` missing")))
    };
    let doc_text = text("doc")?;
    let doc = serde_json::from_str(&doc_text)
        .map_err(|e| corrupt(operation, format!("`doc` is not JSON: {e}")))?;
    Ok(StateRecord {
        tenant: text(STATE_PARTITION_KEY)?,
        kind: text("kind")?,
        id: text("id")?,
        customer: get_s(item, "customer").map(str::to_owned),
        as_of_ms: get_n(item, "as_of_ms")
            .ok_or_else(|| corrupt(operation, "`as_of_ms` missing".to_owned()))?,
        tiebreak: text("tiebreak")?,
        doc,
    })
}

fn sort_records(records: &mut [StateRecord]) {
    // Sorted in code, not by the sort key: `<kind>#<id>` strings order like (kind, id)
    // only while kinds contain no character below `#`.
    records.sort_by(|a, b| (&a.tenant, &a.kind, &a.id).cmp(&(&b.tenant, &b.kind, &b.id)));
}

/// A record as a state table item, and its estimated size in bytes.
fn state_item(
    operation: &'static str,
    record: &StateRecord,
) -> BackendResult<(HashMap<String, AttributeValue>, usize)> {
    let doc = serde_json::to_string(&record.doc).map_err(|e| BackendError::Permanent {
        operation,
        message: format!("document does not serialise: {e}"),
    })?;
    let size = doc.len() + record.tenant.len() * 2 + record.kind.len() * 2 + record.id.len() * 2;
    let mut item = HashMap::from([
        (STATE_PARTITION_KEY.to_owned(), s(&record.tenant)),
        (
            STATE_SORT_KEY.to_owned(),
            s(sort_key(&record.kind, &record.id)),
        ),
        ("kind".to_owned(), s(&record.kind)),
        (STATE_ID.to_owned(), s(&record.id)),
        ("as_of_ms".to_owned(), n(record.as_of_ms)),
        ("tiebreak".to_owned(), s(&record.tiebreak)),
        ("doc".to_owned(), s(doc)),
    ]);
    if let Some(customer) = &record.customer {
        item.insert("customer".to_owned(), s(customer));
        item.insert(
            STATE_CUSTOMER_KEY.to_owned(),
            s(customer_key(&record.tenant, customer)),
        );
    }
    if let Some(status) = crate::backend::record_status(&record.doc) {
        item.insert(
            STATE_KIND_STATUS_KEY.to_owned(),
            s(kind_status_key(&record.tenant, &record.kind, status)),
        );
    }
    Ok((item, size + 256))
}

/// The [`NEWER`] condition's names and values for `record`.
fn newer_names_values(
    record: &StateRecord,
) -> (HashMap<String, String>, HashMap<String, AttributeValue>) {
    (
        HashMap::from([
            ("#pk".to_owned(), STATE_PARTITION_KEY.to_owned()),
            ("#as_of".to_owned(), "as_of_ms".to_owned()),
            ("#tiebreak".to_owned(), "tiebreak".to_owned()),
        ]),
        HashMap::from([
            (":as_of".to_owned(), n(record.as_of_ms)),
            (":tiebreak".to_owned(), s(&record.tiebreak)),
        ]),
    )
}

fn build_error(operation: &'static str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Permanent {
        operation,
        message: format!("cannot build the request: {e}"),
    }
}

/// Items of one `TransactWriteItems`: which record each state put carries (`None` for the
/// marker or the claim check).
struct Transaction {
    items: Vec<TransactWriteItem>,
    records: Vec<Option<usize>>,
}

impl DynamoState {
    /// The marker's put: the dedupe item, marked applied until `retention` from now, with
    /// the condition `marker` asks for.
    fn marker_item(&self, write: &EventWrite<'_>) -> BackendResult<TransactWriteItem> {
        const OP: &str = "dynamodb.state.apply";
        let expires_ms = write.now_ms.saturating_add(duration_ms(write.retention));
        let mut put = Put::builder()
            .table_name(&self.dedupe_table)
            .item(DEDUPE_KEY, s(write.key.storage_key()))
            .item(DEDUPE_STATUS, s(STATUS_DONE))
            .item(DEDUPE_EXPIRES_AT_MS, n(expires_ms))
            .item(TTL_ATTRIBUTE, n(ttl_secs(expires_ms)));
        match write.marker {
            Marker::IfAbsent => {
                put = put
                    .condition_expression(TAKEABLE)
                    .expression_attribute_names("#key", DEDUPE_KEY)
                    .expression_attribute_names("#status", DEDUPE_STATUS)
                    .expression_attribute_names("#lease", DEDUPE_LEASE_UNTIL)
                    .expression_attribute_names("#expires", DEDUPE_EXPIRES_AT_MS)
                    .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
                    .expression_attribute_values(":now", n(write.now_ms))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    );
            }
            Marker::Fenced(token) => {
                let (names, values) = held(token);
                put = put
                    .condition_expression(HELD)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values));
            }
            Marker::Overwrite => {}
        }
        let put = put.build().map_err(|e| build_error(OP, e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A check that `token` still holds the claim, for the leading transactions of a
    /// fenced apply too large for one (the marker's put carries the check in the last).
    fn claim_check(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
    ) -> BackendResult<TransactWriteItem> {
        let (names, values) = held(token);
        let check = ConditionCheck::builder()
            .table_name(&self.dedupe_table)
            .key(DEDUPE_KEY, s(key.storage_key()))
            .condition_expression(HELD)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| build_error("dynamodb.state.apply", e))?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// The transactions of an apply, in order: the records in transactions within
    /// DynamoDB's limits, the marker in the last. Almost always one. A larger apply is
    /// still exactly once: a crash between its transactions leaves newer-wins records
    /// without the marker, which the retry writes again as no-ops before the marker.
    fn transactions(
        &self,
        write: &EventWrite<'_>,
        settled: &[Option<WriteOutcome>],
    ) -> BackendResult<Vec<Transaction>> {
        const OP: &str = "dynamodb.state.apply";
        let mut done = Vec::new();
        let mut current = Transaction {
            items: Vec::new(),
            records: Vec::new(),
        };
        let mut bytes = 0;
        for (index, record) in write.records.iter().enumerate() {
            if settled[index].is_some() {
                continue;
            }
            let (item, size) = state_item(OP, record)?;
            // Room for this record and the marker (or the claim check) after it.
            if current.items.len() + 2 > MAX_TRANSACTION_ITEMS
                || (!current.items.is_empty() && bytes + size > MAX_TRANSACTION_BYTES)
            {
                if let Marker::Fenced(token) = write.marker {
                    current.items.push(self.claim_check(write.key, token)?);
                    current.records.push(None);
                }
                done.push(std::mem::replace(
                    &mut current,
                    Transaction {
                        items: Vec::new(),
                        records: Vec::new(),
                    },
                ));
                bytes = 0;
            }
            let (names, values) = newer_names_values(record);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(NEWER)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(|e| build_error(OP, e))?;
            current
                .items
                .push(TransactWriteItem::builder().put(put).build());
            current.records.push(Some(index));
            bytes += size;
        }
        current.items.push(self.marker_item(write)?);
        current.records.push(None);
        done.push(current);
        Ok(done)
    }

    /// Send one transaction. `Ok(None)` if it committed; else which of its items failed
    /// their condition (by position), or the error to report.
    async fn send_transaction(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> BackendResult<Option<Vec<CancellationReason>>> {
        const OP: &str = "dynamodb.state.apply";
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(None),
            Err(err) => err,
        };
        let reasons = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                cancelled.cancellation_reasons().to_vec()
            }
            _ => return Err(from_sdk(OP, err)),
        };
        // Anything but failed conditions (a conflicting transaction, throttling) is
        // worth another try as a whole: classify the first such reason.
        if let Some(other) = reasons
            .iter()
            .filter_map(|r| r.code())
            .find(|code| !matches!(*code, "None" | CONDITION_FAILED))
        {
            return Err(from_code(OP, other, "transaction cancelled", true));
        }
        Ok(Some(reasons))
    }
}

/// The cancellation reason code of an item whose condition failed.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

fn failed(reason: &CancellationReason) -> bool {
    reason.code() == Some(CONDITION_FAILED)
}

impl StateStore for DynamoState {
    /// One `TransactWriteItems`: the marker's conditional put and each record's newer-wins
    /// put. When it is cancelled, the cancellation reasons say which conditions failed: a
    /// failed marker is a duplicate (or a lost claim), failed records are stale and the
    /// transaction is sent again without them. Stale records are rare (events arriving
    /// out of order), so this costs one request per message in the usual case; reading
    /// the records first to leave stale ones out would cost two every time.
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        const OP: &str = "dynamodb.state.apply";
        // Each record once known: written by a committed transaction, or stale.
        let mut settled: Vec<Option<WriteOutcome>> = vec![None; write.records.len()];
        // Each round either commits, ends, or finds at least one more record stale.
        'rounds: for _ in 0..=write.records.len() {
            for transaction in self.transactions(write, &settled)? {
                let Some(reasons) = self.send_transaction(transaction.items).await? else {
                    for index in transaction.records.iter().flatten() {
                        settled[*index] = Some(WriteOutcome::Written);
                    }
                    continue;
                };
                let mut newly_stale = false;
                for (reason, record) in reasons.iter().zip(&transaction.records) {
                    match record {
                        Some(index) if failed(reason) => {
                            settled[*index] = Some(WriteOutcome::Stale);
                            newly_stale = true;
                        }
                        None if failed(reason) => {
                            return match write.marker {
                                Marker::IfAbsent => blocker(OP, reason.item()),
                                _ => Err(BackendError::LeaseLost { operation: OP }),
                            };
                        }
                        _ => {}
                    }
                }
                if !newly_stale {
                    return Err(BackendError::Transient {
                        operation: OP,
                        message: "transaction cancelled without a failed condition".to_owned(),
                    });
                }
                continue 'rounds;
            }
            return Ok(ApplyOutcome::Applied(
                settled
                    .into_iter()
                    .map(|s| s.unwrap_or(WriteOutcome::Written))
                    .collect(),
            ));
        }
        Err(BackendError::Transient {
            operation: OP,
            message: "records kept turning stale; try again".to_owned(),
        })
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        const OP: &str = "dynamodb.state.put_if_newer";
        let (item, _) = state_item(OP, record)?;
        let (names, values) = newer_names_values(record);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NEWER)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(err) if is_conditional_check_failed(&err) => Ok(WriteOutcome::Stale),
            Err(err) => Err(from_sdk(OP, err)),
        }
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        const OP: &str = "dynamodb.state.get";
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(STATE_PARTITION_KEY, s(tenant))
            .key(STATE_SORT_KEY, s(sort_key(kind, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk(OP, e))?;
        out.item.map(|item| record_from_item(OP, &item)).transpose()
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        const OP: &str = "dynamodb.state.by_customer";
        let mut records = self
            .query_all(
                OP,
                Some(STATE_CUSTOMER_INDEX),
                STATE_CUSTOMER_KEY,
                customer_key(tenant, customer),
            )
            .await?;
        // `#` may occur in a tenant or customer id, making two pairs share an index key:
        // keep only exact matches.
        records.retain(|r| r.tenant == tenant && r.customer.as_deref() == Some(customer));
        sort_records(&mut records);
        Ok(records)
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        const OP: &str = "dynamodb.state.export";
        let mut records = match tenant {
            Some(tenant) => {
                self.query_all(OP, None, STATE_PARTITION_KEY, tenant.to_owned())
                    .await?
            }
            None => self.scan_all(OP).await?,
        };
        sort_records(&mut records);
        Ok(records)
    }

    /// A `Query` of the `by_kind_status` index, `id > after` in the key condition so a
    /// page starts where the last one ended without a start key. Pages of the index are
    /// read until `limit` records came (a 1 MB page may hold fewer).
    async fn by_kind_status(
        &self,
        tenant: &str,
        kind: &str,
        status: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<Vec<StateRecord>> {
        const OP: &str = "dynamodb.state.by_kind_status";
        let mut records = Vec::new();
        let mut start = None;
        let mut names = HashMap::from([("#pk".to_owned(), STATE_KIND_STATUS_KEY.to_owned())]);
        let mut values =
            HashMap::from([(":pk".to_owned(), s(kind_status_key(tenant, kind, status)))]);
        let condition = match after {
            Some(after) => {
                names.insert("#sk".to_owned(), STATE_ID.to_owned());
                values.insert(":after".to_owned(), s(after));
                "#pk = :pk AND #sk > :after"
            }
            None => "#pk = :pk",
        };
        while records.len() < limit {
            let want = i32::try_from(limit - records.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATE_KIND_STATUS_INDEX)
                .key_condition_expression(condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk(OP, e))?;
            for item in out.items.unwrap_or_default() {
                let record = record_from_item(OP, &item)?;
                // `#` may occur in an id or status, making two keys equal: exact only.
                if record.tenant == tenant
                    && record.kind == kind
                    && crate::backend::record_status(&record.doc) == Some(status)
                {
                    records.push(record);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        records.truncate(limit);
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(1_000), 1);
        assert_eq!(ttl_secs(1_001), 2);
        assert_eq!(ttl_secs(0), 0);
    }

    #[test]
    fn items_round_trip_to_records_and_reject_garbage() {
        let mut item = HashMap::new();
        item.insert(STATE_PARTITION_KEY.to_owned(), s("t1"));
        item.insert(STATE_SORT_KEY.to_owned(), s("invoice#in_1"));
        item.insert("kind".to_owned(), s("invoice"));
        item.insert("id".to_owned(), s("in_1"));
        item.insert("as_of_ms".to_owned(), n(5));
        item.insert("tiebreak".to_owned(), s("evt_1"));
        item.insert("doc".to_owned(), s(r#"{"status":"paid"}"#));
        let record = record_from_item("op", &item).unwrap();
        assert_eq!(record.doc["status"], "paid");
        assert_eq!(record.customer, None);
        item.insert("doc".to_owned(), s("{not json"));
        assert!(!record_from_item("op", &item).unwrap_err().is_retryable());
        item.remove("as_of_ms");
        assert!(record_from_item("op", &item).is_err());
    }
}
