//! One file per command.

pub mod agents;
pub mod audit;
pub mod backup;
pub mod backups;
pub mod drill;
pub mod keys;
pub mod pitr_window;
pub mod pki;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod status;
pub mod verify;
