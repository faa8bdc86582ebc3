//! The read API (`stripe_worker::api`) served on port 0 over real stores: bearer-token
//! auth per tenant, a customer's status after events went through the real worker path
//! (bus, queues, worker, store) on SQLite and on the AWS emulator, one object by id,
//! subscriptions by status paged without gaps or duplicates, and bad parameters.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stripe_worker::api::ApiTokens;
use stripe_worker::api::views::ENTITLEMENT_SUMMARY;
use stripe_worker::app::open_local;
use stripe_worker::backend::doubles::memory::MemoryState;
use stripe_worker::backend::publish_entries;
use stripe_worker::backend::{Backend, Bus, DedupeStore, Queue, StateRecord, StateStore};
use stripe_worker::clock::{now_ms, system_clock};
use stripe_worker::event::envelope::webhook_snapshot_entry;
use stripe_worker::ingress::config::DEFAULT_HEADER_READ_TIMEOUT;
use stripe_worker::ingress::server::serve_router;
use tokio_util::sync::CancellationToken;

use crate::aws_support;
use crate::ops_support::{config, drain};

const ACME_TOKEN: &str = "acme-read-token-0123456789abcdef0123";
const GLOBEX_TOKEN: &str = "globex-read-token-0123456789abcdef012";

/// A running API: its base URL, and the token that stops it when dropped.
struct Server {
    base: String,
    shutdown: CancellationToken,
    client: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    /// Serve the API over `store` on a port-0 listener, with tokens for acme and globex.
    async fn start<S: StateStore>(store: Arc<S>) -> Server {
        let tokens = ApiTokens::new([
            ("acme".to_owned(), ACME_TOKEN.to_owned()),
            ("globex".to_owned(), GLOBEX_TOKEN.to_owned()),
        ])
        .expect("tokens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let app = stripe_worker::api::router(store, tokens);
        tokio::spawn(serve_router(
            listener,
            app,
            DEFAULT_HEADER_READ_TIMEOUT,
            shutdown.clone(),
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Server {
            base,
            shutdown,
            client,
        }
    }

    /// GET `path` with `token` (none: no Authorization header): the status, the
    /// `WWW-Authenticate` header and the JSON body.
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Option<String>, Value) {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.json::<Value>().await.expect("a JSON body");
        (status, challenge, body)
    }

    /// GET `path` as acme, expecting `expected`; the body.
    async fn acme(&self, path: &str, expected: StatusCode) -> Value {
        let (status, _, body) = self.get(path, Some(ACME_TOKEN)).await;
        assert_eq!(status, expected, "{path}: {body}");
        body
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stripe")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

/// `object` with some fields replaced.
fn with(mut object: Value, fields: Value) -> Value {
    if let (Some(o), Value::Object(f)) = (object.as_object_mut(), fields) {
        o.extend(f);
    }
    object
}

fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "type": event_type, "created": created,
        "livemode": false, "api_version": "2025-03-31.basil", "pending_webhooks": 0,
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": object}
    })
}

/// A customer's life in Stripe's shapes: created, two subscriptions (one canceled), two
/// paid invoices (the later one by `created` is the latest), delivered as signed
/// webhooks would be, then drained by the real worker.
async fn apply_customer_events<Q: Queue, D: DedupeStore, S: StateStore, B: Bus>(
    backend: &Backend<Q, D, S, B>,
) {
    let t = 1_760_000_000;
    let customer = with(
        fixture("customer"),
        json!({"id": "cus_api", "email": "ada@example.com", "name": "Ada"}),
    );
    let subscription = |id: &str, status: &str| {
        with(
            fixture("subscription"),
            json!({"id": id, "customer": "cus_api", "status": status}),
        )
    };
    let invoice = |id: &str, created: i64| {
        with(
            fixture("invoice"),
            json!({"id": id, "customer": "cus_api", "status": "paid", "created": created,
                   "amount_due": 1200, "amount_paid": 1200, "currency": "eur"}),
        )
    };
    let events = [
        event("evt_api_1", "customer.created", t, customer),
        event(
            "evt_api_2",
            "customer.subscription.created",
            t + 1,
            subscription("sub_api_live", "active"),
        ),
        event(
            "evt_api_3",
            "customer.subscription.deleted",
            t + 2,
            subscription("sub_api_old", "canceled"),
        ),
        event(
            "evt_api_4",
            "invoice.paid",
            t + 3,
            invoice("in_api_new", t + 3),
        ),
        event(
            "evt_api_5",
            "invoice.paid",
            t + 4,
            invoice("in_api_old", t - 100),
        ),
    ];
    let entries: Vec<_> = events
        .iter()
        .map(|e| webhook_snapshot_entry(e, "acme", now_ms(), None).expect("entry"))
        .collect();
    publish_entries(backend.bus.as_ref(), &entries)
        .await
        .expect("publish");
    let stats = drain(backend, &config(false)).await;
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
}

/// The entitlement summary record another handler writes, put directly.
fn entitlements(customer: &str, features: Value) -> StateRecord {
    StateRecord {
        tenant: "acme".into(),
        kind: ENTITLEMENT_SUMMARY.into(),
        id: customer.into(),
        customer: Some(customer.into()),
        as_of_ms: 1,
        tiebreak: "evt_ent".into(),
        doc: json!({"customer": customer, "features": features}),
    }
}

/// The customer's status over the API after the worker applied its events.
async fn customer_status_after_the_worker<Q: Queue, D: DedupeStore, S: StateStore, B: Bus>(
    backend: &Backend<Q, D, S, B>,
) {
    apply_customer_events(backend).await;
    let server = Server::start(Arc::clone(&backend.state)).await;
    let path = "/v1/tenants/acme/customers/cus_api/status";

    let body = server.acme(path, StatusCode::OK).await;
    assert_eq!(body["object"], "customer_status");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(body["customer"]["email"], "ada@example.com");
    let subscriptions: Vec<(&str, &str)> = body["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        subscriptions,
        [("sub_api_live", "active"), ("sub_api_old", "canceled")],
        "every subscription, live first: {body}"
    );
    assert_eq!(body["latest_invoice"]["id"], "in_api_new", "{body}");
    assert_eq!(body["entitlements"], json!([]));

    backend
        .state
        .put_if_newer(&entitlements("cus_api", json!(["pro", "sso"])))
        .await
        .expect("put");
    let body = server.acme(path, StatusCode::OK).await;
    assert_eq!(body["entitlements"], json!(["pro", "sso"]));

    // One object by id, and what is not there.
    let body = server
        .acme(
            "/v1/tenants/acme/objects/subscription/sub_api_live",
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (&body["kind"], &body["id"], &body["doc"]["status"]),
        (
            &json!("subscription"),
            &json!("sub_api_live"),
            &json!("active")
        )
    );
    for missing in [
        "/v1/tenants/acme/objects/subscription/sub_nope",
        "/v1/tenants/acme/objects/no_such_kind/sub_api_live",
        "/v1/tenants/acme/customers/cus_nope/status",
    ] {
        let body = server.acme(missing, StatusCode::NOT_FOUND).await;
        assert_eq!(body["reason"], "not_found", "{missing}: {body}");
    }
    // A list over the same store.
    let body = server
        .acme(
            "/v1/tenants/acme/subscriptions?status=canceled",
            StatusCode::OK,
        )
        .await;
    assert_eq!(body["data"][0]["id"], "sub_api_old", "{body}");
    assert_eq!(body["has_more"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_status_after_the_worker_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = open_local(dir.path(), &config(false), system_clock()).expect("open");
    customer_status_after_the_worker(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_status_after_the_worker_on_the_aws_emulator() {
    let (_sdk, _names, backend) = aws_support::deployment("read-api").await;
    customer_status_after_the_worker(&backend).await;
}

#[tokio::test]
async fn a_token_reads_its_own_tenant_only() {
    let store = Arc::new(MemoryState::new());
    store
        .put_if_newer(&entitlements("cus_1", json!(["pro"])))
        .await
        .expect("put");
    let server = Server::start(store).await;
    let path = "/v1/tenants/acme/customers/cus_1/status";

    let (status, challenge, body) = server.get(path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.as_deref(), Some("Bearer realm=\"stripe-worker\""));
    assert_eq!(body["reason"], "missing_token");

    let wrong = format!("{ACME_TOKEN}x");
    let (status, challenge, body) = server.get(path, Some(&wrong)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&wrong),
        "the token is not echoed"
    );

    // Globex's token on acme's path, and on a tenant nobody has: the same refusal.
    for path in [path, "/v1/tenants/initech/customers/cus_1/status"] {
        let (status, challenge, body) = server.get(path, Some(GLOBEX_TOKEN)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!((challenge, &body["reason"]), (None, &json!("forbidden")));
    }

    let body = server.acme(path, StatusCode::OK).await;
    assert_eq!(body["entitlements"], json!(["pro"]));
    // Authentication comes before anything else is looked at.
    let (status, _, _) = server
        .get("/v1/tenants/acme/subscriptions?limit=0", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = server.get("/v1/nothing/here", Some(ACME_TOKEN)).await;
    assert_eq!(
        (status, &body["reason"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
}

/// 23 active subscriptions among others, paged 5 at a time over SQLite: every one once,
/// in id order, `has_more` false on the last page only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_page_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = open_local(dir.path(), &config(false), system_clock()).expect("open");
    let mut active = BTreeSet::new();
    for i in 0..30 {
        let status = if i % 4 == 3 { "past_due" } else { "active" };
        let id = format!("sub_{i:03}");
        if status == "active" {
            active.insert(id.clone());
        }
        let record = StateRecord {
            tenant: "acme".into(),
            kind: "subscription".into(),
            id,
            customer: Some(format!("cus_{}", i % 7)),
            as_of_ms: 1,
            tiebreak: "evt_1".into(),
            doc: json!({"status": status}),
        };
        backend.state.put_if_newer(&record).await.expect("put");
        // The same record in another tenant: never listed for acme.
        let globex = StateRecord {
            tenant: "globex".into(),
            ..record.clone()
        };
        backend.state.put_if_newer(&globex).await.expect("put");
    }
    assert_eq!(active.len(), 23);
    let server = Server::start(Arc::clone(&backend.state)).await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/tenants/acme/subscriptions?status=active&limit=5".to_owned();
        if let Some(after) = &after {
            path.push_str(&format!("&starting_after={after}"));
        }
        let body = server.acme(&path, StatusCode::OK).await;
        assert_eq!(body["object"], "list");
        assert_eq!(body["url"], "/v1/tenants/acme/subscriptions");
        let data = body["data"].as_array().expect("data");
        assert!(data.len() <= 5);
        for item in data {
            assert_eq!(
                (&item["tenant"], &item["doc"]["status"]),
                (&json!("acme"), &json!("active"))
            );
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        pages += 1;
        if body["has_more"] == json!(false) {
            break;
        }
        assert_eq!(data.len(), 5, "a page before the last is full");
        after = seen.last().cloned();
        assert!(pages < 10, "the pages end");
    }
    assert_eq!(pages, 5);
    assert_eq!(seen, active.into_iter().collect::<Vec<_>>());
    // Past the end: an empty last page.
    let body = server
        .acme(
            "/v1/tenants/acme/subscriptions?status=active&starting_after=sub_999",
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (&body["data"], &body["has_more"]),
        (&json!([]), &json!(false))
    );
}

#[tokio::test]
async fn bad_parameters_are_one_clear_400() {
    let server = Server::start(Arc::new(MemoryState::new())).await;
    for (query, names) in [
        ("status=active&limit=0", "limit"),
        ("status=active&limit=101", "limit"),
        ("status=active&limit=ten", "limit"),
        ("limit=5", "status"),
        ("status=sleeping", "status"),
        ("status=active&starting_after=a%20b", "starting_after"),
        ("status=active&page=2", "page"),
    ] {
        let path = format!("/v1/tenants/acme/subscriptions?{query}");
        let body = server.acme(&path, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["reason"], "bad_request", "{query}");
        let error = body["error"].as_str().expect("error text");
        assert!(
            error.contains(names) && !error.contains('\n'),
            "{query}: {error}"
        );
    }
    for path in [
        "/v1/tenants/acme/objects/Subscription/sub_1",
        "/v1/tenants/acme/objects/subscription/sub%201",
        "/v1/tenants/acme/customers/cus%2F1/status",
    ] {
        let body = server.acme(path, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["reason"], "bad_request", "{path}");
    }
    // A valid limit at the bound is fine.
    server
        .acme(
            "/v1/tenants/acme/subscriptions?status=active&limit=100",
            StatusCode::OK,
        )
        .await;
}

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

/// `serve-api` as a user runs it: refused without a token (one line naming what to set);
/// with one, it answers over a data directory the worker filled, and SIGTERM ends it
/// cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_api_command_needs_a_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let backend = open_local(&data, &config(false), system_clock()).expect("open");
    apply_customer_events(&backend).await;
    drop(backend);
    let data_dir = data.to_str().expect("path");

    let refused = std::process::Command::new(BIN)
        .args(["serve-api", "--data-dir", data_dir])
        .env("STRIPE_WORKER_TENANTS", "acme")
        .env_remove("STRIPE_WORKER_API_TOKEN")
        .env_remove("STRIPE_WORKER_API_TOKEN_ACME")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("no API token configured") && stderr.contains("STRIPE_WORKER_API_TOKEN"),
        "{stderr}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port();
    let log = dir.path().join("serve-api.log");
    let mut child = std::process::Command::new(BIN)
        .args(["serve-api", "--data-dir", data_dir])
        .env("STRIPE_WORKER_API_LISTEN", format!("127.0.0.1:{port}"))
        .env("STRIPE_WORKER_TENANTS", "acme")
        .env("STRIPE_WORKER_API_TOKEN_ACME", ACME_TOKEN)
        .stderr(std::fs::File::create(&log).expect("log"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("serve-api starts");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/v1/tenants/acme/customers/cus_api/status");
    // Poll with a generous deadline: the machine may be busy.
    let mut answer = None;
    for _ in 0..300 {
        if let Ok(response) = client.get(&url).bearer_auth(ACME_TOKEN).send().await {
            answer = Some((response.status(), response.text().await.unwrap_or_default()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("serve-api ends");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let (code, body) = answer.unwrap_or_else(|| panic!("serve-api never answered: {text}"));
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(
        body.contains("\"latest_invoice\":{\"id\":\"in_api_new\""),
        "{body}"
    );
    assert!(status.success(), "exit after SIGTERM: {text}");
    assert!(
        !text.contains(ACME_TOKEN),
        "the token is never logged: {text}"
    );
}
