# Shared by the benchmarks in tests/bench. Source it after deploy/lib/common.sh; do not run
# it. It builds the release binaries, makes a work directory (removed on exit unless
# TIDEMARK_BENCH_KEEP is set) and starts a fleet on loopback: a controller, agent `bench`
# with instance bench-pg (a cluster in $work/pg), and optionally a drill sandbox.
# TIDEMARK_BENCH_WRAP and TIDEMARK_BENCH_WRAP_AGENT, when set, prefix the controller's and
# the agent daemon's command (a profiler: `perf record -g -o FILE --`).

(cd "$repo" && cargo build --release --workspace --bins --locked -q)
bin=$repo/target/release

work=$(mktemp -d /tmp/tidemark-bench.XXXXXX)
chmod 755 "$work"
# PostgreSQL (as postgres) runs the agent as archive_command and restore_command.
mkdir -p "$work/bin"
cp "$bin/tidemark-agent" "$work/bin/"
pids=()
finish() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # bench_s3 runs in a command substitution, so its server's pid comes back in a file.
    [ ! -f "$work/s3.pid" ] || kill "$(cat "$work/s3.pid")" 2>/dev/null || true
    pg_stop "$work/pg" || true
    pg_stop "$work/catalog" || true
    rm -rf "$work"
}
trap finish EXIT
[ -n "${TIDEMARK_BENCH_KEEP:-}" ] && trap - EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# utime + stime in clock ticks, fields 14 and 15 of /proc/PID/stat
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
tls() { printf '[tls]\nca = "%s/pki/ca.crt"\ncert = "%s/pki/%s.crt"\nkey = "%s/pki/%s.key"\n' "$work" "$work" "$1" "$work" "$1"; }
# A number field of tidemark's pretty JSON: field NAME FILE.
field() { sed -n "s/^  \"$1\": \([0-9]*\),\$/\1/p" "$2"; }

# bench_controller [EXTRA]: the CA, certificates, and a controller with EXTRA appended to
# its config; writes the agent's config (instance bench-pg at $work/pg, INSTANCE_EXTRA
# lines added) and the CLI's. Sets $port and exports TIDEMARK_CONFIG.
bench_controller() {
    local extra=${1:-} instance_extra=${2:-}
    "$bin/tidemark" pki init --dir "$work/pki" >/dev/null
    "$bin/tidemark" pki issue --dir "$work/pki" --name controller:localhost >/dev/null
    "$bin/tidemark" pki issue --dir "$work/pki" --name agent:bench >/dev/null
    "$bin/tidemark" pki issue --dir "$work/pki" --name admin:bench >/dev/null
    { printf 'version = 1\nlisten = "127.0.0.1:0"\nmetrics-listen = "127.0.0.1:0"\ndata-dir = "%s/controller"\n' "$work"; tls controller-localhost; printf '%s\n' "$extra"; } >"$work/controller.toml"
    ${TIDEMARK_BENCH_WRAP:-} "$bin/tidemark-controller" --config "$work/controller.toml" >"$work/controller.log" 2>&1 &
    controller_pid=$!
    pids+=($controller_pid)
    for _ in $(seq 100); do [ -s "$work/controller/controller.addr" ] && break; sleep 0.1; done
    [ -s "$work/controller/controller.addr" ] || die "the controller did not start; see $work/controller.log"
    port=$(sed 's/.*://' "$work/controller/controller.addr")
    { printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls admin-bench; } >"$work/cli.toml"
    {
        printf 'version = 1\ncontroller = "https://localhost:%s"\nspool-dir = "%s"\n' "$port" "$work"; tls agent-bench
        printf '[[instance]]\nname = "bench-pg"\nengine = "postgresql"\nhost = "%s/pg"\nbin-dir = "%s"\n%s\n' "$work" "$PG_BIN" "$instance_extra"
    } >"$work/agent.toml"
    give_to_postgres "$work/agent.toml" "$work/pki/agent-bench.crt" "$work/pki/agent-bench.key"
    export TIDEMARK_CONFIG=$work/cli.toml
}

# metric NAME: one series' value from the controller's /metrics (0 when absent).
metric() {
    local addr
    addr=$(cat "$work/controller/metrics.addr")
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    awk -v n="$1" 'index($0, n " ") == 1 { v = $2 } END { print v + 0 }' <&3
    exec 3<&-
}

# bench_s3: start tidemark-test-s3 on loopback (objects under $work/s3) and print the
# controller's [store] table for it.
bench_s3() {
    mkdir -p "$work/s3/tidemark"
    "$bin/tidemark-test-s3" --root "$work/s3" --access-key bench --secret-key bench-secret \
        --addr-file "$work/s3.addr" >"$work/s3.log" 2>&1 &
    echo $! >"$work/s3.pid"
    for _ in $(seq 100); do [ -s "$work/s3.addr" ] && break; sleep 0.1; done
    [ -s "$work/s3.addr" ] || die "the S3 server did not start; see $work/s3.log"
    printf '[default]\naws_access_key_id = bench\naws_secret_access_key = bench-secret\n' >"$work/s3.credentials"
    chmod 600 "$work/s3.credentials"
    printf '[store]\nkind = "s3"\nbucket = "tidemark"\nendpoint = "http://%s"\npath-style = true\ncredentials-file = "%s/s3.credentials"\n' \
        "$(cat "$work/s3.addr")" "$work"
}

# The archive_command lines for a cluster archiving through agent bench.
archiving_conf() {
    printf "wal_level = replica\narchive_mode = on\narchive_command = '%s/bin/tidemark-agent --config %s/agent.toml wal-push %%p'\n" "$work" "$work"
}

# wait_connected N: until N agents or sandboxes are connected.
wait_connected() {
    for _ in $(seq 150); do
        [ "$("$bin/tidemark" agents --output json 2>/dev/null | grep -c '"connected": true')" -ge "$1" ] && return 0
        sleep 0.2
    done
    die "agents did not connect; see $work/*.log"
}

# bench_agent: start agent bench; sets $agent_pid.
bench_agent() {
    ${TIDEMARK_BENCH_WRAP_AGENT:-} "$work/bin/tidemark-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
    agent_pid=$!
    pids+=($agent_pid)
    wait_connected 1
}

# bench_sandbox: start sandbox bench-sb (drills restore into $work/sandbox); sets
# $sandbox_pid.
bench_sandbox() {
    "$bin/tidemark" pki issue --dir "$work/pki" --name sandbox:bench-sb >/dev/null
    {
        printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls sandbox-bench-sb
        printf '[sandbox]\ndir = "%s/sandbox"\nbin-dirs = ["%s"]\n' "$work" "$PG_BIN"
    } >"$work/sandbox.toml"
    give_to_postgres "$work/sandbox.toml" "$work/pki/sandbox-bench-sb.crt" "$work/pki/sandbox-bench-sb.key"
    "$work/bin/tidemark-agent" --config "$work/sandbox.toml" >"$work/sandbox.log" 2>&1 &
    sandbox_pid=$!
    pids+=($sandbox_pid)
    wait_connected 2
}

# archive_now: complete the current WAL segment and wait until it is archived.
archive_now() {
    local seg
    seg=$(psql -X -A -t -d postgres -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    psql -X -q -d postgres -c "SELECT pg_switch_wal()" >/dev/null
    for _ in $(seq 1500); do
        [ "$(psql -X -A -t -d postgres -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver")" = t ] && return 0
        sleep 0.2
    done
    die "WAL segment $seg was not archived; see $work/agent.log and $work/pg/server.log"
}
