//! The three billing domains. Each has its own queue (and dead-letter queue) and handlers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A billing domain: one EventBridge rule, one queue, one DLQ, one set of handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// Subscriptions, subscription schedules and the catalogue (products, prices,
    /// coupons, promotion codes).
    Subscription,
    /// Invoices, invoice payments, payment intents, charges, refunds, disputes and credit
    /// notes.
    Payment,
    /// Customers, their payment methods, checkout sessions, setup intents, discounts, tax
    /// ids and entitlements.
    Customer,
}

impl Domain {
    /// Every domain, in a stable order (used for queue creation, tables and reports).
    pub const ALL: [Domain; 3] = [Domain::Subscription, Domain::Payment, Domain::Customer];

    /// The lower-case name used in queue, rule and metric names.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Subscription => "subscription",
            Domain::Payment => "payment",
            Domain::Customer => "customer",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a domain name that is not one of [`Domain::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown domain `{0}` (expected subscription, payment or customer)")]
pub struct UnknownDomain(pub String);

impl FromStr for Domain {
    type Err = UnknownDomain;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownDomain(s.to_owned()))
    }
}
