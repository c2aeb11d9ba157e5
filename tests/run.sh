#!/usr/bin/env bash
# Runs all of Tidemark's tests on a Debian 12 machine with Rust: installs what the tests need
# (idempotently), builds the binaries the end-to-end tests start, and runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/lib/common.sh

need_packages postgresql-15 postgresql-client-15 mariadb-server mariadb-backup bsdutils iproute2 sqlite3  # bsdutils: script(1), a pty for the progress-bar test; iproute2: ip netns for the sandbox isolation test; sqlite3: an online copy of a catalog (.backup) in the leak test
[ -x "$PG_BIN/initdb" ] || die "$PG_BIN/initdb is missing after installing postgresql-15"
[ -x /usr/sbin/mariadbd ] || die "/usr/sbin/mariadbd is missing after installing mariadb-server"
id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (postgresql-common creates it)"

cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

# The catalog's conformance suite: the controller's tests again, each catalog a database on
# a throwaway PostgreSQL server instead of a SQLite file.
echo "tests: the controller's tests on a PostgreSQL catalog"
target/debug/with-postgres cargo test -p tidemark-controller --locked
