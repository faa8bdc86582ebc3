//! The customer handler: customers, their payment methods, completed checkout sessions and
//! succeeded setup intents.

use serde_json::{Value, json};

use super::fields::{copy, expandable_id, flag, object, one_segment_after, reference, required_id};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "customer";

/// Turns customer-domain objects into `customer`, `payment_method`, `checkout_session`
/// and `setup_intent` records.
///
/// [`Handler::handles`] is true exactly for the event types that produce a record, so
/// the worker never spends an apply on an event that changes nothing:
/// - `customer.created|updated|deleted` → `customer`: `id`, `email`, `name`, `deleted`,
///   `default_payment_method`, `created`. A deleted customer keeps only its id and
///   `deleted: true` (Stripe itself serves only that stub once a customer is gone, so a
///   snapshot and a hydrated thin event give the same record, and no personal data of a
///   deleted customer is kept);
/// - `payment_method.<event>` → `payment_method`: `id`, `customer` (null once detached),
///   `type`, `attached`, `card_brand`, `card_last4`, `created`;
/// - `checkout.session.completed|async_payment_succeeded` → `checkout_session`: `id`,
///   `customer`, `subscription`, `client_reference_id`, `mode`, `status`,
///   `payment_status`, `created`. Expired sessions and failed async payments create
///   nothing billable, so they are not handled;
/// - `setup_intent.succeeded` → `setup_intent`: `id`, `customer`, `payment_method`,
///   `status`, `usage`, `created`. Earlier steps of a setup intent are not state.
///
/// Every record but a deleted customer's also keeps the whole object as `raw`
/// ([`super::raw`]).
///
/// `customer.source.*` carries sources, which are not modelled: not handled. Tax ids,
/// discounts and entitlements are [`super::customer_terms`]'.
#[derive(Debug, Default, Clone, Copy)]
pub struct CustomerHandler;

/// Which object an event type of this domain carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CustomerObject {
    Customer,
    PaymentMethod,
    CheckoutSession,
    SetupIntent,
}

fn classify(event_type: &str) -> Option<CustomerObject> {
    match event_type {
        "customer.created" | "customer.updated" | "customer.deleted" => {
            Some(CustomerObject::Customer)
        }
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            Some(CustomerObject::CheckoutSession)
        }
        "setup_intent.succeeded" => Some(CustomerObject::SetupIntent),
        t if one_segment_after(t, "payment_method.") => Some(CustomerObject::PaymentMethod),
        _ => None,
    }
}

impl Handler for CustomerHandler {
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
        let change = match classify(event_type) {
            Some(CustomerObject::Customer) => customer(event_type, object)?,
            Some(CustomerObject::PaymentMethod) => payment_method(object)?,
            Some(CustomerObject::CheckoutSession) => checkout_session(object)?,
            Some(CustomerObject::SetupIntent) => setup_intent(object)?,
            None => return Ok(Vec::new()),
        };
        // A deleted customer keeps nothing personal, so not its raw object either.
        if change.kind == kinds::CUSTOMER && change.doc["deleted"] == Value::Bool(true) {
            return Ok(vec![change]);
        }
        Ok(vec![raw::attach(change, object)])
    }
}

fn customer(event_type: &str, value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "customer")?;
    let id = required_id(NAME, map, "customer")?;
    let deleted = event_type == "customer.deleted" || flag(NAME, map, "deleted")?;
    let doc = if deleted {
        json!({
            "id": id,
            "email": null,
            "name": null,
            "deleted": true,
            "default_payment_method": null,
            "created": null,
        })
    } else {
        json!({
            "id": id,
            "email": copy(map, "email"),
            "name": copy(map, "name"),
            "deleted": false,
            "default_payment_method": reference(
                NAME,
                map.get("invoice_settings")
                    .and_then(|s| s.get("default_payment_method")),
                "invoice_settings.default_payment_method",
            )?,
            "created": copy(map, "created"),
        })
    };
    Ok(StateChange {
        kind: kinds::CUSTOMER.to_owned(),
        customer: Some(id.clone()),
        id,
        doc,
    })
}

fn payment_method(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "payment_method")?;
    let id = required_id(NAME, map, "payment method")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let card = map.get("card");
    let doc = json!({
        "id": id,
        "customer": customer,
        "type": copy(map, "type"),
        "attached": customer.is_some(),
        "card_brand": card.and_then(|c| c.get("brand")).cloned().unwrap_or(Value::Null),
        "card_last4": card.and_then(|c| c.get("last4")).cloned().unwrap_or(Value::Null),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::PAYMENT_METHOD.to_owned(),
        id,
        customer,
        doc,
    })
}

fn checkout_session(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "checkout.session")?;
    let id = required_id(NAME, map, "checkout session")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let doc = json!({
        "id": id,
        "customer": customer,
        "subscription": expandable_id(NAME, map, "subscription")?,
        "client_reference_id": copy(map, "client_reference_id"),
        "mode": copy(map, "mode"),
        "status": copy(map, "status"),
        "payment_status": copy(map, "payment_status"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::CHECKOUT_SESSION.to_owned(),
        id,
        customer,
        doc,
    })
}

fn setup_intent(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "setup_intent")?;
    let id = required_id(NAME, map, "setup intent")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let doc = json!({
        "id": id,
        "customer": customer,
        "payment_method": expandable_id(NAME, map, "payment_method")?,
        "status": copy(map, "status"),
        "usage": copy(map, "usage"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::SETUP_INTENT.to_owned(),
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
        assert_eq!(classify("customer.deleted"), Some(CustomerObject::Customer));
        assert_eq!(classify("customer.source.created"), None);
        assert_eq!(classify("customer.tax_id.created"), None);
        assert_eq!(classify("customer.subscription.created"), None);
        assert_eq!(classify("checkout.session.expired"), None);
        assert_eq!(classify("checkout.session.async_payment_failed"), None);
        assert_eq!(classify("setup_intent.created"), None);
        assert_eq!(
            classify("payment_method.detached"),
            Some(CustomerObject::PaymentMethod)
        );
    }

    #[test]
    fn detached_payment_method_has_no_customer() {
        let v = json!({"id": "pm_1", "object": "payment_method", "type": "card", "customer": null});
        let c = CustomerHandler
            .changes("payment_method.detached", &v)
            .expect("valid");
        assert_eq!(c[0].doc["attached"], false);
        assert_eq!(c[0].customer, None);
    }

    #[test]
    fn deleted_customer_keeps_only_the_stub() {
        let v = json!({"id": "cus_1", "object": "customer", "email": "a@b.c", "name": "A"});
        let c = CustomerHandler
            .changes("customer.deleted", &v)
            .expect("valid");
        assert_eq!(c[0].doc["deleted"], true);
        assert_eq!(c[0].doc["email"], Value::Null);
    }
}
