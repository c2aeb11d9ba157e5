//! Code shared by the Tidemark agent, controller and CLI.
//!
//! Vocabulary:
//! - an **instance** is one database server (a PostgreSQL cluster, a MariaDB server), with a
//!   fleet-unique name;
//! - a **backup** is one run of a native tool against an instance, made of **parts** (one
//!   stream each: a database's `pg_dump`, the cluster globals);
//! - a part is cut into **chunks** by content-defined chunking; a chunk's id is the SHA-256 of
//!   its plaintext, so identical chunks are stored once across backups and hosts.

pub mod binlog;
pub mod chunk;
pub mod chunker;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod identity;
pub mod ids;
pub mod text;
pub mod timefmt;
pub mod tls;
pub mod wal;
