//! The environment layer: `STRIPE_WORKER_<KEY>` overrides `<key>` in whichever section
//! defines it. Key names are unique across sections, so no section appears in the name.

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
    "TEST_AWS",
];

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
        if CLI_VARIABLES.contains(&key) {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if let Some((section, _)) = OPTIONAL_STRING_KEYS.iter().find(|(_, k)| *k == key)
            && let Some(table) = tree.get_mut(*section).and_then(|s| s.as_table_mut())
        {
            table.insert(key, toml::Value::String(value.trim().to_owned()));
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
        changed = true;
    }
    if changed {
        *config = tree
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Env {
                name: ENV_PREFIX.to_owned(),
                message: e.to_string(),
            })?;
    }
    Ok(())
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
        _ => Err("this key can only be set in the config file".to_owned()),
    }
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
    fn unrelated_and_cli_variables_are_left_alone() {
        let mut config = Config::default();
        apply_env(
            &mut config,
            env(&[("HOME", "/root"), ("STRIPE_WORKER_DATA_DIR", "/tmp/x")]),
        )
        .unwrap();
        assert_eq!(config, Config::default());
    }
}
