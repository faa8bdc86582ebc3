//! Ingress configuration: defaults, secrets loading and validation in one place.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::retry::Backoff;
use serde::{Deserialize, Serialize};

use super::secrets::{self, SecretsError, TenantSecrets};
use super::signature::DEFAULT_TOLERANCE;
use crate::tenant::{IMPLICIT_DEFAULT_TENANT, TenantConfig};

/// The default listen address: loopback only, so exposing the ingress is a decision.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080);

/// The default body limit: 1 MiB. Stripe events are far smaller (EventBridge caps an
/// entry at 256 KiB); anything larger is not a Stripe event.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long a client may take to send its request headers, and then its body. Stripe
/// sends a few kilobytes at once; a client slower than this is broken or hostile, and
/// each one holds a connection and a task until it is dropped.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// See [`DEFAULT_HEADER_READ_TIMEOUT`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the ingress configuration is not usable. Always permanent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Loading secrets failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// No tenant has a webhook secret: every request would be refused.
    #[error(
        "no webhook secrets configured: set STRIPE_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET_<TENANT> or a secrets directory"
    )]
    NoTenants,
    /// A tenant is listed with an empty secret list.
    #[error("tenant `{0}` has no webhook secrets")]
    EmptyTenant(String),
    /// A tenant id is not usable in a path.
    #[error("tenant id `{0}` is not valid (1-64 characters of A-Z a-z 0-9 _ . -)")]
    InvalidTenant(String),
    /// Tenants the ingress would accept but the worker's tenant configuration does not
    /// know: their events would be answered 200 and then dead-lettered `unknown_tenant`.
    #[error(
        "webhook secrets for tenant(s) {} that the tenant configuration does not know \
         (known: {}): the worker would dead-letter their events as unknown_tenant. List them \
         in STRIPE_WORKER_TENANTS (or `tenants` in the config file), the same on the ingress \
         and the worker",
        .unknown.join(", "),
        if .known.is_empty() { "none".to_owned() } else { .known.join(", ") }
    )]
    UnknownToWorker {
        unknown: Vec<String>,
        known: Vec<String>,
    },
    /// A numeric setting is out of range.
    #[error("{setting}: {message}")]
    OutOfRange {
        setting: &'static str,
        message: String,
    },
    /// A publish style name is not `snapshot`, `thin` or `both`.
    #[error("unknown publish style `{0}` (expected snapshot, thin or both)")]
    UnknownStyle(String),
}

/// Which bus entries a verified webhook becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishStyles {
    /// The event with its object snapshot (the worker needs no API call).
    #[default]
    Snapshot,
    /// A reference only; the worker fetches the current object from the Stripe API.
    Thin,
    /// Both entries, e.g. while moving consumers from one style to the other.
    Both,
}

impl PublishStyles {
    /// Whether a snapshot entry is published.
    pub fn snapshot(self) -> bool {
        matches!(self, PublishStyles::Snapshot | PublishStyles::Both)
    }

    /// Whether a thin entry is published.
    pub fn thin(self) -> bool {
        matches!(self, PublishStyles::Thin | PublishStyles::Both)
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            PublishStyles::Snapshot => "snapshot",
            PublishStyles::Thin => "thin",
            PublishStyles::Both => "both",
        }
    }
}

impl fmt::Display for PublishStyles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PublishStyles {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "snapshot" => Ok(PublishStyles::Snapshot),
            "thin" => Ok(PublishStyles::Thin),
            "both" => Ok(PublishStyles::Both),
            _ => Err(ConfigError::UnknownStyle(s.to_owned())),
        }
    }
}

/// How entries the bus rejected are re-sent within one request: bounded so the answer
/// (200 or 503) comes well inside Stripe's delivery timeout; after that Stripe's own
/// retries take over.
pub const DEFAULT_PUBLISH_BACKOFF: Backoff =
    Backoff::doubling(Duration::from_millis(50), Duration::from_secs(1), 3);

/// Everything the webhook ingress needs to run. Secrets print as `<redacted>`.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Where to listen (the caller binds; see [`super::server::serve`]).
    pub listen: SocketAddr,
    /// How far the signed timestamp may be from now, either way.
    pub tolerance: Duration,
    /// Larger bodies are answered 413 without being read further.
    pub max_body_bytes: usize,
    /// Which entries each verified event becomes.
    pub styles: PublishStyles,
    /// The tenant of `POST /webhooks/stripe` (no tenant in the path); `None`: that route
    /// answers 404.
    pub default_tenant: Option<String>,
    /// Each tenant's active webhook secrets; more than one while rolling a secret.
    pub tenants: TenantSecrets,
    /// Re-sending of entries the bus did not accept.
    pub publish_retry: Backoff,
    /// A connection that does not deliver a request's headers in this time is closed.
    pub header_read_timeout: Duration,
    /// A request whose body does not arrive in this time is answered 408.
    pub body_read_timeout: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: DEFAULT_LISTEN,
            tolerance: DEFAULT_TOLERANCE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            styles: PublishStyles::default(),
            default_tenant: Some(IMPLICIT_DEFAULT_TENANT.to_owned()),
            tenants: TenantSecrets::new(),
            publish_retry: DEFAULT_PUBLISH_BACKOFF,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

impl IngressConfig {
    /// Defaults, with the tenants of `tenants` and their secrets from the process
    /// environment and, when given, a secrets directory (see [`secrets`] for the layout).
    /// Validated, and checked against `tenants` ([`IngressConfig::check_tenants`]).
    pub fn from_env(
        secrets_dir: Option<&Path>,
        tenants: &TenantConfig,
    ) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars(), secrets_dir, tenants)
    }

    /// [`IngressConfig::from_env`] over a given environment (for tests and tools).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        secrets_dir: Option<&Path>,
        tenants: &TenantConfig,
    ) -> Result<Self, ConfigError> {
        let default_tenant = tenants.default_tenant();
        let config = IngressConfig {
            tenants: secrets::load_webhook_secrets(vars, secrets_dir, default_tenant)?,
            default_tenant: default_tenant.map(str::to_owned),
            ..IngressConfig::default()
        };
        config.validate()?;
        config.check_tenants(tenants)?;
        Ok(config)
    }

    /// Check that the worker, running with `tenants`, accepts every tenant this ingress
    /// accepts: the ingress answers 404 for any other, never 200 for an event the worker
    /// would dead-letter.
    pub fn check_tenants(&self, tenants: &TenantConfig) -> Result<(), ConfigError> {
        let unknown: Vec<String> = self
            .tenants
            .keys()
            .filter(|t| !tenants.is_known(t))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(ConfigError::UnknownToWorker {
            unknown,
            known: tenants
                .known_tenants()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
    }

    /// Check the settings once, before serving.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tenants.is_empty() {
            return Err(ConfigError::NoTenants);
        }
        for (tenant, secrets) in &self.tenants {
            if !secrets::is_valid_tenant_id(tenant) {
                return Err(ConfigError::InvalidTenant(tenant.clone()));
            }
            if secrets.is_empty() {
                return Err(ConfigError::EmptyTenant(tenant.clone()));
            }
        }
        if let Some(default) = &self.default_tenant
            && !secrets::is_valid_tenant_id(default)
        {
            return Err(ConfigError::InvalidTenant(default.clone()));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "max_body_bytes",
                message: "must be at least 1".into(),
            });
        }
        if self.tolerance.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "tolerance",
                message: "must be positive".into(),
            });
        }
        if self.header_read_timeout.is_zero() || self.body_read_timeout.is_zero() {
            return Err(ConfigError::OutOfRange {
                setting: "read timeouts",
                message: "must be positive".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_parse_and_select() {
        assert_eq!(
            "Both".parse::<PublishStyles>().ok(),
            Some(PublishStyles::Both)
        );
        assert!("all".parse::<PublishStyles>().is_err());
        assert!(PublishStyles::Both.snapshot() && PublishStyles::Both.thin());
        assert!(PublishStyles::Snapshot.snapshot() && !PublishStyles::Snapshot.thin());
        assert!(!PublishStyles::Thin.snapshot() && PublishStyles::Thin.thin());
    }

    fn var(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), value.to_owned())]
    }

    #[test]
    fn from_vars_loads_and_validates() {
        let none = TenantConfig::default();
        let cfg =
            IngressConfig::from_vars(var("STRIPE_WEBHOOK_SECRET", "whsec_a,whsec_b"), None, &none)
                .expect("valid");
        assert_eq!(cfg.tenants[IMPLICIT_DEFAULT_TENANT].len(), 2);
        assert_eq!(cfg.default_tenant.as_deref(), Some(IMPLICIT_DEFAULT_TENANT));
        assert_eq!(cfg.listen, DEFAULT_LISTEN);
        assert!(matches!(
            IngressConfig::from_vars(Vec::new(), None, &none),
            Err(ConfigError::NoTenants)
        ));
    }

    #[test]
    fn the_unsuffixed_secret_is_the_configured_default_tenants() {
        let acme = TenantConfig {
            default_tenant: Some("acme".into()),
            ..TenantConfig::default()
        };
        let cfg = IngressConfig::from_vars(var("STRIPE_WEBHOOK_SECRET", "whsec_a"), None, &acme)
            .expect("valid");
        assert_eq!(cfg.tenants.keys().collect::<Vec<_>>(), ["acme"]);
        assert_eq!(cfg.default_tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn tenants_the_worker_would_not_accept_fail_the_start() {
        let acme = TenantConfig {
            tenants: vec!["acme".into()],
            ..TenantConfig::default()
        };
        IngressConfig::from_vars(var("STRIPE_WEBHOOK_SECRET_ACME", "whsec_a"), None, &acme)
            .expect("a known tenant");
        let err =
            IngressConfig::from_vars(var("STRIPE_WEBHOOK_SECRET_GLOBEX", "whsec_a"), None, &acme)
                .expect_err("globex is unknown to the worker")
                .to_string();
        assert!(
            err.contains("globex")
                && err.contains("known: acme")
                && err.contains("STRIPE_WORKER_TENANTS"),
            "{err}"
        );
        // With tenants configured and no default, the unsuffixed secret has no tenant.
        let err = IngressConfig::from_vars(var("STRIPE_WEBHOOK_SECRET", "whsec_a"), None, &acme)
            .expect_err("no default tenant")
            .to_string();
        assert!(err.contains("default_tenant"), "{err}");
        // Nothing configured: only the implicit default tenant is accepted.
        let err = IngressConfig::from_vars(
            var("STRIPE_WEBHOOK_SECRET_ACME", "whsec_a"),
            None,
            &TenantConfig::default(),
        )
        .expect_err("acme is not configured")
        .to_string();
        assert!(err.contains("known: default"), "{err}");
    }
}
