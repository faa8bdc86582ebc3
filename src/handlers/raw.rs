//! The whole Stripe object kept beside a record's projected fields (doc field `raw`), so
//! any field can be read (`json_extract(doc, '$.raw.metadata.plan')` on the embedded
//! backend, `state export --raw`) without a new release.
//!
//! Bounded, because a DynamoDB item holds at most 400 KB and the doc is one attribute of
//! it: an object whose JSON is at most [`RAW_LIMIT_BYTES`] is kept whole; a larger one
//! (an invoice with hundreds of embedded lines) is kept with its embedded lists emptied
//! and marked `has_more: true`, Stripe's own sign that a list must be paged from the API;
//! if even that is too large, only `{id, object, raw_omitted_bytes}` is kept.

use serde_json::{Map, Value, json};

use super::StateChange;

/// The largest serialised raw object kept (256 KiB): with the projected fields and the
/// key attributes the item stays well below DynamoDB's 400 KB.
pub const RAW_LIMIT_BYTES: usize = 256 * 1024;

/// The doc field holding the raw object.
pub const RAW_FIELD: &str = "raw";

/// `change` with `object` added to its doc as [`RAW_FIELD`], bounded (see the module
/// docs). A doc that is not a JSON object is returned as is.
pub fn attach(mut change: StateChange, object: &Value) -> StateChange {
    if let Some(doc) = change.doc.as_object_mut() {
        doc.insert(RAW_FIELD.to_owned(), bounded(object));
    }
    change
}

/// `object` as kept in a record: whole, without its embedded lists, or a stub.
pub fn bounded(object: &Value) -> Value {
    let size = json_len(object);
    if size <= RAW_LIMIT_BYTES {
        return object.clone();
    }
    let mut trimmed = object.clone();
    empty_lists(&mut trimmed);
    if json_len(&trimmed) <= RAW_LIMIT_BYTES {
        return trimmed;
    }
    json!({
        "id": object.get("id").cloned().unwrap_or(Value::Null),
        "object": object.get("object").cloned().unwrap_or(Value::Null),
        "raw_omitted_bytes": size,
    })
}

fn json_len(value: &Value) -> usize {
    // Serialising a `Value` cannot fail (its keys are strings); count 0 if it ever does,
    // which keeps the whole object rather than losing it.
    serde_json::to_vec(value).map_or(0, |v| v.len())
}

/// Empty every embedded Stripe list (`{"object": "list", "data": [..]}`) and mark it
/// `has_more`, at any depth.
fn empty_lists(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if is_list(map) {
                map.insert("data".to_owned(), Value::Array(Vec::new()));
                map.insert("has_more".to_owned(), Value::Bool(true));
            }
            map.values_mut().for_each(empty_lists);
        }
        Value::Array(items) => items.iter_mut().for_each(empty_lists),
        _ => {}
    }
}

fn is_list(map: &Map<String, Value>) -> bool {
    map.get("object").and_then(Value::as_str) == Some("list") && map.contains_key("data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(doc: Value) -> StateChange {
        StateChange {
            kind: "invoice".into(),
            id: "in_1".into(),
            customer: None,
            doc,
        }
    }

    #[test]
    fn small_objects_are_kept_whole() {
        let object = json!({"id": "in_1", "object": "invoice", "metadata": {"plan": "pro"}});
        let c = attach(change(json!({"id": "in_1", "status": "paid"})), &object);
        assert_eq!(c.doc["raw"], object);
        assert_eq!(c.doc["status"], "paid");
    }

    #[test]
    fn large_objects_lose_their_embedded_lists_first() {
        let line = json!({"id": "il_1", "description": "x".repeat(1000)});
        let object = json!({"id": "in_1", "object": "invoice", "status": "paid",
            "lines": {"object": "list", "data": vec![line; 400], "has_more": false}});
        let kept = bounded(&object);
        assert_eq!(kept["status"], "paid");
        assert_eq!(kept["lines"]["data"], json!([]));
        assert_eq!(kept["lines"]["has_more"], true);
        assert!(json_len(&kept) <= RAW_LIMIT_BYTES);
    }

    #[test]
    fn objects_too_large_even_without_lists_become_a_stub() {
        let object = json!({"id": "cus_1", "object": "customer",
            "metadata": {"blob": "y".repeat(RAW_LIMIT_BYTES)}});
        let kept = bounded(&object);
        assert_eq!(kept["id"], "cus_1");
        assert_eq!(kept["object"], "customer");
        assert!(kept["raw_omitted_bytes"].as_u64().unwrap_or(0) > RAW_LIMIT_BYTES as u64);
    }

    #[test]
    fn non_object_docs_are_left_alone() {
        let c = attach(change(Value::Null), &json!({"id": "x"}));
        assert_eq!(c.doc, Value::Null);
    }
}
