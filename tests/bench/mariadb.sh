#!/usr/bin/env bash
# MariaDB backups and restores through Tidemark against the same tools writing to local
# disk, on one machine (controller, agent and server on loopback; filesystem store).
#
#   tests/bench/mariadb.sh [--rows N] [--tables T]
#
# Loads T sysbench-like tables (id, k, c CHAR(120), pad CHAR(60); about 230 bytes a row)
# with N rows in all, then times:
#   physical backup   mariabackup --backup --stream=xbstream > file  vs  tidemark backup --kind base
#   logical backup    mariadb-dump ... > file                       vs  tidemark backup --kind logical
#                     (and mariadb-dump ... | zstd -3 > file, what backup scripts run)
#   physical restore  mbstream -x < file + mariabackup --prepare     vs  tidemark restore --datadir --immediate
#   logical restore   mariadb < file (one database)                  vs  tidemark restore --into-database
# and prints a table with the ratios (goal: backups at most 1.1x the native tool).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/deploy/lib/common.sh"

rows=2000000
tables=4
while [ $# -gt 0 ]; do
    case $1 in
        --rows) rows=$2; shift 2 ;;
        --tables) tables=$2; shift 2 ;;
        *) die "usage: $0 [--rows N] [--tables T]" ;;
    esac
done
need_packages mariadb-server mariadb-backup zstd
. "$repo/tests/bench/lib.sh"

m=$work/maria
u=root
mkdir -p "$m/data" "$m/binlog" "$m/tmp"
mariadb-install-db --no-defaults --user=$u --datadir="$m/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$m/install.log" 2>&1 || die "mariadb-install-db failed; see $m/install.log"
/usr/sbin/mariadbd --no-defaults --user=$u --datadir="$m/data" --tmpdir="$m/tmp" --socket="$m/mysqld.sock" \
    --pid-file="$m/mysqld.pid" --log-error="$m/server.log" --skip-networking --server-id=1 \
    --log-bin="$m/binlog/mysql-bin" --binlog-format=ROW --innodb-buffer-pool-size=1G \
    --innodb-log-file-size=512M --max-binlog-size=256M </dev/null >/dev/null 2>&1 &
server_pid=$!
pids+=($server_pid)
my() { mariadb --no-defaults --socket="$m/mysqld.sock" -uroot "$@"; }
for _ in $(seq 300); do my -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
my -e 'SELECT 1' >/dev/null || die "MariaDB did not start; see $m/server.log"
finish_maria() { maria_stop "$m" || true; maria_stop "$work/restored" || true; }
trap 'finish_maria; finish' EXIT
[ -n "${TIDEMARK_BENCH_KEEP:-}" ] && trap - EXIT

say "loading $rows rows into $tables tables"
per=$((rows / tables))
my -e "CREATE DATABASE bench"
for t in $(seq "$tables"); do
    my bench -e "CREATE TABLE t$t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY k (k)) ENGINE=InnoDB;
        INSERT INTO t$t SELECT seq, FLOOR(RAND(seq) * $per), CONCAT(SHA2(seq, 256), '-', MD5(seq * $t), '-', LEFT(SHA1(seq), 22)),
          CONCAT(MD5(seq + $t), '-', LEFT(SHA1(seq * 7), 27)) FROM seq_1_to_$per"
done
my -e "FLUSH BINARY LOGS"
data_bytes=$(du -sb "$m/data/bench" | cut -f1)

bench_controller
{
    printf 'version = 1\ncontroller = "https://localhost:%s"\nspool-dir = "%s"\n' "$port" "$work"; tls agent-bench
    printf '[[instance]]\nname = "bench-maria"\nengine = "mariadb"\nhost = "%s/mysqld.sock"\nuser = "root"\nos-user = "root"\n' "$m"
} >"$work/agent.toml"
bench_agent

# time_cmd FILE CMD...: run CMD, write its wall seconds to FILE, and to FILE.cpu the CPU
# seconds spent meanwhile by the agent, the controller, mariadbd, and the command itself with
# its children (a native tool; the CLI for Tidemark). All share this machine's two cores; on
# a real fleet the controller has a host of its own.
# The agent's CPU including the tools it ran and reaped (mariadb-dump, mariabackup, ...):
# utime, stime, cutime and cstime, fields 14 to 17 of /proc/PID/stat.
agent_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15 + $16 + $17) / hz }' "/proc/$agent_pid/stat"; }
time_cmd() {
    local out=$1 t0 a0 c0 s0
    shift
    t0=$(now) a0=$(agent_cpu) c0=$(cpu_secs "$controller_pid") s0=$(cpu_secs "$server_pid")
    /usr/bin/time -f '%U %S' -o "$out.tool" "$@"
    elapsed "$t0" "$(now)" >"$out"
    printf '%s %s %s %s\n' "$(elapsed "$a0" "$(agent_cpu)")" "$(elapsed "$c0" "$(cpu_secs "$controller_pid")")" \
        "$(elapsed "$s0" "$(cpu_secs "$server_pid")")" "$(awk '{ printf "%.2f", $1 + $2 }' "$out.tool")" >"$out.cpu"
}
dump_args=(--single-transaction --routines --triggers --events --hex-blob --quick --master-data=2)

say "physical backup: mariabackup to a local file"
sync
time_cmd "$work/t.native_phys" sh -c "mariabackup --no-defaults --socket=$m/mysqld.sock --user=root --backup --stream=xbstream --target-dir=$work/tmp-mb > $work/native.xb 2>$work/native-mb.log"
phys_bytes=$(stat -c %s "$work/native.xb")
say "physical backup: tidemark backup --kind base"
sync
time_cmd "$work/t.tm_phys" "$bin/tidemark" backup --instance bench-maria --kind base --wait --output json >"$work/phys.json"

say "logical backup: mariadb-dump to a local file"
sync
time_cmd "$work/t.native_log" sh -c "mariadb-dump --no-defaults --socket=$m/mysqld.sock -uroot ${dump_args[*]} --databases bench > $work/native.sql"
log_bytes=$(stat -c %s "$work/native.sql")
say "logical backup: mariadb-dump | zstd -3 to a local file (what backup scripts run)"
sync
time_cmd "$work/t.native_logz" sh -c "mariadb-dump --no-defaults --socket=$m/mysqld.sock -uroot ${dump_args[*]} --databases bench | zstd -q -3 > $work/native.sql.zst"
say "logical backup: tidemark backup --kind logical"
sync
time_cmd "$work/t.tm_log" "$bin/tidemark" backup --instance bench-maria --kind logical --wait --output json >"$work/log.json"
log_id=$(field id "$work/log.json")

say "physical restore: mbstream -x and mariabackup --prepare"
mkdir -p "$work/native-restore"
time_cmd "$work/t.native_phys_r" sh -c "mbstream -x -C $work/native-restore < $work/native.xb && mariabackup --no-defaults --prepare --target-dir=$work/native-restore > $work/native-prep.log 2>&1"
rm -rf "$work/native-restore"
say "physical restore: tidemark restore --datadir --immediate"
time_cmd "$work/t.tm_phys_r" "$bin/tidemark" restore --instance bench-maria --host bench --datadir "$work/restored" --immediate
rm -rf "$work/restored"

say "logical restore: mariadb < file (one database)"
my -e "CREATE DATABASE bench_native"
time_cmd "$work/t.native_log_r" sh -c "grep -v -e '^USE ' -e '^CREATE DATABASE ' $work/native.sql | mariadb --no-defaults --socket=$m/mysqld.sock -uroot bench_native"
say "logical restore: tidemark restore --into-database"
time_cmd "$work/t.tm_log_r" "$bin/tidemark" restore --backup "$log_id" --host bench --database bench --into-database bench_tm
[ "$(my -N -e 'CHECKSUM TABLE bench_tm.t1' | cut -f2)" = "$(my -N -e 'CHECKSUM TABLE bench.t1' | cut -f2)" ] \
    || die "the restored table differs from the original"

echo
printf 'MariaDB %s, %s rows in %s tables, %s MiB of table files; xbstream %s MiB, dump %s MiB\n\n' \
    "$(my -N -e 'SELECT VERSION()')" "$rows" "$tables" "$(mib "$data_bytes")" "$(mib "$phys_bytes")" "$(mib "$log_bytes")"
printf 'CPU seconds: native = the tool + mariadbd; tidemark = agent (with the tool it runs) + controller + mariadbd\n\n'
printf '%-18s %10s %12s %8s %11s %13s\n' operation "native s" "tidemark s" ratio "native cpu" "tidemark cpu"
row() {
    local n t
    read -r -a n <"$work/t.$2.cpu"
    read -r -a t <"$work/t.$3.cpu"
    printf '%-18s %10s %12s %8s %11s %13s\n' "$1" "$(cat "$work/t.$2")" "$(cat "$work/t.$3")" \
        "$(ratio "$(cat "$work/t.$3")" "$(cat "$work/t.$2")")" \
        "$(awk -v a="${n[3]}" -v s="${n[2]}" 'BEGIN { printf "%.1f", a + s }')" \
        "$(awk -v a="${t[0]}" -v c="${t[1]}" -v s="${t[2]}" 'BEGIN { printf "%.1f = %.1f + %.1f + %.1f", a + c + s, a, c, s }')"
}
row "physical backup" native_phys tm_phys
row "logical backup" native_log tm_log
row "  vs | zstd -3" native_logz tm_log
row "physical restore" native_phys_r tm_phys_r
row "logical restore" native_log_r tm_log_r
