#!/usr/bin/env bash
# Benchmark: the recovery time (RTO) of a drill of a pgbench database, split into restore
# (download, unpack, pg_verifybackup) and WAL replay (server start until paused at the
# target), with the WAL replayed and pg_amcheck's time after it. Prints a table.
#
#   tests/bench/drill.sh [--scale N] [--seconds S]
#
# pgbench -i -s N (default 50, a ~750 MB data directory), a Tidemark base backup, then
# S seconds (default 60) of pgbench -c 2 whose WAL the drill replays to a target one second
# before the load ended. Release build; run it on an otherwise idle machine and read the
# numbers as indications.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

scale=50
seconds=60
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

need_packages postgresql-15 postgresql-client-15
. "$repo/tests/bench/lib.sh"

bench_controller "[[instance]]
name = \"bench-pg\"
[[instance.check]]
name = \"accounts\"
sql = \"SELECT count(*) FROM pgbench_accounts\"
expect = \"equals:$((scale * 100000))\""
pg_init "$work/pg" "$(archiving_conf)
max_wal_size = 4GB
shared_buffers = 256MB"
export PGHOST=$work/pg PGUSER=postgres PGPORT=5432
bench_agent
bench_sandbox

say "pgbench -i -s $scale"
"$PG_BIN/pgbench" -q -i -s "$scale" postgres >/dev/null 2>&1
psql -X -q -c "CHECKPOINT"
data_size=$(du -sb "$work/pg/data" | cut -f1)

say "tidemark base backup"
"$bin/tidemark" backup --instance bench-pg --kind base --wait --output json >"$work/base.json"
grep -q '"status": "complete"' "$work/base.json" || die "the base backup failed: $(cat "$work/base.json")"
lsn0=$(psql -X -A -t -c "SELECT pg_current_wal_lsn()")

say "pgbench -c 2 -T $seconds (the WAL the drill replays)"
"$PG_BIN/pgbench" -c 2 -j 2 -T "$seconds" postgres >"$work/pgbench.log" 2>&1
sleep 1
target=$(date -u '+%Y-%m-%d %H:%M:%S.%6N')
sleep 1
psql -X -q -c "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now())"
wal_bytes=$(psql -X -A -t -c "SELECT pg_current_wal_lsn() - '$lsn0'::pg_lsn")
archive_now

say "tidemark drill run --instance bench-pg --target '$target' --wait"
t0=$(now)
"$bin/tidemark" drill run --instance bench-pg --target "$target" --wait --output json >"$work/drill.json" \
    || die "the drill failed: $(cat "$work/drill.json")"
t1=$(now)
wall=$(elapsed "$t0" "$t1")
num() { sed -n "s/^    \"$1\": \([0-9]*\),\{0,1\}\$/\1/p" "$work/drill.json"; }
restore_ms=$(num restore_ms); replay_ms=$(num replay_ms); rto_ms=$(num rto_ms)
bytes=$(num bytes_restored); segments=$(num wal_segments)
sec() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1000 }'; }

echo
printf 'pgbench scale %s: data directory %s MiB; %s MiB of WAL after the base backup (%s segments replayed)\n\n' \
    "$scale" "$(mib "$data_size")" "$(mib "$wal_bytes")" "$segments"
printf '%-44s %10s\n' "phase" "seconds"
printf '%-44s %10s\n' "restore (download, untar, pg_verifybackup)" "$(sec "$restore_ms")"
printf '%-44s %10s\n' "WAL replay (server start to paused at target)" "$(sec "$replay_ms")"
printf '%-44s %10s\n' "RTO (drill start to ready at the target)" "$(sec "$rto_ms")"
printf '%-44s %10s\n' "whole drill (with checks, pg_amcheck, wipe)" "$wall"
echo
printf 'restore rate %s MiB/s of %s MiB; replay rate %s MiB/s of WAL\n' \
    "$(awk -v b="$bytes" -v ms="$restore_ms" 'BEGIN { printf "%.0f", b / 1048576 / (ms / 1000) }')" "$(mib "$bytes")" \
    "$(awk -v b="$wal_bytes" -v ms="$replay_ms" 'BEGIN { printf "%.0f", b / 1048576 / (ms / 1000) }')"
printf 'sandbox agent peak RSS %s MiB\n' "$(awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$sandbox_pid/status")"
