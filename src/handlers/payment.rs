//! The payment handler: invoices, invoice payments, payment intents and charges, the
//! per-customer ledger.

use serde_json::{Map, Value, json};

use super::fields::{
    copy, error, expandable_id, object, one_segment_after, reference, required_id,
};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "payment";

/// Turns payment objects into `invoice`, `invoice_payment`, `payment_intent` and
/// `charge` records.
///
/// Doc fields:
/// - `invoice`: `id`, `customer`, `subscription`, `status`, `amount_due`, `amount_paid`,
///   `amount_remaining`, `currency`, `billing_reason`, `attempt_count`, `created`,
///   `deleted` (true on `invoice.deleted`, which removes a draft);
/// - `invoice_payment`: `id`, `invoice`, `status`, `amount_paid`, `amount_requested`,
///   `currency`, `payment_type`, `payment_intent`, `charge`, `is_default`, `created`;
/// - `payment_intent`: `id`, `customer`, `status`, `amount`, `amount_received`,
///   `currency`, `failure_code`, `created`;
/// - `charge`: `id`, `customer`, `payment_intent`, `invoice`, `status`, `amount`,
///   `amount_refunded`, `currency`, `failure_code`, `created`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PaymentHandler;

/// Which object an event type of this domain carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PaymentObject {
    Invoice,
    InvoicePayment,
    PaymentIntent,
    Charge,
}

fn classify(event_type: &str) -> Option<PaymentObject> {
    // `invoice.upcoming` previews an invoice that does not exist yet: it has no id and
    // is not state. `charge.dispute.*` and `charge.refund.updated` carry disputes and
    // refunds, which this handler does not model; the one-segment rule leaves them out.
    if event_type == "invoice.upcoming" {
        None
    } else if one_segment_after(event_type, "invoice.") {
        Some(PaymentObject::Invoice)
    } else if one_segment_after(event_type, "invoice_payment.") {
        Some(PaymentObject::InvoicePayment)
    } else if one_segment_after(event_type, "payment_intent.") {
        Some(PaymentObject::PaymentIntent)
    } else if one_segment_after(event_type, "charge.") {
        Some(PaymentObject::Charge)
    } else {
        None
    }
}

impl Handler for PaymentHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn domain(&self) -> Domain {
        Domain::Payment
    }

    fn handles(&self, event_type: &str) -> bool {
        classify(event_type).is_some()
    }

    fn changes(&self, event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        let change = match classify(event_type) {
            Some(PaymentObject::Invoice) => invoice(event_type, object)?,
            Some(PaymentObject::InvoicePayment) => invoice_payment(object)?,
            Some(PaymentObject::PaymentIntent) => payment_intent(object)?,
            Some(PaymentObject::Charge) => charge(object)?,
            None => return Ok(Vec::new()),
        };
        Ok(vec![raw::attach(change, object)])
    }
}

fn invoice(event_type: &str, value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "invoice")?;
    let id = required_id(NAME, map, "invoice")?;
    let customer = expandable_id(NAME, map, "customer")?;
    // Since API version 2025-03-31 the subscription sits under `parent`; older objects
    // (and stale copies of the old field, which newer versions leave null) have it at the
    // top level.
    let from_parent = reference(
        NAME,
        map.get("parent")
            .and_then(|p| p.get("subscription_details"))
            .and_then(|d| d.get("subscription")),
        "parent.subscription_details.subscription",
    )?;
    let subscription = match from_parent {
        Some(s) => Some(s),
        None => expandable_id(NAME, map, "subscription")?,
    };
    let doc = json!({
        "id": id,
        "customer": customer,
        "subscription": subscription,
        "status": copy(map, "status"),
        "amount_due": copy(map, "amount_due"),
        "amount_paid": copy(map, "amount_paid"),
        "amount_remaining": copy(map, "amount_remaining"),
        "currency": copy(map, "currency"),
        "billing_reason": copy(map, "billing_reason"),
        "attempt_count": copy(map, "attempt_count"),
        "created": copy(map, "created"),
        "deleted": event_type == "invoice.deleted",
    });
    Ok(StateChange {
        kind: kinds::INVOICE.to_owned(),
        id,
        customer,
        doc,
    })
}

fn invoice_payment(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "invoice_payment")?;
    let id = required_id(NAME, map, "invoice payment")?;
    let invoice = expandable_id(NAME, map, "invoice")?
        .ok_or_else(|| error(NAME, format!("invoice payment {id} names no invoice")))?;
    let payment = map.get("payment").and_then(Value::as_object);
    let from_payment = |field: &str| match payment {
        Some(p) => expandable_id(NAME, p, field),
        None => Ok(None),
    };
    let doc = json!({
        "id": id,
        "invoice": invoice,
        "status": copy(map, "status"),
        "amount_paid": copy(map, "amount_paid"),
        "amount_requested": copy(map, "amount_requested"),
        "currency": copy(map, "currency"),
        "payment_type": payment.map_or(Value::Null, |p| copy(p, "type")),
        "payment_intent": from_payment("payment_intent")?,
        "charge": from_payment("charge")?,
        "is_default": copy(map, "is_default"),
        "created": copy(map, "created"),
    });
    // An invoice payment does not name its customer; it is reached through its invoice.
    Ok(StateChange {
        kind: kinds::INVOICE_PAYMENT.to_owned(),
        id,
        customer: None,
        doc,
    })
}

/// The decline code of a failed attempt (`last_payment_error.code`).
fn error_code(error: Option<&Value>) -> Value {
    error
        .and_then(|e| e.get("code"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn payment_intent(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "payment_intent")?;
    let id = required_id(NAME, map, "payment intent")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let doc = json!({
        "id": id,
        "customer": customer,
        "status": copy(map, "status"),
        "amount": copy(map, "amount"),
        "amount_received": copy(map, "amount_received"),
        "currency": copy(map, "currency"),
        "failure_code": error_code(map.get("last_payment_error")),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::PAYMENT_INTENT.to_owned(),
        id,
        customer,
        doc,
    })
}

fn charge(value: &Value) -> Result<StateChange, HandlerError> {
    let map: &Map<String, Value> = object(NAME, value, "charge")?;
    let id = required_id(NAME, map, "charge")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let doc = json!({
        "id": id,
        "customer": customer,
        "payment_intent": expandable_id(NAME, map, "payment_intent")?,
        // Removed from charges in API version 2025-03-31; kept when an older one has it.
        "invoice": expandable_id(NAME, map, "invoice")?,
        "status": copy(map, "status"),
        "amount": copy(map, "amount"),
        "amount_refunded": copy(map, "amount_refunded"),
        "currency": copy(map, "currency"),
        "failure_code": copy(map, "failure_code"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::CHARGE.to_owned(),
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
        assert_eq!(classify("invoice.paid"), Some(PaymentObject::Invoice));
        assert_eq!(classify("invoice.upcoming"), None);
        assert_eq!(classify("invoiceitem.created"), None);
        assert_eq!(
            classify("invoice_payment.paid"),
            Some(PaymentObject::InvoicePayment)
        );
        assert_eq!(
            classify("payment_intent.succeeded"),
            Some(PaymentObject::PaymentIntent)
        );
        assert_eq!(classify("charge.failed"), Some(PaymentObject::Charge));
        assert_eq!(classify("charge.dispute.created"), None);
        assert_eq!(classify("charge.refund.updated"), None);
    }

    #[test]
    fn legacy_top_level_subscription_is_used_without_parent() {
        let v = json!({"id": "in_1", "object": "invoice", "customer": {"id": "cus_1"},
                       "subscription": "sub_old", "parent": null, "status": "open"});
        let c = PaymentHandler
            .changes("invoice.finalized", &v)
            .expect("valid invoice");
        assert_eq!(c[0].doc["subscription"], "sub_old");
        assert_eq!(c[0].customer.as_deref(), Some("cus_1"));
    }

    #[test]
    fn failure_code_comes_from_last_payment_error() {
        let v = json!({"id": "pi_1", "object": "payment_intent", "status": "requires_payment_method",
                       "last_payment_error": {"code": "card_declined", "type": "card_error"}});
        let c = PaymentHandler
            .changes("payment_intent.payment_failed", &v)
            .expect("valid");
        assert_eq!(c[0].doc["failure_code"], "card_declined");
    }

    #[test]
    fn invoice_payment_without_invoice_is_rejected() {
        let v = json!({"id": "inpay_1", "object": "invoice_payment", "invoice": null});
        assert!(PaymentHandler.changes("invoice_payment.paid", &v).is_err());
    }
}
