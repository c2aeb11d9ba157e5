#!/usr/bin/env bash
# Benchmark: one controller under a simulated fleet. tidemark-loadgen runs N agents (each
# its own mTLS connection and agent:simN certificate): each registers a PostgreSQL instance,
# holds its job stream, reports status every 15 s, and pushes a 1 MiB WAL segment and a
# sample every 60 s. Prints push-ack and status latency percentiles, and the controller's
# peak RSS and CPU seconds over the run. Release build; loadgen and controller share the
# machine, so read the numbers as indications.
#
# --catalog postgres puts the catalog in a throwaway PostgreSQL cluster (fsync on, as in
# production) instead of SQLite.
#
#   tests/bench/scale.sh [--agents N] [--seconds S] [--catalog sqlite|postgres]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

agents=1000
seconds=120
catalog=sqlite
while [ $# -gt 0 ]; do
    case $1 in
        --agents) agents=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --catalog) catalog=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

. "$repo/tests/bench/lib.sh"
# Every agent holds a connection: the controller needs a descriptor per agent, and more.
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((agents * 2 + 100)) ] ||
    ulimit -n "$(ulimit -Hn)" ||
    die "open files limit $(ulimit -n) is too low for $agents agents (raise ulimit -n)"
case $catalog in
    sqlite) bench_controller "" ;;
    postgres)
        pg_init "$work/catalog" "max_connections = 50"
        bench_controller "$(printf '[catalog]\nurl = "postgres://postgres@localhost/postgres?host=%s"\n' "$work/catalog")"
        ;;
    *) die "--catalog is sqlite or postgres, not $catalog" ;;
esac
echo "catalog: $catalog"
pid=$controller_pid
# The catalog server's CPU, when it is PostgreSQL: the postmaster, its live backends, and
# the children it has reaped.
catalog_cpu() {
    [ "$catalog" = postgres ] || { echo 0; return; }
    local pm total
    pm=$(head -1 "$work/catalog/data/postmaster.pid")
    total=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15 + $16 + $17) / hz }' "/proc/$pm/stat")
    for c in $(pgrep -P "$pm"); do
        total=$(awk -v a="$total" -v b="$(cpu_secs "$c")" 'BEGIN { printf "%.2f", a + b }')
    done
    echo "$total"
}
cpu0=$(cpu_secs "$pid")
pgcpu0=$(catalog_cpu)
TIDEMARK_BIN_DIR=$bin "$bin/tidemark-loadgen" --url "https://localhost:$port" --pki "$work/pki" \
    --agents "$agents" --seconds "$seconds" | tee "$work/loadgen.out"
cpu1=$(cpu_secs "$pid")
pgcpu1=$(catalog_cpu)
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
echo
printf 'controller: RSS %s MiB at the end, peak %s MiB; CPU %s s (user+system) over the whole run, connects included\n' \
    "$((rss / 1024))" "$((hwm / 1024))" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }')"
if [ "$catalog" = postgres ]; then
    printf 'catalog server (PostgreSQL): CPU %s s over the run\n' \
        "$(awk -v a="$pgcpu0" -v b="$pgcpu1" 'BEGIN { printf "%.1f", b - a }')"
fi
