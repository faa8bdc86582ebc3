//! Building the bus entries and EventBridge envelopes that carry Stripe events.
//!
//! Four entry shapes exist, one per path and payload style:
//!
//! | builder | source | detail-type | detail |
//! | --- | --- | --- | --- |
//! | [`webhook_snapshot_entry`] | [`WEBHOOK_SOURCE`] | [`WEBHOOK_DETAIL_TYPE`] | the v1 event plus `tenant_id`, `received_at`, `payload_style: "snapshot"`, `traceparent` |
//! | [`webhook_thin_entry`] | [`WEBHOOK_SOURCE`] | [`WEBHOOK_DETAIL_TYPE`] | a flat thin object (see the function) |
//! | [`partner_snapshot_entry`] | `aws.partner/stripe.com/<ed_...>` | the event type | the v1 event |
//! | [`partner_thin_entry`] | `aws.partner/stripe.com/<ed_...>` | `v1.<event type>` | a `v2.core.event` |
//!
//! [`partner_v2_event_entry`] gives the last shape for a `v2.core.event` as the API lists
//! it (`GET /v2/core/events`), unchanged.
//!
//! [`envelope_json`] wraps an entry the way a bus delivers it to its targets, and
//! [`entry_from_envelope`] goes back. Everything here is pure; [`super::decode`] is the
//! reading side and the round trip between the two is tested.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// One event to put on a bus, as in an EventBridge `PutEvents` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEntry {
    /// `stripe.webhook`, or `aws.partner/stripe.com/ed_...` for partner-shaped events.
    pub source: String,
    /// `Stripe Webhook Event`, or the Stripe event type on the partner path.
    pub detail_type: String,
    /// The detail, a JSON object serialised.
    pub detail: String,
    /// Resource ARNs, usually empty.
    #[serde(default)]
    pub resources: Vec<String>,
}

/// The EventBridge source our webhook ingress publishes with. Only the ingress may use it:
/// the decoder trusts the `tenant_id` of events with this source.
pub const WEBHOOK_SOURCE: &str = "stripe.webhook";
/// The EventBridge detail-type of webhook events.
pub const WEBHOOK_DETAIL_TYPE: &str = "Stripe Webhook Event";
/// The source prefix of events a Stripe event destination puts on a partner bus; the
/// destination id (`ed_...`) follows it.
pub const PARTNER_SOURCE_PREFIX: &str = "aws.partner/stripe.com/";

/// The Stripe API version from which subscription periods live on the items
/// (`items.data[].current_period_*`) rather than on the subscription itself.
const ITEM_PERIODS_SINCE: &str = "2025-03-31";

/// Why an entry or envelope could not be built. Always permanent: the input is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required field is absent (or null).
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's path, e.g. `data.object`.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's path.
        field: String,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
    },
    /// A field has the right type but an unusable value.
    #[error("field `{field}` is invalid: {message}")]
    InvalidValue {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A thin partner event needs an API path for its object and this type has none.
    #[error("no API path is known for object type `{object_type}`")]
    UnsupportedObjectType {
        /// The Stripe object type.
        object_type: String,
    },
    /// The detail of an entry is not valid JSON.
    #[error("entry detail is not valid JSON: {message}")]
    InvalidDetail {
        /// The parser's message.
        message: String,
    },
}

fn missing(field: &str) -> EnvelopeError {
    EnvelopeError::MissingField {
        field: field.to_owned(),
    }
}

fn wrong(field: &str, expected: &'static str) -> EnvelopeError {
    EnvelopeError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

fn invalid(field: &str, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError::InvalidValue {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The event as a JSON object, or an error naming what it is instead.
fn event_object(event: &Value) -> Result<&Map<String, Value>, EnvelopeError> {
    event.as_object().ok_or_else(|| wrong("event", "an object"))
}

/// A required, non-empty string field.
fn req_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, EnvelopeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(field, "must not be empty")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong(field, "a string")),
    }
}

/// A required integer field.
fn req_i64(obj: &Map<String, Value>, field: &str) -> Result<i64, EnvelopeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => v.as_i64().ok_or_else(|| wrong(field, "an integer")),
    }
}

/// A required boolean field.
fn req_bool(obj: &Map<String, Value>, field: &str) -> Result<bool, EnvelopeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => v.as_bool().ok_or_else(|| wrong(field, "a boolean")),
    }
}

/// An optional string field (absent and null are both `None`).
fn opt_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, EnvelopeError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(field, "a string or null")),
    }
}

/// `data.object` of a v1 event.
fn data_object(obj: &Map<String, Value>) -> Result<&Map<String, Value>, EnvelopeError> {
    let data = match obj.get("data") {
        None | Some(Value::Null) => return Err(missing("data")),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(wrong("data", "an object")),
    };
    match data.get("object") {
        None | Some(Value::Null) => Err(missing("data.object")),
        Some(Value::Object(object)) => Ok(object),
        Some(_) => Err(wrong("data.object", "an object")),
    }
}

/// RFC 3339 in UTC with whole seconds, e.g. `2024-03-07T18:27:56Z` (EventBridge `time`).
pub fn rfc3339_seconds(ms: i64) -> Result<String, EnvelopeError> {
    // i128 so that flooring to whole seconds cannot overflow at the ends of i64.
    let whole_nanos = i128::from(ms).div_euclid(1000) * 1_000_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(whole_nanos)
        .map_err(|e| invalid("time", e.to_string()))?
        .format(&Rfc3339)
        .map_err(|e| invalid("time", e.to_string()))
}

/// RFC 3339 in UTC with exactly three fractional digits, e.g. `2024-03-07T18:27:56.000Z`
/// (the `created` of a `v2.core.event`).
pub fn rfc3339_millis(ms: i64) -> Result<String, EnvelopeError> {
    // Formatting whole seconds then appending the millis gives a fixed width, which the
    // `time` crate's RFC 3339 formatter does not (it trims trailing zeros).
    let seconds = rfc3339_seconds(ms)?;
    let stem = seconds.strip_suffix('Z').unwrap_or(&seconds);
    Ok(format!("{stem}.{:03}Z", ms.rem_euclid(1000)))
}

/// Seconds since the epoch to milliseconds, refusing overflow.
fn seconds_to_ms(seconds: i64, field: &str) -> Result<i64, EnvelopeError> {
    seconds
        .checked_mul(1000)
        .ok_or_else(|| invalid(field, "timestamp out of range"))
}

fn serialise(detail: &Value) -> String {
    // Serialising a `Value` cannot fail: its keys are strings and it holds no floats that
    // JSON cannot represent.
    detail.to_string()
}

/// A tenant id stamped by the ingress must be a valid tenant name.
fn check_tenant(tenant: &str) -> Result<(), EnvelopeError> {
    crate::tenant::validate_tenant_name(tenant).map_err(|e| invalid("tenant_id", e.to_string()))
}

/// An event destination id goes into the source; it must be non-empty and must not
/// contain `/` (it is the last path segment of the source).
fn check_destination(destination: &str) -> Result<(), EnvelopeError> {
    if destination.is_empty() {
        return Err(invalid("destination", "must not be empty"));
    }
    if destination.contains('/') || destination.chars().any(char::is_whitespace) {
        return Err(invalid("destination", "must not contain `/` or whitespace"));
    }
    Ok(())
}

/// The webhook-path entry carrying the full event (snapshot payload).
///
/// The detail is the Stripe v1 event object with `tenant_id`, `received_at` (RFC 3339 with
/// milliseconds), `payload_style: "snapshot"` and, when given, `traceparent` added.
pub fn webhook_snapshot_entry(
    event: &Value,
    tenant: &str,
    received_at_ms: i64,
    traceparent: Option<&str>,
) -> Result<BusEntry, EnvelopeError> {
    let obj = event_object(event)?;
    req_str(obj, "id")?;
    req_str(obj, "type")?;
    check_tenant(tenant)?;
    let mut detail = obj.clone();
    detail.insert("tenant_id".into(), Value::String(tenant.to_owned()));
    detail.insert(
        "received_at".into(),
        Value::String(rfc3339_millis(received_at_ms)?),
    );
    detail.insert("payload_style".into(), Value::String("snapshot".into()));
    if let Some(tp) = traceparent {
        detail.insert("traceparent".into(), Value::String(tp.to_owned()));
    }
    Ok(BusEntry {
        source: WEBHOOK_SOURCE.to_owned(),
        detail_type: WEBHOOK_DETAIL_TYPE.to_owned(),
        detail: serialise(&Value::Object(detail)),
        resources: Vec::new(),
    })
}

/// The current period of a subscription-like object: from `items.data[0]` on API versions
/// from 2025-03-31, else top-level; each falls back to the other so a payload whose
/// version is unknown still yields what it carries.
fn current_period(object: &Map<String, Value>, api_version: Option<&str>) -> (Value, Value) {
    let top = |k: &str| object.get(k).filter(|v| v.is_i64()).cloned();
    let item = |k: &str| {
        object
            .get("items")
            .and_then(|i| i.get("data"))
            .and_then(|d| d.get(0))
            .and_then(|first| first.get(k))
            .filter(|v| v.is_i64())
            .cloned()
    };
    let items_first = api_version.is_some_and(|v| v.get(..10).unwrap_or(v) >= ITEM_PERIODS_SINCE);
    let pick = |k: &str| {
        let found = if items_first {
            item(k).or_else(|| top(k))
        } else {
            top(k).or_else(|| item(k))
        };
        found.unwrap_or(Value::Null)
    };
    (pick("current_period_start"), pick("current_period_end"))
}

/// The customer an object belongs to: the object itself for a customer, else its
/// `customer` field (an id, or the id of an expanded customer).
fn customer_of(object: &Map<String, Value>, object_type: &str) -> Value {
    if object_type == "customer" {
        return object.get("id").cloned().unwrap_or(Value::Null);
    }
    match object.get("customer") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Object(expanded)) => expanded
            .get("id")
            .filter(|v| v.is_string())
            .cloned()
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// The webhook-path entry carrying a flat thin event: what a handler needs to decide
/// whether to fetch, without the object itself.
///
/// The detail is `{id, type, created, livemode, tenant_id, received_at,
/// payload_style: "thin", object_id, object_type, customer_id, status,
/// current_period_start, current_period_end}` taken from the event and its `data.object`;
/// fields that do not apply to the object are null. `account` (the Connect account, which
/// the worker needs as the Stripe-Context when fetching) and `traceparent` are added when
/// present.
pub fn webhook_thin_entry(
    event: &Value,
    tenant: &str,
    received_at_ms: i64,
    traceparent: Option<&str>,
) -> Result<BusEntry, EnvelopeError> {
    let obj = event_object(event)?;
    let id = req_str(obj, "id")?;
    let event_type = req_str(obj, "type")?;
    let created = req_i64(obj, "created")?;
    let livemode = req_bool(obj, "livemode")?;
    let account = opt_str(obj, "account")?;
    let api_version = opt_str(obj, "api_version")?;
    check_tenant(tenant)?;
    let object = data_object(obj)?;
    let object_id = req_str(object, "id").map_err(|e| prefix_field(e, "data.object"))?;
    let object_type = req_str(object, "object").map_err(|e| prefix_field(e, "data.object"))?;
    let status = object
        .get("status")
        .filter(|v| v.is_string())
        .cloned()
        .unwrap_or(Value::Null);
    let (period_start, period_end) = current_period(object, api_version);
    let mut detail = json!({
        "id": id,
        "type": event_type,
        "created": created,
        "livemode": livemode,
        "tenant_id": tenant,
        "received_at": rfc3339_millis(received_at_ms)?,
        "payload_style": "thin",
        "object_id": object_id,
        "object_type": object_type,
        "customer_id": customer_of(object, object_type),
        "status": status,
        "current_period_start": period_start,
        "current_period_end": period_end,
    });
    if let Some(map) = detail.as_object_mut() {
        if let Some(account) = account {
            map.insert("account".into(), Value::String(account.to_owned()));
        }
        if let Some(tp) = traceparent {
            map.insert("traceparent".into(), Value::String(tp.to_owned()));
        }
    }
    Ok(BusEntry {
        source: WEBHOOK_SOURCE.to_owned(),
        detail_type: WEBHOOK_DETAIL_TYPE.to_owned(),
        detail: serialise(&detail),
        resources: Vec::new(),
    })
}

fn prefix_field(err: EnvelopeError, prefix: &str) -> EnvelopeError {
    match err {
        EnvelopeError::MissingField { field } => EnvelopeError::MissingField {
            field: format!("{prefix}.{field}"),
        },
        EnvelopeError::WrongType { field, expected } => EnvelopeError::WrongType {
            field: format!("{prefix}.{field}"),
            expected,
        },
        EnvelopeError::InvalidValue { field, message } => EnvelopeError::InvalidValue {
            field: format!("{prefix}.{field}"),
            message,
        },
        other => other,
    }
}

/// The partner-path entry carrying the full v1 event, as a Stripe event destination with
/// snapshot payloads delivers it: source `aws.partner/stripe.com/<destination>`,
/// detail-type the event type, detail the event unchanged.
pub fn partner_snapshot_entry(event: &Value, destination: &str) -> Result<BusEntry, EnvelopeError> {
    let obj = event_object(event)?;
    req_str(obj, "id")?;
    let event_type = req_str(obj, "type")?;
    check_destination(destination)?;
    Ok(BusEntry {
        source: format!("{PARTNER_SOURCE_PREFIX}{destination}"),
        detail_type: event_type.to_owned(),
        detail: serialise(event),
        resources: Vec::new(),
    })
}

/// The partner-path entry carrying a thin event, as a Stripe event destination with thin
/// payloads delivers a v1 event: a `v2.core.event`
/// `{id: "evt_thin_<id without evt_>", object: "v2.core.event", type: "v1.<type>",
/// created: RFC 3339 with milliseconds, livemode, context: the event's account or null,
/// related_object: {id, type, url}, snapshot_event: the v1 event id}`;
/// detail-type is the v2 type.
///
/// Fails with [`EnvelopeError::UnsupportedObjectType`] when [`api_path`] knows no path for
/// the object, since a thin event must say where to fetch it.
pub fn partner_thin_entry(event: &Value, destination: &str) -> Result<BusEntry, EnvelopeError> {
    let obj = event_object(event)?;
    let id = req_str(obj, "id")?;
    let event_type = req_str(obj, "type")?;
    let created = req_i64(obj, "created")?;
    let livemode = req_bool(obj, "livemode")?;
    let account = opt_str(obj, "account")?;
    check_destination(destination)?;
    let object = data_object(obj)?;
    let object_id = req_str(object, "id").map_err(|e| prefix_field(e, "data.object"))?;
    let object_type = req_str(object, "object").map_err(|e| prefix_field(e, "data.object"))?;
    let url =
        api_path(object_type, object_id).ok_or_else(|| EnvelopeError::UnsupportedObjectType {
            object_type: object_type.to_owned(),
        })?;
    let v2_type = format!("v1.{event_type}");
    let thin_id = format!("evt_thin_{}", id.strip_prefix("evt_").unwrap_or(id));
    let detail = json!({
        "id": thin_id,
        "object": "v2.core.event",
        "type": v2_type,
        "created": rfc3339_millis(seconds_to_ms(created, "created")?)?,
        "livemode": livemode,
        "context": account,
        "related_object": {
            "id": object_id,
            "type": object_type,
            "url": url,
        },
        "snapshot_event": id,
    });
    Ok(BusEntry {
        source: format!("{PARTNER_SOURCE_PREFIX}{destination}"),
        detail_type: v2_type,
        detail: serialise(&detail),
        resources: Vec::new(),
    })
}

/// The partner-path entry a Stripe event destination with thin payloads delivers for
/// `event`, a `v2.core.event` as `GET /v2/core/events` lists it: source
/// `aws.partner/stripe.com/<destination>`, detail-type the event's (v2) type, detail the
/// event unchanged (the decoder reads everything it needs from it).
pub fn partner_v2_event_entry(event: &Value, destination: &str) -> Result<BusEntry, EnvelopeError> {
    let obj = event_object(event)?;
    req_str(obj, "id")?;
    let event_type = req_str(obj, "type")?;
    if req_str(obj, "object")? != "v2.core.event" {
        return Err(invalid("object", "must be `v2.core.event`"));
    }
    check_destination(destination)?;
    Ok(BusEntry {
        source: format!("{PARTNER_SOURCE_PREFIX}{destination}"),
        detail_type: event_type.to_owned(),
        detail: serialise(event),
        resources: Vec::new(),
    })
}

/// The Stripe API path of an object, e.g. `/v1/subscriptions/sub_1`, for the object types
/// the worker can fetch. `None` for other types, and for ids that are not plain Stripe ids
/// (letters, digits and `_`), so that an id can never inject path segments or a query.
pub fn api_path(object_type: &str, id: &str) -> Option<String> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let collection = match object_type {
        "subscription" => "subscriptions",
        "invoice" => "invoices",
        "invoice_payment" => "invoice_payments",
        "payment_intent" => "payment_intents",
        "charge" => "charges",
        "customer" => "customers",
        "checkout.session" => "checkout/sessions",
        "setup_intent" => "setup_intents",
        "payment_method" => "payment_methods",
        "subscription_item" => "subscription_items",
        "subscription_schedule" => "subscription_schedules",
        "product" => "products",
        "price" => "prices",
        "coupon" => "coupons",
        "promotion_code" => "promotion_codes",
        "refund" => "refunds",
        "dispute" => "disputes",
        "credit_note" => "credit_notes",
        "tax_id" => "tax_ids",
        _ => return None,
    };
    Some(format!("/v1/{collection}/{id}"))
}

/// Object types the Stripe API serves by no id: discounts (only embedded in customers and
/// subscriptions) and entitlement summaries (which have no id). Their events can only be
/// applied as the snapshot they carry.
pub const NOT_RETRIEVABLE: [&str; 2] = ["discount", "entitlements.active_entitlement_summary"];

/// Whether the API can serve the current version of `object` (see [`NOT_RETRIEVABLE`]).
pub fn retrievable(object: &Value) -> bool {
    object
        .get("object")
        .and_then(Value::as_str)
        .is_none_or(|t| !NOT_RETRIEVABLE.contains(&t))
}

/// The object type an event of `event_type` carries, for the types the worker handles
/// (a leading `v1.` is ignored). `None` for other types, including sub-resources that
/// share a prefix but are not handled (`customer.source.*`, ...).
pub fn object_type_for_event_type(event_type: &str) -> Option<&'static str> {
    let t = event_type.strip_prefix("v1.").unwrap_or(event_type);
    let (prefix, action) = t.rsplit_once('.')?;
    if action.is_empty() {
        return None;
    }
    match prefix {
        "customer.subscription" => Some("subscription"),
        "customer" => Some("customer"),
        "invoice" => Some("invoice"),
        "invoice_payment" => Some("invoice_payment"),
        "payment_intent" => Some("payment_intent"),
        "charge" => Some("charge"),
        "checkout.session" => Some("checkout.session"),
        "setup_intent" => Some("setup_intent"),
        "payment_method" => Some("payment_method"),
        "subscription_schedule" => Some("subscription_schedule"),
        "product" => Some("product"),
        "price" => Some("price"),
        "coupon" => Some("coupon"),
        "promotion_code" => Some("promotion_code"),
        "customer.discount" => Some("discount"),
        "refund" | "charge.refund" => Some("refund"),
        "charge.dispute" => Some("dispute"),
        "credit_note" => Some("credit_note"),
        "customer.tax_id" => Some("tax_id"),
        "entitlements.active_entitlement_summary" => {
            Some("entitlements.active_entitlement_summary")
        }
        _ => None,
    }
}

/// The envelope a bus delivers to its targets for `entry`:
/// `{version: "0", id, detail-type, source, account, time, region, resources, detail}`,
/// with `time` in RFC 3339 whole seconds, `account` omitted when `None`, and `detail` the
/// parsed JSON object (an error if the entry's detail is not a JSON object).
pub fn envelope_json(
    entry: &BusEntry,
    id: &str,
    time_ms: i64,
    region: &str,
    account: Option<&str>,
) -> Result<Value, EnvelopeError> {
    let detail: Value =
        serde_json::from_str(&entry.detail).map_err(|e| EnvelopeError::InvalidDetail {
            message: e.to_string(),
        })?;
    if !detail.is_object() {
        return Err(wrong("detail", "an object"));
    }
    let mut envelope = Map::new();
    envelope.insert("version".into(), Value::String("0".into()));
    envelope.insert("id".into(), Value::String(id.to_owned()));
    envelope.insert(
        "detail-type".into(),
        Value::String(entry.detail_type.clone()),
    );
    envelope.insert("source".into(), Value::String(entry.source.clone()));
    if let Some(account) = account {
        envelope.insert("account".into(), Value::String(account.to_owned()));
    }
    envelope.insert("time".into(), Value::String(rfc3339_seconds(time_ms)?));
    envelope.insert("region".into(), Value::String(region.to_owned()));
    envelope.insert(
        "resources".into(),
        Value::Array(entry.resources.iter().cloned().map(Value::String).collect()),
    );
    envelope.insert("detail".into(), detail);
    Ok(Value::Object(envelope))
}

/// The entry an envelope was delivered for (the reverse of [`envelope_json`]), for
/// re-publishing envelopes captured from a bus or queue. Needs `source`, `detail-type`
/// and an object `detail`; `resources` is optional. Delivery metadata (`id`, `time`,
/// `replay-name`, ...) is dropped: publishing makes a new delivery.
pub fn entry_from_envelope(envelope: &Value) -> Result<BusEntry, EnvelopeError> {
    let obj = envelope
        .as_object()
        .ok_or_else(|| wrong("envelope", "an object"))?;
    let source = req_str(obj, "source")?;
    let detail_type = req_str(obj, "detail-type")?;
    let detail = match obj.get("detail") {
        None | Some(Value::Null) => return Err(missing("detail")),
        Some(d @ Value::Object(_)) => d,
        Some(_) => return Err(wrong("detail", "an object")),
    };
    let resources = match obj.get("resources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|r| {
                r.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| wrong("resources[]", "a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(wrong("resources", "an array of strings")),
    };
    Ok(BusEntry {
        source: source.to_owned(),
        detail_type: detail_type.to_owned(),
        detail: serialise(detail),
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/stripe/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        serde_json::from_str(&text).expect("fixture is JSON")
    }

    /// A v1 `customer.subscription.updated` event around the real subscription fixture.
    fn subscription_event(api_version: Option<&str>) -> Value {
        json!({
            "id": "evt_1SubUpdated",
            "object": "event",
            "api_version": api_version,
            "created": 1_709_836_076,
            "data": { "object": fixture("subscription.json") },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": "customer.subscription.updated",
        })
    }

    fn detail(entry: &BusEntry) -> Value {
        serde_json::from_str(&entry.detail).expect("detail is JSON")
    }

    #[test]
    fn webhook_snapshot_adds_ingress_fields_to_the_event() {
        let event = fixture("event.json");
        let entry =
            webhook_snapshot_entry(&event, "acme", 1_709_836_076_123, Some("00-abc-def-01"))
                .unwrap();
        assert_eq!(entry.source, WEBHOOK_SOURCE);
        assert_eq!(entry.detail_type, WEBHOOK_DETAIL_TYPE);
        assert!(entry.resources.is_empty());
        let mut expected = event.as_object().unwrap().clone();
        expected.insert("tenant_id".into(), json!("acme"));
        expected.insert("received_at".into(), json!("2024-03-07T18:27:56.123Z"));
        expected.insert("payload_style".into(), json!("snapshot"));
        expected.insert("traceparent".into(), json!("00-abc-def-01"));
        assert_eq!(detail(&entry), Value::Object(expected));
    }

    #[test]
    fn webhook_snapshot_omits_absent_traceparent() {
        let entry = webhook_snapshot_entry(&fixture("event.json"), "acme", 0, None).unwrap();
        let d = detail(&entry);
        assert!(d.get("traceparent").is_none());
        assert_eq!(d["received_at"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn webhook_snapshot_rejects_non_events_and_bad_tenants() {
        assert_eq!(
            webhook_snapshot_entry(&json!([1]), "acme", 0, None),
            Err(wrong("event", "an object"))
        );
        assert_eq!(
            webhook_snapshot_entry(&json!({"type": "x"}), "acme", 0, None),
            Err(missing("id"))
        );
        assert_eq!(
            webhook_snapshot_entry(&json!({"id": 5, "type": "x"}), "acme", 0, None),
            Err(wrong("id", "a string"))
        );
        assert!(matches!(
            webhook_snapshot_entry(&fixture("event.json"), "a#b", 0, None),
            Err(EnvelopeError::InvalidValue { field, .. }) if field == "tenant_id"
        ));
    }

    #[test]
    fn webhook_thin_takes_item_periods_on_new_api_versions() {
        let event = subscription_event(Some("2025-03-31.basil"));
        let entry = webhook_thin_entry(&event, "acme", 1_000, None).unwrap();
        assert_eq!(entry.source, WEBHOOK_SOURCE);
        assert_eq!(entry.detail_type, WEBHOOK_DETAIL_TYPE);
        assert_eq!(
            detail(&entry),
            json!({
                "id": "evt_1SubUpdated",
                "type": "customer.subscription.updated",
                "created": 1_709_836_076,
                "livemode": false,
                "tenant_id": "acme",
                "received_at": "1970-01-01T00:00:01.000Z",
                "payload_style": "thin",
                "object_id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
                "object_type": "subscription",
                "customer_id": "cus_QXg1o8vcGmoR32",
                "status": "active",
                "current_period_start": 1_896_570_518,
                "current_period_end": 976_287_773,
            })
        );
    }

    #[test]
    fn webhook_thin_prefers_top_level_periods_on_old_api_versions() {
        let mut event = subscription_event(Some("2024-06-20"));
        event["data"]["object"]["current_period_start"] = json!(100);
        event["data"]["object"]["current_period_end"] = json!(200);
        let d = detail(&webhook_thin_entry(&event, "acme", 0, Some("tp")).unwrap());
        assert_eq!(d["current_period_start"], 100);
        assert_eq!(d["current_period_end"], 200);
        assert_eq!(d["traceparent"], "tp");
        // New versions look at the items first even when a top-level value exists.
        event["api_version"] = json!("2025-04-30.basil");
        let d = detail(&webhook_thin_entry(&event, "acme", 0, None).unwrap());
        assert_eq!(d["current_period_start"], 1_896_570_518);
    }

    #[test]
    fn webhook_thin_nulls_fields_that_do_not_apply() {
        let mut event = fixture("event.json");
        event["account"] = json!("acct_1");
        let d = detail(&webhook_thin_entry(&event, "acme", 0, None).unwrap());
        assert_eq!(d["object_type"], "plan");
        assert_eq!(d["object_id"], "price_1PgafmB7WZ01zgkW6dKueIc5");
        assert_eq!(d["customer_id"], Value::Null);
        assert_eq!(d["status"], Value::Null);
        assert_eq!(d["current_period_start"], Value::Null);
        assert_eq!(d["current_period_end"], Value::Null);
        assert_eq!(d["account"], "acct_1");
    }

    #[test]
    fn webhook_thin_customer_is_the_object_itself_or_expanded() {
        let customer = fixture("customer.json");
        let customer_id = customer["id"].clone();
        let event = json!({"id": "evt_1", "type": "customer.updated", "created": 1,
            "livemode": true, "data": {"object": customer}});
        let d = detail(&webhook_thin_entry(&event, "acme", 0, None).unwrap());
        assert_eq!(d["customer_id"], customer_id);

        let mut invoice = fixture("invoice.json");
        invoice["customer"] = json!({"id": "cus_expanded", "object": "customer"});
        let event = json!({"id": "evt_2", "type": "invoice.paid", "created": 1,
            "livemode": true, "data": {"object": invoice}});
        let d = detail(&webhook_thin_entry(&event, "acme", 0, None).unwrap());
        assert_eq!(d["customer_id"], "cus_expanded");
    }

    #[test]
    fn webhook_thin_requires_the_object() {
        let mut event = fixture("event.json");
        event["data"] = json!({});
        assert_eq!(
            webhook_thin_entry(&event, "acme", 0, None),
            Err(missing("data.object"))
        );
        event["data"] = json!({"object": {"object": "plan"}});
        assert_eq!(
            webhook_thin_entry(&event, "acme", 0, None),
            Err(missing("data.object.id"))
        );
        event["data"] = json!({"object": "sub_1"});
        assert_eq!(
            webhook_thin_entry(&event, "acme", 0, None),
            Err(wrong("data.object", "an object"))
        );
    }

    #[test]
    fn partner_snapshot_matches_the_real_envelope() {
        let real = fixture("eventbridge_snapshot_envelope.json");
        let entry = partner_snapshot_entry(&real["detail"], "ed_123").unwrap();
        assert_eq!(entry.source, real["source"]);
        assert_eq!(entry.detail_type, real["detail-type"]);
        let envelope = envelope_json(
            &entry,
            "17e8dff5-d6cd-3770-ace9-aeac02b6ac3f",
            1_709_836_076_000,
            "us-west-2",
            Some("506417113029"),
        )
        .unwrap();
        assert_eq!(envelope, real);
    }

    #[test]
    fn partner_snapshot_rejects_bad_destinations() {
        let event = fixture("event.json");
        assert!(partner_snapshot_entry(&event, "").is_err());
        assert!(partner_snapshot_entry(&event, "ed_1/../x").is_err());
    }

    #[test]
    fn partner_thin_builds_a_v2_core_event() {
        let mut event = subscription_event(None);
        event["account"] = json!("acct_123");
        let entry = partner_thin_entry(&event, "ed_123").unwrap();
        assert_eq!(entry.source, "aws.partner/stripe.com/ed_123");
        assert_eq!(entry.detail_type, "v1.customer.subscription.updated");
        assert_eq!(
            detail(&entry),
            json!({
                "id": "evt_thin_1SubUpdated",
                "object": "v2.core.event",
                "type": "v1.customer.subscription.updated",
                "created": "2024-03-07T18:27:56.000Z",
                "livemode": false,
                "context": "acct_123",
                "related_object": {
                    "id": "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
                    "type": "subscription",
                    "url": "/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
                },
                "snapshot_event": "evt_1SubUpdated",
            })
        );
    }

    #[test]
    fn partner_thin_has_the_real_thin_envelope_shape() {
        // The real thin fixture is a v2-native ping; ours must carry the same keys (plus
        // `snapshot_event`) with the same types.
        let real = fixture("eventbridge_thin_envelope.json");
        let entry = partner_thin_entry(&subscription_event(None), "ed_123").unwrap();
        let ours = envelope_json(&entry, "x", 1_709_836_076_000, "us-west-2", Some("1")).unwrap();
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(keys(&ours), keys(&real));
        let mut real_detail_keys = keys(&real["detail"]);
        real_detail_keys.push("snapshot_event".into());
        real_detail_keys.sort();
        assert_eq!(keys(&ours["detail"]), real_detail_keys);
        assert_eq!(
            keys(&ours["detail"]["related_object"]),
            keys(&real["detail"]["related_object"])
        );
        assert_eq!(ours["detail"]["context"], Value::Null);
    }

    #[test]
    fn partner_thin_needs_a_fetchable_object() {
        assert_eq!(
            partner_thin_entry(&fixture("event.json"), "ed_123"),
            Err(EnvelopeError::UnsupportedObjectType {
                object_type: "plan".into()
            })
        );
    }

    #[test]
    fn api_paths_cover_the_handled_objects() {
        let cases = [
            ("subscription", "sub_1", "/v1/subscriptions/sub_1"),
            ("invoice", "in_1", "/v1/invoices/in_1"),
            ("invoice_payment", "inpay_1", "/v1/invoice_payments/inpay_1"),
            ("payment_intent", "pi_1", "/v1/payment_intents/pi_1"),
            ("charge", "ch_1", "/v1/charges/ch_1"),
            ("customer", "cus_1", "/v1/customers/cus_1"),
            ("checkout.session", "cs_1", "/v1/checkout/sessions/cs_1"),
            ("setup_intent", "seti_1", "/v1/setup_intents/seti_1"),
            ("payment_method", "pm_1", "/v1/payment_methods/pm_1"),
            ("subscription_item", "si_1", "/v1/subscription_items/si_1"),
            ("refund", "re_1", "/v1/refunds/re_1"),
            ("tax_id", "txi_1", "/v1/tax_ids/txi_1"),
            (
                "subscription_schedule",
                "sub_sched_1",
                "/v1/subscription_schedules/sub_sched_1",
            ),
        ];
        for (object_type, id, path) in cases {
            assert_eq!(api_path(object_type, id).as_deref(), Some(path));
        }
        assert_eq!(api_path("plan", "plan_1"), None);
        assert_eq!(api_path("customer", ""), None);
        assert_eq!(api_path("customer", "cus_1/../../v1/charges"), None);
        assert_eq!(api_path("customer", "cus_1?expand=x"), None);
    }

    #[test]
    fn discounts_and_entitlement_summaries_are_not_retrievable() {
        assert!(!retrievable(&json!({"id": "di_1", "object": "discount"})));
        assert!(!retrievable(
            &json!({"object": "entitlements.active_entitlement_summary"})
        ));
        assert!(retrievable(&json!({"id": "re_1", "object": "refund"})));
        assert!(retrievable(&json!({"id": "x"})));
    }

    #[test]
    fn object_types_of_event_types() {
        let cases = [
            ("customer.subscription.updated", Some("subscription")),
            ("v1.customer.subscription.deleted", Some("subscription")),
            ("customer.created", Some("customer")),
            ("customer.source.created", None),
            ("customer.discount.created", Some("discount")),
            ("invoice.paid", Some("invoice")),
            ("invoice_payment.paid", Some("invoice_payment")),
            ("invoiceitem.created", None),
            ("payment_intent.succeeded", Some("payment_intent")),
            ("charge.succeeded", Some("charge")),
            ("charge.dispute.created", Some("dispute")),
            ("charge.refund.updated", Some("refund")),
            ("checkout.session.completed", Some("checkout.session")),
            ("setup_intent.succeeded", Some("setup_intent")),
            ("payment_method.attached", Some("payment_method")),
            ("plan.created", None),
            ("v2.core.event_destination.ping", None),
            ("customer", None),
            ("customer.", None),
            ("", None),
        ];
        for (event_type, expected) in cases {
            assert_eq!(
                object_type_for_event_type(event_type),
                expected,
                "{event_type}"
            );
        }
    }

    #[test]
    fn envelope_omits_absent_account_and_rejects_non_object_details() {
        let entry = BusEntry {
            source: "s".into(),
            detail_type: "t".into(),
            detail: "{\"a\":1}".into(),
            resources: vec!["arn:x".into()],
        };
        let env = envelope_json(&entry, "id1", 1_500, "eu-west-1", None).unwrap();
        assert!(env.get("account").is_none());
        assert_eq!(env["time"], "1970-01-01T00:00:01Z");
        assert_eq!(env["resources"], json!(["arn:x"]));
        assert_eq!(env["version"], "0");

        let not_object = BusEntry {
            detail: "[1]".into(),
            ..entry.clone()
        };
        assert_eq!(
            envelope_json(&not_object, "id", 0, "r", None),
            Err(wrong("detail", "an object"))
        );
        let not_json = BusEntry {
            detail: "{".into(),
            ..entry
        };
        assert!(matches!(
            envelope_json(&not_json, "id", 0, "r", None),
            Err(EnvelopeError::InvalidDetail { .. })
        ));
    }

    #[test]
    fn envelope_round_trips_through_entry_from_envelope() {
        for name in [
            "eventbridge_snapshot_envelope.json",
            "eventbridge_thin_envelope.json",
        ] {
            let real = fixture(name);
            let entry = entry_from_envelope(&real).unwrap();
            assert_eq!(entry.source, real["source"]);
            assert_eq!(entry.detail_type, real["detail-type"]);
            assert_eq!(detail(&entry), real["detail"]);
            let again = envelope_json(
                &entry,
                real["id"].as_str().unwrap(),
                1_709_836_076_000,
                "us-west-2",
                Some("506417113029"),
            )
            .unwrap();
            assert_eq!(again, real);
        }
    }

    #[test]
    fn a_listed_v2_event_becomes_what_a_thin_destination_delivers() {
        // The real thin delivery's detail is the v2 event as the API lists it.
        let real = fixture("eventbridge_thin_envelope.json");
        let entry = partner_v2_event_entry(&real["detail"], "ed_123").unwrap();
        assert_eq!(entry, entry_from_envelope(&real).unwrap());
        let mut snapshot = fixture("event.json");
        assert_eq!(
            partner_v2_event_entry(&snapshot, "ed_123"),
            Err(invalid("object", "must be `v2.core.event`"))
        );
        snapshot["object"] = json!("v2.core.event");
        assert!(partner_v2_event_entry(&snapshot, "ed/1").is_err());
    }

    #[test]
    fn entry_from_envelope_names_what_is_missing() {
        assert_eq!(
            entry_from_envelope(&json!({"detail-type": "t", "detail": {}})),
            Err(missing("source"))
        );
        assert_eq!(
            entry_from_envelope(&json!({"source": "s", "detail": {}})),
            Err(missing("detail-type"))
        );
        assert_eq!(
            entry_from_envelope(&json!({"source": "s", "detail-type": "t"})),
            Err(missing("detail"))
        );
        assert_eq!(
            entry_from_envelope(&json!({"source": "s", "detail-type": "t", "detail": "{}"})),
            Err(wrong("detail", "an object"))
        );
        assert_eq!(
            entry_from_envelope(
                &json!({"source": "s", "detail-type": "t", "detail": {}, "resources": [1]})
            ),
            Err(wrong("resources[]", "a string"))
        );
    }

    #[test]
    fn timestamps_format_in_utc() {
        assert_eq!(rfc3339_seconds(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(-1).unwrap(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(1_709_836_076_005).unwrap(),
            "2024-03-07T18:27:56.005Z"
        );
        assert!(rfc3339_seconds(i64::MAX).is_err());
        assert!(rfc3339_seconds(i64::MIN).is_err());
    }
}
