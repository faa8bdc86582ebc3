//! The customer terms handler: what a customer is billed under besides its
//! subscriptions: its discounts, its tax ids and its active entitlements.

use serde_json::{Map, Value, json};

use super::fields::{copy, error, expandable_id, flag, object, one_segment_after, required_id};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "customer_terms";

/// The one entitlements event: its object is the customer's whole summary.
pub const ENTITLEMENT_SUMMARY_UPDATED: &str = "entitlements.active_entitlement_summary.updated";

/// The Stripe object type of an entitlement summary.
pub const ENTITLEMENT_SUMMARY_OBJECT: &str = "entitlements.active_entitlement_summary";

/// Turns discounts, tax ids and entitlement summaries into `discount`, `tax_id` and
/// `entitlement_summary` records, each with the whole object as `raw` ([`super::raw`]).
///
/// Doc fields:
/// - `customer.discount.<event>` → `discount`: `id`, `customer`, `subscription` (set
///   for a subscription's discount, null for one on the customer), `subscription_item`,
///   `invoice`, `coupon` (its id), `promotion_code`, `start`, `end`, `deleted`. Stripe
///   sends these events for customer and subscription discounts alike;
/// - `customer.tax_id.<event>` → `tax_id`: `id`, `customer`, `type` (`eu_vat`, ...),
///   `value`, `country`, `verification_status`, `created`, `deleted`;
/// - `entitlements.active_entitlement_summary.updated` → `entitlement_summary`, whose id
///   is the customer id: `id`, `customer`, `features` (the active features'
///   `lookup_key`s, sorted), `complete` (false when Stripe cut the embedded list short,
///   so `features` may miss some).
#[derive(Debug, Default, Clone, Copy)]
pub struct CustomerTermsHandler;

/// Which object an event type of this handler carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermsObject {
    Discount,
    TaxId,
    EntitlementSummary,
}

fn classify(event_type: &str) -> Option<TermsObject> {
    if one_segment_after(event_type, "customer.discount.") {
        Some(TermsObject::Discount)
    } else if one_segment_after(event_type, "customer.tax_id.") {
        Some(TermsObject::TaxId)
    } else if event_type == ENTITLEMENT_SUMMARY_UPDATED {
        Some(TermsObject::EntitlementSummary)
    } else {
        None
    }
}

impl Handler for CustomerTermsHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn domain(&self) -> Domain {
        Domain::Customer
    }

    fn handles(&self, event_type: &str) -> bool {
        classify(event_type).is_some()
    }

    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        let deleted = event_type.ends_with(".deleted");
        let change = match classify(event_type) {
            Some(TermsObject::Discount) => discount(object, deleted)?,
            Some(TermsObject::TaxId) => tax_id(object, deleted)?,
            Some(TermsObject::EntitlementSummary) => entitlement_summary(object)?,
            None => return Ok(Vec::new()),
        };
        Ok(vec![raw::attach(change, object)])
    }
}

fn discount(value: &Value, deleted: bool) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "discount")?;
    let id = required_id(NAME, map, "discount")?;
    let customer = expandable_id(NAME, map, "customer")?;
    // API version 2025-09-30.clover moved the coupon to `source: {type: "coupon", coupon}`;
    // earlier versions embed the coupon object at the top level.
    let coupon = match map.get("source").and_then(Value::as_object) {
        Some(source) => expandable_id(NAME, source, "coupon")?,
        None => expandable_id(NAME, map, "coupon")?,
    };
    let doc = json!({
        "id": id,
        "customer": customer,
        "subscription": expandable_id(NAME, map, "subscription")?,
        "subscription_item": expandable_id(NAME, map, "subscription_item")?,
        "invoice": expandable_id(NAME, map, "invoice")?,
        "coupon": coupon,
        "promotion_code": expandable_id(NAME, map, "promotion_code")?,
        "start": copy(map, "start"),
        "end": copy(map, "end"),
        "deleted": deleted || flag(NAME, map, "deleted")?,
    });
    Ok(StateChange {
        kind: kinds::DISCOUNT.to_owned(),
        id,
        customer,
        doc,
    })
}

fn tax_id(value: &Value, deleted: bool) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "tax_id")?;
    let id = required_id(NAME, map, "tax id")?;
    // `customer` is the older field; `owner: {type: "customer", customer}` the newer one.
    let customer = match expandable_id(NAME, map, "customer")? {
        Some(c) => Some(c),
        None => match map.get("owner").and_then(Value::as_object) {
            Some(owner) => expandable_id(NAME, owner, "customer")?,
            None => None,
        },
    };
    let verification_status = map
        .get("verification")
        .and_then(|v| v.get("status"))
        .cloned()
        .unwrap_or(Value::Null);
    let doc = json!({
        "id": id,
        "customer": customer,
        "type": copy(map, "type"),
        "value": copy(map, "value"),
        "country": copy(map, "country"),
        "verification_status": verification_status,
        "created": copy(map, "created"),
        "deleted": deleted || flag(NAME, map, "deleted")?,
    });
    Ok(StateChange {
        kind: kinds::TAX_ID.to_owned(),
        id,
        customer,
        doc,
    })
}

fn entitlement_summary(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, ENTITLEMENT_SUMMARY_OBJECT)?;
    let customer = expandable_id(NAME, map, "customer")?
        .ok_or_else(|| error(NAME, "entitlement summary names no customer"))?;
    let (features, complete) = features(map)?;
    let doc = json!({
        "id": customer,
        "customer": customer,
        "features": features,
        "complete": complete,
    });
    Ok(StateChange {
        kind: kinds::ENTITLEMENT_SUMMARY.to_owned(),
        id: customer.clone(),
        customer: Some(customer),
        doc,
    })
}

/// The sorted, distinct `lookup_key`s of `entitlements.data`, and whether the list is
/// whole (`has_more` false).
fn features(map: &Map<String, Value>) -> Result<(Vec<String>, bool), HandlerError> {
    let Some(list) = map.get("entitlements").filter(|l| !l.is_null()) else {
        return Ok((Vec::new(), true));
    };
    let data = list
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| error(NAME, "`entitlements.data` is not a list"))?;
    let mut keys = data
        .iter()
        .map(|e| match e.get("lookup_key") {
            Some(Value::String(k)) => Ok(k.clone()),
            other => Err(error(
                NAME,
                format!("active entitlement without a string `lookup_key`: {other:?}"),
            )),
        })
        .collect::<Result<Vec<String>, HandlerError>>()?;
    keys.sort_unstable();
    keys.dedup();
    let complete = list.get("has_more").and_then(Value::as_bool) != Some(true);
    Ok((keys, complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify("customer.discount.deleted"),
            Some(TermsObject::Discount)
        );
        assert_eq!(
            classify("customer.tax_id.updated"),
            Some(TermsObject::TaxId)
        );
        assert_eq!(
            classify(ENTITLEMENT_SUMMARY_UPDATED),
            Some(TermsObject::EntitlementSummary)
        );
        assert_eq!(classify("customer.updated"), None);
        assert_eq!(classify("customer.source.created"), None);
        assert_eq!(
            classify("entitlements.active_entitlement_summary.created"),
            None
        );
    }

    #[test]
    fn discount_coupon_is_read_from_either_place() {
        let old = json!({"id": "di_1", "object": "discount", "customer": "cus_1",
                         "coupon": {"id": "co_1", "object": "coupon"}, "subscription": "sub_1"});
        let new = json!({"id": "di_1", "object": "discount", "customer": "cus_1",
                         "source": {"type": "coupon", "coupon": "co_1"}});
        for v in [old, new] {
            let c = CustomerTermsHandler
                .changes("customer.discount.created", &v)
                .expect("valid");
            assert_eq!(c[0].doc["coupon"], "co_1");
            assert_eq!(c[0].doc["deleted"], false);
        }
    }

    #[test]
    fn tax_id_customer_comes_from_the_owner_when_absent() {
        let v = json!({"id": "txi_1", "object": "tax_id", "customer": null,
                       "owner": {"type": "customer", "customer": "cus_9"},
                       "verification": {"status": "verified"}});
        let c = CustomerTermsHandler
            .changes("customer.tax_id.deleted", &v)
            .expect("valid");
        assert_eq!(c[0].customer.as_deref(), Some("cus_9"));
        assert_eq!(c[0].doc["verification_status"], "verified");
        assert_eq!(c[0].doc["deleted"], true);
    }

    #[test]
    fn summary_features_are_sorted_lookup_keys() {
        let v = json!({"object": ENTITLEMENT_SUMMARY_OBJECT, "customer": "cus_1",
            "entitlements": {"object": "list", "has_more": true, "data": [
                {"id": "ent_2", "lookup_key": "sso"}, {"id": "ent_1", "lookup_key": "api"}]}});
        let c = CustomerTermsHandler
            .changes(ENTITLEMENT_SUMMARY_UPDATED, &v)
            .expect("valid");
        assert_eq!(c[0].id, "cus_1");
        assert_eq!(c[0].doc["features"], json!(["api", "sso"]));
        assert_eq!(c[0].doc["complete"], false);
        let no_customer = json!({"object": ENTITLEMENT_SUMMARY_OBJECT, "entitlements": null});
        assert!(
            CustomerTermsHandler
                .changes(ENTITLEMENT_SUMMARY_UPDATED, &no_customer)
                .is_err()
        );
    }
}
