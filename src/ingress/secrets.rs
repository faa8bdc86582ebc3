//! Webhook signing secrets: a type that never prints its value, and loading per-tenant
//! secrets from the environment or from a directory of mounted secret files.
//!
//! Sources, as deployments provide them:
//! - `STRIPE_WEBHOOK_SECRET`: the secrets of the configured default tenant
//!   ([`crate::tenant::TenantConfig::default_tenant`]), comma-separated while an endpoint
//!   secret is being rolled (Stripe keeps the old one valid for up to 24 hours);
//! - `STRIPE_WEBHOOK_SECRET_<TENANT>`: another tenant's secrets; the tenant id is the
//!   suffix lower-cased (`STRIPE_WEBHOOK_SECRET_ACME_EU` is tenant `acme_eu`);
//! - a directory with one file per tenant, `<dir>/<tenant>`, one secret per line: the
//!   layout Kubernetes secret volumes and ECS secret files give. Names starting with `.`
//!   are skipped (Kubernetes keeps its `..data` bookkeeping there).
//!
//! A value may also be a Secrets Manager JSON secret holding the value under a known key
//! (`{"webhook_signing_secret": "whsec_..."}`, as the design notes store it); any other
//! JSON is refused at start, naming the key expected, rather than used as a secret that
//! then fails every signature.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable holding the default tenant's webhook secrets.
pub const SECRET_ENV: &str = "STRIPE_WEBHOOK_SECRET";

/// The key of a Secrets Manager JSON webhook secret.
pub const SECRET_JSON_KEY: &str = "webhook_signing_secret";

/// Where a value's tenant comes from, and how values are unwrapped.
#[derive(Debug, Clone, Copy)]
pub struct TenantValues<'a> {
    /// The variable of the default tenant; `<base_var>_<TENANT>` for the others.
    pub base_var: &'a str,
    /// The key holding the value in a JSON secret.
    pub json_key: &'a str,
    /// The tenant of `base_var` (`None`: setting it is an error).
    pub default_tenant: Option<&'a str>,
}

/// Why webhook secrets could not be loaded. Always a configuration problem: permanent.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A secret value was empty or contained whitespace (a paste error, never valid).
    #[error("{source_name}: a webhook secret is empty or contains whitespace")]
    InvalidSecret { source_name: String },
    /// A tenant id is not usable (empty, too long, or outside `[A-Za-z0-9_.-]`).
    #[error(
        "{source_name}: tenant id `{tenant}` is not valid (1-64 characters of A-Z a-z 0-9 _ . -, not starting with .)"
    )]
    InvalidTenant { source_name: String, tenant: String },
    /// A webhook secret that does not have Stripe's `whsec_` prefix.
    #[error("{source_name}: not a Stripe webhook signing secret (they start with `whsec_`)")]
    NotWhsec { source_name: String },
    /// A JSON secret without the expected key.
    #[error(
        "{source_name}: a JSON secret must be an object with the value under \"{json_key}\" \
         (or, on ECS, select the key in valueFrom: <secret-arn>:{json_key}::)"
    )]
    JsonSecret {
        source_name: String,
        json_key: String,
    },
    /// The default tenant's variable is set, but no default tenant is configured.
    #[error(
        "{source_name} belongs to the default tenant, but none is configured: set default_tenant \
         (STRIPE_WORKER_DEFAULT_TENANT) or name the tenant ({source_name}_<TENANT>)"
    )]
    NoDefaultTenant { source_name: String },
    /// A source names a tenant but holds no secret.
    #[error("{source_name}: no webhook secret for tenant `{tenant}`")]
    NoSecrets { source_name: String, tenant: String },
    /// The same tenant is configured in two places; which one wins would be a guess.
    #[error("tenant `{tenant}` has webhook secrets in both {first} and {second}")]
    DuplicateTenant {
        tenant: String,
        first: String,
        second: String,
    },
    /// The secrets directory or one of its files could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One Stripe webhook endpoint signing secret (`whsec_...`).
///
/// Holds only the HMAC-SHA256 state keyed by the secret, computed once, so verifying a
/// request clones a prepared MAC instead of re-deriving the key. Neither `Debug` nor
/// `Display` shows anything of the secret.
#[derive(Clone)]
pub struct WebhookSecret {
    mac: Hmac<Sha256>,
}

impl WebhookSecret {
    /// Wrap a secret. The key is the whole string's bytes, `whsec_` prefix included, as
    /// Stripe signs. Surrounding whitespace is trimmed; an empty value or one with inner
    /// whitespace is rejected.
    pub fn new(secret: &str) -> Result<Self, SecretsError> {
        Self::parse(secret, "webhook secret")
    }

    fn parse(secret: &str, source_name: &str) -> Result<Self, SecretsError> {
        let secret = secret.trim();
        if secret.is_empty() || secret.chars().any(char::is_whitespace) {
            return Err(SecretsError::InvalidSecret {
                source_name: source_name.to_owned(),
            });
        }
        if !secret.starts_with("whsec_") {
            return Err(SecretsError::NotWhsec {
                source_name: source_name.to_owned(),
            });
        }
        // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than
        // unwrap, to keep the no-panic rule without exceptions.
        let mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| {
            SecretsError::InvalidSecret {
                source_name: source_name.to_owned(),
            }
        })?;
        Ok(WebhookSecret { mac })
    }

    /// A fresh MAC keyed by this secret, ready for `update`.
    pub(crate) fn mac(&self) -> Hmac<Sha256> {
        self.mac.clone()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Whether `tenant` is usable as a tenant id: a valid tenant name
/// ([`crate::tenant::validate_tenant_name`], which the envelope builders also check) that
/// does not start with `.` (so it is a plain file name and URL path segment).
pub fn is_valid_tenant_id(tenant: &str) -> bool {
    !tenant.starts_with('.') && crate::tenant::validate_tenant_name(tenant).is_ok()
}

/// Per-tenant secrets, keyed by tenant id.
pub type TenantSecrets = BTreeMap<String, Vec<WebhookSecret>>;

/// Load per-tenant values (one or more per tenant) from environment variables named
/// `base_var` (the default tenant) and `<base_var>_<TENANT>`, and from `dir/<tenant>` files.
///
/// `vars` is the environment (pass `std::env::vars()`), so tests can hand in their own.
/// Environment values are comma-separated; files hold one value per line, blank lines and
/// lines starting with `#` ignored; either may instead be a JSON secret (see the module
/// docs). A tenant configured in two places is an error. Values come back trimmed, each
/// with the name of its source (for error messages); callers validate them.
pub fn load_tenant_values(
    spec: TenantValues<'_>,
    vars: impl IntoIterator<Item = (String, String)>,
    dir: Option<&Path>,
) -> Result<BTreeMap<String, (String, Vec<String>)>, SecretsError> {
    let prefix = format!("{}_", spec.base_var);
    let mut out: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut from_env: Vec<(String, String, Vec<String>)> = Vec::new();
    for (name, value) in vars {
        let tenant = if name == spec.base_var {
            match spec.default_tenant {
                Some(tenant) => tenant.to_owned(),
                None => return Err(SecretsError::NoDefaultTenant { source_name: name }),
            }
        } else if let Some(suffix) = name.strip_prefix(&prefix) {
            suffix.to_ascii_lowercase()
        } else {
            continue;
        };
        let values = split_values(&value, ',', spec.json_key, &name)?;
        from_env.push((tenant, name, values));
    }
    // Sorted so that errors name the same variable whatever order the environment had.
    from_env.sort_by(|a, b| a.1.cmp(&b.1));
    for (tenant, source_name, values) in from_env {
        insert_tenant(&mut out, tenant, source_name, values)?;
    }
    if let Some(dir) = dir {
        for (tenant, path) in list_dir(dir)? {
            let text = std::fs::read_to_string(&path).map_err(|source| SecretsError::Io {
                path: path.clone(),
                source,
            })?;
            let source_name = path.display().to_string();
            let values = split_values(&text, '\n', spec.json_key, &source_name)?;
            insert_tenant(&mut out, tenant, source_name, values)?;
        }
    }
    Ok(out)
}

/// The values in `raw`: `separator`-separated (blank items and `#` comments dropped), or,
/// when `raw` is a JSON object, those of its `json_key` member (a string, itself
/// comma-separated, or an array of strings).
fn split_values(
    raw: &str,
    separator: char,
    json_key: &str,
    source_name: &str,
) -> Result<Vec<String>, SecretsError> {
    let items = |text: &str, separator: char| -> Vec<String> {
        text.split(separator)
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    if !raw.trim_start().starts_with('{') {
        return Ok(items(raw, separator));
    }
    let refused = || SecretsError::JsonSecret {
        source_name: source_name.to_owned(),
        json_key: json_key.to_owned(),
    };
    let json: serde_json::Value = serde_json::from_str(raw).map_err(|_| refused())?;
    match json.get(json_key) {
        Some(serde_json::Value::String(value)) => Ok(items(value, ',')),
        Some(serde_json::Value::Array(values)) => values
            .iter()
            .map(|v| v.as_str().map(|s| s.trim().to_owned()).ok_or_else(refused))
            .collect(),
        _ => Err(refused()),
    }
}

/// Load webhook secrets per tenant from `STRIPE_WEBHOOK_SECRET` (the secrets of
/// `default_tenant`), `STRIPE_WEBHOOK_SECRET_<TENANT>` and an optional directory (see the
/// module docs).
pub fn load_webhook_secrets(
    vars: impl IntoIterator<Item = (String, String)>,
    dir: Option<&Path>,
    default_tenant: Option<&str>,
) -> Result<TenantSecrets, SecretsError> {
    let spec = TenantValues {
        base_var: SECRET_ENV,
        json_key: SECRET_JSON_KEY,
        default_tenant,
    };
    load_tenant_values(spec, vars, dir)?
        .into_iter()
        .map(|(tenant, (source_name, values))| {
            let secrets = values
                .iter()
                .map(|v| WebhookSecret::parse(v, &source_name))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((tenant, secrets))
        })
        .collect()
}

fn insert_tenant(
    out: &mut BTreeMap<String, (String, Vec<String>)>,
    tenant: String,
    source_name: String,
    values: Vec<String>,
) -> Result<(), SecretsError> {
    if !is_valid_tenant_id(&tenant) {
        return Err(SecretsError::InvalidTenant {
            source_name,
            tenant,
        });
    }
    if values.is_empty() {
        return Err(SecretsError::NoSecrets {
            source_name,
            tenant,
        });
    }
    if let Some((first, _)) = out.get(&tenant) {
        return Err(SecretsError::DuplicateTenant {
            tenant,
            first: first.clone(),
            second: source_name,
        });
    }
    out.insert(tenant, (source_name, values));
    Ok(())
}

/// The tenant files of a secrets directory, sorted by tenant. Follows symlinks (Kubernetes
/// mounts each key as a symlink into `..data/`); skips dot-names and directories.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, SecretsError> {
    let io = |source| SecretsError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(SecretsError::InvalidTenant {
                source_name: dir.display().to_string(),
                tenant: name.to_string_lossy().into_owned(),
            });
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(|source| SecretsError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_file() {
            files.push((name.to_owned(), path));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let s = WebhookSecret::new("whsec_supersecretvalue").expect("valid");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        let map: TenantSecrets = [("t".to_owned(), vec![s])].into();
        assert!(!format!("{map:?}").contains("supersecret"));
    }

    #[test]
    fn rejects_empty_and_whitespace_secrets() {
        assert!(WebhookSecret::new("  ").is_err());
        assert!(WebhookSecret::new("whsec_a b").is_err());
        assert!(WebhookSecret::new(" whsec_ok\n").is_ok());
    }

    const DEFAULT: Option<&str> = Some("default");

    fn webhook_values(default_tenant: Option<&'static str>) -> TenantValues<'static> {
        TenantValues {
            base_var: SECRET_ENV,
            json_key: SECRET_JSON_KEY,
            default_tenant,
        }
    }

    #[test]
    fn env_default_and_named_tenants() {
        let got = load_tenant_values(
            webhook_values(DEFAULT),
            vars(&[
                ("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b"),
                ("STRIPE_WEBHOOK_SECRET_ACME_EU", "whsec_c"),
                ("UNRELATED", "x"),
            ]),
            None,
        )
        .expect("loads");
        assert_eq!(got["default"].1, vec!["whsec_a", "whsec_b"]);
        assert_eq!(got["acme_eu"].1, vec!["whsec_c"]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn directory_files_one_secret_per_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("acme"), "whsec_1\n\n# old\nwhsec_2\n").expect("write");
        std::fs::write(dir.path().join(".hidden"), "whsec_x\n").expect("write");
        std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
        let got = load_webhook_secrets(vars(&[]), Some(dir.path()), DEFAULT).expect("loads");
        assert_eq!(got.len(), 1);
        assert_eq!(got["acme"].len(), 2);
    }

    #[test]
    fn duplicate_empty_and_invalid_tenants_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("acme"), "whsec_1\n").expect("write");
        let err = load_webhook_secrets(
            vars(&[("STRIPE_WEBHOOK_SECRET_ACME", "whsec_2")]),
            Some(dir.path()),
            DEFAULT,
        )
        .expect_err("duplicate");
        assert!(matches!(err, SecretsError::DuplicateTenant { .. }));

        let err = load_webhook_secrets(vars(&[("STRIPE_WEBHOOK_SECRET", " , ")]), None, DEFAULT)
            .expect_err("empty");
        assert!(matches!(err, SecretsError::NoSecrets { .. }));

        let err = load_webhook_secrets(
            vars(&[("STRIPE_WEBHOOK_SECRET_", "whsec_1")]),
            None,
            DEFAULT,
        )
        .expect_err("empty tenant");
        assert!(matches!(err, SecretsError::InvalidTenant { .. }));
    }

    #[test]
    fn errors_never_contain_the_secret() {
        let err = load_webhook_secrets(
            vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_top secret")]),
            None,
            DEFAULT,
        )
        .expect_err("whitespace");
        assert!(!err.to_string().contains("secret\""));
        assert!(!err.to_string().contains("top"));
    }

    #[test]
    fn the_unsuffixed_variable_belongs_to_the_configured_default_tenant() {
        let got = load_webhook_secrets(
            vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_a")]),
            None,
            Some("acme"),
        )
        .expect("loads");
        assert_eq!(got.keys().collect::<Vec<_>>(), ["acme"]);
        // The same tenant named twice (unsuffixed and suffixed) is a conflict, not a guess.
        let err = load_webhook_secrets(
            vars(&[
                ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
                ("STRIPE_WEBHOOK_SECRET_ACME", "whsec_b"),
            ]),
            None,
            Some("acme"),
        )
        .expect_err("duplicate");
        assert!(matches!(err, SecretsError::DuplicateTenant { .. }), "{err}");
        let err = load_webhook_secrets(vars(&[("STRIPE_WEBHOOK_SECRET", "whsec_a")]), None, None)
            .expect_err("no default tenant");
        assert!(
            err.to_string().contains("STRIPE_WORKER_DEFAULT_TENANT"),
            "{err}"
        );
    }

    #[test]
    fn secrets_manager_json_secrets_are_read_or_refused_clearly() {
        let json = r#"{"webhook_signing_secret":"whsec_json_1"}"#;
        let got = load_tenant_values(
            webhook_values(DEFAULT),
            vars(&[("STRIPE_WEBHOOK_SECRET_ACME", json)]),
            None,
        )
        .expect("loads");
        assert_eq!(got["acme"].1, ["whsec_json_1"]);
        // In a mounted file too, and with a roll in progress (two values).
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("globex"),
            r#"{"webhook_signing_secret": "whsec_new, whsec_old", "note": "x"}"#,
        )
        .expect("write");
        let got = load_webhook_secrets(vars(&[]), Some(dir.path()), DEFAULT).expect("loads");
        assert_eq!(got["globex"].len(), 2);
        for refused in [
            r#"{"signing_secret":"whsec_1"}"#,
            r#"{"webhook_signing_secret":"#,
            r#"{"webhook_signing_secret":7}"#,
        ] {
            let err = load_webhook_secrets(
                vars(&[("STRIPE_WEBHOOK_SECRET_ACME", refused)]),
                None,
                DEFAULT,
            )
            .expect_err(refused)
            .to_string();
            assert!(
                err.contains("STRIPE_WEBHOOK_SECRET_ACME")
                    && err.contains("webhook_signing_secret"),
                "{err}"
            );
            assert!(!err.contains("whsec_1"), "{err}");
        }
        // Anything that is not a signing secret is refused at start, not at every webhook.
        let err = load_webhook_secrets(
            vars(&[("STRIPE_WEBHOOK_SECRET", "sk_test_123")]),
            None,
            DEFAULT,
        )
        .expect_err("not whsec");
        assert!(matches!(err, SecretsError::NotWhsec { .. }), "{err}");
    }

    #[test]
    fn tenant_ids() {
        assert!(is_valid_tenant_id("acme-eu_1.x"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id(".."));
        assert!(!is_valid_tenant_id("a/b"));
        assert!(!is_valid_tenant_id(&"a".repeat(65)));
    }
}
