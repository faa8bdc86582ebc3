//! The record kinds the built-in handlers write (the `kind` of a
//! [`crate::backend::StateRecord`]). One place, so views, the SQL views of the embedded
//! backend and the demo model agree with the handlers on spelling and fields.

/// A subscription (`customer.subscription.*`).
pub const SUBSCRIPTION: &str = "subscription";
/// An invoice (`invoice.*`).
pub const INVOICE: &str = "invoice";
/// A payment towards an invoice (`invoice_payment.*`), linking it to a payment intent.
pub const INVOICE_PAYMENT: &str = "invoice_payment";
/// A payment intent (`payment_intent.*`).
pub const PAYMENT_INTENT: &str = "payment_intent";
/// A charge (`charge.<event>`).
pub const CHARGE: &str = "charge";
/// A customer (`customer.created|updated|deleted`).
pub const CUSTOMER: &str = "customer";
/// A payment method (`payment_method.*`).
pub const PAYMENT_METHOD: &str = "payment_method";
/// A completed checkout session.
pub const CHECKOUT_SESSION: &str = "checkout_session";
/// A succeeded setup intent.
pub const SETUP_INTENT: &str = "setup_intent";
/// A product of the catalogue (`product.*`).
pub const PRODUCT: &str = "product";
/// A price of a product (`price.*`).
pub const PRICE: &str = "price";
/// A coupon (`coupon.*`).
pub const COUPON: &str = "coupon";
/// A promotion code for a coupon (`promotion_code.*`).
pub const PROMOTION_CODE: &str = "promotion_code";
/// A coupon applied to a customer or a subscription (`customer.discount.*`).
pub const DISCOUNT: &str = "discount";
/// A refund of a charge (`refund.*`, `charge.refund.updated`).
pub const REFUND: &str = "refund";
/// A dispute of a charge (`charge.dispute.*`).
pub const DISPUTE: &str = "dispute";
/// A credit note on an invoice (`credit_note.*`).
pub const CREDIT_NOTE: &str = "credit_note";
/// A subscription schedule (`subscription_schedule.*`).
pub const SUBSCRIPTION_SCHEDULE: &str = "subscription_schedule";
/// A customer's tax id (`customer.tax_id.*`).
pub const TAX_ID: &str = "tax_id";
/// A customer's active features (`entitlements.active_entitlement_summary.updated`); the
/// record's id is the customer id.
pub const ENTITLEMENT_SUMMARY: &str = "entitlement_summary";

/// One built-in kind: its name, the plural that names its `state export` section and its
/// SQL view, and the fields of its record's doc (besides `raw`, the whole Stripe object,
/// see [`super::raw`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The record kind.
    pub kind: &'static str,
    /// `subscriptions`, `tax_ids`, ...
    pub plural: &'static str,
    /// The projected doc fields, in the order the handler writes them.
    pub fields: &'static [&'static str],
}

const fn info(
    kind: &'static str,
    plural: &'static str,
    fields: &'static [&'static str],
) -> KindInfo {
    KindInfo {
        kind,
        plural,
        fields,
    }
}

/// Every built-in kind, in a stable order. Tests check each handler's docs have exactly
/// these fields.
pub const INFO: [KindInfo; 20] = [
    info(
        SUBSCRIPTION,
        "subscriptions",
        &[
            "id",
            "customer",
            "status",
            "items",
            "discounts",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "cancel_at",
            "canceled_at",
            "trial_end",
            "created",
            "deleted",
        ],
    ),
    info(
        INVOICE,
        "invoices",
        &[
            "id",
            "customer",
            "subscription",
            "status",
            "amount_due",
            "amount_paid",
            "amount_remaining",
            "currency",
            "billing_reason",
            "attempt_count",
            "created",
            "deleted",
        ],
    ),
    info(
        INVOICE_PAYMENT,
        "invoice_payments",
        &[
            "id",
            "invoice",
            "status",
            "amount_paid",
            "amount_requested",
            "currency",
            "payment_type",
            "payment_intent",
            "charge",
            "is_default",
            "created",
        ],
    ),
    info(
        PAYMENT_INTENT,
        "payment_intents",
        &[
            "id",
            "customer",
            "status",
            "amount",
            "amount_received",
            "currency",
            "failure_code",
            "created",
        ],
    ),
    info(
        CHARGE,
        "charges",
        &[
            "id",
            "customer",
            "payment_intent",
            "invoice",
            "status",
            "amount",
            "amount_refunded",
            "currency",
            "failure_code",
            "created",
        ],
    ),
    info(
        CUSTOMER,
        "customers",
        &[
            "id",
            "email",
            "name",
            "deleted",
            "default_payment_method",
            "created",
        ],
    ),
    info(
        PAYMENT_METHOD,
        "payment_methods",
        &[
            "id",
            "customer",
            "type",
            "attached",
            "card_brand",
            "card_last4",
            "created",
        ],
    ),
    info(
        CHECKOUT_SESSION,
        "checkout_sessions",
        &[
            "id",
            "customer",
            "subscription",
            "client_reference_id",
            "mode",
            "status",
            "payment_status",
            "created",
        ],
    ),
    info(
        SETUP_INTENT,
        "setup_intents",
        &[
            "id",
            "customer",
            "payment_method",
            "status",
            "usage",
            "created",
        ],
    ),
    info(
        PRODUCT,
        "products",
        &[
            "id",
            "name",
            "active",
            "default_price",
            "description",
            "created",
            "updated",
            "deleted",
        ],
    ),
    info(
        PRICE,
        "prices",
        &[
            "id",
            "product",
            "active",
            "currency",
            "unit_amount",
            "type",
            "interval",
            "interval_count",
            "lookup_key",
            "nickname",
            "created",
            "deleted",
        ],
    ),
    info(
        COUPON,
        "coupons",
        &[
            "id",
            "name",
            "percent_off",
            "amount_off",
            "currency",
            "duration",
            "duration_in_months",
            "valid",
            "times_redeemed",
            "max_redemptions",
            "redeem_by",
            "created",
            "deleted",
        ],
    ),
    info(
        PROMOTION_CODE,
        "promotion_codes",
        &[
            "id",
            "code",
            "coupon",
            "customer",
            "active",
            "expires_at",
            "max_redemptions",
            "times_redeemed",
            "created",
        ],
    ),
    info(
        DISCOUNT,
        "discounts",
        &[
            "id",
            "customer",
            "subscription",
            "subscription_item",
            "invoice",
            "coupon",
            "promotion_code",
            "start",
            "end",
            "deleted",
        ],
    ),
    info(
        REFUND,
        "refunds",
        &[
            "id",
            "charge",
            "payment_intent",
            "status",
            "amount",
            "currency",
            "reason",
            "failure_reason",
            "created",
        ],
    ),
    info(
        DISPUTE,
        "disputes",
        &[
            "id",
            "charge",
            "payment_intent",
            "status",
            "reason",
            "amount",
            "currency",
            "evidence_due_by",
            "is_charge_refundable",
            "created",
        ],
    ),
    info(
        CREDIT_NOTE,
        "credit_notes",
        &[
            "id",
            "customer",
            "invoice",
            "number",
            "status",
            "type",
            "reason",
            "amount",
            "total",
            "currency",
            "voided_at",
            "created",
        ],
    ),
    info(
        SUBSCRIPTION_SCHEDULE,
        "subscription_schedules",
        &[
            "id",
            "customer",
            "subscription",
            "status",
            "end_behavior",
            "current_phase_start",
            "current_phase_end",
            "phase_count",
            "canceled_at",
            "completed_at",
            "released_at",
            "created",
        ],
    ),
    info(
        TAX_ID,
        "tax_ids",
        &[
            "id",
            "customer",
            "type",
            "value",
            "country",
            "verification_status",
            "created",
            "deleted",
        ],
    ),
    info(
        ENTITLEMENT_SUMMARY,
        "entitlement_summaries",
        &["id", "customer", "features", "complete"],
    ),
];

/// Every built-in kind, in a stable order.
pub const ALL: [&str; 20] = {
    let mut all = [""; 20];
    let mut i = 0;
    while i < INFO.len() {
        all[i] = INFO[i].kind;
        i += 1;
    }
    all
};

/// The description of built-in kind `kind`.
pub fn info_of(kind: &str) -> Option<&'static KindInfo> {
    INFO.iter().find(|i| i.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_plurals_are_unique_and_docs_name_their_id() {
        let mut kinds: Vec<&str> = ALL.to_vec();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), ALL.len());
        let mut plurals: Vec<&str> = INFO.iter().map(|i| i.plural).collect();
        plurals.sort_unstable();
        plurals.dedup();
        assert_eq!(plurals.len(), INFO.len());
        for i in &INFO {
            assert_eq!(i.fields.first(), Some(&"id"), "{}", i.kind);
            assert!(!i.fields.contains(&"raw"), "{}", i.kind);
        }
        // The names go into SQL view definitions unquoted or in plain quotes.
        let plain = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        for i in &INFO {
            assert!(plain(i.kind) && plain(i.plural), "{}", i.kind);
            assert!(i.fields.iter().all(|f| plain(f)), "{}", i.kind);
        }
        assert_eq!(info_of(TAX_ID).map(|i| i.plural), Some("tax_ids"));
        assert_eq!(info_of("plan"), None);
    }
}
