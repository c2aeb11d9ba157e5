#!/usr/bin/env bash
# Benchmark: memory does not grow with backup size or with the number of uploads. Phase 1:
# PUSHES WAL segments (16 MiB of unique data each) pushed by as many `tidemark-agent
# wal-push` processes at once. Phase 2 and 3: a base backup whose one part is about SMALL
# GiB, then BIG GiB (a ballast file in the data directory, unique, compressible like base64
# text). Prints, per phase, the peak RSS of the controller, the agent daemon and the
# wal-push processes (each peak is reset between phases), against the goals of 64 MiB for
# the agent and 256 MiB for the controller. Release build. The first row is each process's
# RSS at rest, for scale.
#
#   tests/bench/memory.sh [--pushes 200] [--small 2] [--big 20]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

pushes=200
small=2
big=20
while [ $# -gt 0 ]; do
    case $1 in
        --pushes) pushes=$2; shift 2 ;;
        --small) small=$2; shift 2 ;;
        --big) big=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
need_packages postgresql-15 postgresql-client-15 openssl
. "$repo/tests/bench/lib.sh"

bench_controller
# A burst of pushes on two cores takes a while (each compresses 16 MiB); the agent waits
# for a busy controller as long as this, where PostgreSQL would retry the rest later.
sed -i '/^spool-dir/a wal-retry-for = "10m"' "$work/agent.toml"
pg_init "$work/pg" "$(archiving_conf)"
export PGHOST=$work/pg PGUSER=postgres PGPORT=5432
bench_agent

hwm() { awk '/^VmHWM/ { print int($2 / 1024) }' "/proc/$1/status"; }
rss() { awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }
rows=()
# row PHASE CONTROLLER AGENT WALPUSH (MiB, "-" when not measured): a line of the table, with
# whether the goals held.
row() {
    local verdict=within
    [ "$2" = - ] || [ "$2" -le 256 ] || verdict=OVER
    [ "$3" = - ] || [ "$3" -le 64 ] || verdict=OVER
    [ "$4" = - ] || [ "$4" -le 64 ] || verdict=OVER
    rows+=("$(printf '| %-44s | %10s | %10s | %10s | %8s |' "$1" "$2" "$3" "$4" "$verdict")")
}

row "at rest, once connected" "$(rss "$controller_pid")" "$(rss "$agent_pid")" -

# --- phase 1: concurrent WAL pushes ---------------------------------------------------------
say "$pushes concurrent wal-push processes, 16 MiB of unique data each"
mkdir -p "$work/segs"
for i in $(seq 1 "$pushes"); do
    name=$(printf '00000001000000%02X000000%02X' $((0x40 + i / 256)) $((i % 256)))
    # head stops the stream, so openssl dies of SIGPIPE: read it through a substitution.
    head -c $((16 << 20)) < <(openssl enc -aes-128-ctr -pass "pass:seg$i" -nosalt -pbkdf2 </dev/zero 2>/dev/null) >"$work/segs/$name"
done
chmod -R a+rX "$work/segs"
reset_hwm "$controller_pid"
t0=$(now)
pushers=()
for f in "$work/segs"/*; do
    (cd "$work/pg/data" && /usr/bin/time -f '%M' -o "$f.rss" \
        "$work/bin/tidemark-agent" --config "$work/agent.toml" wal-push "$f" 2>"$f.err" || echo fail >"$f.failed") &
    pushers+=($!)
done
wait "${pushers[@]}"
t1=$(now)
failed=$(find "$work/segs" -name '*.failed' | wc -l)
[ "$failed" -eq 0 ] || die "$failed pushes failed, e.g. $(cat "$(find "$work/segs" -name '*.err' -size +0 | head -1)")"
push_peak=$(cat "$work/segs"/*.rss | sort -n | tail -1)
row "$pushes WAL pushes at once ($(elapsed "$t0" "$t1") s)" "$(hwm "$controller_pid")" - "$((push_peak / 1024))"
rm -rf "$work/segs"

# --- phases 2 and 3: one large part ---------------------------------------------------------
base_of() {
    local gib=$1 out
    say "base backup with a $gib GiB ballast file"
    rm -f "$work/pg/data/ballast"
    head -c $((gib << 30)) < <(openssl enc -aes-128-ctr -pass "pass:ballast$gib" -nosalt -pbkdf2 </dev/zero 2>/dev/null | base64 -w 1000) >"$work/pg/data/ballast"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$work/pg/data/ballast"
    reset_hwm "$controller_pid"
    reset_hwm "$agent_pid"
    out=$work/base-$gib.json
    t0=$(now)
    "$bin/tidemark" backup --instance bench-pg --kind base --wait --output json >"$out"
    t1=$(now)
    grep -q '"status": "complete"' "$out" || die "the base backup failed: $(cat "$out")"
    row "base backup, one part of $gib GiB ($(elapsed "$t0" "$t1") s)" "$(hwm "$controller_pid")" "$(hwm "$agent_pid")" -
    rm -f "$work/pg/data/ballast"
    # Free the store for the next phase.
    "$bin/tidemark" backups delete "$(field id "$out")" --reason "memory benchmark" >/dev/null
    "$bin/tidemark" retention apply >/dev/null
}
base_of "$small"
base_of "$big"

echo
printf '| %-44s | %10s | %10s | %10s | %8s |\n' "phase" "controller" "agent" "wal-push" "goals"
printf '|%s|%s|%s|%s|%s|\n' "----------------------------------------------" "------------" "------------" "------------" "----------"
for r in "${rows[@]}"; do echo "$r"; done
echo "peak RSS in MiB; goals: agent and wal-push <= 64, controller <= 256"
