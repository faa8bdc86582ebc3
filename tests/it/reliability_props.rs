//! Properties over the fuzzing entry points that the existing property tests leave out
//! (tests/decode.rs covers arbitrary bytes and JSON, tests/ingress.rs the signature, and
//! src/pattern/tests.rs pattern semantics): every field of a real envelope replaced by a
//! value of another type, and pattern parsing and matching on arbitrary text and events.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};
use stripe_worker::event::decode_message;
use stripe_worker::pattern::EventPattern;
use stripe_worker::tenant::TenantConfig;

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/envelopes")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The JSON pointers of every value in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
    ]
}

fn tenants() -> TenantConfig {
    let mut tenants = TenantConfig {
        tenants: vec!["acme".to_owned()],
        ..TenantConfig::default()
    };
    tenants
        .destinations
        .insert("ed_1".to_owned(), "acme".to_owned());
    tenants
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_field_of_a_real_envelope_replaced_decodes_or_fails_with_a_reason(
        name in prop::sample::select(vec![
            "webhook_snapshot.json", "partner_snapshot.json", "partner_thin.json",
            "webhook_thin.json", "bare_event.json", "replayed.json",
        ]),
        pick in any::<prop::sample::Index>(),
        value in replacement(),
    ) {
        let mut envelope = fixture(name);
        let mut all = Vec::new();
        pointers(&envelope, String::new(), &mut all);
        let at = pick.get(&all).clone();
        match envelope.pointer_mut(&at) {
            Some(slot) => *slot = value,
            None => envelope = value,
        }
        match decode_message(envelope.to_string().as_bytes()) {
            Ok(event) => {
                prop_assert!(!event.dedupe_id.is_empty());
                if let Err(e) = tenants().resolve(&event) {
                    prop_assert!(!e.reason().is_empty());
                }
            }
            Err(e) => prop_assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
        }
    }

    #[test]
    fn pattern_parsing_never_panics_on_arbitrary_text(text in ".{0,200}") {
        let _ = EventPattern::from_json_str(&text);
    }

    #[test]
    fn parsed_patterns_match_arbitrary_events_without_panicking(
        pattern in r#"\{"(source|detail-type|detail)": *(\[("[a-z.]{0,8}"|[0-9]{1,3}|null|\{"(prefix|suffix|anything-but|exists|numeric|wildcard|equals-ignore-case)": *(true|false|"[a-z*.]{0,6}"|\[[^\]]{0,20}\]|[0-9]{1,2})\})(, *"x")?\]|\{"[a-z]{1,4}": *\[[^\]]{0,20}\]\})\}"#,
        event in r#"\{"(source|detail-type|detail)": *("[a-z.]{0,8}"|[0-9]{1,3}|null|\[[0-9, ]{0,10}\]|\{"[a-z]{1,4}": *"[a-z]{0,4}"\})\}"#,
    ) {
        if let (Ok(pattern), Ok(event)) = (
            EventPattern::from_json_str(&pattern),
            serde_json::from_str::<Value>(&event),
        ) {
            prop_assert_eq!(pattern.matches(&event), pattern.matches(&event));
        }
    }
}
