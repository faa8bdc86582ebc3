//! The read API's request parameters, checked before any store call: path segments and
//! the list query (`status`, `limit`, `starting_after`). Pure, so every rule is tested
//! without a server.

use crate::handlers::subscription::STATUSES;

/// A page of a list holds this many records unless the request says (Stripe's default).
pub const DEFAULT_LIMIT: usize = 10;

/// The largest page a request may ask for (Stripe's bound).
pub const MAX_LIMIT: usize = 100;

/// The longest object id accepted (Stripe ids are far shorter).
const MAX_ID_LEN: usize = 255;

/// A request parameter that is not acceptable: answered 400 with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Whether `id` can be an object id: 1 to 255 ASCII letters, digits, `_`, `-` or `.`
/// (Stripe's ids are `prefix_alphanumerics`).
pub fn check_id(what: &str, id: &str) -> Result<(), BadRequest> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BadRequest(format!(
            "{what} must be 1-{MAX_ID_LEN} characters of A-Z a-z 0-9 _ - ."
        )))
    }
}

/// Whether `kind` can be a record kind: 1 to 64 lower-case letters, digits or `_`. Any
/// such kind is looked up, so kinds added by new handlers need no change here.
pub fn check_kind(kind: &str) -> Result<(), BadRequest> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(BadRequest(
            "kind must be 1-64 characters of a-z 0-9 _ (e.g. subscription)".to_owned(),
        ))
    }
}

/// The parameters of `GET .../subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// One of Stripe's subscription statuses.
    pub status: String,
    /// How many records a page holds, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// The last id of the previous page.
    pub starting_after: Option<String>,
}

/// Parse a list's query string (`None`: no query string). `status` is required; an
/// unknown parameter, a repeated one or a value out of range is an error naming it.
pub fn parse_list_query(raw: Option<&str>) -> Result<ListQuery, BadRequest> {
    let mut status = None;
    let mut limit = None;
    let mut starting_after = None;
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let slot = match name.as_ref() {
            "status" => &mut status,
            "limit" => &mut limit,
            "starting_after" => &mut starting_after,
            other => {
                return Err(BadRequest(format!(
                    "unknown parameter `{}` (expected status, limit, starting_after)",
                    other.chars().take(64).collect::<String>()
                )));
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(BadRequest(format!("parameter `{name}` given twice")));
        }
    }
    let status = status.ok_or_else(|| {
        BadRequest(format!(
            "parameter `status` is required (one of {})",
            STATUSES.join(", ")
        ))
    })?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(BadRequest(format!(
            "status must be one of {}",
            STATUSES.join(", ")
        )));
    }
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}")))?,
    };
    if let Some(after) = &starting_after {
        check_id("starting_after", after)?;
    }
    Ok(ListQuery {
        status,
        limit,
        starting_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_query_defaults_and_bounds() {
        let q = parse_list_query(Some("status=active")).expect("valid");
        assert_eq!((q.limit, q.starting_after), (DEFAULT_LIMIT, None));
        let q = parse_list_query(Some("status=past_due&limit=100&starting_after=sub_1"))
            .expect("valid");
        assert_eq!(q.status, "past_due");
        assert_eq!(q.limit, 100);
        assert_eq!(q.starting_after.as_deref(), Some("sub_1"));
        for bad in ["0", "101", "-1", "ten", ""] {
            let err = parse_list_query(Some(&format!("status=active&limit={bad}"))).expect_err(bad);
            assert!(err.0.contains("limit"), "{err}");
        }
    }

    #[test]
    fn list_query_rejects_what_it_does_not_know() {
        for (query, names) in [
            (None, "status"),
            (Some("status=bogus"), "status"),
            (Some("status=active&status=canceled"), "twice"),
            (Some("status=active&expand=x"), "unknown parameter `expand`"),
            (Some("status=active&starting_after=a%2Fb"), "starting_after"),
        ] {
            let err = parse_list_query(query).expect_err(names);
            assert!(err.0.contains(names), "{query:?}: {err}");
        }
    }

    #[test]
    fn ids_and_kinds() {
        assert!(check_id("id", "cus_Abc-1.2").is_ok());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "a b").is_err());
        assert!(check_id("id", &"a".repeat(256)).is_err());
        assert!(check_kind("entitlement_summary").is_ok());
        assert!(check_kind("Subscription").is_err());
        assert!(check_kind("a#b").is_err());
    }
}
