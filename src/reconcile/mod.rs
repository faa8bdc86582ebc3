//! Keeping the state equal to Stripe, from the Stripe API, the source of truth:
//!
//! - [`import`]: list every object of every kind the handlers keep and write it through
//!   the same ordered upsert as events (a new deployment on an existing account);
//! - [`verify`]: compare the stored state with the API field by field, and repair;
//! - [`sweep`]: list the account's recent events and publish the ones the dedupe store
//!   has never seen (a disabled destination, an event lost past EventBridge's retries);
//! - [`ties`]: two events for one object in the same second cannot be ordered by their
//!   `created`; the object is fetched instead.
//!
//! Every call goes through [`crate::stripe_api::StripeApiClient`], paced per API key.
//! Errors are [`crate::ops::OpsError`], as for the other operations.

pub mod import;
pub mod kinds;
pub mod sweep;
pub mod ties;
pub mod verify;

/// The tiebreak of a version fetched from the API at `fetched_ms` (import, repair, a
/// resolved tie): `~` sorts after every Stripe id, so on an equal as-of it wins over an
/// event's record and a later fetch over an earlier one (fixed width: text order is time
/// order).
pub fn fetched_tiebreak(fetched_ms: i64) -> String {
    format!("~fetched.{:015}", fetched_ms.max(0))
}

/// The as-of of an object fetched at `fetch_started_ms` for `import` and `verify --repair`:
/// the start of that second, less 1 ms. Stripe's `created` has whole seconds, so an event
/// that happened while the object was being fetched may carry a `created` up to a second
/// before the fetch; this as-of lets every event from the fetch's second on win over the
/// imported version, so an import beside live traffic never overwrites a newer event.
pub fn fetched_as_of(fetch_started_ms: i64) -> i64 {
    fetch_started_ms.div_euclid(1000) * 1000 - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetched_versions_lose_to_events_of_their_second() {
        assert_eq!(fetched_as_of(1_700_000_000_999), 1_699_999_999_999);
        assert_eq!(fetched_as_of(1_700_000_000_000), 1_699_999_999_999);
        assert!(fetched_as_of(1_700_000_000_500) < 1_700_000_000_000);
        assert!(fetched_tiebreak(5).as_str() > "evt_1Zzzzzzzzzzzzzzzzzzzzzzzz");
        assert!(fetched_tiebreak(1_700_000_000_001) > fetched_tiebreak(1_700_000_000_000));
        assert!(fetched_tiebreak(1_700_000_000_000) > fetched_tiebreak(999));
    }
}
