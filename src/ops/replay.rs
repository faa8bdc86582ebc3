//! `stripe-worker replay`: send the events of a time window from the bus archive through
//! the routing again. Replayed events pass through dedupe, so a replay after an outage
//! fills the gaps without applying anything twice; with `--reprocess` the replay is named
//! `reprocess-...` ([`REPROCESS_REPLAY_PREFIX`]) and handlers re-apply events already
//! done, which the as-of ordering of state writes makes safe.
//!
//! - AWS: EventBridge `StartReplay` from the archive back to the bus, limited to the
//!   chosen domains' rules, followed with `DescribeReplay`. The replay runs on the
//!   service; interrupting the command leaves it running.
//! - Embedded: [`LocalBus::replay`] re-publishes the archived envelopes with
//!   `replay-name` set, through the same routing.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::{OpsError, time_text};
use crate::backend::aws::AwsNames;
use crate::backend::aws::replay::{ReplaySpec, describe_replay, start_replay};
use crate::backend::local_bus::LocalBus;
use crate::backend::{Archive, Queue};
use crate::domain::Domain;
use crate::worker::REPROCESS_REPLAY_PREFIX;

/// Longest replay name EventBridge accepts.
pub const MAX_NAME_LEN: usize = 64;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    /// Events archived at or after this time (ms since the epoch)...
    pub from_ms: i64,
    /// ...and before this one.
    pub to_ms: i64,
    /// Only this domain's queue (default: every domain).
    pub domain: Option<Domain>,
    /// The replay's name (default: `replay-<from>-<now>`).
    pub name: Option<String>,
    /// Let handlers re-apply events already done.
    pub reprocess: bool,
}

impl ReplayRequest {
    /// Check the window and name, and settle the name: the given one or a generated one,
    /// with [`REPROCESS_REPLAY_PREFIX`] in front when reprocessing (and only then).
    pub fn resolve_name(&self, now_ms: i64) -> Result<String, OpsError> {
        if self.from_ms >= self.to_ms {
            return Err(OpsError::Invalid(format!(
                "--from ({}) must be before --to ({})",
                time_text(self.from_ms),
                time_text(self.to_ms)
            )));
        }
        let base = match &self.name {
            Some(name) => name.clone(),
            None => format!("replay-{}-{}", self.from_ms / 1000, now_ms),
        };
        let name = match (self.reprocess, base.starts_with(REPROCESS_REPLAY_PREFIX)) {
            (true, false) => format!("{REPROCESS_REPLAY_PREFIX}{base}"),
            (false, true) => {
                return Err(OpsError::Invalid(format!(
                    "a replay named `{base}` would re-apply events: pass --reprocess, or another name"
                )));
            }
            _ => base,
        };
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if !valid {
            return Err(OpsError::Invalid(format!(
                "replay name `{name}`: use 1 to {MAX_NAME_LEN} letters, digits, `.`, `-` or `_`"
            )));
        }
        Ok(name)
    }

    fn domains(&self) -> Vec<Domain> {
        self.domain
            .map_or_else(|| Domain::ALL.to_vec(), |d| vec![d])
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// The replay name (the `replay-name` of every replayed envelope).
    pub name: String,
    /// `local` or `aws`.
    pub backend: &'static str,
    /// The window start, RFC 3339.
    pub from: String,
    /// The window end, RFC 3339.
    pub to: String,
    /// The domains whose queues got the replayed events.
    pub domains: Vec<Domain>,
    /// Whether handlers re-apply events already done.
    pub reprocess: bool,
    /// The final state (`COMPLETED` when it ended well).
    pub state: String,
    /// Embedded backend: archived envelopes in the window.
    pub archived: Option<u64>,
    /// Embedded backend: deliveries to queues.
    pub delivered: Option<u64>,
    /// AWS: the replay ARN.
    pub replay_arn: Option<String>,
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domains: Vec<&str> = self.domains.iter().map(|d| d.as_str()).collect();
        writeln!(
            f,
            "replay {} ({}): {} from {} to {} into {}{}",
            self.name,
            self.backend,
            self.state,
            self.from,
            self.to,
            domains.join(", "),
            if self.reprocess { ", reprocessing" } else { "" }
        )?;
        if let (Some(archived), Some(delivered)) = (self.archived, self.delivered) {
            writeln!(
                f,
                "{archived} archived events in the window, {delivered} deliveries to queues"
            )?;
        }
        Ok(())
    }
}

fn report(request: &ReplayRequest, name: String, backend: &'static str) -> ReplayReport {
    ReplayReport {
        name,
        backend,
        from: time_text(request.from_ms),
        to: time_text(request.to_ms),
        domains: request.domains(),
        reprocess: request.reprocess,
        state: "STARTING".to_owned(),
        archived: None,
        delivered: None,
        replay_arn: None,
    }
}

/// Replay on the embedded backend through `bus`.
pub async fn replay_local<Q: Queue, A: Archive>(
    bus: &LocalBus<Q, A>,
    request: &ReplayRequest,
    now_ms: i64,
    progress: &indicatif::ProgressBar,
) -> Result<ReplayReport, OpsError> {
    let name = request.resolve_name(now_ms)?;
    let mut out = report(request, name, "local");
    let bar = progress.clone();
    let counts = bus
        .replay(
            request.from_ms,
            request.to_ms,
            &out.name,
            request.domain,
            &move |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            },
        )
        .await?;
    progress.finish_and_clear();
    out.state = "COMPLETED".to_owned();
    out.archived = Some(counts.archived);
    out.delivered = Some(counts.delivered);
    Ok(out)
}

/// Replay on AWS from the archive of `names`' bus, polling every `poll` until the replay
/// ends. Progress is the share of the window replayed so far (0 to 1000).
pub async fn replay_aws(
    client: &aws_sdk_eventbridge::Client,
    names: &AwsNames,
    request: &ReplayRequest,
    now_ms: i64,
    poll: Duration,
    progress: &indicatif::ProgressBar,
) -> Result<ReplayReport, OpsError> {
    let name = request.resolve_name(now_ms)?;
    let mut out = report(request, name, "aws");
    let spec = ReplaySpec {
        name: out.name.clone(),
        from_ms: request.from_ms,
        to_ms: request.to_ms,
        domains: out.domains.clone(),
    };
    out.replay_arn = Some(start_replay(client, names, &spec).await?);
    progress.set_length(1000);
    let span = (request.to_ms - request.from_ms).max(1);
    loop {
        let status = describe_replay(client, &out.name).await?;
        if let Some(at) = status.last_replayed_ms {
            let done = (at - request.from_ms).clamp(0, span) * 1000 / span;
            progress.set_position(u64::try_from(done).unwrap_or(0));
        }
        if status.is_finished() {
            progress.finish_and_clear();
            out.state.clone_from(&status.state);
            if status.state != "COMPLETED" {
                return Err(OpsError::ReplayFailed {
                    name: out.name,
                    state: status.state,
                    reason: status.reason.unwrap_or_default(),
                });
            }
            return Ok(out);
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: Option<&str>, reprocess: bool) -> ReplayRequest {
        ReplayRequest {
            from_ms: 1_000,
            to_ms: 2_000,
            domain: None,
            name: name.map(str::to_owned),
            reprocess,
        }
    }

    #[test]
    fn names_carry_the_reprocess_marker_only_when_asked() {
        assert_eq!(
            request(Some("fill-gap"), false).resolve_name(5).unwrap(),
            "fill-gap"
        );
        assert_eq!(
            request(Some("fill-gap"), true).resolve_name(5).unwrap(),
            "reprocess-fill-gap"
        );
        assert_eq!(
            request(Some("reprocess-x"), true).resolve_name(5).unwrap(),
            "reprocess-x"
        );
        assert!(request(Some("reprocess-x"), false).resolve_name(5).is_err());
        assert_eq!(request(None, false).resolve_name(5).unwrap(), "replay-1-5");
        assert!(request(Some("bad name"), false).resolve_name(5).is_err());
        assert!(
            request(Some(&"x".repeat(65)), false)
                .resolve_name(5)
                .is_err()
        );
        let backwards = ReplayRequest {
            from_ms: 2_000,
            to_ms: 1_000,
            ..request(None, false)
        };
        assert!(backwards.resolve_name(5).is_err());
    }
}
