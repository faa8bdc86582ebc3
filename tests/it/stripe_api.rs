//! The Stripe API client against a wiremock double of api.stripe.com.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stripe_worker::event::ObjectRef;
use stripe_worker::retry::Backoff;
use stripe_worker::stripe::api::{ApiKey, ApiRetry, StripeApiClient, StripeApiConfig};
use stripe_worker::stripe::hydrate::{HydrateError, Hydrator};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "rk_test_51ingressRestrictedKey";
const ACME_KEY: &str = "rk_test_51acmeRestrictedKey";
const SUB_ID: &str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw";

fn subscription() -> Value {
    let text = std::fs::read_to_string("tests/fixtures/stripe/subscription.json").expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn client(server: &MockServer) -> StripeApiClient {
    client_with(server, |_| {})
}

fn client_with(server: &MockServer, tweak: impl FnOnce(&mut StripeApiConfig)) -> StripeApiClient {
    let mut keys = BTreeMap::new();
    keys.insert("default".to_owned(), ApiKey::new(KEY).expect("key"));
    keys.insert("acme".to_owned(), ApiKey::new(ACME_KEY).expect("key"));
    let mut config = StripeApiConfig {
        base_url: server.uri(),
        keys,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        retry: ApiRetry {
            backoff: Backoff::doubling(Duration::from_millis(5), Duration::from_millis(20), 2),
            max_retry_after: Duration::from_secs(2),
        },
        api_version: None,
        ..StripeApiConfig::default()
    };
    tweak(&mut config);
    StripeApiClient::new(config).expect("client")
}

fn sub_ref(url: Option<&str>) -> ObjectRef {
    ObjectRef {
        id: SUB_ID.to_owned(),
        object_type: "subscription".to_owned(),
        url: url.map(str::to_owned),
        customer: None,
    }
}

fn sub_path() -> String {
    format!("/v1/subscriptions/{SUB_ID}")
}

fn permanent_code(result: Result<Value, HydrateError>) -> &'static str {
    match result {
        Err(HydrateError::Permanent {
            code, object_id, ..
        }) => {
            assert_eq!(object_id, SUB_ID);
            code
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

async fn requests(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

#[tokio::test]
async fn fetches_the_object_with_key_and_context_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(sub_path()))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(header("stripe-context", "acct_1Connected"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .expect(1)
        .mount(&server)
        .await;
    let hydrator: Arc<dyn Hydrator> = Arc::new(client(&server));
    let got = hydrator
        .fetch(
            "default",
            &sub_ref(Some(&sub_path())),
            Some("acct_1Connected"),
        )
        .await
        .expect("fetched");
    assert_eq!(got, subscription());
    server.verify().await;
}

#[tokio::test]
async fn per_tenant_key_and_no_context_header_without_context() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(sub_path()))
        .and(header(
            "authorization",
            format!("Bearer {ACME_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .expect(1)
        .mount(&server)
        .await;
    // No url on the reference: the path is built from the object type.
    let got = client(&server)
        .get_object("acme", &sub_ref(None), None)
        .await
        .expect("fetched");
    assert_eq!(got["id"], SUB_ID);
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 1);
    assert!(!reqs[0].headers.contains_key("stripe-context"));
    assert!(!reqs[0].headers.contains_key("stripe-version"));
    server.verify().await;
}

#[tokio::test]
async fn stripe_version_is_sent_when_configured() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("stripe-version", "2025-03-31.basil"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .expect(1)
        .mount(&server)
        .await;
    client_with(&server, |c| c.api_version = Some("2025-03-31.basil".into()))
        .get_object("default", &sub_ref(None), None)
        .await
        .expect("fetched");
    server.verify().await;
}

#[tokio::test]
async fn retries_429_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            serde_json::json!({"error": {"code": "rate_limit", "message": "Too many requests"}}),
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .mount(&server)
        .await;
    let got = client(&server)
        .get_object("default", &sub_ref(None), None)
        .await
        .expect("fetched after a retry");
    assert_eq!(got, subscription());
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn retries_500_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .mount(&server)
        .await;
    let got = client(&server)
        .get_object("default", &sub_ref(None), None)
        .await
        .expect("fetched after a retry");
    assert_eq!(got["object"], "subscription");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn honours_a_simple_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(subscription()))
        .mount(&server)
        .await;
    let start = Instant::now();
    client(&server)
        .get_object("default", &sub_ref(None), None)
        .await
        .expect("fetched");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_ends_as_transient_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "3600"))
        .mount(&server)
        .await;
    let err = client(&server)
        .get_object("default", &sub_ref(None), None)
        .await
        .expect_err("gives up");
    assert!(matches!(err, HydrateError::Transient { .. }), "{err:?}");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn persistent_5xx_is_transient_after_bounded_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502))
        .mount(&server)
        .await;
    let err = client(&server)
        .get_object("default", &sub_ref(None), None)
        .await
        .expect_err("gives up");
    match &err {
        HydrateError::Transient { object_id, message } => {
            assert_eq!(object_id, SUB_ID);
            assert!(message.contains("502"), "{message}");
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert_eq!(
        requests(&server).await.len(),
        3,
        "two retries after the first attempt"
    );
}

#[tokio::test]
async fn not_found_is_permanent_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "error": {"code": "resource_missing", "message": "No such subscription", "type": "invalid_request_error"}
        })))
        .mount(&server)
        .await;
    let result = client(&server)
        .get_object("default", &sub_ref(None), None)
        .await;
    assert_eq!(permanent_code(result), "stripe_not_found");
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn unauthorized_forbidden_and_other_4xx_are_permanent() {
    for (status, want) in [
        (401, "stripe_unauthorized"),
        (403, "stripe_forbidden"),
        (400, "stripe_client_error"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let result = client(&server)
            .get_object("default", &sub_ref(None), None)
            .await;
        if let Err(e) = &result {
            assert!(!e.to_string().contains(KEY), "error leaks the key: {e}");
        }
        assert_eq!(permanent_code(result), want, "HTTP {status}");
        assert_eq!(
            requests(&server).await.len(),
            1,
            "HTTP {status} is not retried"
        );
    }
}

#[tokio::test]
async fn timeouts_are_transient_after_retries() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(subscription())
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&server)
        .await;
    let err = client_with(&server, |c| c.request_timeout = Duration::from_millis(100))
        .get_object("default", &sub_ref(None), None)
        .await
        .expect_err("times out");
    match err {
        HydrateError::Transient { message, .. } => {
            assert!(message.contains("timed out"), "{message}")
        }
        other => panic!("expected transient, got {other:?}"),
    }
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn connection_failures_are_transient() {
    // Bind and drop a listener to get a port with nothing behind it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let server = MockServer::start().await;
    let err = client_with(&server, |c| c.base_url = format!("http://127.0.0.1:{port}"))
        .get_object("default", &sub_ref(None), None)
        .await
        .expect_err("refused");
    assert!(matches!(err, HydrateError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn missing_key_and_unsafe_reference_fail_without_a_request() {
    let server = MockServer::start().await;
    let c = client(&server);
    assert_eq!(
        permanent_code(c.get_object("nobody", &sub_ref(None), None).await),
        "stripe_missing_api_key"
    );
    assert_eq!(
        permanent_code(
            c.get_object(
                "default",
                &sub_ref(Some("https://evil.example/steal")),
                None
            )
            .await
        ),
        "stripe_bad_reference"
    );
    assert_eq!(
        permanent_code(
            c.get_object("default", &sub_ref(None), Some("acct\n1"))
                .await
        ),
        "stripe_bad_context"
    );
    assert!(requests(&server).await.is_empty());
}
