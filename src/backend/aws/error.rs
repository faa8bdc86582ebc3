//! Mapping SDK failures onto [`BackendError`], shared by every AWS backend.
//!
//! The SDK has already retried what its standard retry mode retries by the time an error
//! reaches here, so this only classifies: throttling codes become
//! [`BackendError::Throttled`], timeouts, connection failures and 5xx become
//! [`BackendError::Transient`], everything else [`BackendError::Permanent`].

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

use crate::backend::BackendError;

/// Error codes that mean "slow down", across SQS, DynamoDB and EventBridge (the same set
/// the SDK's retry classifier treats as throttling).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "KmsThrottled",
];

/// Error codes for failures on the service side that may pass on another try.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalException",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KmsDisabled",
];

/// Classify an error code from a service response or a batch entry.
pub(crate) fn from_code(
    operation: &'static str,
    code: &str,
    message: impl Into<String>,
    server_side: bool,
) -> BackendError {
    // SQS's JSON protocol reports codes such as `AWS.SimpleQueueService.NonExistentQueue`
    // and some services prefix a namespace (`com.amazonaws.sqs#ThrottlingException`):
    // compare the last segment.
    let short = code
        .rsplit(['#', '.'])
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(code);
    let message = format!("{code}: {}", message.into());
    if THROTTLING_CODES.contains(&short) {
        BackendError::Throttled { operation, message }
    } else if server_side || TRANSIENT_CODES.contains(&short) {
        BackendError::Transient { operation, message }
    } else {
        BackendError::Permanent { operation, message }
    }
}

/// Map one SDK call failure.
pub(crate) fn from_sdk<E>(operation: &'static str, err: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => BackendError::Transient {
            operation,
            message: one_line(&err),
        },
        SdkError::ResponseError(ctx) => {
            // The response could not be read or parsed: a broken connection or a
            // gateway error page, worth another try when the status says so.
            let status = ctx.raw().status();
            let message = one_line(&err);
            if status.is_server_error() || status.as_u16() == 429 {
                BackendError::Transient { operation, message }
            } else {
                BackendError::Permanent { operation, message }
            }
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status();
            let server_side = status.is_server_error();
            match ctx.err().code() {
                Some(code) => from_code(
                    operation,
                    code,
                    ctx.err().message().unwrap_or("no message"),
                    server_side,
                ),
                None if server_side || status.as_u16() == 429 => BackendError::Transient {
                    operation,
                    message: one_line(&err),
                },
                None => BackendError::Permanent {
                    operation,
                    message: one_line(&err),
                },
            }
        }
        // Construction failures (a request the SDK refused to build) and anything new.
        _ => BackendError::Permanent {
            operation,
            message: one_line(&err),
        },
    }
}

/// An error and its sources on one line, `outer: inner: ...`, each by its `Display` and
/// skipping a source its parent already printed. (The SDK's `DisplayErrorContext` appends
/// the whole error's `Debug` form: a thousand characters no operator can use.)
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text
}

/// The error code of a service error, if the failure was one.
pub(crate) fn service_code<E>(err: &SdkError<E>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(ctx) => ctx.err().code(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_line_joins_the_sources_by_display_without_debug_dumps() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(one_line(&error), "dispatch failure: connection refused");
    }

    #[test]
    fn codes_are_classified_by_their_last_segment() {
        assert!(from_code("op", "ThrottlingException", "m", false).is_throttle());
        assert!(from_code("op", "com.amazonaws.sqs#RequestThrottled", "m", false).is_throttle());
        assert!(
            from_code("op", "ProvisionedThroughputExceededException", "m", false).is_throttle()
        );
        let transient = from_code("op", "InternalFailure", "m", false);
        assert!(transient.is_retryable() && !transient.is_throttle());
        let server = from_code("op", "SomethingNew", "m", true);
        assert!(server.is_retryable());
        let permanent = from_code("op", "AWS.SimpleQueueService.NonExistentQueue", "m", false);
        assert!(!permanent.is_retryable());
        assert_eq!(permanent.operation(), "op");
    }
}
