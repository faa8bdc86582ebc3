//! Tenant resolution from trusted channels only (stub; see issue 2 section 5).
