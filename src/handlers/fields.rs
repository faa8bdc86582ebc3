//! Reading Stripe object fields the way every built-in handler needs: checked ids,
//! expandable references and a few shape tests. Every failure is a [`HandlerError`],
//! never a panic, because the objects come from the outside world.

use serde_json::{Map, Value};

use super::HandlerError;

/// A handler error with `handler`'s name.
pub(super) fn error(handler: &str, message: impl Into<String>) -> HandlerError {
    HandlerError {
        handler: handler.to_owned(),
        message: message.into(),
    }
}

/// The object as a JSON map, checking its `object` tag when it has one. A missing tag is
/// accepted (hand-built and legacy objects omit it); a different tag means the event was
/// routed to the wrong code and is rejected.
pub(super) fn object<'a>(
    handler: &str,
    value: &'a Value,
    expected_type: &str,
) -> Result<&'a Map<String, Value>, HandlerError> {
    let map = value
        .as_object()
        .ok_or_else(|| error(handler, format!("expected a `{expected_type}` object")))?;
    match map.get("object") {
        None | Some(Value::Null) => Ok(map),
        Some(Value::String(tag)) if tag == expected_type => Ok(map),
        Some(other) => Err(error(
            handler,
            format!("expected a `{expected_type}` object, got `object: {other}`"),
        )),
    }
}

/// The object's `id`: a non-empty string, or a permanent error.
pub(super) fn required_id(
    handler: &str,
    map: &Map<String, Value>,
    what: &str,
) -> Result<String, HandlerError> {
    match map.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::String(_)) => Err(error(handler, format!("{what} has an empty `id`"))),
        Some(other) => Err(error(
            handler,
            format!("{what} has a non-string `id`: {other}"),
        )),
        None => Err(error(handler, format!("{what} has no `id`"))),
    }
}

/// The id behind an expandable field: absent or null gives `None`, a string is the id,
/// an expanded object gives its `id`. Anything else is a malformed object.
pub(super) fn expandable_id(
    handler: &str,
    map: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, HandlerError> {
    reference(handler, map.get(field), field)
}

/// [`expandable_id`] over a value already taken out of its object.
pub(super) fn reference(
    handler: &str,
    value: Option<&Value>,
    field: &str,
) -> Result<Option<String>, HandlerError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
        Some(Value::Object(expanded)) => match expanded.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
            _ => Err(error(
                handler,
                format!("expanded `{field}` has no string `id`"),
            )),
        },
        Some(other) => Err(error(
            handler,
            format!("`{field}` is neither an id nor an expanded object: {other}"),
        )),
    }
}

/// A field copied as is, `null` when absent.
pub(super) fn copy(map: &Map<String, Value>, field: &str) -> Value {
    map.get(field).cloned().unwrap_or(Value::Null)
}

/// A field that must be a boolean when present; absent or null reads as `false`.
pub(super) fn flag(
    handler: &str,
    map: &Map<String, Value>,
    field: &str,
) -> Result<bool, HandlerError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(error(
            handler,
            format!("`{field}` is not a boolean: {other}"),
        )),
    }
}

/// Whether `event_type` is `prefix` followed by exactly one more dot-free segment, so
/// that `charge.succeeded` matches `charge.` but `charge.dispute.created` (whose object
/// is a dispute, not a charge) does not.
pub(super) fn one_segment_after(event_type: &str, prefix: &str) -> bool {
    event_type
        .strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn expandable_reads_ids_and_expanded_objects() {
        let m = map(
            json!({"a": "cus_1", "b": {"id": "cus_2", "object": "customer"}, "c": null, "d": 5, "e": {"x": 1}}),
        );
        assert_eq!(expandable_id("h", &m, "a").ok(), Some(Some("cus_1".into())));
        assert_eq!(expandable_id("h", &m, "b").ok(), Some(Some("cus_2".into())));
        assert_eq!(expandable_id("h", &m, "c").ok(), Some(None));
        assert_eq!(expandable_id("h", &m, "missing").ok(), Some(None));
        assert!(expandable_id("h", &m, "d").is_err());
        assert!(expandable_id("h", &m, "e").is_err());
    }

    #[test]
    fn object_tag_must_match_when_present() {
        assert!(object("h", &json!({"object": "charge"}), "charge").is_ok());
        assert!(object("h", &json!({"id": "x"}), "charge").is_ok());
        assert!(object("h", &json!({"object": "refund"}), "charge").is_err());
        assert!(object("h", &json!("charge"), "charge").is_err());
    }

    #[test]
    fn one_segment_rule() {
        assert!(one_segment_after("charge.succeeded", "charge."));
        assert!(!one_segment_after("charge.dispute.created", "charge."));
        assert!(!one_segment_after("charge.", "charge."));
        assert!(!one_segment_after("chargeback.x", "charge."));
    }
}
