//! The adjustment handler: refunds, disputes and credit notes, what changes a payment or
//! an invoice after the fact.

use serde_json::{Value, json};

use super::fields::{copy, expandable_id, object, one_segment_after, required_id};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "adjustment";

/// Turns refunds, disputes and credit notes into `refund`, `dispute` and `credit_note`
/// records, each with the whole object as `raw` ([`super::raw`]).
///
/// Doc fields:
/// - `refund.<event>` and `charge.refund.updated` → `refund`: `id`, `charge`,
///   `payment_intent`, `status`, `amount`, `currency`, `reason`, `failure_reason`,
///   `created`. A refund names no customer (it is reached through its charge);
/// - `charge.dispute.<event>` → `dispute`: `id`, `charge`, `payment_intent`, `status`,
///   `reason`, `amount`, `currency`, `evidence_due_by` (`evidence_details.due_by`),
///   `is_charge_refundable`, `created`. A dispute names no customer either;
/// - `credit_note.<event>` → `credit_note`: `id`, `customer`, `invoice`, `number`,
///   `status`, `type`, `reason`, `amount`, `total`, `currency`, `voided_at`, `created`.
///
/// `charge.refunded` carries the charge, not a refund: it is the payment handler's.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdjustmentHandler;

/// Which object an event type of this handler carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdjustmentObject {
    Refund,
    Dispute,
    CreditNote,
}

fn classify(event_type: &str) -> Option<AdjustmentObject> {
    if one_segment_after(event_type, "refund.") || event_type == "charge.refund.updated" {
        Some(AdjustmentObject::Refund)
    } else if one_segment_after(event_type, "charge.dispute.") {
        Some(AdjustmentObject::Dispute)
    } else if one_segment_after(event_type, "credit_note.") {
        Some(AdjustmentObject::CreditNote)
    } else {
        None
    }
}

impl Handler for AdjustmentHandler {
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
            Some(AdjustmentObject::Refund) => refund(object)?,
            Some(AdjustmentObject::Dispute) => dispute(object)?,
            Some(AdjustmentObject::CreditNote) => credit_note(object)?,
            None => return Ok(Vec::new()),
        };
        Ok(vec![raw::attach(change, object)])
    }
}

fn refund(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "refund")?;
    let id = required_id(NAME, map, "refund")?;
    let doc = json!({
        "id": id,
        "charge": expandable_id(NAME, map, "charge")?,
        "payment_intent": expandable_id(NAME, map, "payment_intent")?,
        "status": copy(map, "status"),
        "amount": copy(map, "amount"),
        "currency": copy(map, "currency"),
        "reason": copy(map, "reason"),
        "failure_reason": copy(map, "failure_reason"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::REFUND.to_owned(),
        id,
        customer: None,
        doc,
    })
}

fn dispute(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "dispute")?;
    let id = required_id(NAME, map, "dispute")?;
    let due_by = map
        .get("evidence_details")
        .and_then(|d| d.get("due_by"))
        .cloned()
        .unwrap_or(Value::Null);
    let doc = json!({
        "id": id,
        "charge": expandable_id(NAME, map, "charge")?,
        "payment_intent": expandable_id(NAME, map, "payment_intent")?,
        "status": copy(map, "status"),
        "reason": copy(map, "reason"),
        "amount": copy(map, "amount"),
        "currency": copy(map, "currency"),
        "evidence_due_by": due_by,
        "is_charge_refundable": copy(map, "is_charge_refundable"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::DISPUTE.to_owned(),
        id,
        customer: None,
        doc,
    })
}

fn credit_note(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "credit_note")?;
    let id = required_id(NAME, map, "credit note")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let doc = json!({
        "id": id,
        "customer": customer,
        "invoice": expandable_id(NAME, map, "invoice")?,
        "number": copy(map, "number"),
        "status": copy(map, "status"),
        "type": copy(map, "type"),
        "reason": copy(map, "reason"),
        "amount": copy(map, "amount"),
        "total": copy(map, "total"),
        "currency": copy(map, "currency"),
        "voided_at": copy(map, "voided_at"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::CREDIT_NOTE.to_owned(),
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
        assert_eq!(classify("refund.created"), Some(AdjustmentObject::Refund));
        assert_eq!(
            classify("charge.refund.updated"),
            Some(AdjustmentObject::Refund)
        );
        assert_eq!(classify("charge.refunded"), None);
        assert_eq!(
            classify("charge.dispute.funds_withdrawn"),
            Some(AdjustmentObject::Dispute)
        );
        assert_eq!(
            classify("credit_note.voided"),
            Some(AdjustmentObject::CreditNote)
        );
        assert_eq!(classify("charge.succeeded"), None);
        assert_eq!(classify("credit_note."), None);
    }

    #[test]
    fn dispute_without_evidence_details_has_no_due_date() {
        let v = json!({"id": "du_1", "object": "dispute", "charge": {"id": "ch_1"}});
        let c = AdjustmentHandler
            .changes("charge.dispute.created", &v)
            .expect("valid");
        assert_eq!(c[0].doc["evidence_due_by"], Value::Null);
        assert_eq!(c[0].doc["charge"], "ch_1");
    }
}
