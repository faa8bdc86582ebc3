//! `import`: every object of every kind the handlers keep, listed from the Stripe API and
//! written through the same ordered upsert as events, resumable per (tenant, kind).
//!
//! Pages are `limit=100`, newest first, followed with `starting_after` (stripe/sync-engine
//! and dj-stripe page the same way). After each page is written, the kind's checkpoint
//! (`import:<kind>` in the [`ReconcileStore`]) records the last id, so an interrupted
//! import lists from there when run again; a finished kind is marked done, and when every
//! asked-for kind is done the checkpoints are cleared, so the next import starts afresh.
//! A crash between a page's writes and its checkpoint re-lists that one page: the
//! writes are ordered upserts, so that costs requests, never correctness.
//!
//! Each record's as-of is the second its page's request started in
//! ([`super::fetched_as_of`]), so an import beside live traffic never overwrites the
//! record of an event newer than the page: events of later seconds win, older ones lose,
//! and a record that meets the stored record of an event of its own second is a tie
//! ([`super::ties`]): the object is fetched again, one GET, and that version is stored
//! ([`Reconciler::store`]). Letting the stored event stand instead would also be safe
//! while events flow, but import and repair are for when they did not: the refetch is
//! right whatever was missed, and such ties are rare (an event in the very second of a
//! page's request).
//!
//! Some objects the handlers keep are never listed: Stripe lists neither deleted
//! customers nor payment methods detached from their customer. They are still named by
//! other objects (a canceled subscription's customer, an old payment intent's card), so
//! after each page the import fetches, one by one, every customer and payment method the
//! page names that the store lacks, once those two kinds have been listed (they are
//! listed first). A last pass does the same for the names in the stored records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::kinds::{CUSTOMER_PLACEHOLDER, ListedKind, Projector, listed};
use super::ties::{could_tie, refetched_as_of, ties_with};
use crate::backend::{ReconcileStore, StateRecord, StateStore, WriteOutcome};
use crate::clock::Clock;
use crate::handlers::kinds;
use crate::ops::OpsError;
use crate::stripe::api::{ListPage, StripeApiClient};
use crate::telemetry::metrics;

/// Objects per page (Stripe's maximum).
pub const PAGE_SIZE: u8 = 100;

/// The checkpoint name of `kind`'s import.
pub fn checkpoint_name(kind: &str) -> String {
    format!("import:{kind}")
}

/// Where an import of one kind stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last id written (for a per-customer kind, the last customer finished).
    pub after: Option<String>,
    /// Whether the kind is finished.
    pub done: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The tenant.
    pub tenant: String,
    /// Records written (new or newer than the stored one), per kind.
    pub imported: BTreeMap<String, u64>,
    /// Objects listed, per kind.
    pub listed: BTreeMap<String, u64>,
    /// Objects the handlers keep no record of (open checkout sessions, unfinished setup
    /// intents) or refuse (a malformed object, logged), per kind.
    pub skipped: BTreeMap<String, u64>,
    /// Kinds that went on from a checkpoint of an earlier, interrupted import.
    pub resumed: Vec<String>,
    /// List requests made.
    pub pages: u64,
    /// Objects fetched one by one because another object names them and no list returns
    /// them (deleted customers, detached payment methods); counted in `imported` too.
    pub referenced: u64,
    /// Objects fetched again because their record met an event's record of the same
    /// second (a tie, see [`super::ties`]).
    pub ties: u64,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "import for tenant {}:", self.tenant)?;
        let rows: Vec<Vec<String>> = self
            .listed
            .iter()
            .map(|(kind, listed)| {
                let get = |m: &BTreeMap<String, u64>| m.get(kind).copied().unwrap_or(0);
                vec![
                    kind.clone(),
                    listed.to_string(),
                    get(&self.imported).to_string(),
                    get(&self.skipped).to_string(),
                    if self.resumed.contains(kind) {
                        "yes".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        f.write_str(&crate::ops::table(
            &["KIND", "LISTED", "IMPORTED", "SKIPPED", "RESUMED"],
            &rows,
        ))?;
        writeln!(
            f,
            "{} list requests; {} unlisted objects fetched by reference; {} same-second ties fetched again",
            self.pages, self.referenced, self.ties
        )
    }
}

/// Everything an import (and a repair) needs.
pub struct Reconciler<'a, S, C> {
    /// The Stripe API.
    pub api: &'a StripeApiClient,
    /// Where records go.
    pub state: &'a S,
    /// Where checkpoints go.
    pub checkpoints: &'a C,
    /// Objects to records.
    pub projector: &'a Projector,
    /// The wall clock (fetch times).
    pub clock: Clock,
}

impl<S: StateStore, C: ReconcileStore> Reconciler<'_, S, C> {
    /// Import `kinds` of `tenant`, showing progress on `progress`.
    pub async fn import(
        &self,
        tenant: &str,
        kinds: &[&'static ListedKind],
        progress: &indicatif::ProgressBar,
    ) -> Result<ImportReport, OpsError> {
        let mut report = ImportReport {
            tenant: tenant.to_owned(),
            ..ImportReport::default()
        };
        let mut listed_kinds: Vec<&'static ListedKind> = Vec::with_capacity(kinds.len());
        for kind in kinds {
            self.import_kind(tenant, kind, &listed_kinds, &mut report, progress)
                .await?;
            listed_kinds.push(kind);
        }
        let stored = self.state.export(Some(tenant)).await?;
        let mut named = Named::new();
        for record in &stored {
            names_in_record(record, &mut named);
        }
        let have: BTreeSet<(String, String)> = stored.into_iter().map(|r| (r.kind, r.id)).collect();
        self.fetch_named(tenant, kinds, named, Some(&have), &mut report, progress)
            .await?;
        for kind in kinds {
            self.checkpoints
                .set_checkpoint(tenant, &checkpoint_name(kind.kind), None)
                .await?;
        }
        progress.finish_and_clear();
        Ok(report)
    }

    async fn import_kind(
        &self,
        tenant: &str,
        kind: &'static ListedKind,
        listed_kinds: &[&'static ListedKind],
        report: &mut ImportReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<(), OpsError> {
        let name = checkpoint_name(kind.kind);
        let mut checkpoint = match self.checkpoints.checkpoint(tenant, &name).await? {
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                OpsError::Invalid(format!(
                    "checkpoint `{name}` of tenant {tenant} is unreadable ({e}); \
                     clear it by running the import of this kind from scratch"
                ))
            })?,
            None => Checkpoint::default(),
        };
        report.listed.entry(kind.kind.to_owned()).or_default();
        if checkpoint.after.is_some() || checkpoint.done {
            report.resumed.push(kind.kind.to_owned());
        }
        if checkpoint.done {
            return Ok(());
        }
        progress.set_message(kind.kind);
        if kind.per_customer() {
            // Walk the customer list from the last customer finished; each customer's
            // own list is short (one page), so it is checkpointed as a whole.
            let customers = listed(kinds::CUSTOMER).unwrap_or(kind);
            loop {
                let page = self
                    .page(
                        tenant,
                        customers.path,
                        &[],
                        checkpoint.after.as_deref(),
                        report,
                    )
                    .await?;
                for customer in &page.data {
                    let Some(id) = customer.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    let path = kind.path.replace(CUSTOMER_PLACEHOLDER, id);
                    self.import_list(
                        tenant,
                        kind,
                        &path,
                        None,
                        None,
                        listed_kinds,
                        report,
                        progress,
                    )
                    .await?;
                    checkpoint.after = Some(id.to_owned());
                    self.save(tenant, &name, &checkpoint).await?;
                }
                if !page.has_more || page.last_id().is_none() {
                    break;
                }
            }
        } else {
            let after = checkpoint.after.take();
            self.import_list(
                tenant,
                kind,
                kind.path,
                after,
                Some(&name),
                listed_kinds,
                report,
                progress,
            )
            .await?;
        }
        checkpoint.done = true;
        self.save(tenant, &name, &checkpoint).await
    }

    /// List `path` from `after` to the end, writing each kept object and the unlisted
    /// objects of `listed_kinds` it names; after each page, save the checkpoint `save_as`
    /// with the page's last id, when given.
    #[allow(clippy::too_many_arguments)]
    async fn import_list(
        &self,
        tenant: &str,
        kind: &'static ListedKind,
        path: &str,
        mut after: Option<String>,
        save_as: Option<&str>,
        listed_kinds: &[&'static ListedKind],
        report: &mut ImportReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<(), OpsError> {
        loop {
            let mut named = Named::new();
            let fetched_at = (self.clock)();
            let page = self
                .page(tenant, path, kind.params, after.as_deref(), report)
                .await?;
            for object in &page.data {
                *report.listed.entry(kind.kind.to_owned()).or_default() += 1;
                names_in(object, &mut named);
                let written = self.write(tenant, kind, object, fetched_at, report).await?;
                let counter = if written == Some(WriteOutcome::Written) {
                    &mut report.imported
                } else if written.is_none() {
                    &mut report.skipped
                } else {
                    // Stale: the store holds a newer version already.
                    progress.inc(1);
                    continue;
                };
                *counter.entry(kind.kind.to_owned()).or_default() += 1;
                progress.inc(1);
            }
            self.fetch_named(tenant, listed_kinds, named, None, report, progress)
                .await?;
            let Some(last) = page.last_id() else { break };
            after = Some(last.to_owned());
            if let Some(name) = save_as {
                let checkpoint = Checkpoint {
                    after: after.clone(),
                    done: false,
                };
                self.save(tenant, name, &checkpoint).await?;
            }
            if !page.has_more {
                break;
            }
        }
        Ok(())
    }

    /// Fetch and write every object in `named` of one of `kinds` that the store lacks
    /// (by `have` when given, else asking the store).
    async fn fetch_named(
        &self,
        tenant: &str,
        kinds: &[&'static ListedKind],
        named: Named,
        have: Option<&BTreeSet<(String, String)>>,
        report: &mut ImportReport,
        progress: &indicatif::ProgressBar,
    ) -> Result<(), OpsError> {
        for (kind_name, id) in &named {
            let Some(kind) = kinds.iter().find(|k| k.kind == *kind_name) else {
                continue;
            };
            let stored = match have {
                Some(have) => have.contains(&((*kind_name).to_owned(), id.clone())),
                None => self.state.get(tenant, kind_name, id).await?.is_some(),
            };
            if stored {
                continue;
            }
            let reference = crate::event::ObjectRef {
                id: id.clone(),
                object_type: kind.object_type.to_owned(),
                url: None,
                customer: None,
            };
            let fetched_at = (self.clock)();
            let object = match self.api.get_object(tenant, &reference, None).await {
                Ok(object) => object,
                // Named but gone for good (or never this account's): nothing to keep.
                Err(crate::stripe::hydrate::HydrateError::Permanent { code, .. })
                    if code == crate::stripe::api::codes::NOT_FOUND =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            report.referenced += 1;
            if self
                .write(tenant, kind, &object, fetched_at, report)
                .await?
                == Some(WriteOutcome::Written)
            {
                *report.imported.entry(kind.kind.to_owned()).or_default() += 1;
            }
            progress.inc(1);
        }
        Ok(())
    }

    /// Write `object`, fetched at `fetched_ms`, as a record of `kind` ([`Self::store`]);
    /// `None` when the handlers keep no record of it.
    async fn write(
        &self,
        tenant: &str,
        kind: &ListedKind,
        object: &Value,
        fetched_ms: i64,
        report: &mut ImportReport,
    ) -> Result<Option<WriteOutcome>, OpsError> {
        let Some(record) = self.record(tenant, kind, object, fetched_ms) else {
            return Ok(None);
        };
        let stored = self.store(tenant, kind, record).await?;
        report.ties += u64::from(stored.refetched);
        Ok(Some(stored.outcome))
    }

    /// The record `object`, fetched at `fetched_ms`, gives for `kind`; `None` when the
    /// handlers keep none, or refuse the object (logged).
    pub(super) fn record(
        &self,
        tenant: &str,
        kind: &ListedKind,
        object: &Value,
        fetched_ms: i64,
    ) -> Option<StateRecord> {
        self.projector
            .record(tenant, kind, object, fetched_ms)
            .unwrap_or_else(|error| {
                let id = object.get("id").and_then(Value::as_str).unwrap_or("?");
                tracing::warn!(%error, kind = kind.kind, id, "skipping an object the handler refuses");
                None
            })
    }

    /// Store `record`, a version of a `kind` object fetched from the API, through the
    /// ordered upsert. When it ties with the stored record of an event of the same second
    /// ([`ties_with`]), the object is fetched again and that version stored instead (see
    /// the module docs); a refetch that finds the object gone, or no longer kept, leaves
    /// the stored record as it is.
    pub async fn store(
        &self,
        tenant: &str,
        kind: &ListedKind,
        record: StateRecord,
    ) -> Result<Stored, OpsError> {
        let mut record = record;
        let mut refetched = false;
        if could_tie(&record)
            && let Some(stored) = self.state.get(tenant, &record.kind, &record.id).await?
            && ties_with(&stored, &record)
        {
            refetched = true;
            metrics::get().state_tie("fetched");
            tracing::debug!(kind = %record.kind, id = %record.id, "fetched version meets an event of its second: fetching again");
            match self.refetch(tenant, kind, &record).await? {
                Some(again) => record = again,
                None => {
                    return Ok(Stored {
                        outcome: WriteOutcome::Stale,
                        refetched,
                    });
                }
            }
        }
        let outcome = self.state.put_if_newer(&record).await?;
        Ok(Stored { outcome, refetched })
    }

    /// `tied`'s object fetched again, as its record ([`refetched_as_of`]); `None` when it
    /// is gone or no longer kept.
    async fn refetch(
        &self,
        tenant: &str,
        kind: &ListedKind,
        tied: &StateRecord,
    ) -> Result<Option<StateRecord>, OpsError> {
        let reference = crate::event::ObjectRef {
            id: tied.id.clone(),
            object_type: kind.object_type.to_owned(),
            url: None,
            customer: None,
        };
        let fetched_ms = (self.clock)();
        let object = match self.api.get_object(tenant, &reference, None).await {
            Ok(object) => object,
            Err(crate::stripe::hydrate::HydrateError::Permanent { code, .. })
                if code == crate::stripe::api::codes::NOT_FOUND =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        Ok(self
            .record(tenant, kind, &object, fetched_ms)
            .filter(|r| r.kind == tied.kind && r.id == tied.id)
            .map(|r| StateRecord {
                as_of_ms: refetched_as_of(fetched_ms, tied.as_of_ms),
                ..r
            }))
    }

    async fn page(
        &self,
        tenant: &str,
        path: &str,
        params: &[(&str, &str)],
        after: Option<&str>,
        report: &mut ImportReport,
    ) -> Result<ListPage, OpsError> {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let page = self
            .api
            .list_page(tenant, path, &params, after, PAGE_SIZE)
            .await?;
        report.pages += 1;
        Ok(page)
    }

    async fn save(
        &self,
        tenant: &str,
        name: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), OpsError> {
        let text = serde_json::to_string(checkpoint)
            .map_err(|e| OpsError::Invalid(format!("checkpoint {name}: {e}")))?;
        self.checkpoints
            .set_checkpoint(tenant, name, Some(&text))
            .await?;
        Ok(())
    }
}

/// What [`Reconciler::store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Whether the record (or its refetched version) was written.
    pub outcome: WriteOutcome,
    /// Whether the object was fetched again to resolve a same-second tie.
    pub refetched: bool,
}

/// (kind, id) of objects named by other objects.
pub(super) type Named = BTreeSet<(&'static str, String)>;

/// Add the customers and payment methods a stored record names to `named`.
pub(super) fn names_in_record(record: &crate::backend::StateRecord, named: &mut Named) {
    if let Some(customer) = &record.customer {
        named.insert((kinds::CUSTOMER, customer.clone()));
    }
    names_in(&record.doc, named);
}

/// Add the customers and payment methods `object` names (its `customer`, its
/// `payment_method`, a customer's default payment method) to `named`. Ids may be
/// expanded objects.
pub(super) fn names_in(object: &Value, named: &mut Named) {
    let id = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(id) if !id.is_empty() => Some(id.clone()),
            Value::Object(expanded) => expanded.get("id")?.as_str().map(str::to_owned),
            _ => None,
        }
    };
    if let Some(customer) = id(object.get("customer")) {
        named.insert((kinds::CUSTOMER, customer));
    }
    let payment_methods = [
        object.get("payment_method"),
        object.get("default_payment_method"),
        object
            .get("invoice_settings")
            .and_then(|s| s.get("default_payment_method")),
    ];
    for pm in payment_methods {
        if let Some(pm) = id(pm) {
            named.insert((kinds::PAYMENT_METHOD, pm));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn customers_and_payment_methods_named_by_objects() {
        let mut named = Named::new();
        names_in(
            &json!({"customer": {"id": "cus_1"}, "payment_method": "pm_1",
                    "invoice_settings": {"default_payment_method": "pm_2"},
                    "default_payment_method": null}),
            &mut named,
        );
        names_in(&json!({"customer": ""}), &mut named);
        let got: Vec<(&str, &str)> = named.iter().map(|(k, i)| (*k, i.as_str())).collect();
        assert_eq!(
            got,
            [
                ("customer", "cus_1"),
                ("payment_method", "pm_1"),
                ("payment_method", "pm_2")
            ]
        );
    }
}
