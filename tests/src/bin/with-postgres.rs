//! `with-postgres COMMAND [ARGS...]`: run COMMAND with a throwaway PostgreSQL server, named
//! to it in `TIDEMARK_TEST_POSTGRES` (a postgres:// URL for the superuser), and remove the
//! server afterwards. The catalog's tests read that variable and run against PostgreSQL
//! instead of SQLite: `.ci/run` runs them both ways.

use std::process::{Command, ExitCode};

use tidemark_tests::TestDir;
use tidemark_tests::pg::PgCluster;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("usage: with-postgres COMMAND [ARGS...]");
        return ExitCode::from(2);
    };
    let dir = TestDir::new("with-postgres");
    // Each test opens a few pooled connections to a database of its own.
    let pg = PgCluster::start_with(dir.path(), "pg", "max_connections = 200\n");
    let status = Command::new(cmd)
        .args(rest)
        .env("TIDEMARK_TEST_POSTGRES", pg.url("postgres"))
        .status();
    drop(pg);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("with-postgres: {cmd} exited with {s}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("with-postgres: cannot run {cmd}: {e}");
            ExitCode::from(127)
        }
    }
}
