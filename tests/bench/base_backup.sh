#!/usr/bin/env bash
# Benchmark: physical backups, restores and WAL archiving through Tidemark versus native
# pg_basebackup and pgBackRest, on one pgbench database in one run. Prints a table of
# times, bytes and ratios.
#
#   tests/bench/base_backup.sh [--scale N] [--dataset pgbench|text]
#
# --dataset pgbench (default): `pgbench -i -s N` (scale 80 is a ~1.3 GB data directory that
#   compresses about 20x, far more than real data).
# --dataset text: the same pgbench tables plus N x 100,000 rows of hex text (about 2:1).
#
# Measured, in order:
#   raw pg_basebackup -Ft -X none to /dev/null; pg_basebackup server-zstd:3 (2 workers) to
#   disk; a pgBackRest full (zst:3, process-max=2, start-fast); a Tidemark base backup;
#   after 1% of pgbench_accounts rows change in one range, a second backup of each (bytes
#   added); the same after 1% change scattered (aid % 100 = 7); a restore of each tool's
#   latest backup into a new directory (pgBackRest process-max=2; Tidemark with and without
#   pg_verifybackup); one 16 MiB WAL segment pushed durably (median of 5) by
#   `tidemark-agent wal-push` and `pgbackrest archive-push`; the agent's peak memory.
#
# Release build. Run it on an otherwise idle machine; the numbers are indications.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

scale=80
dataset=pgbench
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --dataset) dataset=$2; shift 2 ;;
        *) die "unknown option $1" ;;
    esac
done
case $dataset in pgbench|text) ;; *) die "unknown dataset $dataset (pgbench or text)" ;; esac

need_packages postgresql-15 postgresql-client-15 pgbackrest
. "$repo/tests/bench/lib.sh"

# --- fleet: controller first, so the cluster can archive through the agent from the start --
bench_controller
pg_init "$work/pg" "$(archiving_conf)
max_wal_size = 4GB
shared_buffers = 256MB"
export PGHOST=$work/pg PGUSER=postgres PGPORT=5432
bench_agent

say "pgbench -i -s $scale"
"$PG_BIN/pgbench" -q -i -s "$scale" postgres >/dev/null 2>&1
if [ $dataset = text ]; then
    say "adding $scale x 100000 rows of hex text"
    psql -X -q -c "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) || md5((g * 11)::text) AS body FROM generate_series(1, $scale * 100000) g"
fi
psql -X -q -c "CHECKPOINT"
data_size=$(du -sb "$work/pg/data" | cut -f1)
archive_now
sync

# --- pgBackRest stanza (its repository is its own; it does not archive this cluster) ------
mkdir -p "$work/pgbr/repo" "$work/pgbr/log" "$work/pgbr/lock"
cat >"$work/pgbr/pgbackrest.conf" <<CONF
[global]
repo1-path=$work/pgbr/repo
log-path=$work/pgbr/log
lock-path=$work/pgbr/lock
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-check=n
log-level-console=warn

[bench]
pg1-path=$work/pg/data
pg1-socket-path=$work/pg
pg1-user=postgres
CONF
give_to_postgres -R "$work/pgbr"
pgbr() { as_pg pgbackrest --config="$work/pgbr/pgbackrest.conf" --stanza=bench "$@"; }
pgbr stanza-create >/dev/null
repo_size() { du -sb "$work/pgbr/repo/backup" | cut -f1; }

time_cmd() { local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now); elapsed "$t0" "$t1"; }
tm_backup() {
    local out=$1 t0 t1
    t0=$(now)
    "$bin/tidemark" backup --instance bench-pg --kind base --wait --output json >"$out"
    t1=$(now)
    grep -q '"status": "complete"' "$out" || die "tidemark base backup failed: $(cat "$out")"
    elapsed "$t0" "$t1"
}

say "raw pg_basebackup -Ft -X none -D - > /dev/null"
t_raw=$(time_cmd sh -c "'$PG_BIN/pg_basebackup' -Ft -X none -c fast -D - > /dev/null")
say "pg_basebackup --compress=server-zstd:level=3,workers=2 to disk"
t_sz=$(time_cmd "$PG_BIN/pg_basebackup" -Ft -X none -c fast --compress=server-zstd:level=3,workers=2 -D "$work/sz")
sz_bytes=$(du -sb "$work/sz" | cut -f1); rm -rf "$work/sz"
say "pgbackrest full backup"
t_br_full=$(time_cmd pgbr --type=full backup)
br_full=$(repo_size)
say "tidemark base backup"
a0=$(cpu_secs "$agent_pid"); c0=$(cpu_secs "$controller_pid")
t_tm_full=$(tm_backup "$work/tm1.json")
a1=$(cpu_secs "$agent_pid"); c1=$(cpu_secs "$controller_pid")
rss_after_backup=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
tm_full=$(field new_bytes "$work/tm1.json")

rows=$((scale * 100000))
say "1% of rows updated in one range"
psql -X -q -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= $((rows / 100))"
t_br_c=$(time_cmd pgbr --type=incr backup)
br_c=$(( $(repo_size) - br_full ))
t_tm_c=$(tm_backup "$work/tm2.json")
tm_c=$(field new_bytes "$work/tm2.json")

say "1% of rows updated, scattered (aid % 100 = 7)"
before=$(repo_size)
psql -X -q -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 7"
t_br_s=$(time_cmd pgbr --type=incr backup)
br_s=$(( $(repo_size) - before ))
t_tm_s=$(tm_backup "$work/tm3.json")
tm_s=$(field new_bytes "$work/tm3.json")

say "restores into new directories"
mkdir -p "$work/r"; give_to_postgres "$work/r"
as_pg mkdir -m 700 "$work/r/br"
t_br_restore=$(time_cmd pgbr --pg1-path="$work/r/br" --type=immediate --target-action=promote restore)
tm_restore() {
    local dir=$1; shift
    local t0 t1
    t0=$(now)
    "$bin/tidemark" restore --instance bench-pg --host bench --pgdata "$dir" --immediate "$@" >/dev/null
    t1=$(now)
    elapsed "$t0" "$t1"
}
t_tm_restore=$(tm_restore "$work/r/tm")
t_tm_restore_nv=$(tm_restore "$work/r/tm-nv" --skip-verify)

say "one durable push of a 16 MiB WAL segment (median of 5)"
mkdir -p "$work/walsample"
i=0
for f in $(ls "$work/pg/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | head -5); do
    i=$((i + 1))
    cp "$work/pg/data/pg_wal/$f" "$work/walsample/tm-$i"
done
[ $i -eq 5 ] || die "need 5 WAL segments in pg_wal, found $i"
give_to_postgres -R "$work/walsample"
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
push_tm() {
    local i name
    for i in 1 2 3 4 5; do
        name=$(printf '0000000100000010%08X' "$i")
        cp "$work/walsample/tm-$i" "$work/walsample/$name"
        (cd "$work/pg/data" && time_cmd "$work/bin/tidemark-agent" --config "$work/agent.toml" wal-push "$work/walsample/$name")
        echo
    done | median
}
push_br() {
    local i name
    for i in 1 2 3 4 5; do
        name=$(printf '0000000100000020%08X' "$i")
        cp "$work/walsample/tm-$i" "$work/walsample/$name"
        chown postgres "$work/walsample/$name" 2>/dev/null || true
        time_cmd pgbr archive-push "$work/walsample/$name"
        echo
    done | median
}
t_push_tm=$(push_tm)
t_push_br=$(push_br)
agent_rss=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f%%", 100 * a / b }'; }
echo
printf '%s dataset, scale %s: data directory %s MiB, %s cores\n\n' "$dataset" "$scale" "$(mib "$data_size")" "$(nproc)"
printf '%-52s %9s %12s %12s\n' "measurement" "seconds" "MiB" "ratio"
row() { printf '%-52s %9s %12s %12s\n' "$1" "$2" "$3" "$4"; }
row "raw pg_basebackup -Ft to /dev/null" "$t_raw" "-" "-"
row "pg_basebackup server-zstd:3 to disk" "$t_sz" "$(mib "$sz_bytes")" "-"
row "pgBackRest full (zst:3, process-max=2)" "$t_br_full" "$(mib "$br_full")" "1.00x"
row "tidemark base backup (full)" "$t_tm_full" "$(mib "$tm_full")" "$(ratio "$t_tm_full" "$t_br_full") of pgBR"
row "after 1% contiguous: pgBackRest incr" "$t_br_c" "$(mib "$br_c")" "$(pct "$br_c" "$br_full") of full"
row "after 1% contiguous: tidemark base (new bytes)" "$t_tm_c" "$(mib "$tm_c")" "$(pct "$tm_c" "$tm_full") of full"
row "after 1% scattered: pgBackRest incr" "$t_br_s" "$(mib "$br_s")" "$(pct "$br_s" "$br_full") of full"
row "after 1% scattered: tidemark base (new bytes)" "$t_tm_s" "$(mib "$tm_s")" "$(pct "$tm_s" "$tm_full") of full"
row "restore: pgBackRest (process-max=2)" "$t_br_restore" "-" "1.00x"
row "restore: tidemark (with pg_verifybackup)" "$t_tm_restore" "-" "$(ratio "$t_tm_restore" "$t_br_restore") of pgBR"
row "restore: tidemark (--skip-verify)" "$t_tm_restore_nv" "-" "$(ratio "$t_tm_restore_nv" "$t_br_restore") of pgBR"
row "wal-push of 16 MiB, median of 5: pgbackrest" "$t_push_br" "-" "1.00x"
row "wal-push of 16 MiB, median of 5: tidemark" "$t_push_tm" "-" "$(ratio "$t_push_tm" "$t_push_br") of pgBR"
echo
printf 'agent peak RSS: %s MiB after the first base backup, %s MiB over all of it\n' \
    "$(mib "$((rss_after_backup * 1024))")" "$(mib "$((agent_rss * 1024))")"
printf 'CPU during the full tidemark backup: agent %s s, controller %s s\n' "$(elapsed "$a0" "$a1")" "$(elapsed "$c0" "$c1")"
