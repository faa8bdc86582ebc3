//! Decoding queue message bodies into [`super::NormalisedEvent`] (stub).

use super::NormalisedEvent;

/// Why a message body is not a usable Stripe event. Always permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Placeholder until the decoder lands.
    #[error("not implemented")]
    Unimplemented,
}

/// Decode one message body.
pub fn decode_message(_body: &[u8]) -> Result<NormalisedEvent, DecodeError> {
    Err(DecodeError::Unimplemented)
}
