//! Local event bus (stub).
