//! The states and kinds the catalog stores as text. Each is an enum in the code and its
//! lowercase name in the catalog, the protocol and the CLI; a name the catalog holds that no
//! variant has is a corrupt catalog, never a silent default.

use super::{CatalogError, Result};

/// Defines an enum stored as text: `as_str` (the stored name), `from_name` (None for an
/// unknown name: for input), `parse` (an error naming `what`: for the catalog), `ALL`, and
/// Display as the name.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident ($what:literal) {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            #[allow(dead_code)]
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            pub fn parse(s: &str) -> Result<Self> {
                Self::from_name(s)
                    .ok_or_else(|| CatalogError::Corrupt(format!(concat!($what, " {:?}"), s)))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// A backup is running until every part is stored and verified and the agent's checks
    /// pass; then complete. Failed, corrupt (complete, then found damaged by verify) and
    /// expired (its data removed by retention) are what restores, drills and windows never
    /// take.
    pub enum BackupStatus("backup status") {
        Running = "running",
        Complete = "complete",
        Failed = "failed",
        /// Read so from a complete backup that verify found damaged.
        Corrupt = "corrupt",
        Expired = "expired",
    }
}

text_enum! {
    /// What an agent backs up: a logical dump (pg_dump, mariadb-dump) or a physical base
    /// backup (pg_basebackup, mariabackup).
    pub enum BackupKind("backup kind") {
        Logical = "logical",
        Base = "base",
    }
}

text_enum! {
    /// An instance's database engine. Parsed where it enters (an agent's registration, the
    /// catalog), so that every branch on it is a `match` naming each engine: a new engine is
    /// a compile error wherever it needs a decision, never a silent fall into another's branch.
    pub enum Engine("engine") {
        Postgresql = "postgresql",
        Mariadb = "mariadb",
    }
}

impl Engine {
    /// The version a sandbox must run to restore a backup made on server `version`:
    /// PostgreSQL's major version ("15.10 (Debian ...)" -> 15), or MariaDB's series as
    /// major * 100 + minor (10.11.9 -> 1011), because mariabackup prepares only backups of
    /// its own series.
    pub fn series(self, version: &str) -> Option<u32> {
        let mut numbers = version
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().ok());
        match self {
            Engine::Postgresql => numbers.next()?,
            Engine::Mariadb => {
                let (major, minor) = (numbers.next()??, numbers.next()??);
                Some(major * 100 + minor)
            }
        }
    }

    /// A series as people write it: 15, or 10.11.
    pub fn show_series(self, series: u32) -> String {
        match self {
            Engine::Postgresql => series.to_string(),
            Engine::Mariadb => format!("{}.{}", series / 100, series % 100),
        }
    }

    /// What its archived logs are called in retention plans: wal or binlog.
    pub fn log_kind(self) -> &'static str {
        match self {
            Engine::Postgresql => "wal",
            Engine::Mariadb => "binlog",
        }
    }
}

text_enum! {
    pub enum JobState("job state") {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

text_enum! {
    pub enum DrillState("drill state") {
        Queued = "queued",
        Running = "running",
        Passed = "passed",
        Failed = "failed",
        /// Interrupted (the controller restarted, the sandbox went away): it proves nothing
        /// either way.
        Aborted = "aborted",
    }
}

text_enum! {
    /// A scheduled run: an attempt is out (running), it waits for its next attempt
    /// (waiting), or it ended.
    pub enum RunState("run state") {
        Running = "running",
        Waiting = "waiting",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_corrupt() {
        for s in BackupStatus::ALL {
            assert_eq!(BackupStatus::parse(s.as_str()).unwrap(), *s);
            assert_eq!(s.to_string(), s.as_str());
        }
        for k in BackupKind::ALL {
            assert_eq!(BackupKind::from_name(k.as_str()), Some(*k));
        }
        assert_eq!(BackupKind::from_name("incremental"), None);
        let e = JobState::parse("done").unwrap_err().to_string();
        assert!(e.contains("job state \"done\""), "{e}");
        assert!(DrillState::parse("").is_err());
        assert!(JobState::Failed.is_terminal() && !JobState::Running.is_terminal());
    }

    #[test]
    fn a_sandbox_runs_the_same_major_version_or_series() {
        let pg = Engine::Postgresql;
        assert_eq!(pg.series("15.10 (Debian 15.10-0+deb12u1)"), Some(15));
        assert_eq!(pg.series(""), None);
        assert_eq!(pg.show_series(15), "15");
        let maria = Engine::Mariadb;
        assert_eq!(maria.series("10.11.9-MariaDB-0+deb12u1"), Some(1011));
        assert_eq!(maria.series("10"), None);
        assert_eq!(maria.show_series(1011), "10.11");
    }
}
