//! The demo generator's own model of the outcome, and the check of stored state against it.
//!
//! The generator writes facts here as it emits each object version (the last write per
//! object wins, as it does in the store), without calling any handler. Comparing the
//! worker's records with these facts is then an independent check of the whole pipeline.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::backend::StateRecord;
use crate::handlers::kinds;

/// The facts of one record: field name → expected value of that field in the record's doc.
pub type Facts = BTreeMap<String, Value>;

/// What the stored state must contain after every generated event has been applied:
/// per tenant, per record kind, per object id, a few facts. Every record the store holds
/// must be one of these objects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpectedState {
    /// tenant → kind → id → facts.
    pub tenants: BTreeMap<String, BTreeMap<String, BTreeMap<String, Facts>>>,
}

/// One difference between the expected facts and the stored records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mismatch {
    /// The tenant of the record.
    pub tenant: String,
    /// The record kind.
    pub kind: String,
    /// The object id.
    pub id: String,
    /// The doc field that differs, or [`Mismatch::RECORD`] when the whole record is
    /// missing or unexpected.
    pub field: String,
    /// The expected value (`"present"` / `"absent"` for whole records).
    pub expected: Value,
    /// The stored value (`"missing"` / `"present"` for whole records).
    pub actual: Value,
}

impl Mismatch {
    /// The `field` of a mismatch about a whole record.
    pub const RECORD: &'static str = "(record)";
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}: expected {}, found {}",
            self.tenant, self.kind, self.id, self.field, self.expected, self.actual
        )
    }
}

impl ExpectedState {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the facts of one object.
    pub fn set(&mut self, tenant: &str, kind: &str, id: &str, facts: Facts) {
        self.tenants
            .entry(tenant.to_owned())
            .or_default()
            .entry(kind.to_owned())
            .or_default()
            .insert(id.to_owned(), facts);
    }

    /// The facts of one object, if the generator made it.
    pub fn get(&self, tenant: &str, kind: &str, id: &str) -> Option<&Facts> {
        self.tenants.get(tenant)?.get(kind)?.get(id)
    }

    /// How many objects the model expects records for, over all tenants and kinds.
    pub fn record_count(&self) -> usize {
        self.tenants
            .values()
            .flat_map(BTreeMap::values)
            .map(BTreeMap::len)
            .sum()
    }

    /// How many records of `kind` the model expects, over all tenants.
    pub fn count_of(&self, kind: &str) -> usize {
        self.tenants
            .values()
            .filter_map(|kinds| kinds.get(kind))
            .map(BTreeMap::len)
            .sum()
    }

    /// A subscription's latest facts.
    pub fn subscription(
        &mut self,
        tenant: &str,
        id: &str,
        status: &str,
        customer: &str,
        deleted: bool,
        current_period_end: i64,
    ) {
        self.set(
            tenant,
            kinds::SUBSCRIPTION,
            id,
            facts(json!({
                "status": status,
                "customer": customer,
                "deleted": deleted,
                "current_period_end": current_period_end,
            })),
        );
    }

    /// An invoice's latest facts.
    pub fn invoice(
        &mut self,
        tenant: &str,
        id: &str,
        status: &str,
        amount_paid: i64,
        subscription: Option<&str>,
    ) {
        self.set(
            tenant,
            kinds::INVOICE,
            id,
            facts(json!({
                "status": status,
                "amount_paid": amount_paid,
                "subscription": subscription,
            })),
        );
    }

    /// An invoice payment's latest facts.
    pub fn invoice_payment(&mut self, tenant: &str, id: &str, invoice: &str, status: &str) {
        self.set(
            tenant,
            kinds::INVOICE_PAYMENT,
            id,
            facts(json!({"invoice": invoice, "status": status})),
        );
    }

    /// A payment intent's latest facts.
    pub fn payment_intent(&mut self, tenant: &str, id: &str, status: &str) {
        self.set(
            tenant,
            kinds::PAYMENT_INTENT,
            id,
            facts(json!({"status": status})),
        );
    }

    /// A charge's latest facts.
    pub fn charge(&mut self, tenant: &str, id: &str, status: &str) {
        self.set(tenant, kinds::CHARGE, id, facts(json!({"status": status})));
    }

    /// A customer's latest facts. A deleted customer is expected without an email (the
    /// handler keeps nothing personal of a deleted customer).
    pub fn customer(&mut self, tenant: &str, id: &str, email: Option<&str>, deleted: bool) {
        self.set(
            tenant,
            kinds::CUSTOMER,
            id,
            facts(json!({"email": email, "deleted": deleted})),
        );
    }

    /// A payment method's latest owner (`None` once detached).
    pub fn payment_method(&mut self, tenant: &str, id: &str, customer: Option<&str>) {
        self.set(
            tenant,
            kinds::PAYMENT_METHOD,
            id,
            facts(json!({"customer": customer})),
        );
    }

    /// A completed checkout session and the subscription it created.
    pub fn checkout_session(&mut self, tenant: &str, id: &str, subscription: Option<&str>) {
        self.set(
            tenant,
            kinds::CHECKOUT_SESSION,
            id,
            facts(json!({"subscription": subscription})),
        );
    }

    /// A setup intent's latest status.
    pub fn setup_intent(&mut self, tenant: &str, id: &str, status: &str) {
        self.set(
            tenant,
            kinds::SETUP_INTENT,
            id,
            facts(json!({"status": status})),
        );
    }

    /// A product's latest facts.
    pub fn product(&mut self, tenant: &str, id: &str, name: &str, deleted: bool) {
        self.set(
            tenant,
            kinds::PRODUCT,
            id,
            facts(json!({"name": name, "deleted": deleted})),
        );
    }

    /// A price's latest facts.
    pub fn price(&mut self, tenant: &str, id: &str, product: &str, unit_amount: i64) {
        self.set(
            tenant,
            kinds::PRICE,
            id,
            facts(json!({"product": product, "unit_amount": unit_amount})),
        );
    }

    /// A coupon's latest facts; the percentage is left out when unknown (a deleted
    /// coupon fetched from the API is only a stub).
    pub fn coupon(&mut self, tenant: &str, id: &str, percent_off: Option<f64>, deleted: bool) {
        let mut facts = facts(json!({"deleted": deleted}));
        if let Some(percent_off) = percent_off {
            facts.insert("percent_off".to_owned(), json!(percent_off));
        }
        self.set(tenant, kinds::COUPON, id, facts);
    }

    /// A promotion code and its coupon.
    pub fn promotion_code(&mut self, tenant: &str, id: &str, code: &str, coupon: &str) {
        self.set(
            tenant,
            kinds::PROMOTION_CODE,
            id,
            facts(json!({"code": code, "coupon": coupon})),
        );
    }

    /// A subscription's discount, and whether it has ended.
    pub fn discount(
        &mut self,
        tenant: &str,
        id: &str,
        customer: &str,
        subscription: &str,
        deleted: bool,
    ) {
        self.set(
            tenant,
            kinds::DISCOUNT,
            id,
            facts(json!({"customer": customer, "subscription": subscription, "deleted": deleted})),
        );
    }

    /// A refund's latest status.
    pub fn refund(&mut self, tenant: &str, id: &str, charge: &str, status: &str) {
        self.set(
            tenant,
            kinds::REFUND,
            id,
            facts(json!({"charge": charge, "status": status})),
        );
    }

    /// A dispute's latest status.
    pub fn dispute(&mut self, tenant: &str, id: &str, charge: &str, status: &str) {
        self.set(
            tenant,
            kinds::DISPUTE,
            id,
            facts(json!({"charge": charge, "status": status})),
        );
    }

    /// A credit note's latest status.
    pub fn credit_note(&mut self, tenant: &str, id: &str, invoice: &str, status: &str) {
        self.set(
            tenant,
            kinds::CREDIT_NOTE,
            id,
            facts(json!({"invoice": invoice, "status": status})),
        );
    }

    /// A subscription schedule's latest status.
    pub fn subscription_schedule(&mut self, tenant: &str, id: &str, customer: &str, status: &str) {
        self.set(
            tenant,
            kinds::SUBSCRIPTION_SCHEDULE,
            id,
            facts(json!({"customer": customer, "status": status})),
        );
    }

    /// A tax id's latest verification status, or `None` once it is deleted (then only
    /// `deleted` is certain: the API serves a deleted tax id as a stub).
    pub fn tax_id(&mut self, tenant: &str, id: &str, customer: &str, verification: Option<&str>) {
        let facts = match verification {
            Some(status) => facts(json!({"customer": customer, "verification_status": status,
                                         "deleted": false})),
            None => facts(json!({"deleted": true})),
        };
        self.set(tenant, kinds::TAX_ID, id, facts);
    }

    /// A customer's active features (lookup keys, sorted).
    pub fn entitlement_summary(&mut self, tenant: &str, customer: &str, features: &[&str]) {
        let mut features = features.to_vec();
        features.sort_unstable();
        self.set(
            tenant,
            kinds::ENTITLEMENT_SUMMARY,
            customer,
            facts(json!({"customer": customer, "features": features})),
        );
    }

    /// Every difference between this model and `records`: expected objects without a
    /// record, facts the record's doc does not hold, and records of objects the model does
    /// not know. Empty means the state is exactly what the generator meant. When `records`
    /// holds one key twice (it should not), the version that supersedes is compared.
    pub fn compare(&self, records: &[StateRecord]) -> Vec<Mismatch> {
        let mut index: HashMap<(&str, &str, &str), &StateRecord> = HashMap::new();
        for record in records {
            let key = (
                record.tenant.as_str(),
                record.kind.as_str(),
                record.id.as_str(),
            );
            match index.get(&key) {
                Some(existing) if !record.supersedes(existing) => {}
                _ => {
                    index.insert(key, record);
                }
            }
        }

        let mut mismatches = Vec::new();
        for (tenant, kinds) in &self.tenants {
            for (kind, objects) in kinds {
                for (id, facts) in objects {
                    let Some(record) = index.remove(&(tenant.as_str(), kind.as_str(), id.as_str()))
                    else {
                        mismatches.push(Mismatch {
                            tenant: tenant.clone(),
                            kind: kind.clone(),
                            id: id.clone(),
                            field: Mismatch::RECORD.to_owned(),
                            expected: json!("present"),
                            actual: json!("missing"),
                        });
                        continue;
                    };
                    for (field, expected) in facts {
                        let actual = record.doc.get(field).cloned().unwrap_or(Value::Null);
                        if &actual != expected {
                            mismatches.push(Mismatch {
                                tenant: tenant.clone(),
                                kind: kind.clone(),
                                id: id.clone(),
                                field: field.clone(),
                                expected: expected.clone(),
                                actual,
                            });
                        }
                    }
                }
            }
        }

        let mut unexpected: Vec<_> = index.into_keys().collect();
        unexpected.sort_unstable();
        mismatches.extend(unexpected.into_iter().map(|(tenant, kind, id)| Mismatch {
            tenant: tenant.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            field: Mismatch::RECORD.to_owned(),
            expected: json!("absent"),
            actual: json!("present"),
        }));
        mismatches
    }
}

/// A `json!` object literal as [`Facts`].
fn facts(value: Value) -> Facts {
    match value {
        Value::Object(map) => map.into_iter().collect(),
        _ => Facts::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, kind: &str, id: &str, as_of_ms: i64, doc: Value) -> StateRecord {
        StateRecord {
            tenant: tenant.to_owned(),
            kind: kind.to_owned(),
            id: id.to_owned(),
            customer: None,
            as_of_ms,
            tiebreak: String::new(),
            doc,
        }
    }

    #[test]
    fn reports_missing_wrong_and_unexpected_records() {
        let mut model = ExpectedState::new();
        model.charge("t1", "ch_1", "succeeded");
        model.charge("t1", "ch_2", "failed");
        model.payment_intent("t1", "pi_1", "succeeded");
        let records = vec![
            record("t1", "charge", "ch_1", 1, json!({"status": "succeeded"})),
            record("t1", "charge", "ch_2", 1, json!({"status": "succeeded"})),
            record("t2", "charge", "ch_1", 1, json!({"status": "succeeded"})),
        ];
        let found = model.compare(&records);
        let summary: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            summary,
            vec![
                r#"t1/charge/ch_2 status: expected "failed", found "succeeded""#,
                r#"t1/payment_intent/pi_1 (record): expected "present", found "missing""#,
                r#"t2/charge/ch_1 (record): expected "absent", found "present""#,
            ]
        );
    }

    #[test]
    fn newest_duplicate_is_compared() {
        let mut model = ExpectedState::new();
        model.charge("t", "ch_1", "succeeded");
        let records = vec![
            record("t", "charge", "ch_1", 2, json!({"status": "succeeded"})),
            record("t", "charge", "ch_1", 1, json!({"status": "pending"})),
        ];
        assert!(model.compare(&records).is_empty());
        assert_eq!(model.record_count(), 1);
        assert_eq!(model.count_of("charge"), 1);
    }
}
