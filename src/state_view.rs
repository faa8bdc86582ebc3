//! Read-only views over stored state records: one customer's billing status (for
//! `stripe-worker status`) and the whole-state export document (for
//! `stripe-worker state export`).
//!
//! Pure functions over `&[StateRecord]`, so every backend's `by_customer` and `export`
//! results render the same way, and tests need no store.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::backend::StateRecord;
use crate::handlers::kinds;

/// One customer's billing status, built by [`customer_status`] from the customer's records.
/// Serialises to JSON for `--json`; [`fmt::Display`] renders the human tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerStatus {
    /// The tenant of the records (`None` when there are none).
    pub tenant: Option<String>,
    /// The customer id the records belong to (`None` when there are none).
    pub customer_id: Option<String>,
    /// The customer record itself, when the customer's own events have been applied.
    pub customer: Option<CustomerSummary>,
    /// Every subscription, live ones first, then by latest period end.
    pub subscriptions: Vec<SubscriptionSummary>,
    /// The most recent invoice (by `created`, then as-of).
    pub latest_invoice: Option<InvoiceSummary>,
    /// The payment methods attached to the customer.
    pub payment_methods: Vec<PaymentMethodSummary>,
    /// Payment intents and charges, oldest first: the customer's payment ledger.
    pub ledger: Vec<LedgerEntry>,
}

/// The customer record's main fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerSummary {
    /// `cus_...`
    pub id: String,
    /// The email, absent for a deleted customer.
    pub email: Option<String>,
    /// The name, absent for a deleted customer.
    pub name: Option<String>,
    /// Whether the customer was deleted in Stripe.
    pub deleted: bool,
    /// `invoice_settings.default_payment_method`.
    pub default_payment_method: Option<String>,
}

/// One subscription's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionSummary {
    /// `sub_...`
    pub id: String,
    /// One of the Stripe subscription statuses.
    pub status: String,
    /// End of the current billing period, seconds since the epoch.
    pub current_period_end: Option<i64>,
    /// Whether it ends at the end of the current period.
    pub cancel_at_period_end: bool,
    /// Whether it has ended for good.
    pub deleted: bool,
    /// The as-of time of the stored version, ms since the epoch.
    pub as_of_ms: i64,
}

/// An invoice's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceSummary {
    /// `in_...`
    pub id: String,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub status: Option<String>,
    /// The subscription it bills, if any.
    pub subscription: Option<String>,
    /// Amount due, in the currency's minor unit.
    pub amount_due: Option<i64>,
    /// Amount paid, in the currency's minor unit.
    pub amount_paid: Option<i64>,
    /// Three-letter ISO currency code, lower case.
    pub currency: Option<String>,
    /// How many payment attempts were made.
    pub attempt_count: Option<i64>,
    /// When Stripe created it, seconds since the epoch.
    pub created: Option<i64>,
    /// The as-of time of the stored version, ms since the epoch.
    pub as_of_ms: i64,
}

/// A payment method attached to the customer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentMethodSummary {
    /// `pm_...`
    pub id: String,
    /// `card`, `sepa_debit`, ...
    pub method_type: Option<String>,
    /// The card brand, for cards.
    pub card_brand: Option<String>,
    /// The card's last four digits, for cards.
    pub card_last4: Option<String>,
    /// Whether it is the customer's default.
    pub default: bool,
}

/// One payment intent or charge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// `payment_intent` or `charge`.
    pub kind: String,
    /// `pi_...` or `ch_...`
    pub id: String,
    /// The Stripe status.
    pub status: Option<String>,
    /// The amount, in the currency's minor unit.
    pub amount: Option<i64>,
    /// Three-letter ISO currency code, lower case.
    pub currency: Option<String>,
    /// The decline or error code of a failed attempt.
    pub failure_code: Option<String>,
    /// When Stripe created it, seconds since the epoch.
    pub created: Option<i64>,
}

fn text(doc: &Value, field: &str) -> Option<String> {
    doc.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn int(doc: &Value, field: &str) -> Option<i64> {
    doc.get(field).and_then(Value::as_i64)
}

fn boolean(doc: &Value, field: &str) -> bool {
    doc.get(field).and_then(Value::as_bool).unwrap_or(false)
}

/// The newest version per (tenant, kind, id): stores hold one, but a caller may pass
/// several (a merged export, a test fold), and the view must not depend on their order.
fn newest(records: &[StateRecord]) -> BTreeMap<(&str, &str, &str), &StateRecord> {
    let mut latest: BTreeMap<(&str, &str, &str), &StateRecord> = BTreeMap::new();
    for record in records {
        let key = (
            record.tenant.as_str(),
            record.kind.as_str(),
            record.id.as_str(),
        );
        match latest.get(&key) {
            Some(existing) if !record.supersedes(existing) => {}
            _ => {
                latest.insert(key, record);
            }
        }
    }
    latest
}

/// One customer's status from its records (a store's `by_customer(tenant, customer)`).
/// Records of other kinds than the built-in ones are ignored.
pub fn customer_status(records: &[StateRecord]) -> CustomerStatus {
    let latest = newest(records);
    let mut status = CustomerStatus {
        tenant: latest.keys().next().map(|(t, _, _)| (*t).to_owned()),
        customer_id: None,
        customer: None,
        subscriptions: Vec::new(),
        latest_invoice: None,
        payment_methods: Vec::new(),
        ledger: Vec::new(),
    };
    let mut invoices = Vec::new();
    for record in latest.values() {
        let doc = &record.doc;
        if status.customer_id.is_none() {
            status.customer_id = record.customer.clone();
        }
        match record.kind.as_str() {
            kinds::CUSTOMER => {
                status.customer_id = Some(record.id.clone());
                status.customer = Some(CustomerSummary {
                    id: record.id.clone(),
                    email: text(doc, "email"),
                    name: text(doc, "name"),
                    deleted: boolean(doc, "deleted"),
                    default_payment_method: text(doc, "default_payment_method"),
                });
            }
            kinds::SUBSCRIPTION => status.subscriptions.push(SubscriptionSummary {
                id: record.id.clone(),
                status: text(doc, "status").unwrap_or_default(),
                current_period_end: int(doc, "current_period_end"),
                cancel_at_period_end: boolean(doc, "cancel_at_period_end"),
                deleted: boolean(doc, "deleted"),
                as_of_ms: record.as_of_ms,
            }),
            kinds::INVOICE => invoices.push(InvoiceSummary {
                id: record.id.clone(),
                status: text(doc, "status"),
                subscription: text(doc, "subscription"),
                amount_due: int(doc, "amount_due"),
                amount_paid: int(doc, "amount_paid"),
                currency: text(doc, "currency"),
                attempt_count: int(doc, "attempt_count"),
                created: int(doc, "created"),
                as_of_ms: record.as_of_ms,
            }),
            kinds::PAYMENT_METHOD if boolean(doc, "attached") => {
                status.payment_methods.push(PaymentMethodSummary {
                    id: record.id.clone(),
                    method_type: text(doc, "type"),
                    card_brand: text(doc, "card_brand"),
                    card_last4: text(doc, "card_last4"),
                    default: false,
                })
            }
            kinds::PAYMENT_INTENT | kinds::CHARGE => status.ledger.push(LedgerEntry {
                kind: record.kind.clone(),
                id: record.id.clone(),
                status: text(doc, "status"),
                amount: int(doc, "amount"),
                currency: text(doc, "currency"),
                failure_code: text(doc, "failure_code"),
                created: int(doc, "created"),
            }),
            _ => {}
        }
    }
    let default_pm = status
        .customer
        .as_ref()
        .and_then(|c| c.default_payment_method.clone());
    for pm in &mut status.payment_methods {
        pm.default = default_pm.as_deref() == Some(pm.id.as_str());
    }
    // Live subscriptions first, then the latest period end, then id for a stable order.
    status.subscriptions.sort_by(|a, b| {
        (a.deleted, std::cmp::Reverse(a.current_period_end), &a.id).cmp(&(
            b.deleted,
            std::cmp::Reverse(b.current_period_end),
            &b.id,
        ))
    });
    status
        .ledger
        .sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    status.latest_invoice = invoices
        .into_iter()
        .max_by(|a, b| (a.created, a.as_of_ms, &a.id).cmp(&(b.created, b.as_of_ms, &b.id)));
    status
}

/// The export section each built-in kind goes to: its plural ([`kinds::INFO`]).
/// Payment methods are the exception, see [`export_document`].
fn section(kind: &str) -> Option<&'static str> {
    kinds::info_of(kind).map(|info| info.plural)
}

/// The section of payment methods no customer holds any more.
const DETACHED_PAYMENT_METHODS: &str = "detached_payment_methods";

/// The sections every tenant has in the export, present even when empty so that the
/// document's shape does not depend on the data: every built-in kind's plural, attached
/// payment methods sitting under their customer instead.
fn section_names() -> impl Iterator<Item = &'static str> {
    kinds::INFO
        .iter()
        .filter(|info| info.kind != kinds::PAYMENT_METHOD)
        .map(|info| info.plural)
        .chain([DETACHED_PAYMENT_METHODS])
}

/// The whole state as one JSON document, keys sorted, without the records' raw Stripe
/// objects (doc field `raw`, see [`crate::handlers::raw`]) so that it stays readable;
/// [`export_document_with_raw`] keeps them.
///
/// ```text
/// {"tenants": {T: {
///     "subscriptions": {id: doc}, "invoices": {..}, "invoice_payments": {..},
///     "payment_intents": {..}, "charges": {..},
///     "customers": {id: {..doc, "payment_methods": {pm_id: doc}}},
///     "detached_payment_methods": {pm_id: doc},
///     "checkout_sessions": {..}, "setup_intents": {..}, "products": {..}, "prices": {..},
///     "coupons": {..}, "promotion_codes": {..}, "discounts": {..}, "refunds": {..},
///     "disputes": {..}, "credit_notes": {..}, "subscription_schedules": {..},
///     "tax_ids": {..}, "entitlement_summaries": {customer_id: doc},
///     "other": {kind: {id: doc}}      // only when custom handlers wrote other kinds
/// }}}
/// ```
///
/// Attached payment methods sit under their customer; a customer known only through its
/// payment methods appears as `{"id", "payment_methods"}`. Detached payment methods have
/// no customer any more and get their own section.
pub fn export_document(records: &[StateRecord]) -> Value {
    export_document_with_raw(records, false)
}

/// [`export_document`], keeping each doc's `raw` object when `include_raw`.
pub fn export_document_with_raw(records: &[StateRecord], include_raw: bool) -> Value {
    type Docs = BTreeMap<String, Value>;
    #[derive(Default)]
    struct Tenant {
        sections: BTreeMap<&'static str, Docs>,
        payment_methods: BTreeMap<String, Docs>,
        other: BTreeMap<String, Docs>,
    }

    let mut tenants: BTreeMap<String, Tenant> = BTreeMap::new();
    for ((tenant, kind, id), record) in newest(records) {
        let entry = tenants.entry(tenant.to_owned()).or_default();
        let mut doc = record.doc.clone();
        if !include_raw && let Some(fields) = doc.as_object_mut() {
            fields.remove(crate::handlers::raw::RAW_FIELD);
        }
        if kind == kinds::PAYMENT_METHOD {
            match record.customer.clone().or_else(|| text(&doc, "customer")) {
                Some(customer) => {
                    entry
                        .payment_methods
                        .entry(customer)
                        .or_default()
                        .insert(id.to_owned(), doc);
                }
                None => {
                    entry
                        .sections
                        .entry(DETACHED_PAYMENT_METHODS)
                        .or_default()
                        .insert(id.to_owned(), doc);
                }
            }
        } else if let Some(name) = section(kind) {
            entry
                .sections
                .entry(name)
                .or_default()
                .insert(id.to_owned(), doc);
        } else {
            entry
                .other
                .entry(kind.to_owned())
                .or_default()
                .insert(id.to_owned(), doc);
        }
    }

    let mut out = Map::new();
    for (tenant, mut t) in tenants {
        let customers = t.sections.entry("customers").or_default();
        for (customer, methods) in std::mem::take(&mut t.payment_methods) {
            let doc = customers
                .entry(customer.clone())
                .or_insert_with(|| serde_json::json!({ "id": customer }));
            if let Some(doc) = doc.as_object_mut() {
                doc.insert("payment_methods".to_owned(), object(methods));
            }
        }
        for doc in customers.values_mut() {
            if let Some(doc) = doc.as_object_mut() {
                doc.entry("payment_methods")
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
        let mut sections = Map::new();
        for name in section_names() {
            let docs = t.sections.remove(name).unwrap_or_default();
            sections.insert(name.to_owned(), object(docs));
        }
        if !t.other.is_empty() {
            let other = t.other.into_iter().map(|(k, docs)| (k, object(docs)));
            sections.insert("other".to_owned(), Value::Object(other.collect()));
        }
        // Insert sorted: serde_json may preserve insertion order.
        let sorted: BTreeMap<String, Value> = sections.into_iter().collect();
        out.insert(tenant, Value::Object(sorted.into_iter().collect()));
    }
    let mut root = Map::new();
    root.insert("tenants".to_owned(), Value::Object(out));
    Value::Object(root)
}

fn object(docs: BTreeMap<String, Value>) -> Value {
    Value::Object(docs.into_iter().collect())
}

// ----- human rendering -----

/// Currencies without a minor unit (amounts are whole units).
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// `2900, "usd"` → `29.00 USD`.
fn money(amount: Option<i64>, currency: Option<&str>) -> String {
    let Some(amount) = amount else {
        return "-".to_owned();
    };
    let currency = currency.unwrap_or("");
    let code = currency.to_uppercase();
    if ZERO_DECIMAL.contains(&currency) {
        return format!("{amount} {code}").trim_end().to_owned();
    }
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!("{sign}{}.{:02} {code}", abs / 100, abs % 100)
        .trim_end()
        .to_owned()
}

/// Seconds since the epoch as `2025-06-01 12:00 UTC`.
fn when(seconds: Option<i64>) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    match seconds.map(time::OffsetDateTime::from_unix_timestamp) {
        Some(Ok(t)) => t.format(&format).unwrap_or_else(|_| t.to_string()),
        Some(Err(_)) => seconds.map(|s| s.to_string()).unwrap_or_default(),
        None => "-".to_owned(),
    }
}

fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// A left-aligned table, two spaces between columns, indented by two.
fn table(f: &mut fmt::Formatter<'_>, headers: &[&str], rows: &[Vec<String>]) -> fmt::Result {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from("  ");
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(f, "{}", out.trim_end())
    };
    line(f, &mut headers.iter().copied())?;
    for row in rows {
        line(f, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

impl fmt::Display for CustomerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(customer_id) = &self.customer_id else {
            return writeln!(f, "No billing state for this customer.");
        };
        writeln!(
            f,
            "Customer {customer_id} (tenant {})",
            or_dash(self.tenant.as_deref())
        )?;
        match &self.customer {
            Some(c) if c.deleted => writeln!(f, "  deleted in Stripe")?,
            Some(c) => {
                writeln!(f, "  email:   {}", or_dash(c.email.as_deref()))?;
                writeln!(f, "  name:    {}", or_dash(c.name.as_deref()))?;
                writeln!(
                    f,
                    "  default payment method: {}",
                    or_dash(c.default_payment_method.as_deref())
                )?;
            }
            None => writeln!(f, "  (no customer record yet)")?,
        }

        writeln!(f, "\nSubscriptions")?;
        if self.subscriptions.is_empty() {
            writeln!(f, "  none")?;
        } else {
            let rows: Vec<Vec<String>> = self
                .subscriptions
                .iter()
                .map(|s| {
                    vec![
                        s.id.clone(),
                        s.status.clone(),
                        when(s.current_period_end),
                        if s.cancel_at_period_end { "yes" } else { "no" }.to_owned(),
                    ]
                })
                .collect();
            table(f, &["ID", "STATUS", "PERIOD END", "CANCELS AT END"], &rows)?;
        }

        writeln!(f, "\nLatest invoice")?;
        match &self.latest_invoice {
            None => writeln!(f, "  none")?,
            Some(i) => {
                let currency = i.currency.as_deref();
                let row = vec![
                    i.id.clone(),
                    or_dash(i.status.as_deref()).to_owned(),
                    money(i.amount_due, currency),
                    money(i.amount_paid, currency),
                    i.attempt_count.map_or("-".to_owned(), |n| n.to_string()),
                    when(i.created),
                ];
                table(
                    f,
                    &["ID", "STATUS", "DUE", "PAID", "ATTEMPTS", "CREATED"],
                    &[row],
                )?;
            }
        }

        writeln!(f, "\nPayment methods")?;
        if self.payment_methods.is_empty() {
            writeln!(f, "  none")?;
        } else {
            let rows: Vec<Vec<String>> = self
                .payment_methods
                .iter()
                .map(|p| {
                    vec![
                        p.id.clone(),
                        or_dash(p.method_type.as_deref()).to_owned(),
                        match (&p.card_brand, &p.card_last4) {
                            (Some(b), Some(l)) => format!("{b} **** {l}"),
                            _ => "-".to_owned(),
                        },
                        if p.default { "yes" } else { "" }.to_owned(),
                    ]
                })
                .collect();
            table(f, &["ID", "TYPE", "CARD", "DEFAULT"], &rows)?;
        }

        writeln!(f, "\nLedger")?;
        if self.ledger.is_empty() {
            writeln!(f, "  none")?;
        } else {
            let rows: Vec<Vec<String>> = self
                .ledger
                .iter()
                .map(|e| {
                    vec![
                        when(e.created),
                        e.kind.clone(),
                        e.id.clone(),
                        or_dash(e.status.as_deref()).to_owned(),
                        money(e.amount, e.currency.as_deref()),
                        or_dash(e.failure_code.as_deref()).to_owned(),
                    ]
                })
                .collect();
            table(
                f,
                &["CREATED", "KIND", "ID", "STATUS", "AMOUNT", "FAILURE"],
                &rows,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(kind: &str, id: &str, as_of_ms: i64, doc: Value) -> StateRecord {
        StateRecord {
            tenant: "t1".to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            customer: doc
                .get("customer")
                .and_then(Value::as_str)
                .map(str::to_owned),
            as_of_ms,
            tiebreak: String::new(),
            doc,
        }
    }

    fn sample() -> Vec<StateRecord> {
        vec![
            record(
                "customer",
                "cus_1",
                1,
                json!({"id": "cus_1", "customer": "cus_1", "email": "a@b.c",
                "name": "Ada", "deleted": false, "default_payment_method": "pm_1"}),
            ),
            record(
                "subscription",
                "sub_old",
                1,
                json!({"id": "sub_old", "customer": "cus_1",
                "status": "canceled", "current_period_end": 1_750_000_000, "deleted": true}),
            ),
            record(
                "subscription",
                "sub_1",
                1,
                json!({"id": "sub_1", "customer": "cus_1",
                "status": "past_due", "current_period_end": 1_760_000_000, "deleted": false,
                "cancel_at_period_end": false}),
            ),
            record(
                "invoice",
                "in_1",
                1,
                json!({"id": "in_1", "customer": "cus_1", "status": "paid",
                "amount_due": 2900, "amount_paid": 2900, "currency": "usd", "created": 100}),
            ),
            record(
                "invoice",
                "in_2",
                1,
                json!({"id": "in_2", "customer": "cus_1", "status": "open",
                "amount_due": 2900, "amount_paid": 0, "currency": "usd", "created": 200,
                "attempt_count": 1}),
            ),
            record(
                "charge",
                "ch_1",
                1,
                json!({"id": "ch_1", "customer": "cus_1", "status": "failed",
                "amount": 2900, "currency": "usd", "failure_code": "card_declined", "created": 201}),
            ),
            record(
                "payment_method",
                "pm_1",
                1,
                json!({"id": "pm_1", "customer": "cus_1",
                "type": "card", "attached": true, "card_brand": "visa", "card_last4": "4242"}),
            ),
            record(
                "payment_method",
                "pm_0",
                1,
                json!({"id": "pm_0", "customer": null,
                "type": "card", "attached": false}),
            ),
        ]
    }

    #[test]
    fn customer_status_summarises_the_records() {
        let status = customer_status(&sample());
        assert_eq!(status.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(status.tenant.as_deref(), Some("t1"));
        let subs: Vec<&str> = status.subscriptions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(subs, ["sub_1", "sub_old"]);
        assert_eq!(
            status.latest_invoice.as_ref().map(|i| i.id.as_str()),
            Some("in_2")
        );
        assert_eq!(status.payment_methods.len(), 1);
        assert!(status.payment_methods[0].default);
        assert_eq!(
            status.ledger[0].failure_code.as_deref(),
            Some("card_declined")
        );

        let shown = status.to_string();
        assert!(shown.contains("Customer cus_1 (tenant t1)"), "{shown}");
        assert!(shown.contains("past_due"), "{shown}");
        assert!(shown.contains("29.00 USD"), "{shown}");
        assert!(shown.contains("visa **** 4242"), "{shown}");
        assert!(shown.contains("card_declined"), "{shown}");
    }

    #[test]
    fn newest_version_wins_whatever_the_order() {
        let mut records = sample();
        records.push(record(
            "invoice",
            "in_2",
            5,
            json!({"id": "in_2", "status": "paid",
            "created": 200, "customer": "cus_1"}),
        ));
        let forward = customer_status(&records);
        records.reverse();
        assert_eq!(customer_status(&records), forward);
        assert_eq!(
            forward.latest_invoice.and_then(|i| i.status).as_deref(),
            Some("paid")
        );
    }

    #[test]
    fn empty_records_render_a_sentence() {
        let status = customer_status(&[]);
        assert_eq!(status.to_string(), "No billing state for this customer.\n");
    }

    #[test]
    fn export_groups_by_tenant_and_section() {
        let mut records = sample();
        let mut other = record("widget", "wd_1", 1, json!({"id": "wd_1"}));
        other.tenant = "t2".to_owned();
        records.push(other);
        let doc = export_document(&records);
        let t1 = &doc["tenants"]["t1"];
        assert_eq!(t1["subscriptions"]["sub_1"]["status"], "past_due");
        assert_eq!(t1["customers"]["cus_1"]["email"], "a@b.c");
        assert_eq!(
            t1["customers"]["cus_1"]["payment_methods"]["pm_1"]["card_last4"],
            "4242"
        );
        assert_eq!(t1["detached_payment_methods"]["pm_0"]["attached"], false);
        assert!(t1["setup_intents"].as_object().is_some_and(Map::is_empty));
        assert!(t1.get("other").is_none());
        assert_eq!(
            doc["tenants"]["t2"]["other"]["widget"]["wd_1"]["id"],
            "wd_1"
        );
        assert!(t1["refunds"].as_object().is_some_and(Map::is_empty));
        assert!(t1["entitlement_summaries"].as_object().is_some());
        assert!(t1.get("payment_methods").is_none());
    }

    #[test]
    fn export_leaves_out_raw_objects_unless_asked() {
        let records = vec![record(
            "refund",
            "re_1",
            1,
            json!({"id": "re_1", "status": "succeeded", "raw": {"id": "re_1", "metadata": {}}}),
        )];
        let readable = export_document(&records);
        let refund = &readable["tenants"]["t1"]["refunds"]["re_1"];
        assert_eq!(refund["status"], "succeeded");
        assert!(refund.get("raw").is_none());
        let whole = export_document_with_raw(&records, true);
        assert_eq!(
            whole["tenants"]["t1"]["refunds"]["re_1"]["raw"]["id"],
            "re_1"
        );
    }

    #[test]
    fn money_and_time_formatting() {
        assert_eq!(money(Some(2900), Some("usd")), "29.00 USD");
        assert_eq!(money(Some(-5), Some("eur")), "-0.05 EUR");
        assert_eq!(money(Some(500), Some("jpy")), "500 JPY");
        assert_eq!(money(None, Some("usd")), "-");
        assert_eq!(when(Some(1_748_736_000)), "2025-06-01 00:00 UTC");
    }
}
