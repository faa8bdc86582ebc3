//! The one routing definition: which domain queue each Stripe event type goes to.
//!
//! [`ROUTES`] is the only place the mapping is written. Everything else is derived from it:
//! [`domain_for_event_type`] for code that already has an event type, [`domain_pattern`]
//! for the EventBridge rules that `setup`, Terraform and the local bus install, and
//! [`Router`] that applies those same rendered patterns to envelopes. A test checks that no
//! event type can land in two domains (an EventBridge `{"prefix": "customer."}` would also
//! catch `customer.subscription.*`, which is why customer events are listed narrowly).

use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::Domain;
use crate::pattern::EventPattern;

/// `source` of events our webhook ingress publishes.
pub const WEBHOOK_SOURCE: &str = "stripe.webhook";

/// `source` prefix of events a Stripe event destination puts on a partner bus
/// (`aws.partner/stripe.com/<destination id>`).
pub const PARTNER_SOURCE_PREFIX: &str = "aws.partner/stripe.com/";

/// Prefix Stripe puts on v1 event types delivered as thin events (`v1.invoice.paid`).
pub const THIN_TYPE_PREFIX: &str = "v1.";

/// How a route compares an event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchKind {
    /// The whole type equals the value.
    Exact,
    /// The type starts with the value (values end with `.`, so `invoice.` never
    /// catches `invoiceitem.created`).
    Prefix,
}

impl MatchKind {
    /// `exact` or `prefix`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchKind::Exact => "exact",
            MatchKind::Prefix => "prefix",
        }
    }
}

impl std::fmt::Display for MatchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the routing definition, in v1 event-type names (without `v1.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RouteRow {
    /// Where matching events go.
    pub domain: Domain,
    /// Exact or prefix comparison.
    pub kind: MatchKind,
    /// The event type, or its prefix ending in `.`.
    pub value: &'static str,
}

impl RouteRow {
    /// Whether a v1 event type (no `v1.` prefix) is covered by this row.
    pub fn covers(&self, event_type: &str) -> bool {
        match self.kind {
            MatchKind::Exact => event_type == self.value,
            MatchKind::Prefix => event_type.starts_with(self.value),
        }
    }
}

const fn row(domain: Domain, kind: MatchKind, value: &'static str) -> RouteRow {
    RouteRow {
        domain,
        kind,
        value,
    }
}

/// The routing definition.
pub const ROUTES: &[RouteRow] = &[
    row(
        Domain::Subscription,
        MatchKind::Prefix,
        "customer.subscription.",
    ),
    row(
        Domain::Subscription,
        MatchKind::Prefix,
        "subscription_schedule.",
    ),
    row(Domain::Subscription, MatchKind::Prefix, "product."),
    row(Domain::Subscription, MatchKind::Prefix, "price."),
    row(Domain::Subscription, MatchKind::Prefix, "coupon."),
    row(Domain::Subscription, MatchKind::Prefix, "promotion_code."),
    row(Domain::Payment, MatchKind::Prefix, "invoice."),
    row(Domain::Payment, MatchKind::Prefix, "invoice_payment."),
    row(Domain::Payment, MatchKind::Prefix, "payment_intent."),
    // Also carries charge.refund.updated and charge.dispute.*.
    row(Domain::Payment, MatchKind::Prefix, "charge."),
    row(Domain::Payment, MatchKind::Prefix, "refund."),
    row(Domain::Payment, MatchKind::Prefix, "credit_note."),
    row(Domain::Customer, MatchKind::Exact, "customer.created"),
    row(Domain::Customer, MatchKind::Exact, "customer.updated"),
    row(Domain::Customer, MatchKind::Exact, "customer.deleted"),
    row(Domain::Customer, MatchKind::Prefix, "customer.source."),
    row(Domain::Customer, MatchKind::Prefix, "customer.tax_id."),
    row(Domain::Customer, MatchKind::Prefix, "customer.discount."),
    row(
        Domain::Customer,
        MatchKind::Exact,
        "entitlements.active_entitlement_summary.updated",
    ),
    row(Domain::Customer, MatchKind::Prefix, "checkout.session."),
    row(Domain::Customer, MatchKind::Prefix, "setup_intent."),
    row(Domain::Customer, MatchKind::Prefix, "payment_method."),
];

/// The routing definition as rows, for printing.
pub fn routing_table() -> Vec<RouteRow> {
    ROUTES.to_vec()
}

/// The domain of a Stripe event type, accepting thin `v1.`-prefixed names too.
/// `None` for types no domain handles (including all `v2.` types).
pub fn domain_for_event_type(event_type: &str) -> Option<Domain> {
    let v1 = event_type
        .strip_prefix(THIN_TYPE_PREFIX)
        .unwrap_or(event_type);
    ROUTES.iter().find(|r| r.covers(v1)).map(|r| r.domain)
}

/// The EventBridge event pattern for one domain, rendered from [`ROUTES`].
///
/// Two `$or` branches, one per path onto the bus:
/// - webhook: `source` is [`WEBHOOK_SOURCE`] and `detail.type` (the Stripe event) matches;
/// - partner: `source` starts with [`PARTNER_SOURCE_PREFIX`] and `detail-type` matches.
///
/// Each branch accepts both the v1 names and the thin `v1.` names.
pub fn domain_pattern(domain: Domain) -> Value {
    let types = type_matchers(domain);
    json!({
        "$or": [
            {
                "source": [WEBHOOK_SOURCE],
                "detail": { "type": types.clone() }
            },
            {
                "source": [{ "prefix": PARTNER_SOURCE_PREFIX }],
                "detail-type": types
            }
        ]
    })
}

/// The leaf match values for a domain's event types: each row in its v1 and thin forms.
fn type_matchers(domain: Domain) -> Vec<Value> {
    ROUTES
        .iter()
        .filter(|r| r.domain == domain)
        .flat_map(|r| {
            let thin = format!("{THIN_TYPE_PREFIX}{}", r.value);
            match r.kind {
                MatchKind::Exact => [json!(r.value), json!(thin)],
                MatchKind::Prefix => [json!({ "prefix": r.value }), json!({ "prefix": thin })],
            }
        })
        .collect()
}

/// The compiled domain patterns, applied to EventBridge envelopes the way the bus rules are.
#[derive(Debug, Clone)]
pub struct Router {
    rules: Vec<(Domain, EventPattern)>,
}

impl Router {
    /// The standard rules: [`domain_pattern`] for every domain.
    pub fn standard() -> Router {
        let rules = Domain::ALL
            .into_iter()
            .map(|domain| {
                // The patterns are generated from the constant definition above and parsed in
                // a unit test, so failing here is a bug in this file, not bad input.
                let pattern = EventPattern::parse(&domain_pattern(domain))
                    .unwrap_or_else(|e| panic!("generated pattern for {domain} is invalid: {e}"));
                (domain, pattern)
            })
            .collect();
        Router { rules }
    }

    /// The domains whose rule matches the envelope, in [`Domain::ALL`] order. With the
    /// standard rules this has at most one element.
    pub fn route(&self, envelope: &Value) -> Vec<Domain> {
        self.rules
            .iter()
            .filter(|(_, pattern)| pattern.matches(envelope))
            .map(|(domain, _)| *domain)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether some event type could be covered by both rows.
    fn overlap(a: &RouteRow, b: &RouteRow) -> bool {
        match (a.kind, b.kind) {
            (MatchKind::Exact, MatchKind::Exact) => a.value == b.value,
            (MatchKind::Exact, MatchKind::Prefix) => a.value.starts_with(b.value),
            (MatchKind::Prefix, MatchKind::Exact) => b.value.starts_with(a.value),
            (MatchKind::Prefix, MatchKind::Prefix) => {
                a.value.starts_with(b.value) || b.value.starts_with(a.value)
            }
        }
    }

    #[test]
    fn no_two_domains_share_an_event_type() {
        for a in ROUTES {
            for b in ROUTES {
                if a.domain != b.domain {
                    assert!(!overlap(a, b), "{a:?} overlaps {b:?}");
                }
            }
        }
    }

    #[test]
    fn definition_is_well_formed() {
        for r in ROUTES {
            assert!(
                !r.value.starts_with(THIN_TYPE_PREFIX),
                "{r:?} must be a v1 name"
            );
            if r.kind == MatchKind::Prefix {
                // A prefix without the dot would catch siblings (invoice. vs invoiceitem.).
                assert!(r.value.ends_with('.'), "{r:?} must end with a dot");
            }
        }
        for d in Domain::ALL {
            assert!(ROUTES.iter().any(|r| r.domain == d), "{d} has no routes");
        }
    }

    #[test]
    fn patterns_are_valid_and_fit_eventbridge_limits() {
        for d in Domain::ALL {
            let pattern = domain_pattern(d);
            EventPattern::parse(&pattern).expect("valid pattern");
            // EventBridge's default event-pattern size quota is 2048 characters.
            let size = pattern.to_string().len();
            assert!(size <= 2048, "{d} pattern is {size} characters");
            let branches = pattern["$or"].as_array().expect("$or");
            assert_eq!(branches.len(), 2);
        }
    }

    #[test]
    fn subscription_pattern_is_rendered_from_the_definition() {
        let types = json!([
            {"prefix": "customer.subscription."},
            {"prefix": "v1.customer.subscription."},
            {"prefix": "subscription_schedule."},
            {"prefix": "v1.subscription_schedule."},
            {"prefix": "product."},
            {"prefix": "v1.product."},
            {"prefix": "price."},
            {"prefix": "v1.price."},
            {"prefix": "coupon."},
            {"prefix": "v1.coupon."},
            {"prefix": "promotion_code."},
            {"prefix": "v1.promotion_code."}
        ]);
        assert_eq!(
            domain_pattern(Domain::Subscription),
            json!({
                "$or": [
                    {
                        "source": ["stripe.webhook"],
                        "detail": { "type": types.clone() }
                    },
                    {
                        "source": [{"prefix": "aws.partner/stripe.com/"}],
                        "detail-type": types
                    }
                ]
            })
        );
    }

    #[test]
    fn customer_pattern_lists_exact_names_in_both_forms() {
        let pattern = domain_pattern(Domain::Customer);
        let types = pattern["$or"][1]["detail-type"].as_array().expect("types");
        assert_eq!(
            types.len(),
            2 * ROUTES
                .iter()
                .filter(|r| r.domain == Domain::Customer)
                .count()
        );
        assert!(types.contains(&json!("customer.created")));
        assert!(types.contains(&json!("v1.customer.deleted")));
        assert!(types.contains(&json!({"prefix": "v1.payment_method."})));
        assert!(!types.contains(&json!({"prefix": "customer."})));
    }

    #[test]
    fn event_types_map_to_domains() {
        assert_eq!(
            domain_for_event_type("customer.subscription.updated"),
            Some(Domain::Subscription)
        );
        assert_eq!(
            domain_for_event_type("v1.customer.subscription.deleted"),
            Some(Domain::Subscription)
        );
        assert_eq!(domain_for_event_type("invoice.paid"), Some(Domain::Payment));
        assert_eq!(domain_for_event_type("invoiceitem.created"), None);
        assert_eq!(
            domain_for_event_type("customer.updated"),
            Some(Domain::Customer)
        );
        assert_eq!(
            domain_for_event_type("customer.discount.created"),
            Some(Domain::Customer)
        );
        assert_eq!(
            domain_for_event_type("v1.charge.dispute.created"),
            Some(Domain::Payment)
        );
        assert_eq!(
            domain_for_event_type("subscription_schedule.released"),
            Some(Domain::Subscription)
        );
        assert_eq!(
            domain_for_event_type("customer.source.created"),
            Some(Domain::Customer)
        );
        assert_eq!(domain_for_event_type("plan.created"), None);
        assert_eq!(domain_for_event_type("v1."), None);
        assert_eq!(domain_for_event_type("v1.v1.invoice.paid"), None);
        assert_eq!(
            domain_for_event_type("v2.core.event_destination.ping"),
            None
        );
    }

    #[test]
    fn table_is_the_definition() {
        assert_eq!(routing_table(), ROUTES.to_vec());
        assert_eq!(
            serde_json::to_value(ROUTES[0]).expect("serialise")["kind"],
            "prefix"
        );
    }
}
