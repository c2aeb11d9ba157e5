#!/usr/bin/env bash
# Benchmark: rebuilding a lost catalog from the store alone. tidemark-loadgen archives about
# N WAL segments (1 MiB each, from simulated agents, one pack each) into an encrypted S3
# store (tidemark-test-s3 on loopback), with catalog snapshots off so that the rebuild reads
# every record and pack; then the controller is stopped, its catalog deleted, and
# `tidemark-controller rebuild-catalog` timed. Prints a table: segments archived, packs and
# records in the store, the rebuild's wall time and rate, and whether the rebuilt catalog
# counts the same segments. Release build.
#
#   tests/bench/rebuild_catalog.sh [--segments N] [--agents A]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

segments=10000
agents=50
while [ $# -gt 0 ]; do
    case $1 in
        --segments) segments=$2; shift 2 ;;
        --agents) agents=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

. "$repo/tests/bench/lib.sh"
store=$(bench_s3)
bench_controller "$(printf '%s\n[catalog]\nsnapshot-every = "off"\n[encryption]\nenabled = true\n' "$store")"
pid=$controller_pid
# Each simulated agent pushes a segment a second: run until N are archived.
seconds=$(((segments + agents - 1) / agents))
echo "archiving about $segments segments: $agents simulated agents, one segment a second each, ${seconds}s"
TIDEMARK_BIN_DIR=$bin "$bin/tidemark-loadgen" --url "https://localhost:$port" --pki "$work/pki" \
    --agents "$agents" --seconds "$seconds" --wal-every 1 --status-every 60 >"$work/loadgen.out"
# How many the catalog holds: the simulated agents' instances are sim0-pg, sim1-pg, ...
count_archived() {
    local n=0 i w
    for i in $(seq 0 $((agents - 1))); do
        # pitr-window exits 1 for an instance without a base backup; its JSON still counts.
        w=$({ "$bin/tidemark" pitr-window --instance "sim$i-pg" --output json || true; } | sed -n 's/^  "wal_files": \([0-9]*\),\{0,1\}$/\1/p')
        n=$((n + ${w:-0}))
    done
    echo "$n"
}
kill -0 "$pid" 2>/dev/null || die "the controller stopped during the load; see $work/controller.log: $(tail -5 "$work/controller.log")"
archived=$(count_archived)
[ "$archived" -gt 0 ] || die "nothing was archived; see $work/loadgen.out and $work/controller.log"

kill "$pid"
wait "$pid" 2>/dev/null || true
rm -f "$work/controller/controller.addr"
packs=$(find "$work/s3/tidemark/packs" -type f | wc -l)
records=$(find "$work/s3/tidemark/meta" -type f | wc -l)
rm -f "$work/controller/catalog.db" "$work/controller/catalog.db-wal" "$work/controller/catalog.db-shm"

t0=$(now)
"$bin/tidemark-controller" rebuild-catalog --config "$work/controller.toml" >"$work/rebuild.out"
t1=$(now)
took=$(elapsed "$t0" "$t1")
logs=$(sed -n 's/^  archived logs \([0-9]*\)$/\1/p' "$work/rebuild.out")
cat "$work/rebuild.out"
# The rebuilt catalog, served again on the same port, counts the same.
sed -i "s/^listen = \"127.0.0.1:0\"/listen = \"127.0.0.1:$port\"/" "$work/controller.toml"
"$bin/tidemark-controller" --config "$work/controller.toml" >>"$work/controller.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/controller/controller.addr" ] && break; sleep 0.1; done
rebuilt=$(count_archived)
echo
printf '| %-28s | %12s |\n' "what" "value"
printf '|%s|%s|\n' "------------------------------" "--------------"
printf '| %-28s | %12s |\n' "segments archived" "$archived"
printf '| %-28s | %12s |\n' "packs in the store" "$packs"
printf '| %-28s | %12s |\n' "records in the store" "$records"
printf '| %-28s | %12s |\n' "archived logs rebuilt" "$logs"
printf '| %-28s | %12s |\n' "pitr-window counts after" "$rebuilt"
printf '| %-28s | %12s |\n' "rebuild wall time (s)" "$took"
printf '| %-28s | %12s |\n' "segments per second" "$(awk -v n="$logs" -v t="$took" 'BEGIN { printf "%.0f", n / t }')"
[ "$rebuilt" = "$archived" ] || die "the rebuilt catalog has $rebuilt archived files, the lost one had $archived"
