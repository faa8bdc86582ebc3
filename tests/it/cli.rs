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

/// Run the binary with extra environment variables.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A data directory holding one message on the customer queue, left by `publish`.
fn data_with_one_message(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let file = dir.join("raw.jsonl");
    std::fs::write(&file, "{\"raw\": true}\n").unwrap();
    let output = run(&[
        "publish",
        "--file",
        file.to_str().unwrap(),
        "--to-queue",
        "customer",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    data
}

#[test]
fn read_only_commands_refuse_a_missing_data_dir_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped");
    let path = missing.to_str().unwrap();
    for args in [
        &["queues", "--data-dir", path][..],
        &["dlq", "list", "--domain", "payment", "--data-dir", path],
        &["state", "export", "--data-dir", path],
        &[
            "status",
            "--tenant",
            "acme",
            "--customer",
            "cus_1",
            "--data-dir",
            path,
        ],
        &["dlq", "redrive", "--domain", "payment", "--data-dir", path],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&output).contains(path),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?}: nothing on stdout");
        assert!(!missing.exists(), "{args:?} created the directory");
    }
}

#[test]
fn read_only_commands_migrate_nothing_and_read_a_read_only_directory() {
    let dir = tempfile::tempdir().unwrap();
    // A database of no schema (an empty SQLite file): a reading command refuses it and
    // leaves it as it was, where a writing one would have created the tables.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("stripe-worker.sqlite"), b"").unwrap();
    let output = run(&["queues", "--data-dir", foreign.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("not a stripe-worker database"),
        "{}",
        stderr(&output)
    );
    let file = std::fs::metadata(foreign.join("stripe-worker.sqlite")).unwrap();
    assert_eq!(file.len(), 0, "nothing written to the file");

    // A data directory this user may not write: the commands that look still work. Root
    // ignores permissions, so as root the commands run as `nobody` instead.
    let data = data_with_one_message(dir.path());
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let open = std::fs::Permissions::from_mode(0o755);
    std::fs::set_permissions(dir.path(), open).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let as_reader = |args: &[&str]| {
        let mut command = Command::new(BIN);
        command.args(args).env("RUST_LOG", "error");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            command.uid(65534).gid(65534);
        }
        command.output().expect("the binary runs")
    };
    let queues = as_reader(&["queues", "--json", "--data-dir", data.to_str().unwrap()]);
    assert!(queues.status.success(), "{}", stderr(&queues));
    let report: Value = serde_json::from_slice(&queues.stdout).unwrap();
    assert!(
        report.to_string().contains("\"visible\":1"),
        "the published message is seen: {report}"
    );
    let export = as_reader(&["state", "export", "--data-dir", data.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));
    let dlq = as_reader(&[
        "dlq",
        "list",
        "--domain",
        "customer",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(dlq.status.success(), "{}", stderr(&dlq));
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unknown_tenant_and_customer_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_with_one_message(dir.path());
    let data = data.to_str().unwrap();
    let export = run(&["state", "export", "--tenant", "nobody", "--data-dir", data]);
    assert_eq!(export.status.code(), Some(1));
    assert!(
        stderr(&export).contains("tenant nobody"),
        "{}",
        stderr(&export)
    );
    // A tenant nobody configured and with no state: the tenant is what is wrong.
    let status = run(&[
        "status",
        "--tenant",
        "acme",
        "--customer",
        "cus_nobody",
        "--data-dir",
        data,
    ]);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        stderr(&status).contains("unknown tenant acme"),
        "{}",
        stderr(&status)
    );
    // The configured (default) tenant: the customer is what is wrong.
    let status = run(&[
        "status",
        "--tenant",
        "default",
        "--customer",
        "cus_nobody",
        "--data-dir",
        data,
    ]);
    assert_eq!(status.status.code(), Some(1));
    let text = stderr(&status);
    assert!(
        text.contains("cus_nobody") && text.contains("tenant is known"),
        "{text}"
    );
}

/// Every command that prints a table or a summary prints one JSON document with `--json`
/// (`--format json` stays an alias of `routes --json`).
#[test]
fn every_summary_command_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let report = demo_json(&["--events", "300"], &data);
    assert!(report.is_object());
    let data = data.to_str().unwrap();
    let export = run(&["state", "export", "--json", "--data-dir", data]);
    let document: Value = serde_json::from_slice(&export.stdout).unwrap();
    let (tenant, state) = document["tenants"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    let customer = state["customers"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap();
    let event = fixture("stripe/eventbridge_snapshot_envelope.json");
    let pattern = dir.path().join("pattern.json");
    std::fs::write(
        &pattern,
        json!({"detail-type": [{"prefix": "customer."}]}).to_string(),
    )
    .unwrap();
    let lines = dir.path().join("raw.jsonl");
    std::fs::write(&lines, "{\"raw\": true}\n").unwrap();
    for args in [
        &["queues", "--json", "--data-dir", data][..],
        &[
            "dlq",
            "list",
            "--domain",
            "payment",
            "--json",
            "--data-dir",
            data,
        ],
        &["state", "export", "--json", "--data-dir", data],
        &[
            "status",
            "--tenant",
            tenant,
            "--customer",
            customer,
            "--json",
            "--data-dir",
            data,
        ],
        &["routes", "--json"],
        &["routes", "--format", "json"],
        &["routes", "test", "--event", &event, "--json"],
        &["routes", "--json", "test", "--event", &event],
        &[
            "pattern",
            "test",
            "--pattern",
            pattern.to_str().unwrap(),
            "--event",
            &event,
            "--json",
        ],
        &["config", "check", "--json"],
        &[
            "publish",
            "--file",
            lines.to_str().unwrap(),
            "--to-queue",
            "payment",
            "--json",
            "--data-dir",
            data,
        ],
        &["bench", "--messages", "20", "--concurrency", "4", "--json"],
    ] {
        // `config check` reads the webhook secrets the ingress would: give it one.
        let output = run_with_env(args, &[("STRIPE_WEBHOOK_SECRET", "whsec_json_test")]);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let parsed: Result<Value, _> = serde_json::from_slice(&output.stdout);
        assert!(
            parsed.as_ref().is_ok_and(|v| v.is_object()),
            "{args:?}: one JSON object: {}",
            stdout(&output)
        );
    }
    let routed = run(&["routes", "test", "--event", &event, "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&routed.stdout).unwrap(),
        json!({"domains": ["customer"]})
    );
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    demo_json(&["--events", "1500"], &data);
    let event = fixture("stripe/eventbridge_snapshot_envelope.json");
    for args in [
        &["state", "export", "--data-dir", data.to_str().unwrap()][..],
        &["routes", "--format", "json"],
        &["routes", "test", "--event", &event, "--json"],
        &["queues", "--data-dir", data.to_str().unwrap()],
        &[
            "dlq",
            "list",
            "--domain",
            "customer",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &["completions", "bash"],
    ] {
        // `... | head -0`: the reader is gone before the command writes.
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).is_empty(), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn configuration_errors_name_the_knob() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run_args = [
        "run",
        "--until-idle",
        "--idle-secs",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let negative = run_with_env(&run_args, &[("STRIPE_WORKER_MAX_IN_FLIGHT", "-1")]);
    assert_eq!(negative.status.code(), Some(1));
    assert!(
        stderr(&negative).contains("STRIPE_WORKER_MAX_IN_FLIGHT: `-1`"),
        "{}",
        stderr(&negative)
    );
    let zero = run_with_env(&run_args, &[("STRIPE_WORKER_MAX_IN_FLIGHT_PER_QUEUE", "0")]);
    assert_eq!(zero.status.code(), Some(1));
    assert!(
        stderr(&zero).contains("max_in_flight_per_queue: must be at least 1"),
        "{}",
        stderr(&zero)
    );
    // Below the adaptive floor (4), which only adaptive concurrency reads.
    let small = run_with_env(&run_args, &[("STRIPE_WORKER_MAX_IN_FLIGHT_PER_QUEUE", "2")]);
    assert!(small.status.success(), "{}", stderr(&small));

    let missing = dir.path().join("missing.toml");
    let output = run(&[&run_args[..], &["--config", missing.to_str().unwrap()]].concat());
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains(missing.to_str().unwrap()), "{text}");
    assert_eq!(text.matches("No such file").count(), 1, "{text}");
}

/// The environment of an AWS command with nothing listening at the endpoint, and no
/// credentials but what `extra` gives (no profile files, no instance metadata).
fn aws_env<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    env.extend_from_slice(extra);
    env
}

fn run_aws(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env("RUST_LOG", "error");
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().expect("the binary runs")
}

#[test]
fn aws_problems_are_one_line_naming_what_to_set() {
    let args = ["queues", "--backend", "aws", "--prefix", "sw-cli-test"];
    let output = run_aws(&args, &aws_env(&[]));
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("no AWS credentials"), "{text}");
    assert!(text.contains("AWS_ACCESS_KEY_ID"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "{text}");

    let output = run_aws(
        &args,
        &aws_env(&[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]),
    );
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("sw-cli-test"), "{text}");
    assert!(
        !text.contains(" { ") && text.len() < 600,
        "no debug dump: {text}"
    );
}

/// A webhook envelope of a `customer.created` event stamped with `tenant`.
fn webhook_envelope(event_id: &str, tenant: &str) -> Value {
    json!({"version": "0", "id": format!("e-{event_id}"), "detail-type": "Stripe Webhook Event",
    "source": "stripe.webhook", "time": "2023-11-14T22:13:20Z", "region": "us-east-1",
    "resources": [], "detail": {
        "id": event_id, "object": "event", "type": "customer.created",
        "created": 1_700_000_000, "livemode": false, "api_version": "2025-03-31.basil",
        "tenant_id": tenant, "received_at": "2023-11-14T22:13:20Z",
        "payload_style": "snapshot",
        "data": {"object": {"id": format!("cus_{event_id}"), "object": "customer",
            "email": "x@example.com", "invoice_settings": {"default_payment_method": null}}}
    }})
}

/// GET `path` from `addr` over plain HTTP/1.0; the body, if the server answered.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Poll `check` every 200 ms for up to a minute (generous for a loaded machine).
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

#[test]
fn run_says_what_it_does_and_raises_one_alarm_when_everything_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.toml");
    // Short long-polls so the run stops soon after SIGTERM; only `acme` is known.
    std::fs::write(
        &config,
        "[worker]\nwait_time_secs = 1\n[tenants]\ntenants = [\"acme\"]\n",
    )
    .unwrap();
    let events = dir.path().join("events.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| webhook_envelope(&format!("evt_ghost_{i}"), "ghost").to_string())
        .collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    let common = [
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    let output = run(&[&["publish", events.to_str().unwrap()][..], &common].concat());
    assert!(output.status.success(), "{}", stderr(&output));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let log = dir.path().join("run.log");
    let mut child = Command::new(BIN)
        .args(
            [
                &[
                    "run",
                    "--progress-secs",
                    "1",
                    "--admin-listen",
                    &admin,
                    "--prometheus",
                ][..],
                &common,
            ]
            .concat(),
        )
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let metrics_ok = eventually(|| {
        http_get(&admin, "/metrics").is_some_and(|body| {
            body.contains(
                "stripe_worker_messages_dead_lettered_total{reason=\"unknown_tenant\"} 12",
            )
        })
    });
    let alarm_ok = eventually(|| read_log().contains("went to the dead-letter queues"));
    let progress_ok = eventually(|| read_log().contains("progress: "));
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let text = read_log();
    assert!(metrics_ok, "/metrics counts the dead letters: {text}");
    assert!(alarm_ok, "the alarm: {text}");
    assert!(progress_ok, "the progress line: {text}");
    assert!(status.success(), "{text}");

    let start = text
        .lines()
        .find(|l| l.contains("worker started:"))
        .unwrap_or_else(|| panic!("a start line: {text}"));
    for part in [
        "backend local, data dir",
        "tenants acme",
        "in flight 64 per queue, 128 in all",
        "2 pollers per queue, batch 10",
        "visibility 30s",
        "lease 15s",
        "adaptive off",
    ] {
        assert!(start.contains(part), "{part}: {start}");
    }
    assert!(
        text.contains("backlog 0 waiting, 12 dead-lettered in the DLQs"),
        "{text}"
    );
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("message dead-lettered"))
        .count();
    assert_eq!(warnings, 1, "one warning, not one per message: {text}");
    assert!(!text.contains('\u{1b}'), "no colour off a terminal: {text}");
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn pattern_test_exits_like_grep_and_routes_json_is_the_committed_file() {
    let dir = tempfile::tempdir().unwrap();
    let event = fixture("stripe/eventbridge_snapshot_envelope.json");
    let pattern = |name: &str, value: Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let yes = pattern(
        "yes.json",
        json!({"detail-type": [{"prefix": "customer."}]}),
    );
    let no = pattern("no.json", json!({"detail-type": ["invoice.paid"]}));
    let bad = pattern("bad.json", json!({"detail-type": "not a list"}));
    for (file, code, out) in [(&yes, 0, "true\n"), (&no, 1, "false\n"), (&bad, 2, "")] {
        let output = run(&["pattern", "test", "--pattern", file, "--event", &event]);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{file}: {}",
            stderr(&output)
        );
        assert_eq!(stdout(&output), out);
    }

    let committed = std::fs::read_to_string(format!(
        "{}/deploy/routing-patterns.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for args in [&["routes", "--json"][..], &["routes", "--format", "json"]] {
        let output = run(args);
        assert!(output.status.success());
        assert_eq!(stdout(&output), committed, "{args:?}: byte for byte");
    }
}

#[test]
fn usage_errors_exit_2_and_demo_and_bench_honour_the_environment() {
    let help = run(&["demo", "--help"]);
    assert!(stdout(&help).contains("0 to 0.5"), "{}", stdout(&help));
    for args in [
        &["demo", "--fault-rate", "0.9"][..],
        &["demo", "--tenants", "0"],
        &["bench", "--jitter", "2"],
        &["bench", "--backend", "sqlite"],
        &["queues", "--no-such-flag"],
        &["dlq", "purge", "--domain", "payment", "--data-dir", "."],
    ] {
        let output = run(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let demo = run_with_env(
        &["demo", "--events", "10", "--json"],
        &[("STRIPE_WORKER_MAX_IN_FLIGHT", "-1")],
    );
    assert_eq!(demo.status.code(), Some(1));
    assert!(
        stderr(&demo).contains("STRIPE_WORKER_MAX_IN_FLIGHT"),
        "{}",
        stderr(&demo)
    );
    let bench = run_with_env(
        &["bench", "--messages", "10", "--concurrency", "4", "--json"],
        &[("STRIPE_WORKER_RETENTION_DAYS", "1")],
    );
    assert_eq!(bench.status.code(), Some(1));
    assert!(
        stderr(&bench).contains("retention_days"),
        "{}",
        stderr(&bench)
    );
}

#[test]
fn config_check_prints_the_effective_configuration_with_secrets_redacted() {
    let env = [
        ("STRIPE_WORKER_MAX_IN_FLIGHT", "7"),
        ("STRIPE_WORKER_DEFAULT_TENANT", "acme"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret1,whsec_topsecret2"),
        ("STRIPE_API_KEY", "rk_test_topsecret3"),
    ];
    let output = run_with_env(&["config", "check"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("topsecret"), "{text}");
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(
        parsed["config"]["worker"]["max_in_flight"].as_integer(),
        Some(7)
    );
    assert_eq!(
        // The unsuffixed secrets belong to the configured default tenant.
        parsed["secrets"]["webhook_secrets"]["acme"].as_str(),
        Some("<redacted: 2 secrets>")
    );
    let json = run_with_env(&["config", "check", "--json"], &env);
    let parsed: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["secrets"]["stripe_api_keys"]["acme"], "<redacted>");
    assert_eq!(parsed["backend"]["backend"], "local");

    let bad = run_with_env(
        &["config", "check"],
        &[("STRIPE_WORKER_WAIT_TIME_SECS", "60")],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("wait_time_secs"), "{}", stderr(&bad));
}

#[test]
fn version_completions_and_publish_from_stdin() {
    let version = stdout(&run(&["--version"]));
    let (_, details) = version
        .split_once(" (commit ")
        .unwrap_or_else(|| panic!("{version}"));
    let (commit, date) = details.split_once(", built ").unwrap();
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
    let date = date.trim_end().trim_end_matches(')');
    assert_eq!(date.len(), 10, "YYYY-MM-DD: {version}");

    for (shell, marker) in [
        ("bash", "complete -F _stripe__worker"),
        ("zsh", "#compdef stripe-worker"),
        ("fish", "complete -c stripe-worker"),
    ] {
        let output = run(&["completions", shell]);
        assert!(output.status.success());
        assert!(stdout(&output).contains(marker), "{shell}");
    }

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "publish",
            "-",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", webhook_envelope("evt_stdin", "acme")).unwrap();
    writeln!(stdin, "not json").unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "an invalid line");
    assert!(
        stderr(&output).contains("<stdin>:2:"),
        "{}",
        stderr(&output)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report, json!({"published": 1, "invalid": 1}));
}

/// Every environment variable the binary reads (a clap `env = "..."`, or an
/// `env::var("...")` in the code) is in the README's table of variables: nothing an
/// operator can set is undocumented.
#[test]
fn the_readme_lists_every_variable_the_binary_reads() {
    fn sources(dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    sources(&root.join("src"), &mut texts);
    let mut read = std::collections::BTreeSet::new();
    for text in &texts {
        for marker in [
            "env = \"",
            "env::var(\"",
            "env::var_os(\"",
            "rerun-if-env-changed=",
        ] {
            for (at, _) in text.match_indices(marker) {
                let name: String = text[at + marker.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    read.insert(name);
                }
            }
        }
    }
    assert!(read.len() > 15, "the scan finds the variables: {read:?}");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let table = &readme[readme
        .find("**Every environment variable.**")
        .expect("the variables table")..];
    let documented = |name: &str| table.contains(&format!("| `{name}` |"));
    let missing: Vec<&String> = read
        .iter()
        // The standard OpenTelemetry variables are documented together, as `OTEL_*`.
        .filter(|name| !(documented(name) || name.starts_with("OTEL_") && documented("OTEL_*")))
        .collect();
    assert!(missing.is_empty(), "not in the README's table: {missing:?}");
}

/// The demo on a terminal (a pseudo-terminal from util-linux `script`): a spinner while
/// the stream is generated (never "0/0"), then a bar that never passes its length, log
/// lines printed between redraws (never drawn into the bar), and colour, which it has only
/// on a terminal.
#[test]
fn the_demo_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("tty.txt");
    let command = format!(
        "{BIN} demo --events 1500 --data-dir {}",
        dir.path().join("data").display()
    );
    let status = Command::new("script")
        .args(["-qec", &command])
        .arg(&transcript)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("util-linux `script` runs the demo on a pseudo-terminal");
    assert!(status.success());
    let text = std::fs::read_to_string(&transcript).unwrap();
    // Each redraw and each log line, apart: the terminal's line breaks, carriage returns
    // and the bar's clear-line sequence.
    let pieces: Vec<&str> = text
        .split(['\n', '\r'])
        .flat_map(|p| p.split("\u{1b}[2K"))
        .collect();
    assert!(
        pieces
            .iter()
            .any(|p| p.contains("generating and publishing events")),
        "{text}"
    );
    let mut counted = 0;
    for piece in &pieces {
        if let Some((_, rest)) = piece.split_once("processed ") {
            let (pos, rest) = rest.split_once('/').expect("pos/len");
            let len: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let (pos, len): (u64, u64) = (pos.parse().unwrap(), len.parse().unwrap());
            assert!(len > 0 && pos <= len, "{piece}");
            assert!(
                !piece.contains("WARN"),
                "a log line drawn into the bar: {piece}"
            );
            counted += 1;
        }
    }
    assert!(counted > 0, "the bar counts messages: {text}");
    assert!(text.contains('\u{1b}'), "colour on a terminal");
}
