//! The environment layer: `STRIPE_WORKER_<KEY>` overrides `<key>` in whichever section
//! defines it. Key names are unique across sections, so no section appears in the name.
//!
//! Lists and maps have a one-line form, so that a deployment without a config file (an
//! ECS task definition) can set every key: a list is comma-separated
//! (`STRIPE_WORKER_TENANTS=acme,globex`), a map is comma-separated `key=value` pairs
//! (`STRIPE_WORKER_DESTINATIONS=ed_123=acme,ed_456=globex`).

use super::{Config, ConfigError};

/// Environment variables with the prefix that are command-line options, not config keys.
const CLI_VARIABLES: &[&str] = &[
    "CONFIG",
    "BACKEND",
    "DATA_DIR",
    "PREFIX",
    "LOG_FORMAT",
    "LISTEN",
    "WEBHOOK_SECRETS_DIR",
    "STRIPE_KEYS_DIR",
    "STRIPE_API_RATE",
    "SWEEP_EVERY",
    "STRIPE_API_BASE",
    "PUBLISH_STYLES",
    "TOLERANCE_SECS",
    "MAX_BODY_BYTES",
    "HEADER_READ_TIMEOUT_SECS",
    "BODY_READ_TIMEOUT_SECS",
    "ADMIN_LISTEN",
    "PROMETHEUS",
    "PROGRESS_SECS",
    "TEST_AWS",
    "API_LISTEN",
    "API_TOKENS_DIR",
    "ADMIN_API",
];

/// Variables with the prefix that hold per-tenant secrets, `<NAME>` and `<NAME>_<TENANT>`,
/// read by the command that needs them (the read API's tokens), not config keys.
const SECRET_VARIABLES: &[&str] = &["API_TOKEN"];

/// Keys whose default is "unset", so the serialised defaults do not show them:
/// (section, key), set as strings.
const OPTIONAL_STRING_KEYS: &[(&str, &str)] = &[("tenants", "default_tenant")];

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "STRIPE_WORKER_";

/// Apply every `STRIPE_WORKER_*` variable of `env` to `config`. An unknown name or a value
/// that does not parse as the key's type is an error naming the variable.
pub fn apply_env(
    config: &mut Config,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut tree = toml::Table::try_from(&*config).map_err(|e| ConfigError::Env {
        name: ENV_PREFIX.to_owned(),
        message: e.to_string(),
    })?;
    let mut changed = false;
    for (name, value) in env {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if CLI_VARIABLES.contains(&key)
            || SECRET_VARIABLES.iter().any(|secret| {
                key.strip_prefix(secret)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
            })
        {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if let Some((section, _)) = OPTIONAL_STRING_KEYS.iter().find(|(_, k)| *k == key)
            && let Some(table) = tree.get_mut(*section).and_then(|s| s.as_table_mut())
        {
            // Empty is unset: a template (an ECS task definition) may leave it blank.
            if value.trim().is_empty() {
                table.remove(&key);
            } else {
                table.insert(key, toml::Value::String(value.trim().to_owned()));
            }
            changed = true;
            continue;
        }
        let slot = tree
            .iter_mut()
            .map(|(_, section)| section)
            .filter_map(|section| section.as_table_mut())
            .find_map(|section| section.get_mut(&key))
            .ok_or_else(|| ConfigError::Env {
                name: name.clone(),
                message: "not a configuration key (see the README's configuration table)"
                    .to_owned(),
            })?;
        *slot = parse_like(slot, &value).map_err(|message| ConfigError::Env {
            name: name.clone(),
            message,
        })?;
        // Checked per variable, so a value of the right kind but out of the key's type
        // (`-1` for a count) is blamed on its own variable.
        typed(&tree).map_err(|e| ConfigError::Env {
            name: name.clone(),
            message: format!("`{}`: {}", value.trim(), e.message().trim()),
        })?;
        changed = true;
    }
    if changed {
        *config = typed(&tree).map_err(|e| ConfigError::Env {
            name: ENV_PREFIX.to_owned(),
            message: e.message().trim().to_owned(),
        })?;
    }
    Ok(())
}

/// The configuration a tree of values describes.
fn typed(tree: &toml::Table) -> Result<Config, toml::de::Error> {
    tree.clone().try_into()
}

/// Parse `raw` as a value of the same type as `current`.
fn parse_like(current: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    match current {
        toml::Value::Integer(_) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("`{raw}` is not a whole number")),
        toml::Value::Float(_) => raw
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("`{raw}` is not a number")),
        toml::Value::Boolean(_) => raw
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .map_err(|_| format!("`{raw}` is not true or false")),
        toml::Value::String(_) => Ok(toml::Value::String(raw.to_owned())),
        toml::Value::Array(_) => Ok(toml::Value::Array(
            list_items(raw)
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        )),
        toml::Value::Table(_) => list_items(raw)
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() && !value.trim().is_empty() => Ok((
                    key.trim().to_owned(),
                    toml::Value::String(value.trim().to_owned()),
                )),
                _ => Err(format!("`{pair}` is not a `key=value` pair")),
            })
            .collect::<Result<toml::Table, _>>()
            .map(toml::Value::Table),
        _ => Err("this key can only be set in the config file".to_owned()),
    }
}

/// The non-empty, trimmed items of a comma-separated value.
fn list_items(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// The value of the variable `name`, else of its deprecated alias `old` (with a warning
/// naming the new one), from `vars`.
pub fn with_deprecated_alias(
    name: &str,
    old: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Option<String> {
    let (mut current, mut deprecated) = (None, None);
    for (key, value) in vars {
        if key == name {
            current = Some(value);
        } else if key == old {
            deprecated = Some(value);
        }
    }
    if deprecated.is_some() {
        tracing::warn!(
            variable = old,
            replacement = name,
            "deprecated environment variable: use {name}{}",
            if current.is_some() {
                " (set too, and used)"
            } else {
                ""
            }
        );
    }
    current.or(deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_a_key_in_its_section() {
        let mut config = Config::default();
        apply_env(&mut config, env(&[("STRIPE_WORKER_MAX_IN_FLIGHT", "512")])).unwrap();
        assert_eq!(config.worker.max_in_flight, 512);
        apply_env(&mut config, env(&[("STRIPE_WORKER_MULTIPLIER", "three")])).unwrap_err();
        apply_env(&mut config, env(&[("STRIPE_WORKER_MULTIPLIER", "3.5")])).unwrap();
        assert_eq!(config.retry.multiplier, 3.5);
    }

    #[test]
    fn unknown_and_mistyped_variables_are_errors_naming_the_variable() {
        let mut config = Config::default();
        let err = apply_env(&mut config, env(&[("STRIPE_WORKER_MAX_INFLIGHT", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WORKER_MAX_INFLIGHT"), "{err}");
        let err = apply_env(
            &mut config,
            env(&[("STRIPE_WORKER_WAIT_TIME_SECS", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a whole number"), "{err}");
    }

    #[test]
    fn a_negative_count_names_its_variable() {
        let mut config = Config::default();
        let err = apply_env(&mut config, env(&[("STRIPE_WORKER_MAX_IN_FLIGHT", "-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("STRIPE_WORKER_MAX_IN_FLIGHT"), "{err}");
        assert!(err.contains("`-1`"), "{err}");
    }

    #[test]
    fn lists_and_maps_have_a_one_line_form() {
        let mut config = Config::default();
        apply_env(
            &mut config,
            env(&[
                ("STRIPE_WORKER_TENANTS", "acme, globex,"),
                ("STRIPE_WORKER_DESTINATIONS", "ed_1=acme,ed_2 = globex"),
                ("STRIPE_WORKER_ACCOUNTS", "acct_9=globex"),
            ]),
        )
        .unwrap();
        assert_eq!(config.tenants.tenants, ["acme", "globex"]);
        assert_eq!(config.tenants.destinations["ed_1"], "acme");
        assert_eq!(config.tenants.destinations["ed_2"], "globex");
        assert_eq!(config.tenants.accounts["acct_9"], "globex");
        apply_env(
            &mut config,
            env(&[("STRIPE_WORKER_DEFAULT_TENANT", "acme")]),
        )
        .unwrap();
        apply_env(&mut config, env(&[("STRIPE_WORKER_DEFAULT_TENANT", " ")])).unwrap();
        assert_eq!(config.tenants.default_tenant, None, "empty is unset");
        let err = apply_env(&mut config, env(&[("STRIPE_WORKER_ACCOUNTS", "acct_9")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("STRIPE_WORKER_ACCOUNTS") && err.contains("key=value"),
            "{err}"
        );
    }

    #[test]
    fn a_deprecated_alias_is_read_when_the_new_name_is_unset() {
        let old = env(&[("OLD_NAME", "a")]);
        assert_eq!(
            with_deprecated_alias("NEW_NAME", "OLD_NAME", old).as_deref(),
            Some("a")
        );
        let both = env(&[("OLD_NAME", "a"), ("NEW_NAME", "b")]);
        assert_eq!(
            with_deprecated_alias("NEW_NAME", "OLD_NAME", both).as_deref(),
            Some("b")
        );
        assert_eq!(
            with_deprecated_alias("NEW_NAME", "OLD_NAME", env(&[])),
            None
        );
    }

    #[test]
    fn unrelated_and_cli_variables_are_left_alone() {
        let mut config = Config::default();
        apply_env(
            &mut config,
            env(&[
                ("HOME", "/root"),
                ("STRIPE_WORKER_DATA_DIR", "/tmp/x"),
                ("STRIPE_WORKER_API_TOKEN", "t"),
                ("STRIPE_WORKER_API_TOKEN_ACME", "t"),
            ]),
        )
        .unwrap();
        assert_eq!(config, Config::default());
        // A name that only starts like a secret's is still checked.
        apply_env(&mut config, env(&[("STRIPE_WORKER_API_TOKENX", "t")])).unwrap_err();
    }
}
