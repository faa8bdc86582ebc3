//! `stripe-worker dlq list|show|redrive|purge`: what a domain's dead-letter queue holds
//! and why, and moving it back once the cause is fixed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::{OpsError, table, time_text};
use crate::backend::{DeadLetterOps, DlqMessage, RedriveFilter, dlq_attributes};
use crate::domain::Domain;
use crate::event::decode_message;
use crate::tenant::TenantConfig;

/// One dead-lettered message: its reason attributes and, when the body decodes, which
/// event it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqEntry {
    /// The message id in the DLQ (what `dlq show` takes).
    pub message_id: String,
    /// The Stripe event id, when the body decodes.
    pub event_id: Option<String>,
    /// The event type, when the body decodes.
    pub event_type: Option<String>,
    /// The tenant as the current configuration resolves it, else the tenant the event
    /// names (webhook `tenant_id`), when the body decodes.
    pub tenant: Option<String>,
    /// Why the body does not decode, when it does not.
    pub decode_error: Option<String>,
    /// [`dlq_attributes::ERROR_KIND`].
    pub error_kind: Option<String>,
    /// [`dlq_attributes::ERROR_MESSAGE`].
    pub error_message: Option<String>,
    /// [`dlq_attributes::HANDLER`].
    pub handler: Option<String>,
    /// [`dlq_attributes::SOURCE_QUEUE`].
    pub source_queue: Option<String>,
    /// [`dlq_attributes::FIRST_SEEN_MS`].
    pub first_seen_ms: Option<i64>,
    /// [`dlq_attributes::RECEIVE_COUNT`]: receives in the source queue.
    pub receive_count: Option<u32>,
    /// [`dlq_attributes::DEAD_LETTERED_MS`], else when the DLQ got the message.
    pub dead_lettered_ms: i64,
}

impl DlqEntry {
    /// Describe a DLQ message, resolving its tenant with `tenants`.
    pub fn describe(message: &DlqMessage, tenants: &TenantConfig) -> Self {
        let attr = |name: &str| message.attribute(name).map(str::to_owned);
        let number = |name: &str| message.attribute(name).and_then(|v| v.parse::<i64>().ok());
        let (event_id, event_type, tenant, decode_error) =
            match decode_message(message.body.as_bytes()) {
                Ok(event) => {
                    let tenant = tenants.resolve(&event).ok().or(event.tenant_hint.clone());
                    (Some(event.event_id), Some(event.event_type), tenant, None)
                }
                Err(e) => (None, None, None, Some(e.to_string())),
            };
        DlqEntry {
            message_id: message.message_id.clone(),
            event_id,
            event_type,
            tenant,
            decode_error,
            error_kind: attr(dlq_attributes::ERROR_KIND),
            error_message: attr(dlq_attributes::ERROR_MESSAGE),
            handler: attr(dlq_attributes::HANDLER),
            source_queue: attr(dlq_attributes::SOURCE_QUEUE),
            first_seen_ms: number(dlq_attributes::FIRST_SEEN_MS),
            receive_count: number(dlq_attributes::RECEIVE_COUNT)
                .and_then(|n| u32::try_from(n).ok()),
            dead_lettered_ms: number(dlq_attributes::DEAD_LETTERED_MS)
                .unwrap_or(message.sent_at_ms),
        }
    }
}

/// A domain's dead-lettered messages, as `dlq list` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlqListing {
    /// The domain.
    pub domain: Domain,
    /// The messages, oldest dead-lettered first.
    pub messages: Vec<DlqEntry>,
}

/// Up to `limit` dead-lettered messages of `queue`.
pub async fn list<Q: DeadLetterOps>(
    queue: &Q,
    domain: Domain,
    limit: usize,
    tenants: &TenantConfig,
) -> Result<DlqListing, OpsError> {
    let messages = queue.dlq_peek(limit).await?;
    Ok(DlqListing {
        domain,
        messages: messages
            .iter()
            .map(|m| DlqEntry::describe(m, tenants))
            .collect(),
    })
}

fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

/// Keep a table cell on one line and short.
fn cell(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut s: String = one_line.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

impl fmt::Display for DlqListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.messages.is_empty() {
            return writeln!(f, "the {} dead-letter queue is empty", self.domain);
        }
        let rows: Vec<Vec<String>> = self
            .messages
            .iter()
            .map(|e| {
                vec![
                    e.message_id.clone(),
                    opt(e.event_id.as_deref()),
                    opt(e.event_type.as_deref()),
                    opt(e.tenant.as_deref()),
                    opt(e.error_kind.as_deref()),
                    e.receive_count
                        .map_or_else(|| "-".into(), |n| n.to_string()),
                    time_text(e.dead_lettered_ms),
                    cell(
                        e.error_message
                            .as_deref()
                            .or(e.decode_error.as_deref())
                            .unwrap_or("-"),
                        60,
                    ),
                ]
            })
            .collect();
        f.write_str(&table(
            &[
                "MESSAGE ID",
                "EVENT",
                "TYPE",
                "TENANT",
                "REASON",
                "RECEIVES",
                "DEAD-LETTERED",
                "DETAIL",
            ],
            &rows,
        ))
    }
}

/// One dead-lettered message in full, as `dlq show` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DlqDetail {
    /// The domain.
    pub domain: Domain,
    /// What `dlq list` shows.
    #[serde(flatten)]
    pub entry: DlqEntry,
    /// Every message attribute.
    pub attributes: BTreeMap<String, String>,
    /// The body: JSON when it parses, else the text.
    pub body: Value,
}

/// The dead-lettered message `id` of `queue`. Looks through the whole DLQ.
pub async fn show<Q: DeadLetterOps>(
    queue: &Q,
    domain: Domain,
    id: &str,
    tenants: &TenantConfig,
) -> Result<DlqDetail, OpsError> {
    let all = queue.dlq_peek(usize::MAX).await?;
    let message = all
        .into_iter()
        .find(|m| m.message_id == id)
        .ok_or_else(|| OpsError::NotFound {
            domain,
            id: id.to_owned(),
        })?;
    Ok(DlqDetail {
        domain,
        entry: DlqEntry::describe(&message, tenants),
        body: serde_json::from_str(&message.body).unwrap_or(Value::String(message.body.clone())),
        attributes: message.attributes,
    })
}

impl fmt::Display for DlqDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.entry;
        let fields = [
            ("message id", Some(e.message_id.clone())),
            ("domain", Some(self.domain.to_string())),
            ("event", e.event_id.clone()),
            ("type", e.event_type.clone()),
            ("tenant", e.tenant.clone()),
            ("decode error", e.decode_error.clone()),
            ("reason", e.error_kind.clone()),
            ("message", e.error_message.clone()),
            ("handler", e.handler.clone()),
            ("source queue", e.source_queue.clone()),
            ("first seen", e.first_seen_ms.map(time_text)),
            ("receives", e.receive_count.map(|n| n.to_string())),
            ("dead-lettered", Some(time_text(e.dead_lettered_ms))),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                writeln!(f, "{name:<14} {value}")?;
            }
        }
        writeln!(f, "body:")?;
        let body = serde_json::to_string_pretty(&self.body).map_err(|_| fmt::Error)?;
        writeln!(f, "{body}")
    }
}

/// What a redrive did, or with `dry_run` would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedriveReport {
    /// The domain.
    pub domain: Domain,
    /// Whether nothing was moved (only counted).
    pub dry_run: bool,
    /// The `--reason` filter.
    pub reason: Option<String>,
    /// The `--event-type` filter.
    pub event_type: Option<String>,
    /// Messages moved back to the source queue (with `dry_run`: that would be).
    pub moved: u64,
    /// With `dry_run`: the messages that would move.
    pub would_move: Vec<DlqEntry>,
}

/// Move the messages `filter` selects back to the source queue, or with `dry_run` list
/// them. `progress` hears the running count of moved messages.
pub async fn redrive<Q: DeadLetterOps>(
    queue: &Q,
    domain: Domain,
    filter: &RedriveFilter,
    dry_run: bool,
    tenants: &TenantConfig,
    progress: &indicatif::ProgressBar,
) -> Result<RedriveReport, OpsError> {
    let mut report = RedriveReport {
        domain,
        dry_run,
        reason: filter.error_kind.clone(),
        event_type: filter.event_type.clone(),
        moved: 0,
        would_move: Vec::new(),
    };
    if dry_run {
        report.would_move = queue
            .dlq_peek(usize::MAX)
            .await?
            .iter()
            .filter(|m| filter.matches(&m.message_id, &m.attributes, &m.body))
            .map(|m| DlqEntry::describe(m, tenants))
            .collect();
        report.moved = report.would_move.len() as u64;
        return Ok(report);
    }
    let bar = progress.clone();
    report.moved = queue
        .dlq_redrive(filter, &move |moved| bar.set_position(moved))
        .await?;
    progress.finish_and_clear();
    Ok(report)
}

impl fmt::Display for RedriveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(
                f,
                "dry run: {} messages would move from the {} dead-letter queue back to its queue",
                self.moved, self.domain
            )?;
            if !self.would_move.is_empty() {
                let listing = DlqListing {
                    domain: self.domain,
                    messages: self.would_move.clone(),
                };
                write!(f, "{listing}")?;
            }
            Ok(())
        } else {
            writeln!(
                f,
                "moved {} messages from the {} dead-letter queue back to its queue",
                self.moved, self.domain
            )
        }
    }
}

/// What a purge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The domain.
    pub domain: Domain,
    /// Messages deleted.
    pub deleted: u64,
}

/// Delete every message in `queue`'s dead-letter queue.
pub async fn purge<Q: DeadLetterOps>(queue: &Q, domain: Domain) -> Result<PurgeReport, OpsError> {
    Ok(PurgeReport {
        domain,
        deleted: queue.dlq_purge().await?,
    })
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deleted {} messages from the {} dead-letter queue",
            self.deleted, self.domain
        )
    }
}
