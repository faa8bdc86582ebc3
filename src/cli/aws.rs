//! The AWS SDK configuration as the commands load it: checked up front, so that a missing
//! region or missing credentials are one line naming what to set, not a "transient
//! failure" from the first call after the SDK's retries.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::config::ProvideCredentials;

use crate::backend::aws::one_line;

/// How long the credential chain may take (instance metadata and SSO answer in well under
/// a second when they are there at all).
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(10);

/// Load the SDK configuration (standard credential chain, `AWS_ENDPOINT_URL`) and check
/// that it names a region and finds credentials.
pub async fn sdk_config(timeouts: crate::backend::aws::SdkTimeouts) -> anyhow::Result<SdkConfig> {
    let sdk = crate::backend::aws::load_sdk_config_with(timeouts).await;
    check(&sdk).await?;
    Ok(sdk)
}

async fn check(sdk: &SdkConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        sdk.region().is_some(),
        "no AWS region: set AWS_REGION (or a region in the AWS profile)"
    );
    let Some(provider) = sdk.credentials_provider() else {
        anyhow::bail!("no AWS credentials provider is configured");
    };
    match tokio::time::timeout(CREDENTIALS_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => anyhow::bail!(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE, or run where a role is attached ({})",
            one_line(&error)
        ),
        Err(_) => anyhow::bail!(
            "no AWS credentials within {}s: the credential chain (profile, SSO, web \
             identity, container, instance metadata) did not answer",
            CREDENTIALS_TIMEOUT.as_secs()
        ),
    }
}
