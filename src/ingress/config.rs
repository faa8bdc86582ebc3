//! Ingress configuration: defaults, secrets loading and validation in one place.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};

use super::secrets::{self, DEFAULT_TENANT, SecretsError, TenantSecrets};
use super::signature::DEFAULT_TOLERANCE;

/// The default listen address: loopback only, so exposing the ingress is a decision.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080);

/// The default body limit: 1 MiB. Stripe events are far smaller (EventBridge caps an
/// entry at 256 KiB); anything larger is not a Stripe event.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

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

/// How failed bus entries are re-sent within one request. Bounded so the answer (200 or
/// 503) comes well inside Stripe's delivery timeout; after that Stripe's own retries take
/// over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRetry {
    /// Publish attempts in total, the first included (at least 1).
    pub max_attempts: usize,
    /// Delay before the first re-send; later delays double, with jitter.
    pub initial_delay: Duration,
    /// The longest single delay.
    pub max_delay: Duration,
}

impl Default for PublishRetry {
    fn default() -> Self {
        PublishRetry {
            max_attempts: 4,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl PublishRetry {
    /// The delays between attempts (`max_attempts - 1` of them), with jitter.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
            .build()
    }
}

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
    /// The tenant of `POST /webhooks/stripe` (no tenant in the path).
    pub default_tenant: String,
    /// Each tenant's active webhook secrets; more than one while rolling a secret.
    pub tenants: TenantSecrets,
    /// Re-sending of entries the bus did not accept.
    pub publish_retry: PublishRetry,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: DEFAULT_LISTEN,
            tolerance: DEFAULT_TOLERANCE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            styles: PublishStyles::default(),
            default_tenant: DEFAULT_TENANT.to_owned(),
            tenants: TenantSecrets::new(),
            publish_retry: PublishRetry::default(),
        }
    }
}

impl IngressConfig {
    /// Defaults, with tenants' secrets from the process environment and, when given, a
    /// secrets directory (see [`secrets`] for the layout). Validated.
    pub fn from_env(secrets_dir: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars(), secrets_dir)
    }

    /// [`IngressConfig::from_env`] over a given environment (for tests and tools).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        secrets_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let config = IngressConfig {
            tenants: secrets::load_webhook_secrets(vars, secrets_dir)?,
            ..IngressConfig::default()
        };
        config.validate()?;
        Ok(config)
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
        if !secrets::is_valid_tenant_id(&self.default_tenant) {
            return Err(ConfigError::InvalidTenant(self.default_tenant.clone()));
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
        if self.publish_retry.max_attempts == 0 {
            return Err(ConfigError::OutOfRange {
                setting: "publish_retry.max_attempts",
                message: "must be at least 1".into(),
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

    #[test]
    fn from_vars_loads_and_validates() {
        let cfg = IngressConfig::from_vars(
            [(
                "STRIPE_WEBHOOK_SECRET".to_owned(),
                "whsec_a,whsec_b".to_owned(),
            )],
            None,
        )
        .expect("valid");
        assert_eq!(cfg.tenants["default"].len(), 2);
        assert_eq!(cfg.listen, DEFAULT_LISTEN);
        assert!(matches!(
            IngressConfig::from_vars(Vec::new(), None),
            Err(ConfigError::NoTenants)
        ));
    }

    #[test]
    fn retry_delays_are_bounded() {
        let r = PublishRetry {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        };
        let delays: Vec<_> = r.delays().collect();
        assert_eq!(delays.len(), 2);
        // Jitter adds up to one more delay's worth on top of the cap.
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(80)));
    }
}
