//! The subscription schedule handler: `subscription_schedule.*` events become one
//! `subscription_schedule` record each.

use serde_json::{Value, json};

use super::fields::{copy, error, expandable_id, object, one_segment_after, required_id};
use super::{Handler, HandlerError, StateChange, kinds, raw};
use crate::domain::Domain;

/// The handler's name (part of the dedupe key; do not rename).
pub const NAME: &str = "subscription_schedule";

/// Turns subscription schedules into `subscription_schedule` records, with the whole
/// object as `raw` ([`super::raw`]).
///
/// Doc fields: `id`, `customer`, `subscription`, `status` (`not_started`, `active`,
/// `completed`, `released`, `canceled`), `end_behavior`, `current_phase_start`,
/// `current_phase_end` (of `current_phase`, null when no phase is running),
/// `phase_count`, `canceled_at`, `completed_at`, `released_at`, `created`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScheduleHandler;

impl Handler for ScheduleHandler {
    fn name(&self) -> &str {
        NAME
    }

    fn domain(&self) -> Domain {
        Domain::Subscription
    }

    /// Every `subscription_schedule.<event>` carries the schedule (created, updated,
    /// released, canceled, completed, aborted, expiring).
    fn handles(&self, event_type: &str) -> bool {
        one_segment_after(event_type, "subscription_schedule.")
    }

    fn changes(&self, _event_type: &str, object: &Value) -> Result<Vec<StateChange>, HandlerError> {
        Ok(vec![raw::attach(schedule(object)?, object)])
    }
}

fn schedule(value: &Value) -> Result<StateChange, HandlerError> {
    let map = object(NAME, value, "subscription_schedule")?;
    let id = required_id(NAME, map, "subscription schedule")?;
    let customer = expandable_id(NAME, map, "customer")?;
    let phase = map.get("current_phase").and_then(Value::as_object);
    let from_phase = |field: &str| phase.map_or(Value::Null, |p| copy(p, field));
    let phase_count = match map.get("phases") {
        Some(Value::Array(phases)) => phases.len(),
        None | Some(Value::Null) => 0,
        Some(other) => {
            return Err(error(
                NAME,
                format!("subscription schedule {id}: `phases` is not a list: {other}"),
            ));
        }
    };
    let doc = json!({
        "id": id,
        "customer": customer,
        "subscription": expandable_id(NAME, map, "subscription")?,
        "status": copy(map, "status"),
        "end_behavior": copy(map, "end_behavior"),
        "current_phase_start": from_phase("start_date"),
        "current_phase_end": from_phase("end_date"),
        "phase_count": phase_count,
        "canceled_at": copy(map, "canceled_at"),
        "completed_at": copy(map, "completed_at"),
        "released_at": copy(map, "released_at"),
        "created": copy(map, "created"),
    });
    Ok(StateChange {
        kind: kinds::SUBSCRIPTION_SCHEDULE.to_owned(),
        id,
        customer,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_schedule_has_no_current_phase() {
        let v = json!({"id": "sub_sched_1", "object": "subscription_schedule",
                       "customer": "cus_1", "status": "released", "current_phase": null,
                       "phases": [{}, {}], "released_at": 5, "subscription": null});
        let c = ScheduleHandler
            .changes("subscription_schedule.released", &v)
            .expect("valid");
        assert_eq!(c[0].doc["current_phase_start"], Value::Null);
        assert_eq!(c[0].doc["phase_count"], 2);
        assert_eq!(c[0].customer.as_deref(), Some("cus_1"));
    }

    #[test]
    fn handles_only_schedule_events() {
        assert!(ScheduleHandler.handles("subscription_schedule.aborted"));
        assert!(!ScheduleHandler.handles("customer.subscription.updated"));
        let bad = json!({"id": "sub_sched_1", "phases": "many"});
        assert!(
            ScheduleHandler
                .changes("subscription_schedule.updated", &bad)
                .is_err()
        );
    }
}
