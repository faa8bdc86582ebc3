//! The record kinds the built-in handlers write (the `kind` of a
//! [`crate::backend::StateRecord`]). One place, so views and the demo model agree with
//! the handlers on spelling.

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

/// Every built-in kind, in a stable order.
pub const ALL: [&str; 9] = [
    SUBSCRIPTION,
    INVOICE,
    INVOICE_PAYMENT,
    PAYMENT_INTENT,
    CHARGE,
    CUSTOMER,
    PAYMENT_METHOD,
    CHECKOUT_SESSION,
    SETUP_INTENT,
];
