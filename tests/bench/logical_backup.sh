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
. "$repo/tests/bench/lib.sh"

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
bench_controller "" 'databases = ["bench"]'
bench_agent

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
agent_cpu=$(cpu_secs "$agent_pid")
controller_cpu=$(cpu_secs "$controller_pid")
ctl_store=$(du -sb "$work/controller/store" | cut -f1)

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
