//! The kinds the handlers keep, as the Stripe API lists them, and how a listed object
//! becomes the record an event would give: the handler's own projection, so an imported
//! record and an event's record can never disagree on shape.

use std::sync::Arc;

use serde_json::Value;

use crate::backend::StateRecord;
use crate::handlers::{Handler, HandlerError, StateChange, kinds, standard_handlers};

/// How one record kind is listed from the Stripe API.
#[derive(Debug)]
pub struct ListedKind {
    /// The record kind ([`crate::handlers::kinds`]).
    pub kind: &'static str,
    /// The list endpoint; [`CUSTOMER_PLACEHOLDER`] marks a list per customer.
    pub path: &'static str,
    /// Fixed list parameters (subscriptions need `status=all`, or canceled ones are left
    /// out).
    pub params: &'static [(&'static str, &'static str)],
    /// The event type whose handler turns this object into its record.
    pub event_type: &'static str,
    /// The Stripe object type, for fetching one object (`checkout.session`).
    pub object_type: &'static str,
    /// Whether the handlers keep a record of this object (they keep only completed
    /// checkout sessions and succeeded setup intents).
    pub keep: fn(&Value) -> bool,
}

/// In [`ListedKind::path`], where the customer id goes.
pub const CUSTOMER_PLACEHOLDER: &str = "{customer}";

impl ListedKind {
    /// Whether the kind is listed per customer (payment methods: `GET /v1/payment_methods`
    /// without a customer lists only Treasury payment methods).
    pub fn per_customer(&self) -> bool {
        self.path.contains(CUSTOMER_PLACEHOLDER)
    }
}

fn always(_: &Value) -> bool {
    true
}

fn status_is(object: &Value, status: &str) -> bool {
    object.get("status").and_then(Value::as_str) == Some(status)
}

/// Every kind the built-in handlers keep that Stripe lists (all but [`UNLISTED`]),
/// customers and payment methods first: the other objects name them, and an import
/// fetches the named ones no list returns (deleted customers, detached payment methods)
/// once those two lists are done.
pub const LISTED: [ListedKind; 18] = [
    ListedKind {
        kind: kinds::CUSTOMER,
        path: "/v1/customers",
        params: &[],
        event_type: "customer.updated",
        object_type: "customer",
        keep: always,
    },
    ListedKind {
        kind: kinds::PAYMENT_METHOD,
        path: "/v1/customers/{customer}/payment_methods",
        params: &[],
        event_type: "payment_method.updated",
        object_type: "payment_method",
        keep: always,
    },
    ListedKind {
        kind: kinds::SUBSCRIPTION,
        path: "/v1/subscriptions",
        params: &[("status", "all")],
        event_type: "customer.subscription.updated",
        object_type: "subscription",
        keep: always,
    },
    ListedKind {
        kind: kinds::INVOICE,
        path: "/v1/invoices",
        params: &[],
        event_type: "invoice.updated",
        object_type: "invoice",
        keep: always,
    },
    ListedKind {
        kind: kinds::INVOICE_PAYMENT,
        path: "/v1/invoice_payments",
        params: &[],
        event_type: "invoice_payment.paid",
        object_type: "invoice_payment",
        keep: always,
    },
    ListedKind {
        kind: kinds::PAYMENT_INTENT,
        path: "/v1/payment_intents",
        params: &[],
        event_type: "payment_intent.updated",
        object_type: "payment_intent",
        keep: always,
    },
    ListedKind {
        kind: kinds::CHARGE,
        path: "/v1/charges",
        params: &[],
        event_type: "charge.updated",
        object_type: "charge",
        keep: always,
    },
    ListedKind {
        kind: kinds::CHECKOUT_SESSION,
        path: "/v1/checkout/sessions",
        params: &[("status", "complete")],
        event_type: "checkout.session.completed",
        object_type: "checkout.session",
        keep: |o| status_is(o, "complete"),
    },
    ListedKind {
        kind: kinds::SETUP_INTENT,
        path: "/v1/setup_intents",
        params: &[],
        event_type: "setup_intent.succeeded",
        object_type: "setup_intent",
        keep: |o| status_is(o, "succeeded"),
    },
    ListedKind {
        kind: kinds::PRODUCT,
        path: "/v1/products",
        params: &[],
        event_type: "product.updated",
        object_type: "product",
        keep: always,
    },
    ListedKind {
        kind: kinds::PRICE,
        path: "/v1/prices",
        params: &[],
        event_type: "price.updated",
        object_type: "price",
        keep: always,
    },
    ListedKind {
        kind: kinds::COUPON,
        path: "/v1/coupons",
        params: &[],
        event_type: "coupon.updated",
        object_type: "coupon",
        keep: always,
    },
    ListedKind {
        kind: kinds::PROMOTION_CODE,
        path: "/v1/promotion_codes",
        params: &[],
        event_type: "promotion_code.updated",
        object_type: "promotion_code",
        keep: always,
    },
    ListedKind {
        kind: kinds::REFUND,
        path: "/v1/refunds",
        params: &[],
        event_type: "refund.updated",
        object_type: "refund",
        keep: always,
    },
    ListedKind {
        kind: kinds::DISPUTE,
        path: "/v1/disputes",
        params: &[],
        event_type: "charge.dispute.updated",
        object_type: "dispute",
        keep: always,
    },
    ListedKind {
        kind: kinds::CREDIT_NOTE,
        path: "/v1/credit_notes",
        params: &[],
        event_type: "credit_note.updated",
        object_type: "credit_note",
        keep: always,
    },
    ListedKind {
        kind: kinds::SUBSCRIPTION_SCHEDULE,
        path: "/v1/subscription_schedules",
        params: &[],
        event_type: "subscription_schedule.updated",
        object_type: "subscription_schedule",
        keep: always,
    },
    ListedKind {
        kind: kinds::TAX_ID,
        path: "/v1/customers/{customer}/tax_ids",
        params: &[],
        event_type: "customer.tax_id.updated",
        object_type: "tax_id",
        keep: always,
    },
];

/// The kinds the handlers keep that `import` and `verify` cannot list, and why. Their
/// records come from events only.
pub const UNLISTED: [(&str, &str); 2] = [
    (
        kinds::DISCOUNT,
        "Stripe has no list or retrieve endpoint for discounts; they are only embedded in \
         customers (`discount`) and subscriptions (`discounts`)",
    ),
    (
        kinds::ENTITLEMENT_SUMMARY,
        "Stripe has no summary endpoint; rebuilding one needs a list of active \
         entitlements per customer (`GET /v1/entitlements/active_entitlements?customer=`)",
    ),
];

/// The listed kind of record kind `kind`.
pub fn listed(kind: &str) -> Option<&'static ListedKind> {
    LISTED.iter().find(|k| k.kind == kind)
}

/// The kinds named in `names` (every kind when empty), in [`LISTED`] order, or the first
/// unknown name.
pub fn select(names: &[String]) -> Result<Vec<&'static ListedKind>, String> {
    if let Some(unknown) = names.iter().find(|n| listed(n).is_none()) {
        if let Some((kind, why)) = UNLISTED.iter().find(|(k, _)| k == unknown) {
            return Err(format!("kind `{kind}` cannot be listed: {why}"));
        }
        let known: Vec<&str> = LISTED.iter().map(|k| k.kind).collect();
        return Err(format!(
            "unknown kind `{unknown}` (expected one of {})",
            known.join(", ")
        ));
    }
    Ok(LISTED
        .iter()
        .filter(|k| names.is_empty() || names.iter().any(|n| n == k.kind))
        .collect())
}

/// Turns Stripe objects into records with the handlers' projection.
pub struct Projector {
    handlers: Vec<Arc<dyn Handler>>,
}

impl Default for Projector {
    fn default() -> Self {
        Projector::new(standard_handlers())
    }
}

impl Projector {
    /// A projector over `handlers` (the worker's).
    pub fn new(handlers: Vec<Arc<dyn Handler>>) -> Self {
        Projector { handlers }
    }

    /// The change `object` gives for `kind`, or `None` when no handler keeps it.
    pub fn change(
        &self,
        kind: &ListedKind,
        object: &Value,
    ) -> Result<Option<StateChange>, HandlerError> {
        if !(kind.keep)(object) {
            return Ok(None);
        }
        let Some(handler) = self.handlers.iter().find(|h| h.handles(kind.event_type)) else {
            return Ok(None);
        };
        Ok(handler
            .changes(kind.event_type, object)?
            .into_iter()
            .find(|c| c.kind == kind.kind))
    }

    /// The record `object`, fetched at `fetched_ms`, gives for `kind` in `tenant`: as of
    /// [`super::fetched_as_of`], with [`super::fetched_tiebreak`].
    pub fn record(
        &self,
        tenant: &str,
        kind: &ListedKind,
        object: &Value,
        fetched_ms: i64,
    ) -> Result<Option<StateRecord>, HandlerError> {
        Ok(self.change(kind, object)?.map(|change| StateRecord {
            tenant: tenant.to_owned(),
            kind: change.kind,
            id: change.id,
            customer: change.customer,
            as_of_ms: super::fetched_as_of(fetched_ms),
            tiebreak: super::fetched_tiebreak(fetched_ms),
            doc: change.doc,
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_handler_kind_is_listed_once_or_says_why_not() {
        let mut listed: Vec<&str> = LISTED
            .iter()
            .map(|k| k.kind)
            .chain(UNLISTED.iter().map(|(k, _)| *k))
            .collect();
        listed.sort_unstable();
        let mut all = kinds::ALL.to_vec();
        all.sort_unstable();
        assert_eq!(listed, all);
    }

    #[test]
    fn every_listed_kind_has_a_handler() {
        let projector = Projector::default();
        for kind in &LISTED {
            assert!(
                projector
                    .handlers
                    .iter()
                    .any(|h| h.handles(kind.event_type)),
                "{}",
                kind.kind
            );
        }
    }

    #[test]
    fn selection_by_name() {
        assert_eq!(select(&[]).map(|k| k.len()), Ok(LISTED.len()));
        let two = select(&["invoice".into(), "customer".into()]).expect("known");
        assert_eq!(
            two.iter().map(|k| k.kind).collect::<Vec<_>>(),
            ["customer", "invoice"]
        );
        assert!(select(&["plan".into()]).is_err());
        let unlisted = select(&["discount".into()]).expect_err("not listable");
        assert!(unlisted.contains("no list"), "{unlisted}");
        assert_eq!(
            select(&["tax_id".into()]).map(|k| k[0].per_customer()),
            Ok(true)
        );
    }

    #[test]
    fn objects_become_the_records_events_give() {
        let projector = Projector::default();
        let kind = listed("subscription").expect("listed");
        let sub = json!({"id": "sub_1", "object": "subscription", "customer": "cus_1",
                         "status": "canceled", "items": {"data": []}});
        let record = projector
            .record("t", kind, &sub, 5)
            .expect("valid")
            .expect("kept");
        assert_eq!(record.doc["deleted"], true);
        assert_eq!(record.customer.as_deref(), Some("cus_1"));
        let open = json!({"id": "cs_1", "object": "checkout.session", "status": "open"});
        let sessions = listed("checkout_session").expect("listed");
        assert_eq!(projector.record("t", sessions, &open, 5), Ok(None));
    }
}
