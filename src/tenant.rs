//! Tenant resolution from trusted channels only.
//!
//! A tenant is never taken from data a third party controls. The channels, by path:
//!
//! - **webhook** (source `stripe.webhook`): the `tenant_id` our ingress stamped after
//!   verifying the signature with that tenant's secret ([`NormalisedEvent::tenant_hint`]).
//!   Only the ingress may publish with that source, so the hint is trusted, but it must
//!   still name a *known* tenant (defence in depth against a misrouted or hand-made event).
//! - **partner** (source `aws.partner/stripe.com/ed_...`): the event destination the event
//!   came through ([`TenantConfig::destinations`]), else its Connect account
//!   ([`TenantConfig::accounts`]), else [`TenantConfig::default_tenant`].
//! - **bare** (no envelope): the Connect account, else the default.
//!
//! A `tenant_id` inside a partner or bare event is ignored: the decoder only fills
//! `tenant_hint` for webhook envelopes.
//!
//! **Known tenants** are the union of the default tenant, the values of `destinations` and
//! `accounts`, and the explicit `tenants` list (for tenants that only receive webhooks).
//!
//! **The default tenant** is `default_tenant`. A configuration that names no tenant at all
//! (the single-tenant set-up: no file, no `STRIPE_WORKER_*` tenant variable) has one
//! tenant, [`IMPLICIT_DEFAULT_TENANT`], so a signed webhook to `/webhooks/stripe` and an
//! unmapped partner event are applied rather than dead-lettered. As soon as any tenant is
//! configured, the default is only what `default_tenant` says (none when unset), so a
//! multi-tenant set-up never files an unmapped event under a tenant by accident.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{NormalisedEvent, SourceKind};

/// The longest tenant name accepted. Tenant names go into dedupe keys, state keys and
/// queue attributes, so they are kept short.
pub const MAX_TENANT_LEN: usize = 64;

/// The one tenant of a configuration that names none (see the module documentation).
pub const IMPLICIT_DEFAULT_TENANT: &str = "default";

/// Why a tenant could not be resolved, or a tenant configuration is unusable. Always
/// permanent: the same event and configuration fail the same way (a message dead-lettered
/// as `unknown_tenant` can be redriven after the configuration is fixed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// No trusted channel names a known tenant for this event.
    #[error("event {event_id} ({source_kind}): no tenant: {detail}")]
    Unknown {
        /// The Stripe event id.
        event_id: String,
        /// The path the event took ([`SourceKind::label`]).
        source_kind: &'static str,
        /// What was tried.
        detail: String,
    },
    /// A tenant name is not acceptable.
    #[error("invalid tenant name {name:?}: {why}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A mapping key in the configuration is not an id of the expected kind.
    #[error("tenant config: `{map}` key {key:?} must start with `{prefix}`")]
    InvalidKey {
        /// `destinations` or `accounts`.
        map: &'static str,
        /// The key as given.
        key: String,
        /// The prefix the key must have.
        prefix: &'static str,
    },
}

impl TenantError {
    /// A short, bounded code used as the dead-letter reason.
    pub fn reason(&self) -> &'static str {
        match self {
            TenantError::Unknown { .. } => "unknown_tenant",
            TenantError::InvalidName { .. } => "invalid_tenant",
            TenantError::InvalidKey { .. } => "invalid_tenant_config",
        }
    }
}

/// Check one tenant name: non-empty, at most [`MAX_TENANT_LEN`] bytes, only ASCII letters,
/// digits, `_`, `.` and `-` (so never `#`, the separator of dedupe keys).
pub fn validate_tenant_name(name: &str) -> Result<(), TenantError> {
    let why = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_TENANT_LEN {
        Some("longer than 64 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("only ASCII letters, digits, `_`, `.` and `-` are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(TenantError::InvalidName {
            name: name.chars().take(MAX_TENANT_LEN * 2).collect(),
            why,
        }),
        None => Ok(()),
    }
}

/// Which tenant each trusted channel maps to (the `[tenants]` section of the config file).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// The tenant for partner and bare events no mapping claims. `None`: such events are
    /// dead-lettered as `unknown_tenant`.
    pub default_tenant: Option<String>,
    /// Event destination id (`ed_...`) to tenant, for the partner path.
    pub destinations: BTreeMap<String, String>,
    /// Connect account id (`acct_...`) to tenant.
    pub accounts: BTreeMap<String, String>,
    /// Further known tenants, typically those that only receive webhooks.
    pub tenants: Vec<String>,
}

impl TenantConfig {
    /// Check every tenant name and mapping key once, at start-up.
    pub fn validate(&self) -> Result<(), TenantError> {
        if let Some(default) = &self.default_tenant {
            validate_tenant_name(default)?;
        }
        for name in &self.tenants {
            validate_tenant_name(name)?;
        }
        for (map, prefix, entries) in [
            ("destinations", "ed_", &self.destinations),
            ("accounts", "acct_", &self.accounts),
        ] {
            for (key, tenant) in entries {
                if !key.starts_with(prefix) || key.len() == prefix.len() {
                    return Err(TenantError::InvalidKey {
                        map,
                        key: key.clone(),
                        prefix,
                    });
                }
                validate_tenant_name(tenant)?;
            }
        }
        Ok(())
    }

    /// The default tenant: `default_tenant`, or [`IMPLICIT_DEFAULT_TENANT`] when the
    /// configuration names no tenant at all (see the module documentation).
    pub fn default_tenant(&self) -> Option<&str> {
        match &self.default_tenant {
            Some(name) => Some(name),
            None if self.tenants.is_empty()
                && self.destinations.is_empty()
                && self.accounts.is_empty() =>
            {
                Some(IMPLICIT_DEFAULT_TENANT)
            }
            None => None,
        }
    }

    /// Every known tenant, sorted (for error messages and start-up checks).
    pub fn known_tenants(&self) -> std::collections::BTreeSet<&str> {
        self.default_tenant()
            .into_iter()
            .chain(self.tenants.iter().map(String::as_str))
            .chain(self.destinations.values().map(String::as_str))
            .chain(self.accounts.values().map(String::as_str))
            .collect()
    }

    /// Whether `name` is a known tenant (see the module documentation).
    pub fn is_known(&self, name: &str) -> bool {
        self.default_tenant() == Some(name)
            || self.tenants.iter().any(|t| t == name)
            || self.destinations.values().any(|t| t == name)
            || self.accounts.values().any(|t| t == name)
    }

    /// The tenant an event belongs to, from trusted channels only (see the module
    /// documentation for the rules per path).
    pub fn resolve(&self, event: &NormalisedEvent) -> Result<String, TenantError> {
        let unknown = |detail: String| TenantError::Unknown {
            event_id: event.event_id.clone(),
            source_kind: event.source.label(),
            detail,
        };
        match &event.source {
            SourceKind::Webhook => {
                let hint = event
                    .tenant_hint
                    .as_deref()
                    .ok_or_else(|| unknown("webhook event without tenant_id".into()))?;
                validate_tenant_name(hint)?;
                if self.is_known(hint) {
                    Ok(hint.to_owned())
                } else {
                    Err(unknown(format!(
                        "webhook tenant_id {hint:?} is not configured"
                    )))
                }
            }
            SourceKind::Partner { destination } => self
                .destinations
                .get(destination)
                .or_else(|| self.by_account(event))
                .map(String::as_str)
                .or(self.default_tenant())
                .map(str::to_owned)
                .ok_or_else(|| {
                    unknown(format!(
                        "destination {destination:?} and account {:?} are not mapped and \
                         there is no default tenant",
                        event.connect_account
                    ))
                }),
            SourceKind::Bare => self
                .by_account(event)
                .map(String::as_str)
                .or(self.default_tenant())
                .map(str::to_owned)
                .ok_or_else(|| {
                    unknown(format!(
                        "account {:?} is not mapped and there is no default tenant",
                        event.connect_account
                    ))
                }),
        }
    }

    fn by_account(&self, event: &NormalisedEvent) -> Option<&String> {
        event
            .connect_account
            .as_ref()
            .and_then(|a| self.accounts.get(a))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::event::{EventObject, PayloadStyle};

    fn event(source: SourceKind, hint: Option<&str>, account: Option<&str>) -> NormalisedEvent {
        NormalisedEvent {
            dedupe_id: "evt_1".into(),
            event_id: "evt_1".into(),
            event_type: "customer.updated".into(),
            created_ms: 1_000,
            livemode: false,
            source,
            payload_style: PayloadStyle::Snapshot,
            object: EventObject::Full {
                object: json!({"id": "cus_1", "object": "customer"}),
            },
            tenant_hint: hint.map(str::to_owned),
            connect_account: account.map(str::to_owned),
            replay_name: None,
            aws_account: None,
            api_version: None,
            traceparent: None,
        }
    }

    fn partner(ed: &str) -> SourceKind {
        SourceKind::Partner {
            destination: ed.into(),
        }
    }

    fn config() -> TenantConfig {
        TenantConfig {
            default_tenant: Some("fallback".into()),
            destinations: BTreeMap::from([("ed_acme".into(), "acme".into())]),
            accounts: BTreeMap::from([("acct_globex".into(), "globex".into())]),
            tenants: vec!["webhook-only".into()],
        }
    }

    fn reason(r: Result<String, TenantError>) -> &'static str {
        r.expect_err("expected an error").reason()
    }

    #[test]
    fn webhook_uses_the_hint_when_known() {
        let c = config();
        for known in ["webhook-only", "acme", "globex", "fallback"] {
            let e = event(SourceKind::Webhook, Some(known), None);
            assert_eq!(c.resolve(&e).unwrap(), known);
        }
        // The account of a webhook event does not override the stamped tenant.
        let e = event(SourceKind::Webhook, Some("acme"), Some("acct_globex"));
        assert_eq!(c.resolve(&e).unwrap(), "acme");
    }

    #[test]
    fn webhook_rejects_unknown_missing_and_invalid_hints() {
        let c = config();
        let e = event(SourceKind::Webhook, Some("stranger"), None);
        assert_eq!(reason(c.resolve(&e)), "unknown_tenant");
        // No fallback to the default or the account: the ingress always stamps a tenant.
        let e = event(SourceKind::Webhook, None, Some("acct_globex"));
        assert_eq!(reason(c.resolve(&e)), "unknown_tenant");
        let e = event(SourceKind::Webhook, Some("a#b"), None);
        assert_eq!(reason(c.resolve(&e)), "invalid_tenant");
        // An empty configuration knows only the implicit default tenant.
        let e = event(SourceKind::Webhook, Some("acme"), None);
        assert_eq!(
            reason(TenantConfig::default().resolve(&e)),
            "unknown_tenant"
        );
    }

    #[test]
    fn an_empty_configuration_has_the_implicit_default_tenant() {
        let empty = TenantConfig::default();
        assert_eq!(empty.default_tenant(), Some(IMPLICIT_DEFAULT_TENANT));
        let e = event(SourceKind::Webhook, Some(IMPLICIT_DEFAULT_TENANT), None);
        assert_eq!(empty.resolve(&e).unwrap(), IMPLICIT_DEFAULT_TENANT);
        let e = event(partner("ed_any"), None, None);
        assert_eq!(empty.resolve(&e).unwrap(), IMPLICIT_DEFAULT_TENANT);
        // Once any tenant is configured, there is no default unless one is named.
        let multi = TenantConfig {
            tenants: vec!["acme".into()],
            ..TenantConfig::default()
        };
        assert_eq!(multi.default_tenant(), None);
        assert!(!multi.is_known(IMPLICIT_DEFAULT_TENANT));
        assert_eq!(
            reason(multi.resolve(&event(partner("ed_any"), None, None))),
            "unknown_tenant"
        );
        assert_eq!(
            config().known_tenants().into_iter().collect::<Vec<_>>(),
            ["acme", "fallback", "globex", "webhook-only"]
        );
    }

    #[test]
    fn partner_prefers_destination_then_account_then_default() {
        let c = config();
        let e = event(partner("ed_acme"), None, Some("acct_globex"));
        assert_eq!(c.resolve(&e).unwrap(), "acme");
        let e = event(partner("ed_other"), None, Some("acct_globex"));
        assert_eq!(c.resolve(&e).unwrap(), "globex");
        let e = event(partner("ed_other"), None, Some("acct_other"));
        assert_eq!(c.resolve(&e).unwrap(), "fallback");
        let e = event(partner("ed_other"), None, None);
        assert_eq!(c.resolve(&e).unwrap(), "fallback");
    }

    #[test]
    fn partner_ignores_a_tenant_hint() {
        let c = TenantConfig {
            default_tenant: None,
            ..config()
        };
        let e = event(partner("ed_other"), Some("acme"), None);
        let err = c.resolve(&e).unwrap_err();
        assert_eq!(err.reason(), "unknown_tenant");
        assert!(err.to_string().contains("ed_other"), "{err}");
    }

    #[test]
    fn bare_uses_account_then_default() {
        let c = config();
        let e = event(SourceKind::Bare, None, Some("acct_globex"));
        assert_eq!(c.resolve(&e).unwrap(), "globex");
        let e = event(SourceKind::Bare, Some("acme"), Some("acct_other"));
        assert_eq!(c.resolve(&e).unwrap(), "fallback");
        let c = TenantConfig {
            default_tenant: None,
            ..config()
        };
        let e = event(SourceKind::Bare, Some("acme"), None);
        assert_eq!(reason(c.resolve(&e)), "unknown_tenant");
    }

    #[test]
    fn validate_accepts_good_configs() {
        config().validate().unwrap();
        TenantConfig::default().validate().unwrap();
        validate_tenant_name(&"a".repeat(MAX_TENANT_LEN)).unwrap();
        validate_tenant_name("Acme_Corp.eu-1").unwrap();
    }

    #[test]
    fn validate_rejects_bad_names_and_keys() {
        for bad in [
            "",
            "a#b",
            "a b",
            "ünï",
            "a/b",
            &"a".repeat(MAX_TENANT_LEN + 1),
        ] {
            let err = validate_tenant_name(bad).unwrap_err();
            assert_eq!(err.reason(), "invalid_tenant", "{bad:?}");
        }
        let c = TenantConfig {
            default_tenant: Some("".into()),
            ..TenantConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().reason(), "invalid_tenant");
        let c = TenantConfig {
            tenants: vec!["x#y".into()],
            ..TenantConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().reason(), "invalid_tenant");
        let c = TenantConfig {
            accounts: BTreeMap::from([("acct_1".into(), "bad name".into())]),
            ..TenantConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().reason(), "invalid_tenant");
        let c = TenantConfig {
            destinations: BTreeMap::from([("acct_1".into(), "acme".into())]),
            ..TenantConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().reason(), "invalid_tenant_config");
        let c = TenantConfig {
            accounts: BTreeMap::from([("acct_".into(), "acme".into())]),
            ..TenantConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().reason(), "invalid_tenant_config");
    }

    #[test]
    fn config_parses_from_toml_and_rejects_unknown_keys() {
        let c: TenantConfig = toml::from_str(
            r#"
            default_tenant = "fallback"
            tenants = ["webhook-only"]
            [destinations]
            ed_acme = "acme"
            [accounts]
            acct_globex = "globex"
            "#,
        )
        .unwrap();
        assert_eq!(c, config());
        let empty: TenantConfig = toml::from_str("").unwrap();
        assert_eq!(empty, TenantConfig::default());
        assert!(toml::from_str::<TenantConfig>("default = \"x\"").is_err());
    }
}
