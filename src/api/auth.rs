//! The read API's bearer tokens, one or more per tenant, loaded the way the other
//! per-tenant secrets are ([`crate::ingress::secrets::load_tenant_values`]):
//!
//! - `STRIPE_WORKER_API_TOKEN`: the default tenant's tokens, comma-separated while a token
//!   is being rolled;
//! - `STRIPE_WORKER_API_TOKEN_<TENANT>`: another tenant's (`_ACME_EU` is tenant `acme_eu`);
//! - a directory with one file per tenant, one token per line (Kubernetes and ECS secret
//!   files); a value may be a Secrets Manager JSON secret `{"api_token": "..."}`.
//!
//! Only a SHA-256 digest of each token is kept, never the token: a memory dump or a debug
//! print shows nothing usable, and every comparison is between two 32-byte digests, in
//! constant time ([`subtle`]), so neither a token's content nor its length leaks through
//! timing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ingress::secrets::{self, SecretsError, TenantValues};
use crate::tenant::TenantConfig;

/// The environment variable holding the default tenant's API tokens.
pub const TOKEN_ENV: &str = "STRIPE_WORKER_API_TOKEN";

/// The key of a Secrets Manager JSON API token.
pub const TOKEN_JSON_KEY: &str = "api_token";

/// The shortest token accepted: 32 characters (`openssl rand -hex 16` or longer), so a
/// token cannot be guessed in any number of requests.
pub const MIN_TOKEN_LEN: usize = 32;

/// Why the API tokens are not usable. Always a configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Reading the environment or the tokens directory failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// No tenant has a token: every request would be refused.
    #[error(
        "no API token configured: set STRIPE_WORKER_API_TOKEN, STRIPE_WORKER_API_TOKEN_<TENANT> \
         or --api-tokens-dir (the read API never serves without authentication)"
    )]
    NoTokens,
    /// A token that is too short or holds characters a header value cannot carry.
    #[error(
        "{source_name}: an API token must be at least {MIN_TOKEN_LEN} visible ASCII characters \
         without spaces or commas (e.g. `openssl rand -hex 32`)"
    )]
    Weak { source_name: String },
    /// One token configured for two tenants: it could only read one of them.
    #[error("the same API token is configured for tenants `{first}` and `{second}`")]
    Shared { first: String, second: String },
    /// Tokens for tenants the tenant configuration does not know: they would read nothing.
    #[error(
        "API tokens for tenant(s) {} that the tenant configuration does not know (known: {}): \
         list them in STRIPE_WORKER_TENANTS (or `tenants` in the config file)",
        .unknown.join(", "),
        if .known.is_empty() { "none".to_owned() } else { .known.join(", ") }
    )]
    UnknownTenants {
        unknown: Vec<String>,
        known: Vec<String>,
    },
}

/// The API tokens of every tenant, as digests. Prints tenants only.
#[derive(Clone)]
pub struct ApiTokens {
    /// (tenant, SHA-256 of one of its tokens).
    digests: Vec<(String, [u8; 32])>,
}

impl fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiTokens")
            .field("tenants", &self.tenants())
            .finish_non_exhaustive()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn is_strong(token: &str) -> bool {
    token.len() >= MIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic() && b != b',')
}

impl ApiTokens {
    /// Tokens from the process environment and, when given, a directory (see the module
    /// documentation), checked against `tenants`.
    pub fn from_env(dir: Option<&Path>, tenants: &TenantConfig) -> Result<Self, TokenError> {
        Self::from_vars(std::env::vars(), dir, tenants)
    }

    /// [`ApiTokens::from_env`] over a given environment (tests and tools).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        dir: Option<&Path>,
        tenants: &TenantConfig,
    ) -> Result<Self, TokenError> {
        let spec = TenantValues {
            base_var: TOKEN_ENV,
            json_key: TOKEN_JSON_KEY,
            default_tenant: tenants.default_tenant(),
        };
        let mut pairs = Vec::new();
        for (tenant, (source_name, values)) in secrets::load_tenant_values(spec, vars, dir)? {
            for value in values {
                if !is_strong(&value) {
                    return Err(TokenError::Weak { source_name });
                }
                pairs.push((tenant.clone(), value));
            }
        }
        let tokens = Self::new(pairs)?;
        let unknown: Vec<String> = tokens
            .tenants()
            .into_iter()
            .filter(|t| !tenants.is_known(t))
            .map(str::to_owned)
            .collect();
        if !unknown.is_empty() {
            return Err(TokenError::UnknownTenants {
                unknown,
                known: tenants
                    .known_tenants()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
        }
        Ok(tokens)
    }

    /// Tokens from (tenant, token) pairs. At least one; a token may not serve two tenants.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, TokenError> {
        let mut owner: BTreeMap<[u8; 32], String> = BTreeMap::new();
        let mut digests = Vec::new();
        for (tenant, token) in pairs {
            let d = digest(&token);
            if let Some(first) = owner.get(&d) {
                if *first != tenant {
                    return Err(TokenError::Shared {
                        first: first.clone(),
                        second: tenant,
                    });
                }
                continue;
            }
            owner.insert(d, tenant.clone());
            digests.push((tenant, d));
        }
        if digests.is_empty() {
            return Err(TokenError::NoTokens);
        }
        Ok(ApiTokens { digests })
    }

    /// The tenant whose token `presented` is, if any. Every configured digest is compared,
    /// each in constant time, whichever matches.
    pub fn tenant_of(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (tenant, d) in &self.digests {
            if bool::from(d[..].ct_eq(&presented[..])) {
                found = Some(tenant.as_str());
            }
        }
        found
    }

    /// The tenants with a token.
    pub fn tenants(&self) -> BTreeSet<&str> {
        self.digests.iter().map(|(t, _)| t.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "tok_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "tok_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn acme_and_globex() -> TenantConfig {
        TenantConfig {
            tenants: vec!["acme".into(), "globex".into()],
            ..TenantConfig::default()
        }
    }

    #[test]
    fn tokens_map_to_their_tenant_and_nothing_else() {
        let rolling = format!("{A},{A}2");
        let tokens = ApiTokens::from_vars(
            vars(&[
                ("STRIPE_WORKER_API_TOKEN_ACME", rolling.as_str()),
                ("STRIPE_WORKER_API_TOKEN_GLOBEX", B),
                ("STRIPE_WORKER_API_LISTEN", "127.0.0.1:1"),
            ]),
            None,
            &acme_and_globex(),
        )
        .expect("valid");
        assert_eq!(tokens.tenant_of(A), Some("acme"));
        assert_eq!(tokens.tenant_of(&format!("{A}2")), Some("acme"));
        assert_eq!(tokens.tenant_of(B), Some("globex"));
        assert_eq!(tokens.tenant_of(&A[..A.len() - 1]), None);
        assert_eq!(tokens.tenant_of(""), None);
        assert!(!format!("{tokens:?}").contains("tok_"));
    }

    #[test]
    fn the_unsuffixed_variable_and_files_follow_the_secrets_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("globex"),
            format!("{{\"api_token\": \"{B}\"}}"),
        )
        .expect("write");
        let config = TenantConfig {
            default_tenant: Some("acme".into()),
            tenants: vec!["globex".into()],
            ..TenantConfig::default()
        };
        let tokens = ApiTokens::from_vars(
            vars(&[("STRIPE_WORKER_API_TOKEN", A)]),
            Some(dir.path()),
            &config,
        )
        .expect("valid");
        assert_eq!(tokens.tenant_of(A), Some("acme"));
        assert_eq!(tokens.tenant_of(B), Some("globex"));
    }

    #[test]
    fn refuses_no_weak_shared_and_unknown_tokens() {
        let config = acme_and_globex();
        let err = ApiTokens::from_vars(vars(&[]), None, &config).expect_err("none");
        assert!(matches!(err, TokenError::NoTokens), "{err}");
        let err = ApiTokens::from_vars(
            vars(&[("STRIPE_WORKER_API_TOKEN_ACME", "short")]),
            None,
            &config,
        )
        .expect_err("weak")
        .to_string();
        assert!(
            err.contains("STRIPE_WORKER_API_TOKEN_ACME") && !err.contains("short"),
            "{err}"
        );
        let err = ApiTokens::from_vars(
            vars(&[
                ("STRIPE_WORKER_API_TOKEN_ACME", A),
                ("STRIPE_WORKER_API_TOKEN_GLOBEX", A),
            ]),
            None,
            &config,
        )
        .expect_err("shared");
        assert!(matches!(err, TokenError::Shared { .. }), "{err}");
        let err = ApiTokens::from_vars(
            vars(&[("STRIPE_WORKER_API_TOKEN_INITECH", A)]),
            None,
            &config,
        )
        .expect_err("unknown")
        .to_string();
        assert!(
            err.contains("initech") && err.contains("known: acme, globex"),
            "{err}"
        );
    }
}
