//! `verify`: the stored state against the Stripe API, field by field, and `--repair`.
//!
//! A full check lists every kind (as `import` does) and compares each object's record
//! (the handlers' projection) with the stored one; stored records the lists did not
//! return, and customers and payment methods that objects name but no list returns
//! (deleted, detached), are fetched one by one. `--sample N` instead
//! fetches N stored records picked at random: cheap enough for a schedule, blind to
//! objects missing from the store. `--repair` writes Stripe's version of every object
//! that differs, as an import would ([`Reconciler::store`]: as of the fetch's second, and
//! fetched again when it meets an event of that very second), so live events newer than
//! the check still win.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;

use super::import::{Named, PAGE_SIZE, Reconciler, names_in, names_in_record};
use super::kinds::{CUSTOMER_PLACEHOLDER, ListedKind, listed};
use crate::backend::{ReconcileStore, StateRecord, StateStore, WriteOutcome};
use crate::event::ObjectRef;
use crate::handlers::kinds;
use crate::ops::OpsError;
use crate::stripe::hydrate::HydrateError;

/// The `field` of a difference about a whole record.
pub const WHOLE_RECORD: &str = "*";

/// One field that differs between the store and Stripe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    /// The record kind.
    pub kind: String,
    /// The object id.
    pub id: String,
    /// The record field (`customer` for the record's customer, [`WHOLE_RECORD`] when the
    /// record is missing on one side).
    pub field: String,
    /// The stored value (`null` when the store has no record).
    pub stored: Value,
    /// Stripe's value (`null` when Stripe has no such object).
    pub stripe: Value,
}

/// What a verify did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// The tenant.
    pub tenant: String,
    /// Objects compared.
    pub checked: u64,
    /// Every difference found, by kind and id.
    pub differences: Vec<Difference>,
    /// Records written from Stripe's version (with `--repair`).
    pub repaired: u64,
}

impl VerifyReport {
    /// Whether the store and Stripe agreed.
    pub fn equal(&self) -> bool {
        self.differences.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let objects: BTreeSet<(&str, &str)> = self
            .differences
            .iter()
            .map(|d| (d.kind.as_str(), d.id.as_str()))
            .collect();
        writeln!(
            f,
            "verify for tenant {}: {} objects checked, {} differ ({} fields), {} repaired",
            self.tenant,
            self.checked,
            objects.len(),
            self.differences.len(),
            self.repaired
        )?;
        if !self.differences.is_empty() {
            let rows: Vec<Vec<String>> = self
                .differences
                .iter()
                .map(|d| {
                    vec![
                        d.kind.clone(),
                        d.id.clone(),
                        d.field.clone(),
                        d.stored.to_string(),
                        d.stripe.to_string(),
                    ]
                })
                .collect();
            f.write_str(&crate::ops::table(
                &["KIND", "ID", "FIELD", "STORED", "STRIPE"],
                &rows,
            ))?;
        }
        Ok(())
    }
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Fetch this many stored records at random instead of listing everything.
    pub sample: Option<usize>,
    /// Write Stripe's version of every object that differs.
    pub repair: bool,
}

/// Stripe's side of one object: its record, or nothing (no such object, or one the
/// handlers keep no record of).
type Truth = Option<StateRecord>;

impl<S: StateStore, C: ReconcileStore> Reconciler<'_, S, C> {
    /// Compare `kinds` of `tenant` with the Stripe API.
    pub async fn verify(
        &self,
        tenant: &str,
        kinds: &[&'static ListedKind],
        options: &VerifyOptions,
        progress: &indicatif::ProgressBar,
    ) -> Result<VerifyReport, OpsError> {
        let wanted: BTreeSet<&str> = kinds.iter().map(|k| k.kind).collect();
        let stored: BTreeMap<(String, String), StateRecord> = self
            .state
            .export(Some(tenant))
            .await?
            .into_iter()
            .filter(|r| wanted.contains(r.kind.as_str()))
            .map(|r| ((r.kind.clone(), r.id.clone()), r))
            .collect();
        let mut report = VerifyReport {
            tenant: tenant.to_owned(),
            ..VerifyReport::default()
        };
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        match options.sample {
            Some(n) => {
                let mut keys: Vec<&(String, String)> = stored.keys().collect();
                keys.shuffle(&mut rand::rng());
                keys.truncate(n);
                for (kind, id) in keys {
                    self.check_one(tenant, kind, id, &stored, options, &mut report)
                        .await?;
                    progress.inc(1);
                }
            }
            None => {
                let mut named = Named::new();
                for kind in kinds {
                    self.check_listed(
                        tenant,
                        kind,
                        &stored,
                        &mut seen,
                        &mut named,
                        options,
                        &mut report,
                        progress,
                    )
                    .await?;
                }
                for record in stored.values() {
                    names_in_record(record, &mut named);
                }
                // What the lists did not return: stored records (canceled, deleted,
                // detached objects) and objects only named by others.
                let unlisted: BTreeSet<(String, String)> = stored
                    .keys()
                    .cloned()
                    .chain(named.into_iter().map(|(k, id)| (k.to_owned(), id)))
                    .filter(|key| wanted.contains(key.0.as_str()) && !seen.contains(key))
                    .collect();
                for (kind, id) in &unlisted {
                    self.check_one(tenant, kind, id, &stored, options, &mut report)
                        .await?;
                    progress.inc(1);
                }
            }
        }
        progress.finish_and_clear();
        Ok(report)
    }

    /// Compare every listed object of `kind`.
    #[allow(clippy::too_many_arguments)]
    async fn check_listed(
        &self,
        tenant: &str,
        kind: &'static ListedKind,
        stored: &BTreeMap<(String, String), StateRecord>,
        seen: &mut BTreeSet<(String, String)>,
        named: &mut Named,
        options: &VerifyOptions,
        report: &mut VerifyReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<(), OpsError> {
        let paths = if kind.per_customer() {
            let customers = listed(kinds::CUSTOMER).unwrap_or(kind);
            self.list_all(tenant, customers, customers.path)
                .await?
                .into_iter()
                .filter_map(|(c, _)| {
                    let id = c.get("id")?.as_str()?;
                    Some(kind.path.replace(CUSTOMER_PLACEHOLDER, id))
                })
                .collect()
        } else {
            vec![kind.path.to_owned()]
        };
        for path in paths {
            for (object, fetched_at) in self.list_all(tenant, kind, &path).await? {
                names_in(&object, named);
                let truth = self.truth(tenant, kind, &object, fetched_at);
                let Some(truth) = truth else { continue };
                let key = (truth.kind.clone(), truth.id.clone());
                seen.insert(key.clone());
                self.compare(tenant, kind, stored.get(&key), Some(truth), options, report)
                    .await?;
                progress.inc(1);
            }
        }
        Ok(())
    }

    /// Fetch one stored object and compare.
    async fn check_one(
        &self,
        tenant: &str,
        kind: &str,
        id: &str,
        stored: &BTreeMap<(String, String), StateRecord>,
        options: &VerifyOptions,
        report: &mut VerifyReport,
    ) -> Result<(), OpsError> {
        let Some(listed_kind) = listed(kind) else {
            return Ok(());
        };
        let reference = ObjectRef {
            id: id.to_owned(),
            object_type: listed_kind.object_type.to_owned(),
            url: None,
            customer: None,
        };
        let fetched_at = (self.clock)();
        let truth = match self.api.get_object(tenant, &reference, None).await {
            Ok(object) => self.truth(tenant, listed_kind, &object, fetched_at),
            Err(HydrateError::Permanent { code, .. })
                if code == crate::stripe::api::codes::NOT_FOUND =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let key = (kind.to_owned(), id.to_owned());
        match (stored.get(&key), truth) {
            // Gone from Stripe, and stored as deleted (a deleted draft invoice): equal.
            (Some(record), None) if record.doc.get("deleted") == Some(&Value::Bool(true)) => {
                report.checked += 1;
                Ok(())
            }
            (record, truth) => {
                self.compare(tenant, listed_kind, record, truth, options, report)
                    .await
            }
        }
    }

    /// Stripe's record of `object`, or `None` when the handlers keep none.
    fn truth(&self, tenant: &str, kind: &ListedKind, object: &Value, fetched_at: i64) -> Truth {
        self.record(tenant, kind, object, fetched_at)
    }

    /// Record the differences between `stored` and `truth`, and repair when asked.
    async fn compare(
        &self,
        tenant: &str,
        kind: &ListedKind,
        stored: Option<&StateRecord>,
        truth: Truth,
        options: &VerifyOptions,
        report: &mut VerifyReport,
    ) -> Result<(), OpsError> {
        report.checked += 1;
        let found = differences(stored, truth.as_ref());
        if found.is_empty() {
            return Ok(());
        }
        report.differences.extend(found);
        if options.repair
            && let Some(truth) = truth
            && self.store(tenant, kind, truth).await?.outcome == WriteOutcome::Written
        {
            report.repaired += 1;
        }
        Ok(())
    }

    /// Every object of a list, each with the time its page was asked for.
    async fn list_all(
        &self,
        tenant: &str,
        kind: &ListedKind,
        path: &str,
    ) -> Result<Vec<(Value, i64)>, OpsError> {
        let params: Vec<(String, String)> = kind
            .params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let fetched_at = (self.clock)();
            let page = self
                .api
                .list_page(tenant, path, &params, after.as_deref(), PAGE_SIZE)
                .await?;
            after = page.last_id().map(str::to_owned);
            let more = page.has_more && after.is_some();
            all.extend(page.data.into_iter().map(|o| (o, fetched_at)));
            if !more {
                return Ok(all);
            }
        }
    }
}

/// The fields in which `stored` and `truth` differ: the record's customer and each
/// projected doc field, or the whole record when one side has none.
///
/// Not compared: the raw Stripe object (doc field `raw`, [`crate::handlers::raw`]), a copy
/// for reading as of the last write whose unprojected fields change without any event
/// (a repair still rewrites it with the rest); and the other fields of an object both
/// sides say is deleted, since the API serves a deleted object as a stub or not at all.
pub fn differences(stored: Option<&StateRecord>, truth: Option<&StateRecord>) -> Vec<Difference> {
    let (kind, id) = match (stored, truth) {
        (None, None) => return Vec::new(),
        (Some(r), _) | (None, Some(r)) => (r.kind.clone(), r.id.clone()),
    };
    let diff = |field: &str, stored: Value, stripe: Value| Difference {
        kind: kind.clone(),
        id: id.clone(),
        field: field.to_owned(),
        stored,
        stripe,
    };
    let (stored, truth) = match (stored, truth) {
        (Some(s), Some(t)) => (s, t),
        (s, t) => {
            return vec![diff(
                WHOLE_RECORD,
                s.map_or(Value::Null, |r| r.doc.clone()),
                t.map_or(Value::Null, |r| r.doc.clone()),
            )];
        }
    };
    let deleted = |r: &StateRecord| r.doc.get("deleted") == Some(&Value::Bool(true));
    if deleted(stored) && deleted(truth) {
        return Vec::new();
    }
    let mut found = Vec::new();
    if stored.customer != truth.customer {
        found.push(diff(
            "customer",
            stored.customer.clone().map_or(Value::Null, Value::String),
            truth.customer.clone().map_or(Value::Null, Value::String),
        ));
    }
    let empty = serde_json::Map::new();
    let s = stored.doc.as_object().unwrap_or(&empty);
    let t = truth.doc.as_object().unwrap_or(&empty);
    let fields: BTreeSet<&String> = s.keys().chain(t.keys()).collect();
    for field in fields
        .into_iter()
        .filter(|f| *f != crate::handlers::raw::RAW_FIELD)
    {
        let (a, b) = (s.get(field), t.get(field));
        if a != b {
            found.push(diff(
                field,
                a.cloned().unwrap_or(Value::Null),
                b.cloned().unwrap_or(Value::Null),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(doc: Value, customer: Option<&str>) -> StateRecord {
        StateRecord {
            tenant: "t".into(),
            kind: "subscription".into(),
            id: "sub_1".into(),
            customer: customer.map(Into::into),
            as_of_ms: 1,
            tiebreak: "evt_1".into(),
            doc,
        }
    }

    #[test]
    fn differences_are_listed_field_by_field() {
        let a = record(
            json!({"status": "active", "items": [1], "gone": 1}),
            Some("cus_1"),
        );
        let b = record(json!({"status": "past_due", "items": [1]}), Some("cus_2"));
        let found = differences(Some(&a), Some(&b));
        let fields: Vec<&str> = found.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["customer", "gone", "status"]);
        assert_eq!(found[2].stored, "active");
        assert_eq!(found[2].stripe, "past_due");
        assert!(differences(Some(&a), Some(&a)).is_empty());
    }

    #[test]
    fn raw_objects_and_the_rest_of_deleted_objects_are_not_compared() {
        let a = record(
            json!({"status": "active", "raw": {"metadata": {"a": 1}}}),
            None,
        );
        let b = record(
            json!({"status": "active", "raw": {"metadata": {"a": 2}}}),
            None,
        );
        assert!(differences(Some(&a), Some(&b)).is_empty());
        let gone = record(json!({"name": "Pro", "deleted": true}), Some("cus_1"));
        let stub = record(json!({"name": null, "deleted": true}), None);
        assert!(differences(Some(&gone), Some(&stub)).is_empty());
        let alive = record(json!({"name": null, "deleted": false}), None);
        assert!(!differences(Some(&gone), Some(&alive)).is_empty());
    }

    #[test]
    fn a_missing_record_is_one_difference() {
        let b = record(json!({"status": "active"}), None);
        let found = differences(None, Some(&b));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, WHOLE_RECORD);
        assert_eq!(found[0].stored, Value::Null);
        assert!(differences(None, None).is_empty());
    }
}
