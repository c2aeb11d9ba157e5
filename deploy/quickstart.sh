#!/usr/bin/env bash
# Tidemark quickstart: on a fresh Debian 12 machine with Rust, build Tidemark and run a
# throwaway fleet — a PostgreSQL cluster with sample data that archives its WAL through
# Tidemark, a controller (SQLite catalog, filesystem chunk store), an agent and a drill
# sandbox. Then:
#   1. a logical backup, restored into a new database and compared;
#   2. a base backup, more writes, and a point-in-time restore to the moment between them
#      into a new data directory, started and compared;
#   3. a drill: the sandbox restores the instance to that same moment from the controller
#      alone and checks it, and the drill report is printed.
# Exits 0 only when both restores match and the drill passes.
#
#   deploy/quickstart.sh [--dir DIR] [--keep-running] [--release]
#   deploy/quickstart.sh --stop --dir DIR
#
# With --keep-running the fleet stays up and DIR/env holds the shell exports to use it
# (TIDEMARK_CONFIG, TIDEMARK_AGENT, TIDEMARK_SANDBOX, TIDEMARK_METRICS_URL, PATH, PGHOST,
# PGPORT, PGUSER).
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
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
mkdir -p "$(dirname "$dir")"
dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
marker="$dir/.tidemark-demo"
agent_name=demo-host
sandbox_name=demo-sandbox

stop_fleet() {
    local p pid
    # The databases first: a server shutting down archives its last WAL, which needs the
    # agent and the controller still up.
    pg_stop "$dir/pitr" || die "PostgreSQL in $dir/pitr did not stop; stop it by hand before reusing $dir"
    pg_stop "$dir/pg" || die "PostgreSQL in $dir/pg did not stop; stop it by hand before reusing $dir"
    for p in sandbox agent controller; do
        if [ -f "$dir/run/$p.pid" ]; then
            pid=$(cat "$dir/run/$p.pid")
            # Only a number, and only our own binary: never kill what a pid file merely names.
            case $pid in ''|*[!0-9]*) die "$dir/run/$p.pid does not hold a pid" ;; esac
            if grep -q "tidemark-" "/proc/$pid/cmdline" 2>/dev/null; then
                kill "$pid"
            fi
            rm -f "$dir/run/$p.pid"
        fi
    done
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
# PostgreSQL (as the postgres user) runs the agent as archive_command and restore_command:
# give it a copy it can reach whatever the permissions on the checkout.
mkdir -p "$dir/bin"
cp "$bin/tidemark-agent" "$dir/bin/"

cleanup_on_error() {
    local rc=$?
    if [ $rc -ne 0 ] && [ $keep -eq 0 ]; then
        stop_fleet
    fi
    [ $rc -ne 0 ] && echo "quickstart failed; logs are in $dir" >&2
    exit $rc
}
trap cleanup_on_error EXIT

# --- PKI, controller, agent ----------------------------------------------------------------
say "creating the fleet CA and certificates in $dir/pki"
"$bin/tidemark" pki init --dir "$dir/pki" >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name controller:localhost --san 127.0.0.1 >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name "agent:$agent_name" >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name admin:demo >/dev/null
"$bin/tidemark" pki issue --dir "$dir/pki" --name "sandbox:$sandbox_name" >/dev/null

tls() { printf '[tls]\nca = "%s/pki/ca.crt"\ncert = "%s/pki/%s.crt"\nkey = "%s/pki/%s.key"\n' "$dir" "$dir" "$1" "$dir" "$1"; }
{
    printf 'version = 1\nlisten = "127.0.0.1:0"\nmetrics-listen = "127.0.0.1:0"\ndata-dir = "%s/controller"\n' "$dir"
    tls controller-localhost
    # Drill checks for demo-pg: rows before and after the demo's target, and a count that
    # the agent samples on production every 5 s, for the drill to compare with.
    cat <<'TOML'

[drills]
sample-interval = "5s"

[[instance]]
name = "demo-pg"
[[instance.check]]
name = "events-before-target"
database = "shop"
sql = "SELECT count(*) FROM events WHERE note = 'before the target'"
expect = "equals:1000"
[[instance.check]]
name = "events-after-target"
database = "shop"
sql = "SELECT count(*) FROM events WHERE note = 'after the target'"
expect = "equals:0"
[[instance.check]]
name = "orders"
database = "shop"
sql = "SELECT count(*) FROM orders"
expect = "within-pct:0"
TOML
} >"$dir/controller.toml"

say "starting tidemark-controller"
setsid "$bin/tidemark-controller" --config "$dir/controller.toml" >"$dir/controller.log" 2>&1 </dev/null &
echo $! >"$dir/run/controller.pid"
for _ in $(seq 100); do [ -s "$dir/controller/controller.addr" ] && break; sleep 0.1; done
[ -s "$dir/controller/controller.addr" ] || die "the controller did not start; see $dir/controller.log"
port=$(sed 's/.*://' "$dir/controller/controller.addr")
metrics_url=http://$(cat "$dir/controller/metrics.addr")/metrics

{ printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls admin-demo; } >"$dir/tidemark.toml"
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\nspool-dir = "%s"\n' "$port" "$dir"
    tls "agent-$agent_name"
    printf '\n[[instance]]\nname = "demo-pg"\nengine = "postgresql"\nhost = "%s/pg"\nport = 5432\nuser = "postgres"\nbin-dir = "%s"\n' "$dir" "$PG_BIN"
} >"$dir/agent.toml"
give_to_postgres "$dir/agent.toml" "$dir/pki/agent-$agent_name.crt" "$dir/pki/agent-$agent_name.key"
# The sandbox: the same agent binary with a sandbox certificate. Drills restore into its
# directory (emptied before and after each) and run the server on a socket there.
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"
    tls "sandbox-$sandbox_name"
    printf '\n[sandbox]\ndir = "%s/sandbox"\nbin-dirs = ["%s"]\n' "$dir" "$PG_BIN"
} >"$dir/sandbox.toml"
# Its restored server runs wal-fetch as postgres, which reads this config and key.
give_to_postgres "$dir/sandbox.toml" "$dir/pki/sandbox-$sandbox_name.crt" "$dir/pki/sandbox-$sandbox_name.key"

# --- PostgreSQL with sample data ----------------------------------------------------------
say "starting PostgreSQL 15 in $dir/pg"
# PostgreSQL archives every WAL segment through the agent (wal-push exits 0 only once the
# controller has it durably); archive_timeout bounds the data at risk to 60 s when idle.
pg_init "$dir/pg" "wal_level = replica
archive_mode = on
archive_timeout = 60
archive_command = '$dir/bin/tidemark-agent --config $dir/agent.toml wal-push %p'"
export PGHOST=$dir/pg PGPORT=5432 PGUSER=postgres

say "starting tidemark-agent ($agent_name)"
setsid "$dir/bin/tidemark-agent" --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 </dev/null &
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

say "starting the drill sandbox ($sandbox_name)"
setsid "$dir/bin/tidemark-agent" --config "$dir/sandbox.toml" >"$dir/sandbox.log" 2>&1 </dev/null &
echo $! >"$dir/run/sandbox.pid"
connected=0
for _ in $(seq 150); do
    if [ "$("$bin/tidemark" agents --output json 2>/dev/null | grep -c '"connected": true')" -ge 2 ]; then
        connected=1
        break
    fi
    sleep 0.2
done
[ $connected -eq 1 ] || die "the sandbox did not connect; see $dir/sandbox.log"
"$bin/tidemark" agents

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

# --- base backup, more writes, point-in-time restore ----------------------------------------
say "tidemark backup --instance demo-pg --kind base --wait"
"$bin/tidemark" backup --instance demo-pg --kind base --wait
psql_q -d shop -c "CREATE TABLE events (id int PRIMARY KEY, note text)" \
    -c "INSERT INTO events SELECT g, 'before the target' FROM generate_series(1, 1000) g"
sleep 1.1
target=$(date -u '+%Y-%m-%d %H:%M:%S.%6N')
sleep 1.1
psql_q -d shop -c "INSERT INTO events SELECT g, 'after the target' FROM generate_series(1001, 2000) g" \
    -c "UPDATE customers SET name = 'changed after the target'"
# Close the current segment so the writes after the target reach the archive now, not at
# archive_timeout.
seg=$(psql -X -A -t -d postgres -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
psql_q -d postgres -c "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 150); do
    [ "$(psql -X -A -t -d postgres -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver")" = t ] && break
    sleep 0.2
done
"$bin/tidemark" pitr-window --instance demo-pg

say "tidemark restore --instance demo-pg --host $agent_name --pgdata $dir/pitr/data --to '$target' --port 5433 --start"
mkdir -p "$dir/pitr"
give_to_postgres "$dir/pitr"
"$bin/tidemark" restore --instance demo-pg --host "$agent_name" --pgdata "$dir/pitr/data" \
    --to "$target" --port 5433 --start --action promote
restored=$(psql -X -A -t -p 5433 -d shop -c "SELECT count(*) || ' events, ' || count(*) FILTER (WHERE note = 'after the target') || ' after the target' FROM events" \
    -c "SELECT count(*) FROM customers WHERE name = 'changed after the target'")
echo "  restored at $target: $(echo "$restored" | head -1), $(echo "$restored" | tail -1) customers changed after it"
[ "$restored" = "1000 events, 0 after the target
0" ] || die "the point-in-time restore does not hold exactly the data before $target"
PGPORT=5433 fingerprint shop >"$dir/shop-pitr.md5"
diff -q "$dir/shop-pitr.md5" "$dir/shop.md5" >/dev/null \
    || die "customers and orders restored at $target differ from the original before the target"
echo "  restored data matches the state at the target"
echo

# --- a drill to the same moment, on the sandbox -----------------------------------------------
say "tidemark drill run --instance demo-pg --target '$target' --wait"
"$bin/tidemark" drill run --instance demo-pg --target "$target" --wait \
    || die "the drill did not pass; see tidemark drill history and $dir/sandbox.log"
echo
"$bin/tidemark" status
echo
echo "metrics ($metrics_url):"
metrics_host=${metrics_url#http://}
metrics_host=${metrics_host%/metrics}
exec 3<>"/dev/tcp/${metrics_host%:*}/${metrics_host##*:}"
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
grep '^tidemark_' <&3 | sed 's/^/  /'
exec 3<&-
if [ $keep -eq 1 ]; then
    cat >"$dir/env" <<ENV
export TIDEMARK_CONFIG=$dir/tidemark.toml
export TIDEMARK_AGENT=$agent_name
export TIDEMARK_SANDBOX=$sandbox_name
export TIDEMARK_METRICS_URL=$metrics_url
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
    echo "  tidemark status; tidemark pitr-window --instance demo-pg"
    echo "  tidemark drill run --instance demo-pg --target 2m --sandbox \$TIDEMARK_SANDBOX --wait"
    echo "  tidemark drill history; tidemark schedule"
    echo "  psql -p 5433 -d shop    # the point-in-time restore, promoted"
    echo "  curl \$TIDEMARK_METRICS_URL"
    echo "Stop it with: $0 --stop --dir $dir"
else
    stop_fleet
    say "demo passed; fleet stopped (logs in $dir)"
fi
