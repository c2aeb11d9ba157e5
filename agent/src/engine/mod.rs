//! Database engines: each runs its native tools for backup and restore.

pub mod common;
pub mod mariadb;
pub mod postgres;
