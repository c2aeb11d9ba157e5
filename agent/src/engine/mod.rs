//! Database engines: each runs its native tools for backup and restore.

pub mod postgres;
