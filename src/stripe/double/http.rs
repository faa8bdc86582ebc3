//! The double over HTTP: enough of api.stripe.com for [`crate::stripe::api::StripeApiClient`]
//! to run against it unchanged.
//!
//! - `GET /v1/<collection>/<id>`: the stored object, or a 404 `resource_missing`;
//! - `GET /v1/<collection>`: a list page, newest first, with `limit` (default 10, at most
//!   100), `starting_after`, `created[gte|gt|lte|lt]`, `customer` and `status` (on
//!   subscriptions, as Stripe does, canceled ones only with `status=all` or
//!   `status=canceled`);
//! - `GET /v1/customers/<id>/payment_methods` and `/tax_ids`: that customer's payment
//!   methods and tax ids;
//! - deleted objects (a deleted customer's stub) are served by id but never listed;
//! - `GET /v1/events` and `GET /v1/events/<id>`, with the same parameters and `type`;
//! - `GET /v2/core/events` and `GET /v2/core/events/<id>`: the API v2 (thin) events, newest
//!   first, with `limit` (default 20, at most 100), `created[gte|gt|lte|lt]` (RFC 3339),
//!   `object_id` (the related object) and `types` (repeated); pages are a `page` token
//!   and the response's `next_page_url` (the same filters and the next token),
//!   `previous_page_url` is always null;
//! - `Authorization: Bearer <key>` picks the tenant ([`ServeOptions::keys`]); another key
//!   is a 401, and so is every API v2 request with [`ServeOptions::refuse_v2`] (a
//!   restricted key);
//! - injected faults: every n-th request a 429 (with a `Retry-After` when asked), and an
//!   outage after a number of requests (503 with `Stripe-Should-Retry: false`), to stop an
//!   import mid-way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use reqwest::Url;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::StripeDouble;

/// How the double serves HTTP.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// API key to tenant: a request's key decides whose objects it sees.
    pub keys: BTreeMap<String, String>,
    /// Answer every n-th request with a 429 (0: never).
    pub throttle_every: u64,
    /// The `Retry-After` (whole seconds) sent with an injected 429; none when `None`.
    pub retry_after_secs: Option<u64>,
    /// Answer every API v2 request with a 401, as Stripe answers a restricted key there
    /// (API v2 takes secret keys only).
    pub refuse_v2: bool,
}

/// A running HTTP double; stops when dropped.
#[derive(Debug)]
pub struct DoubleServer {
    addr: SocketAddr,
    state: Arc<ServeState>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct ServeState {
    double: Arc<StripeDouble>,
    options: ServeOptions,
    requests: AtomicU64,
    throttled: AtomicU64,
    /// Requests after this count answer 503 (`u64::MAX`: no outage).
    outage_after: AtomicU64,
}

impl StripeDouble {
    /// Serve this double over HTTP on 127.0.0.1 (a free port) until the returned server
    /// is dropped.
    pub async fn serve(self: &Arc<Self>, options: ServeOptions) -> std::io::Result<DoubleServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ServeState {
            double: Arc::clone(self),
            options,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            outage_after: AtomicU64::new(u64::MAX),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the Stripe double's server stopped");
            }
        });
        Ok(DoubleServer {
            addr,
            state,
            shutdown,
        })
    }
}

impl DoubleServer {
    /// The base URL to give the client, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far, injected failures included.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests answered with an injected 429.
    pub fn throttled(&self) -> u64 {
        self.state.throttled.load(Ordering::Relaxed)
    }

    /// Answer every request after the next `n` with a 503 that says not to retry.
    pub fn fail_after(&self, n: u64) {
        let from = self.requests().saturating_add(n);
        self.state.outage_after.store(from, Ordering::Relaxed);
    }

    /// End an outage started by [`Self::fail_after`].
    pub fn heal(&self) {
        self.state.outage_after.store(u64::MAX, Ordering::Relaxed);
    }
}

impl Drop for DoubleServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn handle(
    State(state): State<Arc<ServeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, None, "GET only");
    }
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(tenant) = key.and_then(|k| state.options.keys.get(k)) else {
        return error(StatusCode::UNAUTHORIZED, None, "Invalid API Key provided");
    };
    if n > state.outage_after.load(Ordering::Relaxed) {
        let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, None, "injected outage");
        resp.headers_mut()
            .insert("stripe-should-retry", HeaderValue::from_static("false"));
        return resp;
    }
    let every = state.options.throttle_every;
    if every > 0 && n % every == 0 {
        state.throttled.fetch_add(1, Ordering::Relaxed);
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            Some("rate_limit"),
            "Too many requests hit the API too quickly.",
        );
        if let Some(secs) = state.options.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return resp;
    }
    let mut params: Vec<(String, String)> = Url::parse(&format!("http://double{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let path = uri.path().trim_end_matches('/');
    if state.options.refuse_v2 && path.starts_with("/v2/") {
        return error(
            StatusCode::UNAUTHORIZED,
            None,
            "API v2 requests need a secret key",
        );
    }
    let double = &state.double;
    if path == "/v1/events" {
        return list(double, tenant, path, double.events_of(tenant), &params);
    }
    if path == V2_EVENTS {
        return list_v2(path, double.v2_events_of(tenant), &params);
    }
    if let Some(id) = path
        .strip_prefix(V2_EVENTS)
        .and_then(|rest| rest.strip_prefix('/'))
    {
        return match double.v2_event(tenant, id) {
            Some(event) => axum::Json(event).into_response(),
            None => missing(id),
        };
    }
    let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
    if parent == "/v1/events" {
        return match double.event(tenant, last) {
            Some(event) => axum::Json(event).into_response(),
            None => missing(last),
        };
    }
    if let Some(object) = double.get(tenant, last)
        && super::collection_of(&object).as_deref() == Some(parent)
    {
        return axum::Json(object).into_response();
    }
    // A customer's own lists: the top-level collection filtered by that customer.
    for collection in ["payment_methods", "tax_ids"] {
        if let Some(customer) = path
            .strip_prefix("/v1/customers/")
            .and_then(|rest| rest.strip_suffix(collection))
            .and_then(|rest| rest.strip_suffix('/'))
        {
            params.push(("customer".to_owned(), customer.to_owned()));
            let objects = double.objects_in(tenant, &format!("/v1/{collection}"));
            return list(double, tenant, path, objects, &params);
        }
    }
    // Collection names are lower-case words; ids carry digits.
    let is_collection =
        path.starts_with("/v1/") && last.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if is_collection {
        let objects = double.objects_in(tenant, path);
        list(double, tenant, path, objects, &params)
    } else {
        missing(last)
    }
}

/// One page of `all` (newest first) as Stripe pages it.
fn list(
    double: &StripeDouble,
    tenant: &str,
    path: &str,
    all: Vec<Value>,
    params: &[(String, String)],
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                Some("parameter_invalid_integer"),
                "limit must be between 1 and 100",
            );
        }
    };
    // The cursor is a place in the whole list, so an object that no longer matches the
    // filters still marks where the previous page ended.
    let start = match param("starting_after") {
        None => 0,
        Some(after) => match all.iter().position(|o| id_of(o) == Some(after)) {
            Some(i) => i + 1,
            None => return missing(after),
        },
    };
    let mut matching = all[start..].iter().filter(|o| matches(o, path, &param));
    let data: Vec<Value> = matching.by_ref().take(limit).cloned().collect();
    let has_more = matching.next().is_some();
    double.note_listed(tenant, data.iter().filter_map(id_of));
    axum::Json(json!({"object": "list", "url": path, "has_more": has_more, "data": data}))
        .into_response()
}

/// The API v2 event list.
const V2_EVENTS: &str = "/v2/core/events";

/// The start of the double's `page` tokens; the rest is the last id of the page before.
const PAGE_TOKEN_PREFIX: &str = "after_";

/// One page of `all` (newest first) as API v2 pages it: a `page` token, and a
/// `next_page_url` carrying the same filters.
fn list_v2(path: &str, all: Vec<Value>, params: &[(String, String)]) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let invalid =
        |message: &str| error(StatusCode::BAD_REQUEST, Some("invalid_parameter"), message);
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(l)) if (1..=100).contains(&l) => l,
        Some(_) => return invalid("limit must be between 1 and 100"),
    };
    let start = match param("page") {
        None => 0,
        Some(token) => {
            let after = token.strip_prefix(PAGE_TOKEN_PREFIX);
            match after.and_then(|a| all.iter().position(|o| id_of(o) == Some(a))) {
                Some(i) => i + 1,
                None => return invalid("page is not a page token of this list"),
            }
        }
    };
    let mut bounds = Vec::new();
    for (name, keep) in [
        (
            "created[gte]",
            std::cmp::Ordering::is_ge as fn(std::cmp::Ordering) -> bool,
        ),
        ("created[gt]", std::cmp::Ordering::is_gt),
        ("created[lte]", std::cmp::Ordering::is_le),
        ("created[lt]", std::cmp::Ordering::is_lt),
    ] {
        if let Some(text) = param(name) {
            match crate::ops::parse_time(text) {
                Ok(ms) => bounds.push((ms, keep)),
                Err(_) => return invalid(&format!("{name} must be an RFC 3339 timestamp")),
            }
        }
    }
    let types: Vec<&str> = params
        .iter()
        .filter(|(n, _)| n == "types" || (n.starts_with("types[") && n.ends_with(']')))
        .map(|(_, v)| v.as_str())
        .collect();
    let object_id = param("object_id");
    let passes = |event: &&Value| {
        let created = super::created_ms(event);
        let related = event
            .get("related_object")
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str);
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or("");
        bounds.iter().all(|(bound, keep)| keep(created.cmp(bound)))
            && object_id.is_none_or(|id| related == Some(id))
            && (types.is_empty() || types.contains(&event_type))
    };
    let mut matching = all[start..].iter().filter(passes);
    let data: Vec<Value> = matching.by_ref().take(limit).cloned().collect();
    let more = matching.next().is_some();
    let next_page_url = match data.last().and_then(id_of) {
        Some(last) if more => {
            let mut url = Url::parse(&format!("http://double{path}")).expect("a valid path");
            url.query_pairs_mut()
                .extend_pairs(params.iter().filter(|(n, _)| n != "page"))
                .append_pair("page", &format!("{PAGE_TOKEN_PREFIX}{last}"));
            Value::String(format!("{}?{}", url.path(), url.query().unwrap_or("")))
        }
        _ => Value::Null,
    };
    axum::Json(json!({"data": data, "next_page_url": next_page_url, "previous_page_url": null}))
        .into_response()
}

/// Whether `object` passes the list filters.
fn matches<'a>(object: &Value, path: &str, param: &impl Fn(&str) -> Option<&'a str>) -> bool {
    let created = object.get("created").and_then(Value::as_i64).unwrap_or(0);
    let bound = |name: &str| param(name).and_then(|v| v.parse::<i64>().ok());
    let in_window = bound("created[gte]").is_none_or(|b| created >= b)
        && bound("created[gt]").is_none_or(|b| created > b)
        && bound("created[lte]").is_none_or(|b| created <= b)
        && bound("created[lt]").is_none_or(|b| created < b);
    let text = |field: &str| object.get(field).and_then(Value::as_str);
    let customer = match object.get("customer") {
        Some(Value::Object(expanded)) => expanded.get("id").and_then(Value::as_str),
        other => other.and_then(Value::as_str),
    };
    let status_ok = match (param("status"), path) {
        (Some("all"), _) => true,
        (Some(wanted), _) => text("status") == Some(wanted),
        // Stripe leaves canceled subscriptions out unless asked for.
        (None, "/v1/subscriptions") => {
            !matches!(text("status"), Some("canceled" | "incomplete_expired"))
        }
        (None, _) => true,
    };
    in_window
        && status_ok
        && object.get("deleted") != Some(&Value::Bool(true))
        && param("customer").is_none_or(|c| customer == Some(c))
        && param("type").is_none_or(|t| text("type") == Some(t))
}

fn id_of(object: &Value) -> Option<&str> {
    object.get("id").and_then(Value::as_str)
}

fn missing(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        Some("resource_missing"),
        &format!("No such object: '{id}'"),
    )
}

/// A Stripe-shaped error body.
fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_server_error() => "api_error",
        _ => "invalid_request_error",
    };
    let body = json!({"error": {"type": kind, "code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}
