//! [`DynamoDedupe`] and [`DynamoState`]: the dedupe and state seams on DynamoDB, each one
//! conditional write per operation (no read-modify-write).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::error::from_sdk;
use crate::backend::{
    BackendError, BackendResult, Claim, DedupeKey, DedupeStore, FencingToken, StateRecord,
    StateStore, WriteOutcome,
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
}

use schema::*;

const STATUS_IN_PROGRESS: &str = "in_progress";
const STATUS_DONE: &str = "done";
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
            .condition_expression(
                "attribute_not_exists(#key) \
                 OR (#status = :in_progress AND #lease < :now) \
                 OR #expires < :now",
            )
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
        let Some(old) = old else {
            return Err(BackendError::Transient {
                operation: OP,
                message: "condition failed but the blocking item was not returned".to_owned(),
            });
        };
        match get_s(&old, DEDUPE_STATUS) {
            Some(STATUS_DONE) => Ok(Claim::AlreadyDone),
            Some(STATUS_IN_PROGRESS) => {
                let until_ms = get_n(&old, DEDUPE_LEASE_UNTIL)
                    .ok_or_else(|| corrupt(OP, format!("`{DEDUPE_LEASE_UNTIL}` missing")))?;
                Ok(Claim::InProgressElsewhere { until_ms })
            }
            other => Err(corrupt(OP, format!("unknown status {other:?}"))),
        }
    }

    async fn complete(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        retention: Duration,
    ) -> BackendResult<()> {
        const OP: &str = "dynamodb.dedupe.complete";
        let expires_ms = now_ms.saturating_add(duration_ms(retention));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(DEDUPE_KEY, s(key.storage_key()))
            .item(DEDUPE_STATUS, s(STATUS_DONE))
            .item(DEDUPE_TOKEN, s(&token.0))
            .item(DEDUPE_EXPIRES_AT_MS, n(expires_ms))
            .item(TTL_ATTRIBUTE, n(ttl_secs(expires_ms)))
            // The token alone decides: it changes on every claim, so it still being ours
            // means nobody took over, even if our lease has run out meanwhile.
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", DEDUPE_TOKEN)
            .expression_attribute_values(":token", s(&token.0))
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
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(DEDUPE_KEY, s(key.storage_key()))
            .condition_expression("#token = :token AND #status = :in_progress")
            .expression_attribute_names("#token", DEDUPE_TOKEN)
            .expression_attribute_names("#status", DEDUPE_STATUS)
            .expression_attribute_values(":token", s(&token.0))
            .expression_attribute_values(":in_progress", s(STATUS_IN_PROGRESS))
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
/// reads. The document is stored as a JSON string in `doc`. `by_customer` reads the index
/// and is eventually consistent; `get` and `export` read consistently.
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    table: String,
}

impl DynamoState {
    /// The state store on `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoState {
            client,
            table: table.into(),
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

impl StateStore for DynamoState {
    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        const OP: &str = "dynamodb.state.put_if_newer";
        let doc = serde_json::to_string(&record.doc).map_err(|e| BackendError::Permanent {
            operation: OP,
            message: format!("document does not serialise: {e}"),
        })?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(STATE_PARTITION_KEY, s(&record.tenant))
            .item(STATE_SORT_KEY, s(sort_key(&record.kind, &record.id)))
            .item("kind", s(&record.kind))
            .item("id", s(&record.id))
            .item("as_of_ms", n(record.as_of_ms))
            .item("tiebreak", s(&record.tiebreak))
            .item("doc", s(doc));
        if let Some(customer) = &record.customer {
            request = request.item("customer", s(customer)).item(
                STATE_CUSTOMER_KEY,
                s(customer_key(&record.tenant, customer)),
            );
        }
        let result = request
            // One atomic step: absent, strictly later, or same time and larger tiebreak.
            .condition_expression(
                "attribute_not_exists(#pk) OR #as_of < :as_of \
                 OR (#as_of = :as_of AND #tiebreak < :tiebreak)",
            )
            .expression_attribute_names("#pk", STATE_PARTITION_KEY)
            .expression_attribute_names("#as_of", "as_of_ms")
            .expression_attribute_names("#tiebreak", "tiebreak")
            .expression_attribute_values(":as_of", n(record.as_of_ms))
            .expression_attribute_values(":tiebreak", s(&record.tiebreak))
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
