# The MariaDB demo for deploy/quickstart.sh --engine mariadb (sourced): a MariaDB 10.11
# server with sample data whose binlogs the agent archives; a logical backup (mariadb-dump)
# restored and compared; a physical backup (mariabackup), more writes, and a point-in-time
# restore to the moment between them (prepare, then binlog replay); a drill to that same
# moment on the sandbox.

demo_instance=demo-mariadb

# mariadbd and its files run as mysql when we are root (the package creates that user).
maria_user() {
    if [ "$(id -u)" -eq 0 ]; then echo mysql; else id -un; fi
}

demo_prereqs() {
    need_packages mariadb-server mariadb-backup
    [ -x /usr/sbin/mariadbd ] || die "/usr/sbin/mariadbd is missing after installing mariadb-server"
}

demo_check_dir() {
    if [ "$(id -u)" -eq 0 ] && ! runuser -u mysql -- test -x "$dir"; then
        die "the mysql user cannot reach $dir; pick a --dir under /tmp"
    fi
}

# Drill checks for demo-mariadb: rows before and after the demo's target, and a count that
# the agent samples on production every 5 s, for the drill to compare with.
demo_controller_toml() {
    cat <<'TOML'

[drills]
sample-interval = "5s"

[[instance]]
name = "demo-mariadb"
[[instance.check]]
name = "events-before-target"
database = "shop"
sql = "SELECT COUNT(*) FROM events WHERE note = 'before the target'"
expect = "equals:1000"
[[instance.check]]
name = "events-after-target"
database = "shop"
sql = "SELECT COUNT(*) FROM events WHERE note = 'after the target'"
expect = "equals:0"
[[instance.check]]
name = "orders"
database = "shop"
sql = "SELECT COUNT(*) FROM orders"
expect = "within-pct:0"
TOML
}

# archive-timeout 5s: the demo does not wait long for its writes to reach the archive.
demo_agent_toml() {
    printf '\n[[instance]]\nname = "demo-mariadb"\nengine = "mariadb"\nhost = "%s/maria/mysqld.sock"\nuser = "root"\nos-user = "%s"\narchive-timeout = "5s"\n' \
        "$dir" "$(maria_user)"
}

demo_sandbox_toml() {
    printf '\n[sandbox]\ndir = "%s/sandbox"\nos-user = "%s"\n' "$dir" "$(maria_user)"
}

my() { mariadb --no-defaults --socket="$dir/maria/mysqld.sock" -uroot "$@"; }

demo_start_server() {
    local m=$dir/maria u
    u=$(maria_user)
    say "starting MariaDB in $m (binary log on, ROW format)"
    mkdir -p "$m/data" "$m/binlog" "$m/tmp"
    [ "$(id -u)" -eq 0 ] && chown -R mysql:mysql "$m"
    mariadb-install-db --no-defaults --user="$u" --datadir="$m/data" \
        --auth-root-authentication-method=normal --skip-test-db >"$m/install.log" 2>&1 \
        || die "mariadb-install-db failed; see $m/install.log"
    setsid /usr/sbin/mariadbd --no-defaults --user="$u" --datadir="$m/data" --tmpdir="$m/tmp" \
        --socket="$m/mysqld.sock" --pid-file="$m/mysqld.pid" --log-error="$m/server.log" \
        --skip-networking --server-id=1 --log-bin="$m/binlog/mysql-bin" --binlog-format=ROW \
        --character-set-server=utf8mb4 </dev/null >/dev/null 2>&1 &
    for _ in $(seq 300); do my -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
    my -e 'SELECT 1' >/dev/null 2>&1 || die "MariaDB did not start; see $m/server.log"
    export MYSQL_UNIX_PORT=$m/mysqld.sock
}

# CHECKSUM TABLE of customers and orders in database $1, on the server at socket $2.
checksums() {
    mariadb --no-defaults --socket="$2" -uroot -N -B -e "CHECKSUM TABLE $1.customers, $1.orders" \
        | sed "s/^$1\\./table /"
}

# Wait until the archive holds the binlog the server is writing now (the agent rotates it
# after archive-timeout and ships it).
wait_for_archive() {
    local active newest
    active=$(my -N -B -e 'SHOW MASTER STATUS' | cut -f1)
    for _ in $(seq 300); do
        newest=$("$bin/tidemark" pitr-window --instance demo-mariadb --output json 2>/dev/null \
            | sed -n 's/^  "newest_wal": "\(.*\)",$/\1/p')
        [ -n "$newest" ] && [[ ! "$newest" < "$active" ]] && return 0
        sleep 0.2
    done
    die "binlog $active did not reach the archive; see $dir/agent.log"
}

demo_run() {
    my <<'SQL'
CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, country CHAR(2));
INSERT INTO shop.customers SELECT seq, CONCAT('customer ', seq), ELT(1 + seq % 5, 'NL', 'DE', 'FR', 'JP', 'BR')
FROM shop.seq_1_to_10000;
CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(12,2), placed DATETIME,
  KEY orders_customer (customer));
INSERT INTO shop.orders (customer, total, placed)
SELECT 1 + seq % 10000, ROUND(RAND() * 500, 2), NOW() - INTERVAL seq MINUTE FROM shop.seq_1_to_100000;
SQL

    # --- back up, restore, compare ---------------------------------------------------------
    say "tidemark backup --instance demo-mariadb --kind logical --wait"
    "$bin/tidemark" backup --instance demo-mariadb --kind logical --wait --output json >"$dir/backup.json" \
        || { cat "$dir/backup.json"; die "the backup failed"; }
    backup_id=$(sed -n 's/^  "id": \([0-9]*\),$/\1/p' "$dir/backup.json")
    [ -n "$backup_id" ] || die "could not read the backup id from $dir/backup.json"
    say "tidemark restore --backup $backup_id --host $agent_name --into-database shop_restored --database shop"
    "$bin/tidemark" restore --backup "$backup_id" --host "$agent_name" --into-database shop_restored --database shop
    checksums shop "$dir/maria/mysqld.sock" >"$dir/shop.sum"
    checksums shop_restored "$dir/maria/mysqld.sock" >"$dir/shop_restored.sum"
    say "comparing shop with shop_restored (CHECKSUM TABLE)"
    sed 's/^/  /' "$dir/shop.sum"
    diff -u "$dir/shop.sum" "$dir/shop_restored.sum" || die "restored data differs from the original"
    echo "  restored data matches"
    echo

    # --- physical backup, more writes, point-in-time restore ---------------------------------
    say "tidemark backup --instance demo-mariadb --kind base --wait    (mariabackup)"
    "$bin/tidemark" backup --instance demo-mariadb --kind base --wait
    # The drill's "orders" check compares with the count the agent samples every 5 s: let
    # it take one before the target.
    sleep 5.5
    my -e "CREATE TABLE shop.events (id INT PRIMARY KEY, note VARCHAR(40));
           INSERT INTO shop.events SELECT seq, 'before the target' FROM shop.seq_1_to_1000"
    # Binlog events carry whole seconds: the target is a second of its own, after the rows
    # before it and before the rows after it.
    sleep 1.1
    target=$(date -u '+%Y-%m-%d %H:%M:%S')
    sleep 1.1
    my -e "INSERT INTO shop.events SELECT seq, 'after the target' FROM shop.seq_1001_to_2000;
           UPDATE shop.customers SET name = 'changed after the target'"
    wait_for_archive
    "$bin/tidemark" pitr-window --instance demo-mariadb

    say "tidemark restore --instance demo-mariadb --host $agent_name --datadir $dir/pitr/data --to '$target' --start"
    mkdir -p "$dir/pitr"
    [ "$(id -u)" -eq 0 ] && chown mysql:mysql "$dir/pitr"
    "$bin/tidemark" restore --instance demo-mariadb --host "$agent_name" --datadir "$dir/pitr/data" \
        --to "$target" --start
    local sock=$dir/pitr/data/mysqld.sock restored
    restored=$(mariadb --no-defaults --socket="$sock" -uroot -N -B \
        -e "SELECT CONCAT(COUNT(*), ' events, ', SUM(note = 'after the target'), ' after the target') FROM shop.events;
            SELECT COUNT(*) FROM shop.customers WHERE name = 'changed after the target'")
    echo "  restored at $target: $(echo "$restored" | head -1), $(echo "$restored" | tail -1) customers changed after it"
    [ "$restored" = "1000 events, 0 after the target
0" ] || die "the point-in-time restore does not hold exactly the data before $target"
    checksums shop "$sock" >"$dir/shop-pitr.sum"
    diff -q "$dir/shop-pitr.sum" "$dir/shop.sum" >/dev/null \
        || die "customers and orders restored at $target differ from the original before the target"
    echo "  restored data matches the state at the target (CHECKSUM TABLE)"
    echo

    # --- a drill to the same moment, on the sandbox ---------------------------------------------
    say "tidemark drill run --instance demo-mariadb --target '$target' --wait"
    "$bin/tidemark" drill run --instance demo-mariadb --target "$target" --wait \
        || die "the drill did not pass; see tidemark drill history and $dir/sandbox.log"
    echo
}

demo_env() {
    printf 'export MYSQL_UNIX_PORT=%s/maria/mysqld.sock\n' "$dir"
}

demo_hints() {
    echo "  tidemark backup --instance demo-mariadb --kind base --wait"
    echo "  tidemark restore --backup $backup_id --host \$TIDEMARK_AGENT --into-database shop2 --database shop"
    echo "  tidemark status; tidemark pitr-window --instance demo-mariadb"
    echo "  tidemark drill run --instance demo-mariadb --target 2m --sandbox \$TIDEMARK_SANDBOX --wait"
    echo "  tidemark drill history; tidemark schedule"
    echo "  mariadb --no-defaults -uroot shop     # production (MYSQL_UNIX_PORT)"
    echo "  mariadb --no-defaults -uroot --socket=$dir/pitr/data/mysqld.sock shop    # the point-in-time restore"
}
