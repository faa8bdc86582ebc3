//! What processing one message came to, and what the pool does about it.

use crate::backend::DeadLetterReason;

/// The outcome of [`super::Processor::process_one`] ([`super::Processed::outcome`]). The
/// pool turns it into queue actions: delete, change visibility, or send to the DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// At least one handler applied the event (`writes` state records changed).
    Applied { writes: usize },
    /// Every handler had already applied this event: acknowledge.
    Duplicate,
    /// No handler acts on this event (unknown type, or not this domain's): acknowledge.
    Ignored { reason: &'static str },
    /// Another worker holds the dedupe lease: leave the message invisible until then.
    InProgressElsewhere { until_ms: i64 },
    /// A transient failure outlasted the in-process retries: try again on a later receive.
    RetryLater { kind: &'static str, message: String },
    /// The message can never succeed: send it to the DLQ with this reason.
    DeadLetter(DeadLetterReason),
    /// Shutdown overtook processing: make the message visible again at once.
    Released,
}

impl Outcome {
    /// A bounded label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored { .. } => "ignored",
            Outcome::InProgressElsewhere { .. } => "in_progress_elsewhere",
            Outcome::RetryLater { .. } => "retry_later",
            Outcome::DeadLetter(_) => "dead_lettered",
            Outcome::Released => "released",
        }
    }

    /// A dead-letter outcome from a reason code and message.
    pub fn dead_letter(kind: &str, message: impl Into<String>, handler: Option<&str>) -> Self {
        Outcome::DeadLetter(DeadLetterReason {
            kind: kind.to_owned(),
            message: message.into(),
            handler: handler.map(str::to_owned),
        })
    }
}
