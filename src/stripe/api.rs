//! A small Stripe API client that fetches the object a thin event points at: the
//! production [`Hydrator`].
//!
//! - `GET {base}{path}` where `path` is the reference's `url` (`related_object.url`), or
//!   `/v1/<objects>/<id>` built from the object type when the event gave none;
//! - `Authorization: Bearer <the tenant's key>` (use a restricted key with read access to
//!   the billing objects), `Stripe-Context` when the event names a Connect account,
//!   `Stripe-Version` when configured;
//! - HTTP/1.1 over rustls, connect and request timeouts, no redirects (the key must never
//!   follow one);
//! - 429, 5xx, 409, `Stripe-Should-Retry: true`, timeouts and connection failures are
//!   retried with exponential backoff and jitter (bounded, honouring a `Retry-After` in
//!   whole seconds), then reported as [`HydrateError::Transient`]; 401, 403, 404 and other
//!   4xx are [`HydrateError::Permanent`] at once. This is the one retry layer for
//!   Stripe calls: callers do not retry a [`HydrateError::Transient`] in process again;
//! - every attempt first takes a token from its API key's bucket ([`pace`]); a
//!   `Retry-After` holds the whole key's bucket, not only the call that got it;
//! - lists (`GET /v1/<objects>`, `GET /v1/events`) one page at a time ([`ListPage`]), and
//!   API v2 lists (`GET /v2/core/events`: a `page` token, followed through the response's
//!   `next_page_url` on the same path) the same way ([`V2ListPage`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tracing::Instrument;

use crate::event::ObjectRef;
use crate::ingress::secrets::{self, SecretsError};
use crate::retry::Backoff;
use crate::stripe::hydrate::{HydrateError, Hydrator};

pub mod pace;

use pace::TokenBucket;

/// Stripe's API origin.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// The environment variable holding the default tenant's API key; other tenants use
/// `STRIPE_API_KEY_<TENANT>` (tenant id lower-cased), as with webhook secrets.
pub const API_KEY_ENV: &str = "STRIPE_API_KEY";

/// The key of a Secrets Manager JSON API key secret (`{"api_key": "rk_..."}`).
pub const API_KEY_JSON_KEY: &str = "api_key";

/// Permanent error codes (the DLQ reasons) this client produces.
pub mod codes {
    /// 401: the key is wrong, revoked or expired.
    pub const UNAUTHORIZED: &str = "stripe_unauthorized";
    /// 403: the (restricted) key lacks permission for this object.
    pub const FORBIDDEN: &str = "stripe_forbidden";
    /// 404: the object does not exist (in this account or mode).
    pub const NOT_FOUND: &str = "stripe_not_found";
    /// Any other 4xx.
    pub const CLIENT_ERROR: &str = "stripe_client_error";
    /// A status that is neither success nor an error we understand (e.g. a redirect).
    pub const UNEXPECTED_STATUS: &str = "stripe_unexpected_status";
    /// No API key is configured for the event's tenant.
    pub const MISSING_API_KEY: &str = "stripe_missing_api_key";
    /// The reference cannot be turned into a safe API path.
    pub const BAD_REFERENCE: &str = "stripe_bad_reference";
    /// The event's Stripe-Context is not a usable header value.
    pub const BAD_CONTEXT: &str = "stripe_bad_context";
}

/// Longest part of a Stripe error message kept in our errors (they end up in DLQ
/// attributes and logs).
const MAX_MESSAGE: usize = 300;

/// Why the client could not be built. Always a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// The base URL does not parse, or is not http(s).
    #[error("invalid Stripe API base URL `{0}`")]
    InvalidBaseUrl(String),
    /// A key is empty or not a valid header value.
    #[error("{source_name}: Stripe API key is empty or contains invalid characters")]
    InvalidKey { source_name: String },
    /// The configured `Stripe-Version` is not a valid header value.
    #[error("invalid Stripe-Version `{0}`")]
    InvalidApiVersion(String),
    /// A tenant has more than one API key; which to use would be a guess.
    #[error("{source_name}: tenant `{tenant}` has more than one Stripe API key")]
    MultipleKeys { source_name: String, tenant: String },
    /// Loading keys from the environment or a directory failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The HTTP client could not be built (TLS setup).
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A Stripe API key. Neither `Debug` nor `Display` shows it.
#[derive(Clone)]
pub struct ApiKey(Box<str>);

impl ApiKey {
    /// Wrap a key (surrounding whitespace trimmed). Rejects an empty key or one that
    /// cannot be sent in a header.
    pub fn new(key: &str) -> Result<Self, StripeApiError> {
        Self::parse(key, "Stripe API key")
    }

    fn parse(key: &str, source_name: &str) -> Result<Self, StripeApiError> {
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StripeApiError::InvalidKey {
                source_name: source_name.to_owned(),
            });
        }
        Ok(ApiKey(key.into()))
    }

    /// The `Authorization` header value, marked sensitive so it is never printed.
    fn bearer(&self) -> Option<HeaderValue> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.0)).ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How failed calls are retried within one fetch. Bounded: the message's next delivery
/// covers longer outages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiRetry {
    /// The schedule between attempts (a `Retry-After` may wait longer).
    pub backoff: Backoff,
    /// A `Retry-After` longer than this ends the fetch as transient instead of waiting.
    pub max_retry_after: Duration,
}

impl Default for ApiRetry {
    fn default() -> Self {
        ApiRetry {
            backoff: Backoff::doubling(Duration::from_millis(250), Duration::from_secs(4), 2),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// Configuration of [`StripeApiClient`]. Keys print as `<redacted>`.
#[derive(Debug, Clone)]
pub struct StripeApiConfig {
    /// The API origin, [`DEFAULT_BASE_URL`] unless testing against a double.
    pub base_url: String,
    /// Each tenant's API key (a restricted key is enough and safer).
    pub keys: BTreeMap<String, ApiKey>,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request, body included.
    pub request_timeout: Duration,
    /// Retries of 429, 5xx and network failures.
    pub retry: ApiRetry,
    /// `Stripe-Version` to send; `None` uses the account's default version.
    pub api_version: Option<String>,
    /// Calls per second per API key (a token bucket with one second's burst), shared by
    /// every caller of the client; [`pace::DEFAULT_REQUESTS_PER_SEC`] by default.
    pub requests_per_sec: f64,
}

impl Default for StripeApiConfig {
    fn default() -> Self {
        StripeApiConfig {
            base_url: DEFAULT_BASE_URL.to_owned(),
            keys: BTreeMap::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            retry: ApiRetry::default(),
            api_version: None,
            requests_per_sec: pace::DEFAULT_REQUESTS_PER_SEC,
        }
    }
}

impl StripeApiConfig {
    /// Defaults, with keys from `STRIPE_API_KEY` (the key of `default_tenant`),
    /// `STRIPE_API_KEY_<TENANT>` and, when given, a directory of `<dir>/<tenant>` files
    /// holding one key each.
    pub fn from_env(
        keys_dir: Option<&Path>,
        default_tenant: Option<&str>,
    ) -> Result<Self, StripeApiError> {
        Self::from_vars(std::env::vars(), keys_dir, default_tenant)
    }

    /// [`StripeApiConfig::from_env`] over a given environment.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        keys_dir: Option<&Path>,
        default_tenant: Option<&str>,
    ) -> Result<Self, StripeApiError> {
        let spec = secrets::TenantValues {
            base_var: API_KEY_ENV,
            json_key: API_KEY_JSON_KEY,
            default_tenant,
        };
        let mut keys = BTreeMap::new();
        for (tenant, (source_name, values)) in secrets::load_tenant_values(spec, vars, keys_dir)? {
            let [value] = values.as_slice() else {
                return Err(StripeApiError::MultipleKeys {
                    source_name,
                    tenant,
                });
            };
            keys.insert(tenant, ApiKey::parse(value, &source_name)?);
        }
        Ok(StripeApiConfig {
            keys,
            ..StripeApiConfig::default()
        })
    }
}

/// The Stripe API client. Cheap to share (`Arc`); one connection pool for all tenants.
pub struct StripeApiClient {
    http: reqwest::Client,
    /// The base URL without a trailing slash.
    base: String,
    /// Each tenant's prepared `Authorization` value and its key's bucket (tenants that
    /// share a key share the bucket).
    auth: HashMap<String, (HeaderValue, Arc<TokenBucket>)>,
    api_version: Option<HeaderValue>,
    retry: ApiRetry,
}

impl fmt::Debug for StripeApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeApiClient")
            .field("base", &self.base)
            .field("tenants", &self.auth.keys().collect::<Vec<_>>())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The outcome of one attempt that did not produce an object.
enum AttemptError {
    /// Worth another attempt; `retry_after` when the server said how long to wait.
    Retry {
        message: String,
        retry_after: Option<Duration>,
        /// The server said not to retry (`Stripe-Should-Retry: false`).
        final_attempt: bool,
    },
    /// Final.
    Fail(HydrateError),
}

impl StripeApiClient {
    /// Build the client: validate the base URL and keys, set up TLS and the pool.
    pub fn new(config: StripeApiConfig) -> Result<Self, StripeApiError> {
        let url = Url::parse(&config.base_url)
            .map_err(|_| StripeApiError::InvalidBaseUrl(config.base_url.clone()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(StripeApiError::InvalidBaseUrl(config.base_url));
        }
        let mut auth = HashMap::with_capacity(config.keys.len());
        let mut buckets: HashMap<Box<str>, Arc<TokenBucket>> = HashMap::new();
        for (tenant, key) in config.keys {
            let value = key.bearer().ok_or_else(|| StripeApiError::InvalidKey {
                source_name: format!("tenant {tenant}"),
            })?;
            let bucket = buckets
                .entry(key.0.clone())
                .or_insert_with(|| Arc::new(TokenBucket::new(config.requests_per_sec)));
            auth.insert(tenant, (value, Arc::clone(bucket)));
        }
        let api_version = match config.api_version {
            Some(v) => Some(
                HeaderValue::from_str(&v)
                    .map_err(|_| StripeApiError::InvalidApiVersion(v.clone()))?,
            ),
            None => None,
        };
        let http = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("stripe-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(StripeApiError::Client)?;
        Ok(StripeApiClient {
            http,
            base: config.base_url.trim_end_matches('/').to_owned(),
            auth,
            api_version,
            retry: config.retry,
        })
    }

    /// Fetch the object `reference` points at, for `tenant`, in the Connect account
    /// `context` when given. Retries as described in the module docs.
    pub async fn get_object(
        &self,
        tenant: &str,
        reference: &ObjectRef,
        context: Option<&str>,
    ) -> Result<Value, HydrateError> {
        let permanent = |code: &'static str, message: String| HydrateError::Permanent {
            object_id: reference.id.clone(),
            code,
            message,
        };
        let Some((auth, bucket)) = self.auth.get(tenant) else {
            return Err(permanent(
                codes::MISSING_API_KEY,
                format!("no Stripe API key configured for tenant `{tenant}`"),
            ));
        };
        let path = object_path(reference).map_err(|why| permanent(codes::BAD_REFERENCE, why))?;
        let url = format!("{}{path}", self.base);
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(AUTHORIZATION, auth.clone());
        if let Some(context) = context {
            let value = HeaderValue::from_str(context).map_err(|_| {
                permanent(
                    codes::BAD_CONTEXT,
                    "Stripe-Context is not a valid header".into(),
                )
            })?;
            headers.insert("stripe-context", value);
        }
        if let Some(version) = &self.api_version {
            headers.insert("stripe-version", version.clone());
        }

        self.get_with_retry(&url, headers, bucket, &reference.id)
            .await
    }

    /// Whether `tenant` has an API key.
    pub fn has_key(&self, tenant: &str) -> bool {
        self.auth.contains_key(tenant)
    }

    /// The tenants with an API key, sorted.
    pub fn tenants(&self) -> Vec<String> {
        let mut tenants: Vec<String> = self.auth.keys().cloned().collect();
        tenants.sort_unstable();
        tenants
    }

    /// One page of the tenant's events, newest first (`GET /v1/events`), with the same
    /// retries as [`Self::get_object`]. Errors name `events` as their object.
    pub async fn list_events(
        &self,
        tenant: &str,
        query: &EventListQuery,
    ) -> Result<ListPage, HydrateError> {
        let mut params = Vec::with_capacity(3);
        if let Some(gte) = query.created_gte_secs {
            params.push(("created[gte]".to_owned(), gte.to_string()));
        }
        if let Some(success) = query.delivery_success {
            params.push(("delivery_success".to_owned(), success.to_string()));
        }
        self.list_page(
            tenant,
            "/v1/events",
            &params,
            query.starting_after.as_deref(),
            query.limit,
        )
        .await
    }

    /// One page of a list endpoint such as `/v1/subscriptions`, newest first, with
    /// `params` (e.g. `status=all`), `starting_after` (the last id of the previous page)
    /// and `limit` (clamped to 1..=100), with the same retries as [`Self::get_object`].
    /// Errors name the path as their object.
    pub async fn list_page(
        &self,
        tenant: &str,
        path: &str,
        params: &[(String, String)],
        starting_after: Option<&str>,
        limit: u8,
    ) -> Result<ListPage, HydrateError> {
        let mut url = self.list_url(path)?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("limit", &limit.clamp(1, 100).to_string());
            for (name, value) in params {
                pairs.append_pair(name, value);
            }
            if let Some(after) = starting_after {
                pairs.append_pair("starting_after", after);
            }
        }
        let mut page = self.get_list(tenant, path, &url).await?;
        Ok(ListPage {
            data: list_data(&mut page, path)?,
            has_more: page
                .get("has_more")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// One page of an API v2 list such as `/v2/core/events`, newest first: the first page
    /// with `params` and `limit` (clamped to 1..=100) when `next_page_url` is `None`, else
    /// the page that URL (the previous page's `next_page_url`) names. That URL must be on
    /// `path` of this API (its query, the `page` token with the filters, is sent as
    /// given), so a response can never point the key anywhere else. Same retries as
    /// [`Self::get_object`]; errors name the path as their object.
    pub async fn list_v2_page(
        &self,
        tenant: &str,
        path: &str,
        params: &[(String, String)],
        next_page_url: Option<&str>,
        limit: u8,
    ) -> Result<V2ListPage, HydrateError> {
        let mut url = self.list_url(path)?;
        match next_page_url {
            Some(next) => {
                let given = url.join(next).ok().filter(|u| {
                    u.origin() == url.origin() && u.path() == url.path() && u.fragment().is_none()
                });
                let Some(given) = given else {
                    return Err(HydrateError::Permanent {
                        object_id: path.to_owned(),
                        code: codes::BAD_REFERENCE,
                        message: format!(
                            "next_page_url `{}` is not a page of {path}",
                            truncate(next.to_owned())
                        ),
                    });
                };
                url = given;
            }
            None => {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("limit", &limit.clamp(1, 100).to_string());
                for (name, value) in params {
                    pairs.append_pair(name, value);
                }
            }
        }
        let mut page = self.get_list(tenant, path, &url).await?;
        Ok(V2ListPage {
            data: list_data(&mut page, path)?,
            next_page_url: page
                .get("next_page_url")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
        })
    }

    /// The URL of the list at `path`, which must be a Stripe API path.
    fn list_url(&self, path: &str) -> Result<Url, HydrateError> {
        let permanent = |message: String| HydrateError::Permanent {
            object_id: path.to_owned(),
            code: codes::BAD_REFERENCE,
            message,
        };
        if !is_safe_api_path(path) {
            return Err(permanent(format!(
                "`{}` is not a Stripe API path",
                truncate(path.to_owned())
            )));
        }
        Url::parse(&format!("{}{path}", self.base)).map_err(|e| permanent(e.to_string()))
    }

    /// GET the list page `url` of `path` with `tenant`'s key, with retries.
    async fn get_list(&self, tenant: &str, path: &str, url: &Url) -> Result<Value, HydrateError> {
        let Some((auth, bucket)) = self.auth.get(tenant) else {
            return Err(HydrateError::Permanent {
                object_id: path.to_owned(),
                code: codes::MISSING_API_KEY,
                message: format!("no Stripe API key configured for tenant `{tenant}`"),
            });
        };
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(AUTHORIZATION, auth.clone());
        if let Some(version) = &self.api_version {
            headers.insert("stripe-version", version.clone());
        }
        self.get_with_retry(url.as_str(), headers, bucket, path)
            .await
    }

    /// GET `url` with retries as described in the module docs; `object_id` names what is
    /// fetched in errors.
    async fn get_with_retry(
        &self,
        url: &str,
        headers: HeaderMap,
        bucket: &TokenBucket,
        object_id: &str,
    ) -> Result<Value, HydrateError> {
        let mut delays = self.retry.backoff.delays();
        loop {
            bucket.acquire().await;
            let (message, retry_after) = match self.attempt(url, &headers, object_id).await {
                Ok(object) => return Ok(object),
                Err(AttemptError::Fail(e)) => return Err(e),
                Err(AttemptError::Retry {
                    message,
                    final_attempt: true,
                    ..
                }) => return Err(transient(object_id, message)),
                Err(AttemptError::Retry {
                    message,
                    retry_after,
                    final_attempt: false,
                }) => (message, retry_after),
            };
            let Some(backoff) = delays.next() else {
                return Err(transient(object_id, message));
            };
            let wait = match retry_after {
                Some(ra) if ra > self.retry.max_retry_after => {
                    return Err(transient(
                        object_id,
                        format!("{message}; Retry-After {} s is too long", ra.as_secs()),
                    ));
                }
                Some(ra) => {
                    // The server's limit is per key: hold every caller of this key.
                    bucket.pause(ra);
                    ra.max(backoff)
                }
                None => backoff,
            };
            tracing::debug!(%object_id, ?wait, %message, "retrying Stripe API call");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        object_id: &str,
    ) -> Result<Value, AttemptError> {
        let span = crate::telemetry::trace::http_client_span("GET", url);
        let sent = self
            .http
            .get(url)
            .headers(headers.clone())
            .send()
            .instrument(span.clone())
            .await;
        crate::telemetry::trace::record_http_status(
            &span,
            sent.as_ref().ok().map(|r| r.status().as_u16()),
        );
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) if e.is_builder() => {
                return Err(AttemptError::Fail(HydrateError::Permanent {
                    object_id: object_id.to_owned(),
                    code: codes::BAD_REFERENCE,
                    message: "the request URL is not valid".into(),
                }));
            }
            Err(e) => return Err(network_retry(&e)),
        };
        let status = resp.status();
        let should_retry = resp
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.bytes().await {
            Ok(body) => body,
            Err(e) => return Err(network_retry(&e)),
        };
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| AttemptError::Retry {
                message: format!("HTTP {status}: the response is not JSON"),
                retry_after: None,
                final_attempt: true,
            });
        }
        let message = format!("HTTP {}: {}", status.as_u16(), stripe_error_message(&body));
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::CONFLICT
            || status.is_server_error()
            || should_retry == Some(true);
        if retryable {
            return Err(AttemptError::Retry {
                message,
                retry_after,
                final_attempt: should_retry == Some(false),
            });
        }
        let code = match status {
            StatusCode::UNAUTHORIZED => codes::UNAUTHORIZED,
            StatusCode::FORBIDDEN => codes::FORBIDDEN,
            StatusCode::NOT_FOUND => codes::NOT_FOUND,
            s if s.is_client_error() => codes::CLIENT_ERROR,
            _ => codes::UNEXPECTED_STATUS,
        };
        Err(AttemptError::Fail(HydrateError::Permanent {
            object_id: object_id.to_owned(),
            code,
            message,
        }))
    }
}

fn transient(object_id: &str, message: String) -> HydrateError {
    HydrateError::Transient {
        object_id: object_id.to_owned(),
        message,
    }
}

/// Which events [`StripeApiClient::list_events`] asks for (`GET /v1/events` parameters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventListQuery {
    /// `created[gte]`, seconds since the epoch.
    pub created_gte_secs: Option<i64>,
    /// `delivery_success`: `Some(false)` lists events not delivered to every endpoint.
    pub delivery_success: Option<bool>,
    /// `starting_after`: the last event id of the previous page.
    pub starting_after: Option<String>,
    /// Page size, 1 to 100.
    pub limit: u8,
}

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The objects (or events), newest first, as Stripe sent them.
    pub data: Vec<Value>,
    /// Whether more pages follow (ask again with `starting_after` = the last id).
    pub has_more: bool,
}

impl ListPage {
    /// The id of the last item, the `starting_after` of the next page.
    pub fn last_id(&self) -> Option<&str> {
        self.data.last()?.get("id")?.as_str()
    }
}

/// One page of an API v2 list.
#[derive(Debug, Clone, PartialEq)]
pub struct V2ListPage {
    /// The objects (or events), newest first, as Stripe sent them.
    pub data: Vec<Value>,
    /// Where the next page is (`None` on the last page): pass it back to
    /// [`StripeApiClient::list_v2_page`].
    pub next_page_url: Option<String>,
}

/// The `data` array of a list response.
fn list_data(page: &mut Value, path: &str) -> Result<Vec<Value>, HydrateError> {
    match page.get_mut("data") {
        Some(Value::Array(items)) => Ok(std::mem::take(items)),
        _ => Err(HydrateError::Permanent {
            object_id: path.to_owned(),
            code: codes::UNEXPECTED_STATUS,
            message: "the list has no `data` array".to_owned(),
        }),
    }
}

/// The page type [`StripeApiClient::list_events`] returns.
pub type EventPage = ListPage;

impl Hydrator for StripeApiClient {
    fn fetch<'a>(
        &'a self,
        tenant: &'a str,
        reference: &'a ObjectRef,
        context: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Value, HydrateError>> {
        Box::pin(self.get_object(tenant, reference, context))
    }
}

fn network_retry(e: &reqwest::Error) -> AttemptError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // The URL is dropped from the message: the object id is already in the error.
    AttemptError::Retry {
        message: format!("{kind}: {}", strip_url(e)),
        retry_after: None,
        final_attempt: false,
    }
}

fn strip_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<url>");
    }
    truncate(s)
}

/// `error.message` (and `error.code`) of a Stripe error body, or a note that there was none.
fn stripe_error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str);
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (None, Some(m)) => m.to_owned(),
        (Some(c), None) => c.to_owned(),
        (None, None) => "no Stripe error message".to_owned(),
    };
    truncate(text)
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// The API path for a reference: its `url` when given (validated), else
/// [`crate::event::envelope::api_path`] for the types the worker handles, else built from
/// the object type and id: `checkout.session` + `cs_1` is `/v1/checkout/sessions/cs_1`,
/// `v2.core.event_destination` + `ed_1` is `/v2/core/event_destinations/ed_1`.
///
/// Only paths under `/v1/` or `/v2/` made of `[A-Za-z0-9_.-/]` without empty, `.` or `..`
/// segments are accepted: the path comes from event data, and must not be able to point
/// the key anywhere else.
pub fn object_path(reference: &ObjectRef) -> Result<String, String> {
    if let Some(url) = &reference.url {
        return if is_safe_api_path(url) {
            Ok(url.clone())
        } else {
            Err(format!(
                "reference url `{}` is not a Stripe API path",
                truncate(url.clone())
            ))
        };
    }
    let id = &reference.id;
    // The decoder's table first, so both sides agree on the types the worker handles.
    if let Some(path) = crate::event::envelope::api_path(&reference.object_type, id) {
        return Ok(path);
    }
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return Err("reference id is not a Stripe id".into());
    }
    let (prefix, kind) = match reference.object_type.strip_prefix("v2.") {
        Some(rest) => ("/v2/", rest),
        None => ("/v1/", reference.object_type.as_str()),
    };
    let valid_kind = !kind.is_empty()
        && kind.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        });
    if !valid_kind {
        return Err(format!(
            "object type `{}` has no API path",
            truncate(reference.object_type.clone())
        ));
    }
    let mut path = String::with_capacity(prefix.len() + kind.len() + id.len() + 4);
    path.push_str(prefix);
    path.push_str(&kind.replace('.', "/"));
    pluralise(&mut path);
    path.push('/');
    path.push_str(id);
    Ok(path)
}

/// English plural of the last word of an API collection name (`summary` -> `summaries`,
/// `tax_id` -> `tax_ids`, `address` -> `addresses`).
fn pluralise(path: &mut String) {
    if path.ends_with('y') && !path.ends_with("ay") && !path.ends_with("ey") {
        path.pop();
        path.push_str("ies");
    } else if path.ends_with('s') || path.ends_with('x') {
        path.push_str("es");
    } else {
        path.push('s');
    }
}

fn is_safe_api_path(url: &str) -> bool {
    (url.starts_with("/v1/") || url.starts_with("/v2/"))
        && url.len() <= 512
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        && url[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, object_type: &str, url: Option<&str>) -> ObjectRef {
        ObjectRef {
            id: id.into(),
            object_type: object_type.into(),
            url: url.map(Into::into),
            customer: None,
        }
    }

    #[test]
    fn paths_from_type_and_id() {
        let cases = [
            ("sub_1", "subscription", "/v1/subscriptions/sub_1"),
            ("in_1", "invoice", "/v1/invoices/in_1"),
            ("pi_1", "payment_intent", "/v1/payment_intents/pi_1"),
            ("cs_1", "checkout.session", "/v1/checkout/sessions/cs_1"),
            ("si_1", "subscription_item", "/v1/subscription_items/si_1"),
            (
                "ed_1",
                "v2.core.event_destination",
                "/v2/core/event_destinations/ed_1",
            ),
            (
                "x_1",
                "entitlements.active_entitlement_summary",
                "/v1/entitlements/active_entitlement_summaries/x_1",
            ),
        ];
        for (id, ty, want) in cases {
            assert_eq!(object_path(&r(id, ty, None)).as_deref(), Ok(want), "{ty}");
        }
    }

    #[test]
    fn given_urls_are_used_when_safe() {
        assert_eq!(
            object_path(&r("sub_1", "subscription", Some("/v1/subscriptions/sub_1"))).as_deref(),
            Ok("/v1/subscriptions/sub_1")
        );
        for bad in [
            "https://evil.example/v1/x",
            "//evil.example/v1/x",
            "/v1/../v1/x",
            "/v1//x",
            "/v3/x",
            "/v1/x?expand[]=y",
            "/v1/x%2F..",
        ] {
            assert!(
                object_path(&r("x", "subscription", Some(bad))).is_err(),
                "{bad}"
            );
        }
        assert!(object_path(&r("sub/../1", "subscription", None)).is_err());
        assert!(object_path(&r("sub_1", "Sub", None)).is_err());
        assert!(object_path(&r("sub_1", "", None)).is_err());
    }

    #[test]
    fn keys_do_not_print() {
        let k = ApiKey::new("rk_test_verysecret").expect("valid");
        assert!(!format!("{k:?}{k}").contains("verysecret"));
        let cfg = StripeApiConfig::from_vars(
            [
                ("STRIPE_API_KEY".to_owned(), "rk_test_verysecret".to_owned()),
                (
                    "STRIPE_API_KEY_ACME".to_owned(),
                    "rk_test_acmesecret".to_owned(),
                ),
            ],
            None,
            Some("default"),
        )
        .expect("valid");
        assert_eq!(cfg.keys.len(), 2);
        assert!(!format!("{cfg:?}").contains("secret"));
        let client = StripeApiClient::new(cfg).expect("client");
        assert!(!format!("{client:?}").contains("secret"));
    }

    #[test]
    fn one_key_per_tenant() {
        let err = StripeApiConfig::from_vars(
            [("STRIPE_API_KEY".to_owned(), "rk_a,rk_b".to_owned())],
            None,
            Some("default"),
        )
        .expect_err("two keys");
        assert!(matches!(err, StripeApiError::MultipleKeys { .. }));
    }

    #[test]
    fn the_unsuffixed_key_is_the_configured_default_tenants() {
        let cfg = StripeApiConfig::from_vars(
            [(
                "STRIPE_API_KEY".to_owned(),
                r#"{"api_key": "rk_test_1"}"#.to_owned(),
            )],
            None,
            Some("acme"),
        )
        .expect("valid");
        assert_eq!(cfg.keys.keys().collect::<Vec<_>>(), ["acme"]);
    }

    #[test]
    fn error_messages_are_extracted_and_bounded() {
        let body =
            br#"{"error":{"code":"resource_missing","message":"No such subscription: 'sub_1'"}}"#;
        assert_eq!(
            stripe_error_message(body),
            "resource_missing: No such subscription: 'sub_1'"
        );
        assert_eq!(stripe_error_message(b"<html>"), "no Stripe error message");
        assert!(truncate("é".repeat(400)).len() <= MAX_MESSAGE + '…'.len_utf8());
    }

    #[test]
    fn base_url_must_be_http() {
        for bad in ["ftp://x", "not a url", "file:///etc"] {
            let cfg = StripeApiConfig {
                base_url: bad.into(),
                ..StripeApiConfig::default()
            };
            assert!(matches!(
                StripeApiClient::new(cfg),
                Err(StripeApiError::InvalidBaseUrl(_))
            ));
        }
    }
}
