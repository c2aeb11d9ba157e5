#!/usr/bin/env bash
# Benchmark: one controller under a simulated fleet. tidemark-loadgen runs N agents (each
# its own mTLS connection and agent:simN certificate): each registers a PostgreSQL instance,
# holds its job stream, reports status every 15 s, and pushes a 1 MiB WAL segment and a
# sample every 60 s. Prints push-ack and status latency percentiles, and the controller's
# peak RSS and CPU seconds over the run. Release build; loadgen and controller share the
# machine, so read the numbers as indications.
#
#   tests/bench/scale.sh [--agents N] [--seconds S]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

agents=1000
seconds=120
while [ $# -gt 0 ]; do
    case $1 in
        --agents) agents=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done

. "$repo/tests/bench/lib.sh"
# Every agent holds a connection: the controller needs a descriptor per agent, and more.
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((agents * 2 + 100)) ] ||
    ulimit -n "$(ulimit -Hn)" ||
    die "open files limit $(ulimit -n) is too low for $agents agents (raise ulimit -n)"
bench_controller ""
pid=$controller_pid
cpu0=$(cpu_secs "$pid")
TIDEMARK_BIN_DIR=$bin "$bin/tidemark-loadgen" --url "https://localhost:$port" --pki "$work/pki" \
    --agents "$agents" --seconds "$seconds" | tee "$work/loadgen.out"
cpu1=$(cpu_secs "$pid")
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
echo
printf 'controller: RSS %s MiB at the end, peak %s MiB; CPU %s s (user+system) over the whole run, connects included\n' \
    "$((rss / 1024))" "$((hwm / 1024))" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.1f", b - a }')"
