//! The catalogue handler: products, prices, coupons and promotion codes, what
//! subscriptions are priced and discounted with.

use serde_json::{Value, json};

use super::fields::{copy, expandable_id, flag, object, one_segment_after, required_id};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "catalog";

/// Turns catalogue objects into `product`, `price`, `coupon` and `promotion_code`
/// records, each with the whole object as `raw` ([`super::raw`]). None of them belongs to
/// a customer, except a promotion code restricted to one.
///
/// Doc fields:
/// - `product.<event>` → `product`: `id`, `name`, `active`, `default_price`,
///   `description`, `created`, `updated`, `deleted`;
/// - `price.<event>` → `price`: `id`, `product`, `active`, `currency`, `unit_amount`,
///   `type`, `interval` and `interval_count` (of `recurring`, null for one-time prices),
///   `lookup_key`, `nickname`, `created`, `deleted`;
/// - `coupon.<event>` → `coupon`: `id`, `name`, `percent_off`, `amount_off`, `currency`,
///   `duration`, `duration_in_months`, `valid`, `times_redeemed`, `max_redemptions`,
///   `redeem_by`, `created`, `deleted`;
/// - `promotion_code.<event>` → `promotion_code`: `id`, `code`, `coupon` (its id),
///   `customer`, `active`, `expires_at`, `max_redemptions`, `times_redeemed`, `created`.
///
/// `deleted` is true on the `.deleted` event (whose object is the last full version) and
/// when the object itself says so (a deleted stub fetched for a thin event).
#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogHandler;

/// Which object an event type of this handler carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatalogObject {
    Product,
    Price,
    Coupon,
    PromotionCode,
}

fn classify(event_type: &str) -> Option<CatalogObject> {
    [
        ("product.", CatalogObject::Product),
        ("price.", CatalogObject::Price),
        ("coupon.", CatalogObject::Coupon),
        ("promotion_code.", CatalogObject::PromotionCode),
    ]
    .into_iter()
    .find(|(prefix, _)| one_segment_after(event_type, prefix))
    .map(|(_, o)| o)
}

impl Handler for CatalogHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn domain(&self) -> Domain {
        Domain::Subscription
    }

    fn handles(&self, event_type: &str) -> bool {
        classify(event_type).is_some()
    }

    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        let deleted = event_type.ends_with(".deleted");
        let change = match classify(event_type) {
            Some(CatalogObject::Product) => product(object, deleted)?,
            Some(CatalogObject::Price) => price(object, deleted)?,
            Some(CatalogObject::Coupon) => coupon(object, deleted)?,
            Some(CatalogObject::PromotionCode) => promotion_code(object)?,
            None => return Ok(Vec::new()),
        };
        Ok(vec![raw::attach(change, object)])
    }
}

fn product(value: &Value, deleted: bool) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "product")?;
    let id = required_id(NAME, map, "product")?;
    let doc = json!({
        "id": id,
        "name": copy(map, "name"),
        "active": copy(map, "active"),
        "default_price": expandable_id(NAME, map, "default_price")?,
        "description": copy(map, "description"),
        "created": copy(map, "created"),
        "updated": copy(map, "updated"),
        "deleted": deleted || flag(NAME, map, "deleted")?,
    });
    Ok(StateChange {
        kind: kinds::PRODUCT.to_owned(),
        id,
        customer: None,
        doc,
    })
}

fn price(value: &Value, deleted: bool) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "price")?;
    let id = required_id(NAME, map, "price")?;
    let recurring = map.get("recurring").and_then(Value::as_object);
    let from_recurring = |field: &str| recurring.map_or(Value::Null, |r| copy(r, field));
    let doc = json!({
        "id": id,
        "product": expandable_id(NAME, map, "product")?,
        "active": copy(map, "active"),
        "currency": copy(map, "currency"),
        "unit_amount": copy(map, "unit_amount"),
        "type": copy(map, "type"),
        "interval": from_recurring("interval"),
        "interval_count": from_recurring("interval_count"),
        "lookup_key": copy(map, "lookup_key"),
        "nickname": copy(map, "nickname"),
        "created": copy(map, "created"),
        "deleted": deleted || flag(NAME, map, "deleted")?,
    });
    Ok(StateChange {
        kind: kinds::PRICE.to_owned(),
        id,
        customer: None,
        doc,
    })
}

fn coupon(value: &Value, deleted: bool) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "coupon")?;
    let id = required_id(NAME, map, "coupon")?;
    let doc = json!({
        "id": id,
        "name": copy(map, "name"),
        "percent_off": copy(map, "percent_off"),
        "amount_off": copy(map, "amount_off"),
        "currency": copy(map, "currency"),
        "duration": copy(map, "duration"),
        "duration_in_months": copy(map, "duration_in_months"),
        "valid": copy(map, "valid"),
        "times_redeemed": copy(map, "times_redeemed"),
        "max_redemptions": copy(map, "max_redemptions"),
        "redeem_by": copy(map, "redeem_by"),
        "created": copy(map, "created"),
        "deleted": deleted || flag(NAME, map, "deleted")?,
    });
    Ok(StateChange {
        kind: kinds::COUPON.to_owned(),
        id,
        customer: None,
        doc,
    })
}

fn promotion_code(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "promotion_code")?;
    let id = required_id(NAME, map, "promotion code")?;
    let customer = expandable_id(NAME, map, "customer")?;
    // The coupon is a top-level expanded object up to API version 2025-08-27.basil;
    // 2025-09-30.clover moved it to `promotion: {type: "coupon", coupon}`.
    let coupon = match map.get("promotion").and_then(Value::as_object) {
        Some(promotion) => expandable_id(NAME, promotion, "coupon")?,
        None => expandable_id(NAME, map, "coupon")?,
    };
    let doc = json!({
        "id": id,
        "code": copy(map, "code"),
        "coupon": coupon,
        "customer": customer,
        "active": copy(map, "active"),
        "expires_at": copy(map, "expires_at"),
        "max_redemptions": copy(map, "max_redemptions"),
        "times_redeemed": copy(map, "times_redeemed"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::PROMOTION_CODE.to_owned(),
        id,
        customer,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(classify("product.deleted"), Some(CatalogObject::Product));
        assert_eq!(classify("price.updated"), Some(CatalogObject::Price));
        assert_eq!(classify("coupon.created"), Some(CatalogObject::Coupon));
        assert_eq!(
            classify("promotion_code.updated"),
            Some(CatalogObject::PromotionCode)
        );
        assert_eq!(classify("plan.created"), None);
        assert_eq!(classify("product."), None);
        assert_eq!(classify("priceless.created"), None);
    }

    #[test]
    fn promotion_coupon_is_read_from_either_place() {
        let old = json!({"id": "promo_1", "object": "promotion_code", "code": "A",
                         "coupon": {"id": "co_1", "object": "coupon"}});
        let new = json!({"id": "promo_1", "object": "promotion_code", "code": "A",
                         "promotion": {"type": "coupon", "coupon": "co_1"}});
        for v in [old, new] {
            let c = CatalogHandler
                .changes("promotion_code.created", &v)
                .expect("valid");
            assert_eq!(c[0].doc["coupon"], "co_1");
        }
    }

    #[test]
    fn one_time_price_has_no_interval() {
        let v = json!({"id": "price_1", "object": "price", "type": "one_time",
                       "recurring": null, "product": "prod_1"});
        let c = CatalogHandler.changes("price.created", &v).expect("valid");
        assert_eq!(c[0].doc["interval"], Value::Null);
        assert_eq!(c[0].doc["product"], "prod_1");
        assert_eq!(c[0].doc["deleted"], false);
    }
}
