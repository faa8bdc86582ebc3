//! The binary as a user runs it: demo, publish, run, status and state export on the
//! embedded backend.

use std::io::Write;
use std::process::{Command, Output};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Run `demo --json` with `args` into `data` and return its report; the run must succeed.
fn demo_json(args: &[&str], data: &std::path::Path) -> Value {
    let mut all = vec!["demo", "--json", "--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = run(&all);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn a_chunked_demo_checks_each_chunk_with_tenants_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let report = demo_json(
        &[
            "--events",
            "1200",
            "--chunk-events",
            "400",
            "--tenants",
            "2",
        ],
        &data,
    );
    assert_eq!(report["chunks"], 3);
    assert_eq!(report["state_matches"], true, "{report:#}");
    assert!(report["generated_events"].as_u64().unwrap() >= 1200);
    // Three chunks of two tenants each, numbered on: no chunk shares state with another.
    let export = run(&[
        "state",
        "export",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(export.status.success());
    let document: Value = serde_json::from_slice(&export.stdout).unwrap();
    let tenants: Vec<&String> = document["tenants"].as_object().unwrap().keys().collect();
    assert_eq!(
        tenants,
        [
            "tenant-1", "tenant-2", "tenant-3", "tenant-4", "tenant-5", "tenant-6"
        ]
    );

    let refused = run(&["demo", "--chunk-events", "0"]);
    assert!(!refused.status.success());
}

#[test]
fn demo_json_reports_matching_state_with_duplicates_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let report = demo_json(&["--events", "1500"], &data);
    assert_eq!(report["state_matches"], true, "{report:#}");
    assert_eq!(report["mismatches"], 0);
    assert!(report["duplicates"].as_u64().unwrap() > 0);
    assert!(report["applied"].as_u64().unwrap() > 1000);
    let reasons = report["dead_letter_reasons"].as_object().unwrap();
    let dead: u64 = reasons.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        dead,
        report["poison_injected"].as_u64().unwrap(),
        "every poison message, and only those, dead-lettered: {reasons:?}"
    );
    for key in [
        "published",
        "ignored",
        "retried",
        "dead_lettered",
        "events_per_sec",
    ] {
        assert!(report.get(key).is_some(), "{key} missing");
    }

    // The state the demo left is queryable with the other commands.
    let export = run(&[
        "state",
        "export",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(export.status.success());
    let document: Value = serde_json::from_slice(&export.stdout).unwrap();
    let tenants = document["tenants"].as_object().unwrap();
    assert!(tenants.len() >= 2, "several tenants");
    let (tenant, state) = tenants.iter().next().unwrap();
    let (customer, _) = state["customers"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let status = run(&[
        "status",
        "--tenant",
        tenant,
        "--customer",
        customer,
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let _: Value = serde_json::from_slice(&status.stdout).unwrap();
}

#[test]
fn publish_reports_invalid_lines_by_number_and_run_applies_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[worker]\nwait_time_secs = 1\n[tenants]\ndefault_tenant = \"acme\"\ntenants = [\"acme\"]\n").unwrap();
    let event = json!({
        "id": "evt_cli_1", "object": "event", "type": "customer.created", "created": 1_700_000_000,
        "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": "cus_cli", "object": "customer", "email": "cli@example.com",
            "invoice_settings": {"default_payment_method": null}}}
    });
    let detail = {
        let mut d = event.clone();
        d["tenant_id"] = json!("acme");
        d["received_at"] = json!("2023-11-14T22:13:20Z");
        d["payload_style"] = json!("snapshot");
        d
    };
    let envelope = json!({"version": "0", "id": "e1", "detail-type": "Stripe Webhook Event",
        "source": "stripe.webhook", "time": "2023-11-14T22:13:20Z", "region": "us-east-1",
        "resources": [], "detail": detail});
    let file = dir.path().join("events.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "{envelope}").unwrap();
    writeln!(f, "{{\"not\": \"an envelope\"}}").unwrap();
    writeln!(f, "{envelope}").unwrap();
    drop(f);

    let common = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let output = run(&[&["publish", "--file", file.to_str().unwrap()][..], &common].concat());
    assert!(
        !output.status.success(),
        "an invalid line makes the exit code non-zero"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(":2:"),
        "the invalid line is named by number"
    );
    assert!(stdout(&output).contains("published 2 events"));

    let output = run(&[&["run", "--until-idle", "--idle-secs", "1"][..], &common].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = run(&[
        &[
            "status",
            "--tenant",
            "acme",
            "--customer",
            "cus_cli",
            "--json",
        ][..],
        &common,
    ]
    .concat());
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let export = run(&[
        &["state", "export", "--json", "--tenant", "acme"][..],
        &common,
    ]
    .concat());
    let document: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(
        document["tenants"]["acme"]["customers"]["cus_cli"]["email"],
        "cli@example.com"
    );
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[worker]\nreceive_batch_size = 11\n").unwrap();
    let output = run(&[
        "run",
        "--until-idle",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("receive_batch_size"));
    std::fs::write(&config, "[worker]\nmax_inflight = 1\n").unwrap();
    let output = run(&[
        "run",
        "--until-idle",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_inflight"));
}
