#!/usr/bin/env bash
# Tidemark quickstart: on a fresh Debian 12 machine with Rust, build Tidemark and run a
# throwaway fleet — a database server with sample data that archives its log (PostgreSQL's
# WAL, MariaDB's binlogs) through Tidemark, a controller (SQLite catalog; chunks on its disk,
# or with --store s3 in a local S3-compatible server the script starts; with --encrypt sealed
# with AES-256-GCM), an agent and a drill sandbox. Then:
#   1. a logical backup, restored into a new database and compared;
#   2. a physical backup, more writes, and a point-in-time restore to the moment between
#      them into a new data directory, started and compared;
#   3. a drill: the sandbox restores the instance to that same moment from the controller
#      alone and checks it, and the drill report is printed;
#   4. with --encrypt: every stored object is checked to be sealed, the key-encryption key
#      is rotated, and `tidemark verify` reads every chunk back under the rewrapped keys.
# Exits 0 only when both restores match and the drill passes.
#
#   deploy/quickstart.sh [--engine postgresql|mariadb] [--store fs|s3] [--encrypt] [--dir DIR] [--keep-running] [--release]
#   deploy/quickstart.sh --stop --dir DIR
#
# The instance is demo-pg (PostgreSQL 15, the default) or demo-mariadb (MariaDB 10.11).
# With --keep-running the fleet stays up and DIR/env holds the shell exports to use it
# (TIDEMARK_CONFIG, TIDEMARK_AGENT, TIDEMARK_SANDBOX, TIDEMARK_METRICS_URL, PATH, and
# PGHOST/PGPORT/PGUSER or MYSQL_UNIX_PORT).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/deploy/lib/common.sh"

dir=${TMPDIR:-/tmp}/tidemark-demo
engine=
store=fs
encrypt=0
keep=0
stop=0
profile=debug
while [ $# -gt 0 ]; do
    case $1 in
        --dir) dir=$2; shift 2 ;;
        --engine) engine=$2; shift 2 ;;
        --keep-running) keep=1; shift ;;
        --stop) stop=1; shift ;;
        --release) profile=release; shift ;;
        --store) store=$2; shift 2 ;;
        --encrypt) encrypt=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
mkdir -p "$(dirname "$dir")"
dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")
marker="$dir/.tidemark-demo"
agent_name=demo-host
sandbox_name=demo-sandbox

# The engine: as asked, else the one this fleet directory was made with, else PostgreSQL.
if [ -z "$engine" ]; then
    engine=$(cat "$marker" 2>/dev/null || true)
    engine=${engine:-postgresql}
fi
case $engine in
    postgresql|mariadb) . "$repo/deploy/lib/demo-$engine.sh" ;;
    *) die "--engine must be postgresql or mariadb, not $engine" ;;
esac

stop_fleet() {
    local p pid
    # The databases first: a server shutting down archives its last WAL, which needs the
    # agent and the controller still up. Both engines: the directory may hold either.
    pg_stop "$dir/pitr" || die "PostgreSQL in $dir/pitr did not stop; stop it by hand before reusing $dir"
    pg_stop "$dir/pg" || die "PostgreSQL in $dir/pg did not stop; stop it by hand before reusing $dir"
    maria_stop "$dir/pitr/data" || die "MariaDB in $dir/pitr/data did not stop; stop it by hand before reusing $dir"
    maria_stop "$dir/maria" || die "MariaDB in $dir/maria did not stop; stop it by hand before reusing $dir"
    for p in sandbox agent controller s3; do
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
demo_prereqs

if [ -e "$dir" ]; then
    [ -f "$marker" ] || [ -z "$(ls -A "$dir")" ] || die "$dir exists and is not a quickstart fleet; pick another --dir"
    stop_fleet
    rm -rf "$dir"
fi
mkdir -m 755 "$dir"
check_owned
mkdir -p "$dir/run"
echo "$engine" >"$marker"
demo_check_dir

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

# --store s3: tidemark-test-s3 (an S3-compatible server keeping objects in DIR/s3) on
# loopback, and the controller's [store] table for it.
store_toml() {
    [ "$store" = s3 ] || return 0
    mkdir -p "$dir/s3/tidemark"
    printf '[default]\naws_access_key_id = demo\naws_secret_access_key = demo-secret\n' >"$dir/s3.credentials"
    chmod 600 "$dir/s3.credentials"
    printf '\n[store]\nkind = "s3"\nbucket = "tidemark"\nendpoint = "http://%s"\npath-style = true\ncredentials-file = "%s/s3.credentials"\n' \
        "$(cat "$dir/s3.addr")" "$dir"
}
case $store in
    fs) ;;
    s3)
        say "starting an S3-compatible server (tidemark-test-s3, objects in $dir/s3)"
        setsid "$bin/tidemark-test-s3" --root "$dir/s3" --access-key demo --secret-key demo-secret \
            --addr-file "$dir/s3.addr" >"$dir/s3.log" 2>&1 </dev/null &
        echo $! >"$dir/run/s3.pid"
        for _ in $(seq 100); do [ -s "$dir/s3.addr" ] && break; sleep 0.1; done
        [ -s "$dir/s3.addr" ] || die "the S3 server did not start; see $dir/s3.log"
        ;;
    *) die "--store must be fs or s3, not $store" ;;
esac
{
    printf 'version = 1\nlisten = "127.0.0.1:0"\nmetrics-listen = "127.0.0.1:0"\ndata-dir = "%s/controller"\n' "$dir"
    tls controller-localhost
    store_toml
    # The key-encryption key is created in DIR/controller/keys at the first start.
    [ $encrypt -eq 0 ] || printf '\n[encryption]\nenabled = true\n'
    demo_controller_toml
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
    demo_agent_toml
} >"$dir/agent.toml"
give_to_postgres "$dir/agent.toml" "$dir/pki/agent-$agent_name.crt" "$dir/pki/agent-$agent_name.key"
# The sandbox: the same agent binary with a sandbox certificate. Drills restore into its
# directory (emptied before and after each) and run the server on a socket there.
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"
    tls "sandbox-$sandbox_name"
    demo_sandbox_toml
} >"$dir/sandbox.toml"
# Its restored server runs wal-fetch as postgres, which reads this config and key.
give_to_postgres "$dir/sandbox.toml" "$dir/pki/sandbox-$sandbox_name.crt" "$dir/pki/sandbox-$sandbox_name.key"

# --- the database server -----------------------------------------------------------------
demo_start_server

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

demo_run
"$bin/tidemark" status
echo
if [ "$store" = s3 ]; then
    # Data objects: the store's identity object (tidemark-store, a random id) and its
    # records (meta/: what it says about its backups) are not.
    objects=$(find "$dir/s3/tidemark" -type f ! -name tidemark-store ! -path '*/meta/*' | wc -l)
    [ "$objects" -gt 0 ] || die "the S3 bucket holds no objects; the chunks went elsewhere"
    [ ! -d "$dir/controller/store" ] || die "chunks were written to $dir/controller/store despite --store s3"
    echo "the chunks are in S3: $objects objects in bucket tidemark ($dir/s3/tidemark)"
    echo
fi
if [ $encrypt -eq 1 ]; then
    objects_dir=$dir/controller/store
    [ "$store" = fs ] || objects_dir=$dir/s3/tidemark
    plain=0
    total=0
    # Sealed: a pack starts with a sealed chunk, or, holding only a description, with its
    # sealed index (TMX1 either way); a record starts with TMR1 and kind 1. Key records are
    # kind 0: they hold data keys wrapped by the key-encryption key, which never leaves the
    # controller.
    while IFS= read -r -d '' f; do
        total=$((total + 1))
        magic=$(head -c4 "$f")
        kind=$(head -c5 "$f" | tail -c1 | od -An -tu1 | tr -d ' ')
        case "$magic:$kind:$f" in
            TMX1:*) ;;
            TMR1:1:*) ;;
            TMR1:0:*/meta/keys/*) ;;
            *) plain=$((plain + 1)); echo "not sealed: $f" >&2 ;;
        esac
    done < <(find "$objects_dir" -type f ! -name tidemark-store -print0)
    [ "$total" -gt 0 ] && [ "$plain" -eq 0 ] || die "$plain of $total stored objects are not sealed"
    echo "all $total stored objects are sealed (AES-256-GCM); the keys:"
    "$bin/tidemark" keys
    say "rotating the key-encryption key, then reading every chunk back"
    "$bin/tidemark" keys rotate
    "$bin/tidemark" verify
    echo
fi
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
ENV
    demo_env >>"$dir/env"
    echo
    say "the fleet is running. Try:"
    echo "  . $dir/env"
    echo "  tidemark agents"
    demo_hints
    echo "  curl \$TIDEMARK_METRICS_URL"
    echo "Stop it with: $0 --stop --dir $dir"
else
    stop_fleet
    say "demo passed; fleet stopped (logs in $dir)"
fi
