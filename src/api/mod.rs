//! The read API: billing state for the services that need it, as JSON over HTTP, answered
//! from the state store of either backend. Each tenant has its own bearer tokens
//! ([`auth`]); a token reads its own tenant only.
//!
//! Routes:
//! - `GET /v1/tenants/{tenant}/customers/{id}/status`: the customer, every subscription
//!   with its status, the latest invoice (by `created`), payment methods and payments,
//!   and the active entitlements ([`views::StatusView`]);
//! - `GET /v1/tenants/{tenant}/objects/{kind}/{id}`: one record ([`views::ObjectView`]);
//! - `GET /v1/tenants/{tenant}/subscriptions?status=active&limit=10&starting_after=sub_..`:
//!   subscriptions by status in id order, a page at a time ([`views::ListView`]).
//!
//! Checks, cheapest and least revealing first: the token (401 with `WWW-Authenticate`),
//! the tenant (403, whether or not the tenant exists), the parameters (400), then the
//! store (404 for what is not there, 503 when the store fails or does not answer within
//! [`STORE_TIMEOUT`]). Errors are `{"error": text, "reason": code}`, as the ingress
//! answers.
//!
//! Served by `stripe-worker serve-api`, or on the worker's admin port with `run
//! --admin-api`; both use the ingress's HTTP stack
//! ([`crate::ingress::server::serve_router`]: header read timeout, graceful shutdown).
//! Requests are GETs whose bodies are never read, so no body timeout applies.

pub mod auth;
pub mod query;
pub mod views;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::backend::{BackendResult, StateStore};
use crate::handlers::kinds;
use crate::state_view::customer_status;
pub use auth::ApiTokens;
use query::{BadRequest, check_id, check_kind, parse_list_query};
use views::{ENTITLEMENT_SUMMARY, ListView, ObjectView, StatusView};

/// How long one request may wait for the store before it is answered 503. Well under
/// the usual client timeouts, so the caller gets an answer rather than a dropped socket.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "stripe-worker";

/// What the routes share: the store and the tokens.
struct Api<S> {
    store: Arc<S>,
    tokens: ApiTokens,
}

/// The read API's routes over `store`, authorised by `tokens`. Unknown paths answer a
/// JSON 404.
pub fn router<S: StateStore>(store: Arc<S>, tokens: ApiTokens) -> Router {
    let api = Arc::new(Api { store, tokens });
    Router::new()
        .route(
            "/v1/tenants/{tenant}/customers/{id}/status",
            get(customer::<S>),
        )
        .route("/v1/tenants/{tenant}/objects/{kind}/{id}", get(object::<S>))
        .route(
            "/v1/tenants/{tenant}/subscriptions",
            get(subscriptions::<S>),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route".to_owned(),
            )
        })
        .with_state(api)
}

/// A refused request: its status, a short bounded code and a sentence.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, reason: &'static str, message: String) -> Self {
        ApiError {
            status,
            reason,
            message,
        }
    }

    fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", e.0)
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the path is not valid UTF-8".to_owned(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::debug!(
            status = self.status.as_u16(),
            reason = self.reason,
            "read API request refused"
        );
        let body = serde_json::json!({"error": self.message, "reason": self.reason});
        let mut response = (self.status, Json(body)).into_response();
        // RFC 6750: a request without credentials gets the scheme only; a wrong token
        // gets `invalid_token` too.
        let challenge = match self.reason {
            "missing_token" => Some(format!("Bearer realm=\"{REALM}\"")),
            "invalid_token" => Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\"")),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The bearer token of `headers`, if it has one (scheme matched case-insensitively).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Let the request through if its token is one of `tenant`'s.
fn authorize(tokens: &ApiTokens, headers: &HeaderMap, tenant: &str) -> Result<(), ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send `Authorization: Bearer <token>`".to_owned(),
        ));
    };
    match tokens.tenant_of(token) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the token is not valid".to_owned(),
        )),
        Some(own) if own == tenant => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the token does not grant access to this tenant".to_owned(),
        )),
    }
}

/// A store read bounded by [`STORE_TIMEOUT`]; a failure is logged and answered 503.
async fn read<T>(read: impl Future<Output = BackendResult<T>>) -> Result<T, ApiError> {
    let why = match tokio::time::timeout(STORE_TIMEOUT, read).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(error)) => {
            tracing::warn!(operation = error.operation(), %error, "read API: the store read failed");
            "the state store failed; try again"
        }
        Err(_) => {
            tracing::warn!(timeout = ?STORE_TIMEOUT, "read API: the store did not answer in time");
            "the state store did not answer in time; try again"
        }
    };
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        why.to_owned(),
    ))
}

async fn customer<S: StateStore>(
    State(api): State<Arc<Api<S>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    let Path((tenant, id)) = path?;
    authorize(&api.tokens, &headers, &tenant)?;
    check_id("customer id", &id)?;
    let (records, entitlements) = futures::try_join!(
        read(api.store.by_customer(&tenant, &id)),
        read(api.store.get(&tenant, ENTITLEMENT_SUMMARY, &id)),
    )?;
    if records.is_empty() && entitlements.is_none() {
        return Err(ApiError::not_found(format!(
            "no billing state for customer {id}"
        )));
    }
    let mut status = customer_status(&records);
    status.tenant = Some(tenant);
    status.customer_id = Some(id);
    Ok(Json(StatusView::new(status, entitlements.as_ref())))
}

async fn object<S: StateStore>(
    State(api): State<Arc<Api<S>>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ObjectView>, ApiError> {
    let Path((tenant, kind, id)) = path?;
    authorize(&api.tokens, &headers, &tenant)?;
    check_kind(&kind)?;
    check_id("id", &id)?;
    match read(api.store.get(&tenant, &kind, &id)).await? {
        Some(record) => Ok(Json(record.into())),
        None => Err(ApiError::not_found(format!("no {kind} {id}"))),
    }
}

async fn subscriptions<S: StateStore>(
    State(api): State<Arc<Api<S>>>,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<ListView>, ApiError> {
    let Path(tenant) = path?;
    authorize(&api.tokens, &headers, &tenant)?;
    let query = parse_list_query(uri.query())?;
    // One more than the page holds: whether it comes says whether another page follows.
    let mut records = read(api.store.by_kind_status(
        &tenant,
        kinds::SUBSCRIPTION,
        &query.status,
        query.starting_after.as_deref(),
        query.limit + 1,
    ))
    .await?;
    let has_more = records.len() > query.limit;
    records.truncate(query.limit);
    Ok(Json(ListView {
        object: "list",
        data: records.into_iter().map(ObjectView::from).collect(),
        has_more,
        url: format!("/v1/tenants/{tenant}/subscriptions"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), expected, "{value:?}");
        }
    }
}
