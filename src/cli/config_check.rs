//! `config check`: load the configuration as `run` would (file, then `STRIPE_WORKER_*`),
//! read the webhook secrets and Stripe API keys, and print the effective configuration
//! with every secret redacted. Exit 0 when all of it is valid, 1 with the first problem.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::{BackendArgs, BackendKind, IngressOptions, StripeApiOptions};
use crate::config::Config;
use crate::ingress::config::IngressConfig;

/// `config check` options: the same as `run`'s, so the same settings are checked.
#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Ingress options (where the webhook secrets come from).
    #[command(flatten)]
    pub ingress: IngressOptions,
    /// Stripe API options (where the API keys come from).
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

/// What `config check` prints.
#[derive(Debug, Serialize)]
struct Effective {
    /// Where the worker works.
    backend: BackendView,
    /// The knobs, as the README's configuration table lists them.
    config: Config,
    /// Which tenants have secrets, never the secrets.
    secrets: SecretsView,
}

#[derive(Debug, Serialize)]
struct BackendView {
    backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_file: Option<String>,
    listen: String,
    stripe_api_base: String,
}

#[derive(Debug, Serialize)]
struct SecretsView {
    /// Tenant -> `<redacted: N secrets>`.
    webhook_secrets: BTreeMap<String, String>,
    /// Tenant -> `<redacted>`.
    stripe_api_keys: BTreeMap<String, String>,
}

/// Run `config check`.
pub fn config_check(args: ConfigCheckArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args.backend.config.as_deref(), std::env::vars())?;
    let ingress =
        IngressConfig::from_env(args.ingress.webhook_secrets_dir.as_deref(), &config.tenants)?;
    let api = args.stripe_api.api_config(&config.tenants)?;
    let backend = &args.backend;
    let (data_dir, prefix) = match backend.backend {
        BackendKind::Local => (Some(backend.data_dir.display().to_string()), None),
        BackendKind::Aws => (None, Some(backend.prefix.clone())),
    };
    let effective = Effective {
        backend: BackendView {
            backend: match backend.backend {
                BackendKind::Local => "local",
                BackendKind::Aws => "aws",
            },
            data_dir,
            prefix,
            config_file: backend.config.as_ref().map(|p| p.display().to_string()),
            listen: args.ingress.listen.to_string(),
            stripe_api_base: api.base_url.clone(),
        },
        config,
        secrets: SecretsView {
            webhook_secrets: ingress
                .tenants
                .iter()
                .map(|(tenant, secrets)| {
                    let n = secrets.len();
                    let noun = if n == 1 { "secret" } else { "secrets" };
                    (tenant.clone(), format!("<redacted: {n} {noun}>"))
                })
                .collect(),
            stripe_api_keys: api
                .keys
                .keys()
                .map(|tenant| (tenant.clone(), "<redacted>".to_owned()))
                .collect(),
        },
    };
    let text = if args.json {
        serde_json::to_string_pretty(&effective)?
    } else {
        toml::to_string(&effective)?
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}
