//! Archive replay on EventBridge: `StartReplay` from the bus archive
//! ([`AwsNames::archive`]) back to the bus, limited to chosen domain rules
//! ([`AwsNames::rule`]), and `DescribeReplay` to follow it.
//!
//! EventBridge stamps every replayed envelope with `replay-name`; the worker reads it
//! (see [`crate::worker::REPROCESS_REPLAY_PREFIX`]). A replay runs on the service: the
//! process that started it may stop at any time without losing anything.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::{ReplayDestination, ReplayState};

use super::AwsNames;
use super::error::from_sdk;
use crate::backend::{BackendError, BackendResult};
use crate::domain::Domain;

/// What to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySpec {
    /// The replay's name (unique per account and region; letters, digits, `.`, `-`, `_`,
    /// at most 64).
    pub name: String,
    /// Events archived at or after this time, ms since the epoch...
    pub from_ms: i64,
    /// ...and before this one.
    pub to_ms: i64,
    /// Only these domains' rules receive the replayed events.
    pub domains: Vec<Domain>,
}

/// Where a replay stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStatus {
    /// `STARTING`, `RUNNING`, `CANCELLING`, `COMPLETED`, `CANCELLED` or `FAILED`.
    pub state: String,
    /// Why it is in that state, when the service says.
    pub reason: Option<String>,
    /// The time of the last event replayed so far, ms since the epoch.
    pub last_replayed_ms: Option<i64>,
}

impl ReplayStatus {
    /// Whether the replay has ended (completed, cancelled or failed).
    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "COMPLETED" | "CANCELLED" | "FAILED")
    }
}

/// Start replaying `spec` from the archive of `names`' bus. Returns the replay ARN.
pub async fn start_replay(
    client: &Client,
    names: &AwsNames,
    spec: &ReplaySpec,
) -> BackendResult<String> {
    let archive = client
        .describe_archive()
        .archive_name(names.archive())
        .send()
        .await
        .map_err(|e| from_sdk("eventbridge.describe_archive", e))?;
    let (Some(archive_arn), Some(bus_arn)) = (archive.archive_arn, archive.event_source_arn) else {
        return Err(permanent(format!(
            "archive {} has no ARN or source bus",
            names.archive()
        )));
    };
    let mut rules = Vec::with_capacity(spec.domains.len());
    for &domain in &spec.domains {
        let rule = client
            .describe_rule()
            .name(names.rule(domain))
            .event_bus_name(names.bus())
            .send()
            .await
            .map_err(|e| from_sdk("eventbridge.describe_rule", e))?;
        rules.push(
            rule.arn
                .ok_or_else(|| permanent(format!("rule {} has no ARN", names.rule(domain))))?,
        );
    }
    let destination = ReplayDestination::builder()
        .arn(bus_arn)
        .set_filter_arns(Some(rules))
        .build()
        .map_err(|e| permanent(e.to_string()))?;
    let out = client
        .start_replay()
        .replay_name(&spec.name)
        .description("stripe-worker replay")
        .event_source_arn(archive_arn)
        .event_start_time(DateTime::from_millis(spec.from_ms))
        .event_end_time(DateTime::from_millis(spec.to_ms))
        .destination(destination)
        .send()
        .await
        .map_err(|e| from_sdk("eventbridge.start_replay", e))?;
    Ok(out.replay_arn.unwrap_or_default())
}

/// Where the replay `name` stands.
pub async fn describe_replay(client: &Client, name: &str) -> BackendResult<ReplayStatus> {
    let out = client
        .describe_replay()
        .replay_name(name)
        .send()
        .await
        .map_err(|e| from_sdk("eventbridge.describe_replay", e))?;
    Ok(ReplayStatus {
        state: out
            .state
            .as_ref()
            .map_or("UNKNOWN", ReplayState::as_str)
            .to_owned(),
        reason: out.state_reason,
        last_replayed_ms: out
            .event_last_replayed_time
            .and_then(|t| t.to_millis().ok()),
    })
}

fn permanent(message: String) -> BackendError {
    BackendError::Permanent {
        operation: "eventbridge.start_replay",
        message,
    }
}
