//! Terraform installs the rules' patterns from `deploy/routing-patterns.json`; this keeps
//! that file equal to what the routing definition renders (`stripe-worker routes
//! --format json`), so AWS routes exactly as the local bus does.

use serde_json::{Map, Value};
use stripe_worker::domain::Domain;
use stripe_worker::routing::domain_pattern;

#[test]
fn the_committed_patterns_file_equals_the_routing_definition() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/routing-patterns.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let rendered: Map<String, Value> = Domain::ALL
        .into_iter()
        .map(|d| (d.to_string(), domain_pattern(d)))
        .collect();
    assert_eq!(
        committed,
        Value::Object(rendered),
        "deploy/routing-patterns.json is stale: regenerate it with `stripe-worker routes --format json > deploy/routing-patterns.json`"
    );
}
