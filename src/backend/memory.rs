//! In-memory backends (stub).
