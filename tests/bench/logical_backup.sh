#!/usr/bin/env bash
# Benchmark: a logical backup of a pgbench database through Tidemark versus plain
# `pg_dump -Fc > file`. Prints a table of wall times, the ratio, and bytes stored.
#
#   tests/bench/logical_backup.sh [--scale N] [--dataset pgbench|text]
#
# --dataset pgbench (default): `pgbench -i -s N` (scale 50 is about 750 MB of tables, mostly
#   blank-padded rows that gzip compresses almost for free).
# --dataset text: N x 100,000 rows of hex text, which gzip has to work for (scale 50 is
#   about 550 MB).
#
# Tidemark dumps with -Z0 and compresses with zstd after chunking; the baseline uses
# pg_dump's default gzip compression, as a shell script would. Release build; run it on an
# otherwise idle machine and read the numbers as indications, not as a test.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

scale=50
dataset=pgbench
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --dataset) dataset=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

need_packages postgresql-15 postgresql-client-15
(cd "$repo" && cargo build --release --workspace --bins --locked -q)
bin=$repo/target/release

work=$(mktemp -d /tmp/tidemark-bench.XXXXXX)
chmod 755 "$work"
pids=()
finish() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    pg_stop "$work/pg" || true
    rm -rf "$work"
}
trap finish EXIT
[ -n "${TIDEMARK_BENCH_KEEP:-}" ] && trap - EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

pg_init "$work/pg"
export PGHOST=$work/pg PGUSER=postgres PGPORT=5432
psql -X -q -c "CREATE DATABASE bench" postgres
case $dataset in
    pgbench)
        say "pgbench -i -s $scale"
        "$PG_BIN/pgbench" -q -i -s "$scale" bench >/dev/null 2>&1 ;;
    text)
        say "text dataset, $scale x 100000 rows"
        psql -X -q -d bench -c "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || ' ' || md5((g * 3)::text) || ' ' || md5((g * 7)::text) AS body, now() - g * interval '1 second' AS at FROM generate_series(1, $scale * 100000) g" ;;
    *) die "unknown dataset $dataset (pgbench or text)" ;;
esac
db_size=$(psql -X -A -t -c "SELECT pg_database_size('bench')" postgres)
sync

say "baseline: pg_dump -Fc bench > file"
t0=$(now); "$PG_BIN/pg_dump" -Fc -d bench -f "$work/bench.dump"; t1=$(now)
t_native=$(elapsed "$t0" "$t1"); native_bytes=$(stat -c %s "$work/bench.dump")
rm -f "$work/bench.dump"

say "reference: pg_dump -Fc -Z0 bench > /dev/null"
t0=$(now); "$PG_BIN/pg_dump" -Fc -Z0 -d bench >/dev/null; t1=$(now)
t_raw=$(elapsed "$t0" "$t1")

say "tidemark fleet"
"$bin/tidemark" pki init --dir "$work/pki" >/dev/null
"$bin/tidemark" pki issue --dir "$work/pki" --name controller:localhost >/dev/null
"$bin/tidemark" pki issue --dir "$work/pki" --name agent:bench >/dev/null
"$bin/tidemark" pki issue --dir "$work/pki" --name admin:bench >/dev/null
tls() { printf '[tls]\nca = "%s/pki/ca.crt"\ncert = "%s/pki/%s.crt"\nkey = "%s/pki/%s.key"\n' "$work" "$work" "$1" "$work" "$1"; }
{ printf 'version = 1\nlisten = "127.0.0.1:0"\ndata-dir = "%s/controller"\n' "$work"; tls controller-localhost; } >"$work/controller.toml"
"$bin/tidemark-controller" --config "$work/controller.toml" >"$work/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/controller/controller.addr" ] && break; sleep 0.1; done
port=$(sed 's/.*://' "$work/controller/controller.addr")
{ printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls admin-bench; } >"$work/cli.toml"
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\n' "$port"; tls agent-bench
    printf '[[instance]]\nname = "bench-pg"\nengine = "postgresql"\nhost = "%s/pg"\nbin-dir = "%s"\ndatabases = ["bench"]\n' "$work" "$PG_BIN"
} >"$work/agent.toml"
"$bin/tidemark-agent" --config "$work/agent.toml" >"$work/agent.log" 2>&1 &
agent_pid=$!
pids+=($agent_pid)
export TIDEMARK_CONFIG=$work/cli.toml
for _ in $(seq 100); do "$bin/tidemark" agents --output json 2>/dev/null | grep -q '"connected": true' && break; sleep 0.2; done

field() { sed -n "s/^  \"$1\": \([0-9]*\),\$/\1/p" "$2"; }
run_backup() {
    local out=$1 t0 t1
    t0=$(now)
    "$bin/tidemark" backup --instance bench-pg --wait --output json >"$out"
    t1=$(now)
    elapsed "$t0" "$t1"
}
say "tidemark backup (first)"
t_tm1=$(run_backup "$work/b1.json")
say "tidemark backup (unchanged data)"
t_tm2=$(run_backup "$work/b2.json")
raw=$(field raw_bytes "$work/b1.json")
new1=$(field new_bytes "$work/b1.json")
new2=$(field new_bytes "$work/b2.json")
agent_rss=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
# utime + stime in clock ticks, fields 14 and 15 of /proc/PID/stat
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
agent_cpu=$(cpu_secs "$agent_pid")
controller_cpu=$(cpu_secs "${pids[0]}")
ctl_store=$(du -sb "$work/controller/store" | cut -f1)

mib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }
echo
printf '%s dataset, scale %s: database %s MiB, uncompressed dump %s MiB\n\n' "$dataset" "$scale" "$(mib "$db_size")" "$(mib "$raw")"
printf '%-40s %10s %14s %10s\n' "run" "seconds" "stored MiB" "vs native"
printf '%-40s %10.2f %14s %10s\n' "pg_dump -Fc > file (native, gzip)" "$t_native" "$(mib "$native_bytes")" "1.00x"
printf '%-40s %10.2f %14s %10s\n' "pg_dump -Fc -Z0 > /dev/null (reference)" "$t_raw" "-" "$(ratio "$t_raw" "$t_native")"
printf '%-40s %10.2f %14s %10s\n' "tidemark backup (first)" "$t_tm1" "$(mib "$new1")" "$(ratio "$t_tm1" "$t_native")"
printf '%-40s %10.2f %14s %10s\n' "tidemark backup (unchanged, dedup)" "$t_tm2" "$(mib "$new2")" "$(ratio "$t_tm2" "$t_native")"
echo
printf 'store on disk after both: %s MiB; agent peak RSS: %s MiB\n' "$(mib "$ctl_store")" "$(mib "$((agent_rss * 1024))")"
printf 'CPU over both backups: agent %s s, controller %s s (%s cores)\n' "$agent_cpu" "$controller_cpu" "$(nproc)"
