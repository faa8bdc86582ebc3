//! The read API's JSON documents. Keys come out in a fixed order: structs serialise in
//! field order and documents' own maps are sorted, so the same state gives the same bytes.

use serde::Serialize;
use serde_json::Value;

use crate::backend::StateRecord;
use crate::state_view::CustomerStatus;

/// The kind of a customer's entitlements record: id = the customer id, the active
/// features in the document's `features` (Stripe's
/// `entitlements.active_entitlement_summary.updated`).
pub const ENTITLEMENT_SUMMARY: &str = "entitlement_summary";

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectView {
    /// Always `record`, so a client can tell documents apart as with Stripe's `object`.
    pub object: &'static str,
    /// The tenant that owns it.
    pub tenant: String,
    /// `subscription`, `invoice`, ...
    pub kind: String,
    /// The Stripe object id.
    pub id: String,
    /// The customer it belongs to, when it has one.
    pub customer: Option<String>,
    /// The as-of time of the stored version, ms since the epoch.
    pub as_of_ms: i64,
    /// The record's fields, as the handler shaped them.
    pub doc: Value,
}

impl From<StateRecord> for ObjectView {
    fn from(r: StateRecord) -> Self {
        ObjectView {
            object: "record",
            tenant: r.tenant,
            kind: r.kind,
            id: r.id,
            customer: r.customer,
            as_of_ms: r.as_of_ms,
            doc: r.doc,
        }
    }
}

/// A page of a list, shaped like Stripe's list objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListView {
    /// Always `list`.
    pub object: &'static str,
    /// The records of this page, in id order.
    pub data: Vec<ObjectView>,
    /// Whether a further page exists: ask again with `starting_after` = the last id.
    pub has_more: bool,
    /// The list's path, without the query.
    pub url: String,
}

/// A customer's billing status: [`CustomerStatus`] (the customer, every subscription,
/// the latest invoice, payment methods, payments) and the active entitlements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    /// Always `customer_status`.
    pub object: &'static str,
    /// What `stripe-worker status --json` shows for the customer.
    #[serde(flatten)]
    pub status: CustomerStatus,
    /// The `features` of the customer's entitlement summary; `[]` without one.
    pub entitlements: Value,
}

impl StatusView {
    /// The view of `status` with the customer's entitlement summary record, if any.
    pub fn new(status: CustomerStatus, entitlements: Option<&StateRecord>) -> Self {
        let features = entitlements
            .and_then(|r| r.doc.get("features"))
            .filter(|f| f.is_array())
            .cloned()
            .unwrap_or_else(|| Value::Array(Vec::new()));
        StatusView {
            object: "customer_status",
            status,
            entitlements: features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_view::customer_status;
    use serde_json::json;

    fn record(kind: &str, id: &str, doc: Value) -> StateRecord {
        StateRecord {
            tenant: "acme".into(),
            kind: kind.into(),
            id: id.into(),
            customer: Some("cus_1".into()),
            as_of_ms: 1,
            tiebreak: "evt_1".into(),
            doc,
        }
    }

    #[test]
    fn status_keys_are_in_a_fixed_order_and_entitlements_default_to_empty() {
        let records = [record(
            "customer",
            "cus_1",
            json!({"email": "a@example.com"}),
        )];
        let view = StatusView::new(customer_status(&records), None);
        let text = serde_json::to_string(&view).expect("serialises");
        let keys = [
            "\"object\"",
            "\"tenant\"",
            "\"customer_id\"",
            "\"customer\"",
            "\"subscriptions\"",
            "\"latest_invoice\"",
            "\"entitlements\":[]",
        ];
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");

        let summary = record(ENTITLEMENT_SUMMARY, "cus_1", json!({"features": ["pro"]}));
        let view = StatusView::new(customer_status(&records), Some(&summary));
        assert_eq!(view.entitlements, json!(["pro"]));
    }
}
