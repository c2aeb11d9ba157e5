#!/usr/bin/env bash
# Tidemark quickstart: on a fresh Debian 12 machine with Rust, build Tidemark and run a
# throwaway fleet — a PostgreSQL cluster with sample data, a controller (SQLite catalog,
# filesystem chunk store) and an agent — then back up, restore into a new database, and
# compare the data. Exits 0 only when the restored data matches.
#
#   deploy/quickstart.sh [--dir DIR] [--keep-running] [--release]
#   deploy/quickstart.sh --stop --dir DIR
#
# With --keep-running the fleet stays up and DIR/env holds the shell exports to use it
# (TIDEMARK_CONFIG, TIDEMARK_AGENT, PATH, PGHOST, PGPORT, PGUSER).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/deploy/lib/common.sh"

dir=${TMPDIR:-/tmp}/tidemark-demo
keep=0
stop=0
profile=debug
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --keep-running) keep=1; shift ;;
        --stop) stop=1; shift ;;
        --release) profile=release; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
mkdir -p "$(dirname "$dir")"
dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
marker="$dir/.tidemark-demo"
agent_name=demo-host

stop_fleet() {
    local p pid
    for p in agent controller; do
        if [ -f "$dir/run/$p.pid" ]; then
            pid=$(cat "$dir/run/$p.pid")
            # Only a number, and only our own binary: never kill what a pid file merely names.
            case $pid in ''|*[!0-9]*) die "$dir/run/$p.pid does not hold a pid" ;; esac
            if grep -q "tidemark-$p" "/proc/$pid/cmdline" 2>/dev/null; then
                kill "$pid"
            fi
            rm -f "$dir/run/$p.pid"
        fi
    done
    pg_stop "$dir/pg" || die "PostgreSQL in $dir/pg did not stop; stop it by hand before reusing $dir"
}

# The demo directory must be ours and not a symlink (the default lives in a shared /tmp).
check_owned() {
    [ ! -L "$dir" ] || die "$dir is a symlink; pick another --dir"
    [ ! -e "$dir" ] || [ -O "$dir" ] || die "$dir belongs to another user; pick another --dir"
}

check_owned
if [ $stop -eq 1 ]; then
    [ -f "$marker" ] || die "$dir is not a quickstart fleet"
    stop_fleet
    say "fleet in $dir stopped"
    exit 0
fi

# --- prerequisites ---------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust first (https://rustup.rs)"
need_packages postgresql-15 postgresql-client-15
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "the postgres OS user is missing; PostgreSQL cannot run as root"
fi

if [ -e "$dir" ]; then
    [ -f "$marker" ] || [ -z "$(ls -A "$dir")" ] || die "$dir exists and is not a quickstart fleet; pick another --dir"
    stop_fleet
    rm -rf "$dir"
fi
mkdir -m 755 "$dir"
check_owned
mkdir -p "$dir/run"
touch "$marker"
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir"; then
    die "the postgres user cannot reach $dir; pick a --dir under /tmp"
fi

say "building tidemark ($profile)"
if [ $profile = release ]; then
    (cd "$repo" && cargo build --workspace --bins --locked --release)
else
    (cd "$repo" && cargo build --workspace --bins --locked)
fi
bin=$repo/target/$profile

cleanup_on_error() {
    local rc=$?
    if [ $rc -ne 0 ] && [ $keep -eq 0 ]; then
        stop_fleet
    fi
    [ $rc -ne 0 ] && echo "quickstart failed; logs are in $dir" >&2
    exit $rc
}
trap cleanup_on_error EXIT

# --- PostgreSQL with sample data ----------------------------------------------------------
say "starting PostgreSQL 15 in $dir/pg"
pg_init "$dir/pg"
export PGHOST=$dir/pg PGPORT=5432 PGUSER=postgres
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_q -d postgres -c "CREATE DATABASE shop"
psql_q -d shop <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text);
INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['NL','DE','FR','JP','BR'])[1 + g % 5]
FROM generate_series(1, 10000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(12,2), placed timestamptz);
INSERT INTO orders (customer, total, placed)
SELECT 1 + g % 10000, round((random() * 500)::numeric, 2), now() - g * interval '1 minute'
FROM generate_series(1, 100000) g;
CREATE INDEX orders_customer ON orders (customer);
SQL

# --- PKI, controller, agent ----------------------------------------------------------------
say "creating the fleet CA and certificates in $dir/pki"
"$bin/tidemark" pki init --dir "$dir/pki" >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name controller:localhost --san 127.0.0.1 >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name "agent:$agent_name" >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name admin:demo >/dev/null

tls() { printf '[tls]\nca = "%s/pki/ca.crt"\ncert = "%s/pki/%s.crt"\nkey = "%s/pki/%s.key"\n' "$dir" "$dir" "$1" "$dir" "$1"; }
{ printf 'version = 1\nlisten = "127.0.0.1:0"\ndata-dir = "%s/controller"\n' "$dir"; tls controller-localhost; } >"$dir/controller.toml"

say "starting tidemark-controller"
setsid "$bin/tidemark-controller" --config "$dir/controller.toml" >"$dir/controller.log" 2>&1 </dev/null &
echo $! >"$dir/run/controller.pid"
for _ in $(seq 100); do [ -s "$dir/controller/controller.addr" ] && break; sleep 0.1; done
[ -s "$dir/controller/controller.addr" ] || die "the controller did not start; see $dir/controller.log"
port=$(sed 's/.*://' "$dir/controller/controller.addr")

{ printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls admin-demo; } >"$dir/tidemark.toml"
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\nspool-dir = "%s"\n' "$port" "$dir"
    tls "agent-$agent_name"
    printf '\n[[instance]]\nname = "demo-pg"\nengine = "postgresql"\nhost = "%s/pg"\nport = 5432\nuser = "postgres"\nbin-dir = "%s"\n' "$dir" "$PG_BIN"
} >"$dir/agent.toml"

say "starting tidemark-agent ($agent_name)"
setsid "$bin/tidemark-agent" --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 </dev/null &
echo $! >"$dir/run/agent.pid"
export TIDEMARK_CONFIG=$dir/tidemark.toml
connected=0
for _ in $(seq 150); do
    if "$bin/tidemark" agents --output json 2>/dev/null | grep -q '"connected": true'; then
        connected=1
        break
    fi
    sleep 0.2
done
[ $connected -eq 1 ] || die "the agent did not connect; see $dir/agent.log"
"$bin/tidemark" agents

# --- back up, restore, compare ---------------------------------------------------------------
say "tidemark backup --instance demo-pg --kind logical --wait"
"$bin/tidemark" backup --instance demo-pg --kind logical --wait --output json >"$dir/backup.json" \
    || { cat "$dir/backup.json"; die "the backup failed"; }
backup_id=$(sed -n 's/^  "id": \([0-9]*\),$/\1/p' "$dir/backup.json")
[ -n "$backup_id" ] || die "could not read the backup id from $dir/backup.json"

say "tidemark restore --backup $backup_id --host $agent_name --into-database shop_restored --database shop"
"$bin/tidemark" restore --backup "$backup_id" --host "$agent_name" --into-database shop_restored --database shop

fingerprint() {
    psql -X -A -t -d "$1" -c "SELECT 'customers ' || count(*) || ' ' || md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c" \
        -c "SELECT 'orders ' || count(*) || ' ' || md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o"
}
fingerprint shop >"$dir/shop.md5"
fingerprint shop_restored >"$dir/shop_restored.md5"
say "comparing shop with shop_restored"
sed 's/^/  /' "$dir/shop.md5"
if ! diff -u "$dir/shop.md5" "$dir/shop_restored.md5"; then
    die "restored data differs from the original"
fi
echo "  restored data matches"
echo
"$bin/tidemark" backups

if [ $keep -eq 1 ]; then
    cat >"$dir/env" <<ENV
export TIDEMARK_CONFIG=$dir/tidemark.toml
export TIDEMARK_AGENT=$agent_name
export PATH=$bin:\$PATH
export PGHOST=$dir/pg
export PGPORT=5432
export PGUSER=postgres
ENV
    echo
    say "the fleet is running. Try:"
    echo "  . $dir/env"
    echo "  tidemark agents"
    echo "  tidemark backup --instance demo-pg --wait"
    echo "  tidemark restore --backup $backup_id --host \$TIDEMARK_AGENT --into-database shop2 --database shop"
    echo "Stop it with: $0 --stop --dir $dir"
else
    stop_fleet
    say "demo passed; fleet stopped (logs in $dir)"
fi
