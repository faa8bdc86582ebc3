//! Keeping the state equal to Stripe on the embedded (SQLite) backend, against the Stripe
//! double served over HTTP: import, an interrupted import resumed, sweep after dropped
//! events, verify and repair, same-second ties. The same scenarios run on the AWS
//! emulator in `reconcile_aws`.

use crate::reconcile_support as scenario;
use stripe_worker::app::{LocalBackend, open_local};
use stripe_worker::clock::system_clock;

/// A fresh embedded backend in its own directory (kept alive by the returned guard).
fn local() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend =
        open_local(dir.path(), &scenario::config(), system_clock()).expect("open backend");
    (dir, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_empty_store_gives_the_full_state() {
    let (_dir, backend) = local();
    scenario::import_gives_the_full_state(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_and_lists_each_object_once() {
    let (_dir, backend) = local();
    let (_scratch_dir, scratch) = local();
    scenario::interrupted_import_resumes(&backend, &scratch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_delivery_then_sweep_gives_the_full_state() {
    let (_dir, backend) = local();
    scenario::sweep_recovers_dropped_events(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_differences_and_repair_fixes_them() {
    let (_dir, backend) = local();
    scenario::verify_and_repair(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_second_pair_ends_with_the_fetched_object_in_either_order() {
    let mut dirs = Vec::new();
    scenario::same_second_ties(async || {
        let (dir, backend) = local();
        dirs.push(dir);
        backend
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_versions_tie_with_events_of_their_second_in_either_order() {
    let mut dirs = Vec::new();
    scenario::fetched_versions_tie_with_events_of_their_second(async || {
        let (dir, backend) = local();
        dirs.push(dir);
        backend
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_publishes_thin_events_only_the_v2_list_has() {
    let (_dir, backend) = local();
    scenario::sweep_reads_the_v2_list(&backend).await;
}

/// The commands as a user runs them, against the double: a plain `verify` refuses a store
/// that does not exist (it opens read-only), exits 3 on a partial one, a full
/// `import` fills it, `verify` exits 0, a change Stripe has makes it 3 again until
/// `--repair`, and `sweep` publishes the one event the worker never saw (and says why it
/// could not read the v2 list with a restricted key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_report_json_and_exit_codes() {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use stripe_worker::stripe::double::{ServeOptions, StripeDouble};

    let double = Arc::new(StripeDouble::new());
    let customer = json!({"id": "cus_cli1", "object": "customer", "email": "a@example.com",
                          "name": "A", "created": 1_700_000_000,
                          "invoice_settings": {"default_payment_method": null}});
    let mut sub = json!({"id": "sub_cli1", "object": "subscription", "customer": "cus_cli1",
                         "status": "active", "created": 1_700_000_100,
                         "cancel_at_period_end": false, "items": {"object": "list", "data": []}});
    double.put("acme", customer.clone()).unwrap();
    double.put("acme", sub.clone()).unwrap();
    double
        .put_event(
            "acme",
            json!({"id": "evt_cli1", "object": "event", "type": "customer.created",
                   "created": 1_700_000_000, "livemode": false,
                   "api_version": "2025-03-31.basil", "data": {"object": customer}}),
        )
        .unwrap();
    let server = double
        .serve(ServeOptions {
            keys: [("rk_test_cli".to_owned(), "acme".to_owned())].into(),
            // A restricted key, which API v2 refuses.
            refuse_v2: true,
            ..ServeOptions::default()
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[tenants]\ntenants = [\"acme\"]\n[tenants.destinations]\ned_cli = \"acme\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let base = server.base_url();
    let output = |args: &[&str]| {
        let bin = env!("CARGO_BIN_EXE_stripe-worker");
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--tenant",
            "acme",
            "--json",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--stripe-api-base",
            &base,
        ]);
        let args: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        async move {
            let output = tokio::process::Command::new(bin)
                .args(&args)
                .env("RUST_LOG", "error")
                .env("STRIPE_API_KEY_ACME", "rk_test_cli")
                .output()
                .await
                .expect("the binary runs");
            (args, output)
        }
    };
    let run = |args: &[&str]| {
        let output = output(args);
        async move {
            let (args, output) = output.await;
            let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
                panic!(
                    "{args:?}: {e}; stderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
            (output.status.code(), json)
        }
    };

    // A plain verify only reads: before anything created the store it is an error naming
    // the directory (as every read-only command), never "everything differs".
    let (_, missing) = output(&["verify"]).await;
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("does not exist"), "{stderr}");

    // A partial state: customers only.
    let (code, customers) = run(&["import", "--kinds", "customer"]).await;
    assert_eq!(code, Some(0), "{customers:#}");
    let (code, partial) = run(&["verify"]).await;
    assert_eq!(code, Some(3), "{partial:#}");
    assert_eq!(partial["differences"].as_array().map(Vec::len), Some(1));
    assert_eq!(partial["differences"][0]["id"], "sub_cli1", "{partial:#}");

    let (code, imported) = run(&["import"]).await;
    assert_eq!(code, Some(0), "{imported:#}");
    assert_eq!(imported["imported"]["customer"], 1);
    assert_eq!(imported["imported"]["subscription"], 1);

    let (code, equal) = run(&["verify"]).await;
    assert_eq!((code, &equal["checked"]), (Some(0), &json!(2)), "{equal:#}");

    sub["status"] = json!("past_due");
    double.put("acme", sub).unwrap();
    let (code, differs) = run(&["verify", "--repair"]).await;
    assert_eq!(code, Some(3));
    assert_eq!(differs["repaired"], 1);
    assert_eq!(differs["differences"][0]["field"], "status");
    let (code, _) = run(&["verify"]).await;
    assert_eq!(code, Some(0));

    // An old --since is passed as given (the double still has the event).
    let (code, swept) = run(&["sweep", "--since", "2023-01-01T00:00:00Z"]).await;
    assert_eq!(code, Some(0), "{swept:#}");
    assert_eq!(
        (&swept["listed"], &swept["missing"], &swept["published"]),
        (&json!(1), &json!(1), &json!(1))
    );
    assert_eq!(swept["since_beyond_retention"], true);
    assert_eq!(swept["lists"]["v1"]["published"], 1, "{swept:#}");
    // The tenant has an event destination, but the key cannot read API v2: said, not fatal.
    assert!(swept["lists"].get("v2").is_none(), "{swept:#}");
    assert!(
        swept["v2_skipped"]
            .as_str()
            .is_some_and(|why| why.contains("secret keys")),
        "{swept:#}"
    );
}
