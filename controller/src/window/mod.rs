//! Recovery windows: what the archive can deliver, computed from the catalog's facts alone.
//! `wal` for PostgreSQL (base backups and WAL segments), `binlog` for MariaDB (backups with
//! binlog coordinates and archived binlogs).

pub mod binlog;
pub mod wal;
