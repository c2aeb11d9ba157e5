#!/usr/bin/env bash
# Benchmark: the chunk store on the controller's filesystem versus S3 (tidemark-test-s3 on
# loopback), each with encryption at rest off and on: base backup and restore wall time and
# throughput, the object-store requests per GiB backed up and restored, and the PUTs per
# archived WAL segment under pgbench load (with the chunks per segment, which is what one
# object per chunk would have cost). Prints a table.
#
#   tests/bench/store.sh [--scale N] [--dataset pgbench|text]
#
# Each store gets a fresh fleet and a fresh pgbench database of the same scale (default 20).
# --dataset text adds N x 100,000 rows of hex text, which compresses about 2:1 (pgbench's
# own rows compress about 20:1). Release build; read the numbers as indications.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

scale=20
dataset=pgbench
store=
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --dataset) dataset=$2; shift 2 ;;
        --store) store=$2; shift 2 ;;   # internal: measure one store, print a RESULT line
        *) die "unknown option $1" ;;
    esac
done

if [ -z "$store" ]; then
    results=()
    for s in fs fs+enc s3 s3+enc; do
        say "store: $s"
        line=$("$0" --scale "$scale" --dataset "$dataset" --store "$s" | grep '^RESULT ') \
            || die "the $s run failed"
        results+=("${line#RESULT }")
    done
    echo
    printf '%s dataset, scale %s; requests per GiB of raw data\n\n' "$dataset" "$scale"
    printf '%-7s %9s %12s %10s %13s %8s %9s %8s %9s %11s %8s %12s\n' store "backup s" "backup MiB/s" "restore s" "restore MiB/s" "PUT/GiB" "HEAD/GiB" "GET/GiB" "LIST/GiB" "stored MiB" "PUT/WAL" "chunks/WAL"
    for r in "${results[@]}"; do
        # shellcheck disable=SC2086
        printf '%-7s %9s %12s %10s %13s %8s %9s %8s %9s %11s %8s %12s\n' $r
    done
    exit 0
fi

need_packages postgresql-15 postgresql-client-15
. "$repo/tests/bench/lib.sh"

extra=
[ "${store%+enc}" = s3 ] && extra=$(bench_s3)
[ "${store#*+}" = enc ] && extra=$(printf '%s\n[encryption]\nenabled = true\n' "$extra")
bench_controller "$extra"
pg_init "$work/pg" "$(archiving_conf)
max_wal_size = 4GB
shared_buffers = 256MB"
export PGHOST=$work/pg PGUSER=postgres PGPORT=5432
bench_agent
"$PG_BIN/pgbench" -q -i -s "$scale" postgres >/dev/null 2>&1
if [ "$dataset" = text ]; then
    psql -X -q -c "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) || md5((g * 11)::text) AS body FROM generate_series(1, $scale * 100000) g"
fi
psql -X -q -c "CHECKPOINT"
archive_now

put0=$(metric 'tidemark_store_requests_total{op="put"}'); head0=$(metric 'tidemark_store_requests_total{op="head"}'); list0=$(metric 'tidemark_store_requests_total{op="list"}')
t0=$(now)
"$bin/tidemark" backup --instance bench-pg --kind base --wait --output json >"$work/base.json"
t1=$(now)
grep -q '"status": "complete"' "$work/base.json" || die "the base backup failed: $(cat "$work/base.json")"
put1=$(metric 'tidemark_store_requests_total{op="put"}'); head1=$(metric 'tidemark_store_requests_total{op="head"}'); list1=$(metric 'tidemark_store_requests_total{op="list"}')
raw=$(field raw_bytes "$work/base.json")
stored=$(field new_bytes "$work/base.json")
t_backup=$(elapsed "$t0" "$t1")

get0=$(metric 'tidemark_store_requests_total{op="get"}')
mkdir -p "$work/restore"
give_to_postgres "$work/restore"
t0=$(now)
"$bin/tidemark" restore --instance bench-pg --host bench --pgdata "$work/restore/data" --immediate >/dev/null
t1=$(now)
get1=$(metric 'tidemark_store_requests_total{op="get"}')
t_restore=$(elapsed "$t0" "$t1")

# WAL under load: PUTs per archived segment, against the new chunks those segments brought
# (one PUT each with an object per chunk). The fs store counts no requests: its column is 0.
archived() { psql -X -A -t -d postgres -c "SELECT archived_count FROM pg_stat_archiver"; }
wal_chunks() {
    python3 - "$work/controller/catalog.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(db.execute("SELECT COUNT(*) FROM chunks WHERE pack IN (SELECT c.pack FROM wal_chunks w JOIN chunks c ON c.id = w.chunk_id)").fetchone()[0])
PY
}
a0=$(archived); w0=$(metric 'tidemark_store_requests_total{op="put"}'); c0=$(wal_chunks)
"$PG_BIN/pgbench" -n -T 10 -c 2 postgres >/dev/null 2>&1
archive_now
a1=$(archived); w1=$(metric 'tidemark_store_requests_total{op="put"}'); c1=$(wal_chunks)
per_seg() { awk -v n="$1" -v s="$((a1 - a0))" 'BEGIN { printf "%.1f", n / s }'; }

gib() { awk -v n="$1" -v b="$raw" 'BEGIN { printf "%.0f", n / (b / 1073741824) }'; }
rate() { awk -v b="$raw" -v t="$1" 'BEGIN { printf "%.0f", b / 1048576 / t }'; }
echo "RESULT $store $t_backup $(rate "$t_backup") $t_restore $(rate "$t_restore") $(gib $((put1 - put0))) $(gib $((head1 - head0))) $(gib $((get1 - get0))) $(gib $((list1 - list0))) $(mib "$stored") $(per_seg $((w1 - w0))) $(per_seg $((c1 - c0)))"
