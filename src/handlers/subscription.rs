//! The subscription handler: `customer.subscription.*` events become one `subscription`
//! record each.

use serde_json::{Map, Value, json};

use super::fields::{
    copy, error, expandable_id, flag, object, one_segment_after, reference, required_id,
};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "subscription";

/// Every subscription status Stripe documents. Anything else means the object is not
/// what we think it is, so it is rejected rather than stored.
pub const STATUSES: [&str; 8] = [
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
];

/// Turns subscription objects into `subscription` records.
///
/// Doc fields: `id`, `customer`, `status`, `items` (`[{id, price, product, quantity}]`),
/// `discounts` (the ids of the discounts applied to it), `current_period_start`,
/// `current_period_end`, `cancel_at_period_end`, `cancel_at`,
/// `canceled_at`, `trial_end`, `created`, `deleted`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SubscriptionHandler;

impl Handler for SubscriptionHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn domain(&self) -> Domain {
        Domain::Subscription
    }

    /// Every `customer.subscription.<event>` carries a subscription object (created,
    /// updated, deleted, paused, resumed, trial_will_end, pending_update_*).
    fn handles(&self, event_type: &str) -> bool {
        one_segment_after(event_type, "customer.subscription.")
    }

    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        Ok(vec![raw::attach(
            subscription_change(event_type, object)?,
            object,
        )])
    }
}

fn subscription_change(event_type: &str, value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "subscription")?;
    let id = required_id(NAME, map, "subscription")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let status = match map.get("status") {
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => s.clone(),
        Some(other) => {
            return Err(error(
                NAME,
                format!("subscription {id} has an unknown status {other}"),
            ));
        }
        None => return Err(error(NAME, format!("subscription {id} has no status"))),
    };
    let items = items(map)?;
    let (period_start, period_end) = current_period(map);
    // A canceled subscription has ended for good (Stripe sends
    // customer.subscription.deleted exactly then), so `deleted` is read from the object
    // as well as from the event type: a thin event hydrated after the cancellation then
    // gives the same record as the deleted snapshot, whatever its own type.
    let deleted = event_type == "customer.subscription.deleted" || status == "canceled";
    let doc = json!({
        "id": id,
        "customer": customer,
        "status": status,
        "items": items,
        "discounts": discounts(map)?,
        "current_period_start": period_start,
        "current_period_end": period_end,
        "cancel_at_period_end": flag(NAME, map, "cancel_at_period_end")?,
        "cancel_at": copy(map, "cancel_at"),
        "canceled_at": copy(map, "canceled_at"),
        "trial_end": copy(map, "trial_end"),
        "created": copy(map, "created"),
        "deleted": deleted,
    });
    Ok(StateChange {
        kind: kinds::SUBSCRIPTION.to_owned(),
        id,
        customer,
        doc,
    })
}

/// `items.data[]` reduced to what billing questions need. A price may be expanded (the
/// default in events) or an id; older objects carry a `plan` instead.
fn items(map: &Map<String, Value>) -> Result<Vec<Value>, HandlerError> {
    let Some(data) = map.get("items").and_then(|items| items.get("data")) else {
        return Ok(Vec::new());
    };
    let data = data
        .as_array()
        .ok_or_else(|| error(NAME, "`items.data` is not a list"))?;
    data.iter()
        .map(|item| {
            let item = item
                .as_object()
                .ok_or_else(|| error(NAME, "subscription item is not an object"))?;
            let id = required_id(NAME, item, "subscription item")?;
            let priced = match item.get("price") {
                Some(Value::Null) | None => item.get("plan"),
                price => price,
            };
            let price = reference(NAME, priced, "items.data[].price")?;
            let product = match priced {
                Some(Value::Object(p)) => expandable_id(NAME, p, "product")?,
                _ => None,
            };
            Ok(json!({
                "id": id,
                "price": price,
                "product": product,
                "quantity": copy(item, "quantity"),
            }))
        })
        .collect()
}

/// The subscription's discounts, as ids: `discounts` (ids or expanded objects), else the
/// id of the legacy single `discount` object, when it has one (old discounts had none,
/// which must not make the subscription unreadable). The discounts themselves are
/// records of their own (`customer.discount.*` events).
fn discounts(map: &Map<String, Value>) -> Result<Vec<String>, HandlerError> {
    match map.get("discounts") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|d| reference(NAME, Some(d), "discounts[]").transpose())
            .collect(),
        Some(Value::Null) | None => Ok(map
            .get("discount")
            .and_then(|d| d.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .into_iter()
            .collect()),
        Some(other) => Err(error(NAME, format!("`discounts` is not a list: {other}"))),
    }
}

/// The billing period. Since API version 2025-03-31 it lives on each item, so the
/// subscription's period is the earliest item start to the latest item end. The handler
/// sees the object, not the event's API version, so it goes by shape: item periods when
/// any item has one, else the legacy top-level fields.
fn current_period(map: &Map<String, Value>) -> (Option<i64>, Option<i64>) {
    let items = map
        .get("items")
        .and_then(|items| items.get("data"))
        .and_then(Value::as_array);
    let mut start: Option<i64> = None;
    let mut end: Option<i64> = None;
    for item in items.into_iter().flatten() {
        if let Some(s) = item.get("current_period_start").and_then(Value::as_i64) {
            start = Some(start.map_or(s, |m| m.min(s)));
        }
        if let Some(e) = item.get("current_period_end").and_then(Value::as_i64) {
            end = Some(end.map_or(e, |m| m.max(e)));
        }
    }
    if start.is_none() && end.is_none() {
        start = map.get("current_period_start").and_then(Value::as_i64);
        end = map.get("current_period_end").and_then(Value::as_i64);
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(extra: Value) -> Value {
        let mut base = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "items": {"object": "list", "data": []}
        });
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    }

    #[test]
    fn period_spans_items_on_new_api_versions() {
        let v = sub(json!({"items": {"data": [
            {"id": "si_1", "price": {"id": "price_1", "product": {"id": "prod_1"}}, "quantity": 2,
             "current_period_start": 200, "current_period_end": 500},
            {"id": "si_2", "price": "price_2", "quantity": null,
             "current_period_start": 100, "current_period_end": 400}
        ]}, "current_period_start": 1, "current_period_end": 2}));
        let changes = SubscriptionHandler
            .changes("customer.subscription.updated", &v)
            .expect("valid subscription");
        let doc = &changes[0].doc;
        assert_eq!(doc["current_period_start"], 100);
        assert_eq!(doc["current_period_end"], 500);
        assert_eq!(doc["items"][0]["product"], "prod_1");
        assert_eq!(doc["items"][1]["price"], "price_2");
        assert_eq!(doc["items"][1]["product"], Value::Null);
    }

    #[test]
    fn period_falls_back_to_top_level_on_old_api_versions() {
        let v = sub(json!({"current_period_start": 10, "current_period_end": 20}));
        let changes = SubscriptionHandler
            .changes("customer.subscription.updated", &v)
            .expect("valid subscription");
        assert_eq!(changes[0].doc["current_period_start"], 10);
        assert_eq!(changes[0].doc["current_period_end"], 20);
    }

    #[test]
    fn unknown_status_and_missing_id_are_permanent_errors() {
        let bad = sub(json!({"status": "bogus"}));
        assert!(
            SubscriptionHandler
                .changes("customer.subscription.updated", &bad)
                .is_err()
        );
        let mut no_id = sub(json!({}));
        if let Some(m) = no_id.as_object_mut() {
            m.remove("id");
        }
        assert!(
            SubscriptionHandler
                .changes("customer.subscription.updated", &no_id)
                .is_err()
        );
    }

    #[test]
    fn handles_only_subscription_events() {
        assert!(SubscriptionHandler.handles("customer.subscription.trial_will_end"));
        assert!(!SubscriptionHandler.handles("customer.updated"));
        assert!(!SubscriptionHandler.handles("customer.subscription."));
    }
}
