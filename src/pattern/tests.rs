//! Unit and property tests for event patterns.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{EventPattern, PatternError};

const CASES: &str = include_str!("../../tests/fixtures/patterns/cases.json");

fn cases() -> Value {
    serde_json::from_str(CASES).expect("cases.json is valid JSON")
}

fn matches(pattern: Value, event: Value) -> bool {
    EventPattern::parse(&pattern)
        .unwrap_or_else(|e| panic!("pattern {pattern} should be valid: {e}"))
        .matches(&event)
}

#[test]
fn documented_examples_match_as_eventbridge_does() {
    let doc = cases();
    let events = &doc["events"];
    let cases = doc["cases"].as_array().expect("cases array");
    assert!(cases.len() >= 50, "fixture lost cases");
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("case name");
        let event = &events[case["event"].as_str().expect("event name")];
        assert!(event.is_object(), "{name}: unknown event");
        let pattern = EventPattern::parse(&case["pattern"])
            .unwrap_or_else(|e| panic!("{name}: pattern should be valid: {e}"));
        let expected = case["matches"].as_bool().expect("matches flag");
        if pattern.matches(event) != expected {
            failures.push(format!("{name}: expected {expected}"));
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

#[test]
fn invalid_patterns_name_the_problem_and_the_path() {
    let doc = cases();
    let invalid = doc["invalid"].as_array().expect("invalid array");
    assert!(invalid.len() >= 25, "fixture lost cases");
    for case in invalid {
        let name = case["name"].as_str().expect("case name");
        let err = EventPattern::parse(&case["pattern"]).expect_err(name);
        let PatternError::Invalid { path, problem } = &err else {
            panic!("{name}: expected Invalid, got {err:?}");
        };
        assert_eq!(path, case["path"].as_str().expect("path"), "{name}");
        let want = case["problem"].as_str().expect("problem");
        assert!(problem.contains(want), "{name}: `{problem}` lacks `{want}`");
        let shown = err.to_string();
        assert!(
            shown.contains(path.as_str()) && shown.contains(problem.as_str()),
            "{name}: {shown}"
        );
    }
}

#[test]
fn json_text_errors_are_reported() {
    let err = EventPattern::from_json_str("{\"source\": [").expect_err("truncated JSON");
    assert!(matches!(err, PatternError::Json(_)));
    assert!(
        err.to_string()
            .starts_with("event pattern is not valid JSON")
    );
    let ok = EventPattern::from_json_str(r#"{"source": ["aws.ec2"]}"#).expect("valid");
    assert!(ok.matches(&json!({"source": "aws.ec2"})));
}

#[test]
fn error_display_is_readable() {
    let err = EventPattern::parse(&json!({"detail": {"state": [{"prefix": 5}]}}))
        .expect_err("bad prefix");
    assert_eq!(
        err.to_string(),
        "invalid event pattern at detail.state[0]: `prefix` needs a string or {\"equals-ignore-case\": string}, not a number"
    );
}

#[test]
fn exact_values() {
    assert!(matches(json!({"a": ["x"]}), json!({"a": "x"})));
    assert!(!matches(json!({"a": ["x"]}), json!({"a": "X"})));
    assert!(matches(json!({"a": [1]}), json!({"a": 1.0})));
    assert!(matches(json!({"a": [300]}), json!({"a": 3.0e2})));
    assert!(!matches(json!({"a": [1]}), json!({"a": "1"})));
    assert!(matches(json!({"a": [false]}), json!({"a": false})));
    assert!(!matches(json!({"a": [false]}), json!({"a": null})));
    assert!(matches(json!({"a": [null]}), json!({"a": null})));
    assert!(!matches(json!({"a": [null]}), json!({})));
    // Large integers (AWS account numbers, Stripe amounts) compare exactly.
    assert!(matches(
        json!({"a": [9007199254740993_u64]}),
        json!({"a": 9007199254740993_u64})
    ));
    assert!(!matches(
        json!({"a": [9007199254740993_i64]}),
        json!({"a": 9007199254740992_i64})
    ));
}

#[test]
fn prefix_suffix_and_ignore_case_only_match_strings() {
    assert!(matches(
        json!({"a": [{"prefix": "cus"}]}),
        json!({"a": "customer"})
    ));
    assert!(!matches(json!({"a": [{"prefix": "1"}]}), json!({"a": 12})));
    assert!(matches(
        json!({"a": [{"prefix": ""}]}),
        json!({"a": "anything"})
    ));
    assert!(matches(
        json!({"a": [{"suffix": ".created"}]}),
        json!({"a": "customer.created"})
    ));
    assert!(!matches(json!({"a": [{"suffix": "2"}]}), json!({"a": 12})));
    assert!(matches(
        json!({"a": [{"equals-ignore-case": "ÉTÉ"}]}),
        json!({"a": "été"})
    ));
    assert!(!matches(
        json!({"a": [{"equals-ignore-case": "true"}]}),
        json!({"a": true})
    ));
    assert!(matches(
        json!({"a": [{"prefix": {"equals-ignore-case": "ÉT"}}]}),
        json!({"a": "étÉ"})
    ));
    assert!(matches(
        json!({"a": [{"suffix": {"equals-ignore-case": "Ss"}}]}),
        json!({"a": "PASS"})
    ));
    assert!(!matches(
        json!({"a": [{"suffix": {"equals-ignore-case": "long suffix"}}]}),
        json!({"a": "x"})
    ));
}

#[test]
fn anything_but_type_rules() {
    // A string anything-but is satisfied by non-strings (Event Ruler compares raw JSON text).
    assert!(matches(
        json!({"a": [{"anything-but": "x"}]}),
        json!({"a": 5})
    ));
    assert!(matches(
        json!({"a": [{"anything-but": "x"}]}),
        json!({"a": null})
    ));
    // A numeric anything-but only considers numbers.
    assert!(!matches(
        json!({"a": [{"anything-but": 5}]}),
        json!({"a": "x"})
    ));
    assert!(matches(
        json!({"a": [{"anything-but": 5}]}),
        json!({"a": 6})
    ));
    assert!(!matches(
        json!({"a": [{"anything-but": 5}]}),
        json!({"a": 5.0})
    ));
    // Arrays: satisfied when any element is not excluded.
    assert!(matches(
        json!({"a": [{"anything-but": "x"}]}),
        json!({"a": ["x", "y"]})
    ));
    assert!(!matches(
        json!({"a": [{"anything-but": "x"}]}),
        json!({"a": ["x", "x"]})
    ));
    assert!(!matches(
        json!({"a": [{"anything-but": "x"}]}),
        json!({"a": []})
    ));
    assert!(matches(
        json!({"a": [{"anything-but": {"wildcard": ["a*", "*z"]}}]}),
        json!({"a": "mid"})
    ));
    assert!(!matches(
        json!({"a": [{"anything-but": {"wildcard": ["a*", "*z"]}}]}),
        json!({"a": "buzz"})
    ));
    assert!(!matches(
        json!({"a": [{"anything-but": {"equals-ignore-case": "X"}}]}),
        json!({"a": "x"})
    ));
}

#[test]
fn numeric_forms() {
    let event = json!({"n": 5});
    for (range, expected) in [
        (json!(["=", 5]), true),
        (json!(["=", 5.5]), false),
        (json!([">", 5]), false),
        (json!([">=", 5]), true),
        (json!(["<", 5]), false),
        (json!(["<=", 5]), true),
        (json!([">", 4.9, "<", 5.1]), true),
        (json!([">=", 5, "<=", 5.000001]), true),
        (json!([">", -10, "<=", 4]), false),
    ] {
        let pattern = json!({"n": [{"numeric": range}]});
        assert_eq!(
            matches(pattern.clone(), event.clone()),
            expected,
            "{pattern}"
        );
    }
    assert!(matches(
        json!({"n": [{"numeric": [">", 0]}]}),
        json!({"n": [-1, "7", 2]})
    ));
    assert!(!matches(
        json!({"n": [{"numeric": [">", 0]}]}),
        json!({"n": "7"})
    ));
}

#[test]
fn exists_semantics() {
    let p_true = json!({"d": {"f": [{"exists": true}]}});
    let p_false = json!({"d": {"f": [{"exists": false}]}});
    for (event, present) in [
        (json!({"d": {"f": "x"}}), true),
        (json!({"d": {"f": null}}), true),
        (json!({"d": {"f": [1]}}), true),
        (json!({"d": {"f": []}}), false),
        (json!({"d": {"f": {"g": 1}}}), false),
        (json!({"d": {}}), false),
        (json!({"d": "leaf"}), false),
        (json!({}), false),
    ] {
        assert_eq!(
            matches(p_true.clone(), event.clone()),
            present,
            "exists:true on {event}"
        );
        assert_eq!(
            matches(p_false.clone(), event.clone()),
            !present,
            "exists:false on {event}"
        );
    }
    // Mixed with values: absent or equal.
    let either = json!({"f": [{"exists": false}, "x"]});
    assert!(matches(either.clone(), json!({})));
    assert!(matches(either.clone(), json!({"f": "x"})));
    assert!(!matches(either, json!({"f": "y"})));
}

#[test]
fn or_at_root_and_nested_levels() {
    let pattern = json!({
        "$or": [
            {"source": ["stripe.webhook"], "detail": {"type": [{"prefix": "invoice."}]}},
            {"source": [{"prefix": "aws.partner/stripe.com/"}], "detail-type": [{"prefix": "invoice."}]}
        ]
    });
    assert!(matches(
        pattern.clone(),
        json!({"source": "stripe.webhook", "detail-type": "Stripe Webhook Event", "detail": {"type": "invoice.paid"}})
    ));
    assert!(matches(
        pattern.clone(),
        json!({"source": "aws.partner/stripe.com/ed_1", "detail-type": "invoice.paid", "detail": {}})
    ));
    // The branches do not mix: webhook source with the partner field shape.
    assert!(!matches(
        pattern,
        json!({"source": "stripe.webhook", "detail-type": "invoice.paid", "detail": {"type": "charge.failed"}})
    ));
}

#[test]
fn non_object_events_only_satisfy_absence() {
    let p = EventPattern::parse(&json!({"a": [{"exists": false}]})).expect("valid");
    assert!(p.matches(&json!("text")));
    let p = EventPattern::parse(&json!({"a": ["x"]})).expect("valid");
    assert!(!p.matches(&json!(null)));
    assert!(p.matches(&json!([{"a": "y"}, {"a": "x"}])));
}

// ---- properties ----

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["x", "y", "X", "", "xy", "yx"]).prop_map(|s| json!(s)),
        prop::sample::select(vec![0.0, 1.0, 2.5, -3.0]).prop_map(|n| json!(n)),
        (0i64..4).prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

/// A field value in a random event: a leaf, an array of leaves or a small object.
fn event_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => leaf_value(),
        1 => prop::collection::vec(leaf_value(), 0..3).prop_map(Value::Array),
        1 => prop::collection::btree_map(prop::sample::select(vec!["a", "b"]), leaf_value(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
    ]
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "c"]),
        event_value(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

fn matcher() -> impl Strategy<Value = Value> {
    prop_oneof![
        leaf_value(),
        prop::sample::select(vec!["x", "y", ""]).prop_map(|s| json!({"prefix": s})),
        prop::sample::select(vec!["x", "y"]).prop_map(|s| json!({"suffix": s})),
        prop::sample::select(vec!["x", "Y"]).prop_map(|s| json!({"equals-ignore-case": s})),
        prop::sample::select(vec!["*x*", "x*", "*y"]).prop_map(|s| json!({"wildcard": s})),
        leaf_value()
            .prop_filter("anything-but takes strings or numbers", |v| v.is_string()
                || v.is_number())
            .prop_map(|v| json!({"anything-but": v})),
        any::<bool>().prop_map(|b| json!({"exists": b})),
        prop::sample::select(vec![-1.0, 0.5, 2.0]).prop_map(|n| json!({"numeric": [">", n]})),
    ]
}

fn leaf_pattern() -> impl Strategy<Value = Value> {
    prop::collection::vec(matcher(), 1..3).prop_map(Value::Array)
}

/// A random valid pattern over fields a, b, c (one level of nesting).
fn pattern() -> impl Strategy<Value = Value> {
    let nested =
        prop::collection::btree_map(prop::sample::select(vec!["a", "b"]), leaf_pattern(), 1..3)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
    let field = prop_oneof![3 => leaf_pattern(), 1 => nested];
    prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), field, 1..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// The exact pattern an event's own leaves spell out; `None` where nothing can be said.
fn exact_pattern_of(value: &Value) -> Option<Value> {
    match value {
        Value::Object(map) => {
            let fields: Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| exact_pattern_of(v).map(|p| (k.clone(), p)))
                .collect();
            (!fields.is_empty()).then_some(Value::Object(fields))
        }
        Value::Array(items) => {
            let leaves: Vec<Value> = items
                .iter()
                .filter(|v| !v.is_object() && !v.is_array())
                .cloned()
                .collect();
            (!leaves.is_empty()).then_some(Value::Array(leaves))
        }
        leaf => Some(Value::Array(vec![leaf.clone()])),
    }
}

proptest! {
    #[test]
    fn generated_patterns_are_valid(p in pattern()) {
        prop_assert!(EventPattern::parse(&p).is_ok());
    }

    #[test]
    fn exact_pattern_from_an_events_leaves_matches_it(e in event()) {
        let Some(p) = exact_pattern_of(&e) else { return Ok(()); };
        let compiled = EventPattern::parse(&p).map_err(|err| TestCaseError::fail(err.to_string()))?;
        prop_assert!(compiled.matches(&e), "pattern {} should match {}", p, e);
    }

    #[test]
    fn anything_but_is_the_negation_for_present_strings(
        value in prop::sample::select(vec!["x", "y", "", "xy"]),
        excluded in prop::collection::vec(prop::sample::select(vec!["x", "y", "", "xy"]), 1..3),
    ) {
        let event = json!({"f": value});
        let exact = matches(json!({"f": excluded.clone()}), event.clone());
        let but = matches(json!({"f": [{"anything-but": excluded}]}), event);
        prop_assert_ne!(exact, but);
    }

    #[test]
    fn anything_but_prefix_is_the_negation_of_prefix_for_strings(
        value in "[ab]{0,4}",
        prefix in "[ab]{1,2}",
    ) {
        let event = json!({"f": value});
        let yes = matches(json!({"f": [{"prefix": prefix.clone()}]}), event.clone());
        let no = matches(json!({"f": [{"anything-but": {"prefix": prefix}}]}), event);
        prop_assert_ne!(yes, no);
    }

    #[test]
    fn or_is_the_disjunction_of_its_branches(a in pattern(), b in pattern(), e in event()) {
        let either = matches(json!({"$or": [a.clone(), b.clone()]}), e.clone());
        prop_assert_eq!(either, matches(a, e.clone()) || matches(b, e));
    }

    #[test]
    fn fields_of_a_pattern_are_a_conjunction(a in pattern(), e in event()) {
        // Splitting a pattern's fields into single-field patterns gives an AND.
        let map = a.as_object().cloned().unwrap_or_default();
        let all = map.iter().all(|(k, v)| {
            let mut single = Map::new();
            single.insert(k.clone(), v.clone());
            matches(Value::Object(single), e.clone())
        });
        prop_assert_eq!(matches(a, e), all);
    }

    #[test]
    fn an_unrelated_field_never_changes_the_answer(p in pattern(), e in event(), extra in event_value()) {
        let before = matches(p.clone(), e.clone());
        let mut widened = e.as_object().cloned().unwrap_or_default();
        widened.insert("unrelated".to_owned(), extra);
        prop_assert_eq!(matches(p, Value::Object(widened)), before);
    }

    #[test]
    fn wildcard_without_stars_is_exact_and_star_is_everything(s in "[a-z*\\\\]{0,6}", t in "[a-z*]{0,6}") {
        let literal: String = s.chars().flat_map(|c| match c { '*' | '\\' => vec!['\\', c], other => vec![other] }).collect();
        prop_assert_eq!(
            matches(json!({"f": [{"wildcard": literal}]}), json!({"f": t.clone()})),
            s == t
        );
        let everything = matches(json!({"f": [{"wildcard": "*"}]}), json!({"f": t}));
        prop_assert!(everything);
    }

    #[test]
    fn equals_ignore_case_agrees_with_lowercasing(s in "[a-zA-Zé É]{0,6}", t in "[a-zA-Zé É]{0,6}") {
        prop_assert_eq!(
            matches(json!({"f": [{"equals-ignore-case": s.clone()}]}), json!({"f": t.clone()})),
            s.to_lowercase() == t.to_lowercase()
        );
        prop_assert_eq!(
            matches(json!({"f": [{"prefix": {"equals-ignore-case": s.clone()}}]}), json!({"f": t.clone()})),
            t.to_lowercase().starts_with(&s.to_lowercase())
        );
        prop_assert_eq!(
            matches(json!({"f": [{"suffix": {"equals-ignore-case": s.clone()}}]}), json!({"f": t.clone()})),
            t.to_lowercase().ends_with(&s.to_lowercase())
        );
    }
}
