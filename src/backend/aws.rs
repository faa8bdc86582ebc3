//! AWS backends (stub).
