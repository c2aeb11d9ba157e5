# The PostgreSQL demo for deploy/quickstart.sh (sourced): a cluster with sample data that
# archives its WAL through Tidemark; a logical backup restored and compared; a base backup,
# more writes, and a point-in-time restore to the moment between them; a drill to that same
# moment on the sandbox.

demo_instance=demo-pg

demo_prereqs() {
    need_packages postgresql-15 postgresql-client-15
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 || die "the postgres OS user is missing; PostgreSQL cannot run as root"
    fi
}

# After the demo directory exists.
demo_check_dir() {
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir"; then
        die "the postgres user cannot reach $dir; pick a --dir under /tmp"
    fi
}

# Drill checks for demo-pg: rows before and after the demo's target, and a count that the
# agent samples on production every 5 s, for the drill to compare with.
demo_controller_toml() {
    cat <<'TOML'

[drills]
sample-interval = "5s"

[[instance]]
name = "demo-pg"
[[instance.check]]
name = "events-before-target"
database = "shop"
sql = "SELECT count(*) FROM events WHERE note = 'before the target'"
expect = "equals:1000"
[[instance.check]]
name = "events-after-target"
database = "shop"
sql = "SELECT count(*) FROM events WHERE note = 'after the target'"
expect = "equals:0"
[[instance.check]]
name = "orders"
database = "shop"
sql = "SELECT count(*) FROM orders"
expect = "within-pct:0"
TOML
}

demo_agent_toml() {
    printf '\n[[instance]]\nname = "demo-pg"\nengine = "postgresql"\nhost = "%s/pg"\nport = 5432\nuser = "postgres"\nbin-dir = "%s"\n' "$dir" "$PG_BIN"
}

demo_sandbox_toml() {
    printf '\n[sandbox]\ndir = "%s/sandbox"\nbin-dirs = ["%s"]\n' "$dir" "$PG_BIN"
}

demo_start_server() {
    say "starting PostgreSQL 15 in $dir/pg"
    # PostgreSQL archives every WAL segment through the agent (wal-push exits 0 only once
    # the controller has it durably); archive_timeout bounds the data at risk to 60 s when
    # idle.
    pg_init "$dir/pg" "wal_level = replica
archive_mode = on
archive_timeout = 60
archive_command = '$dir/bin/tidemark-agent --config $dir/agent.toml wal-push %p'"
    export PGHOST=$dir/pg PGPORT=5432 PGUSER=postgres
}

demo_run() {
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_q -d postgres -c "CREATE DATABASE shop"
psql_q -d shop <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, country text);
INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['NL','DE','FR','JP','BR'])[1 + g % 5]
FROM generate_series(1, 10000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(12,2), placed timestamptz);
INSERT INTO orders (customer, total, placed)
SELECT 1 + g % 10000, round((random() * 500)::numeric, 2), now() - g * interval '1 minute'
FROM generate_series(1, 100000) g;
CREATE INDEX orders_customer ON orders (customer);
SQL


# --- back up, restore, compare ---------------------------------------------------------------
say "tidemark backup --instance demo-pg --kind logical --wait"
"$bin/tidemark" backup --instance demo-pg --kind logical --wait --output json >"$dir/backup.json" \
    || { cat "$dir/backup.json"; die "the backup failed"; }
backup_id=$(sed -n 's/^  "id": \([0-9]*\),$/\1/p' "$dir/backup.json")
[ -n "$backup_id" ] || die "could not read the backup id from $dir/backup.json"

say "tidemark restore --backup $backup_id --host $agent_name --into-database shop_restored --database shop"
"$bin/tidemark" restore --backup "$backup_id" --host "$agent_name" --into-database shop_restored --database shop

fingerprint() {
    psql -X -A -t -d "$1" -c "SELECT 'customers ' || count(*) || ' ' || md5(string_agg(c::text, '|' ORDER BY id)) FROM customers c" \
        -c "SELECT 'orders ' || count(*) || ' ' || md5(string_agg(o::text, '|' ORDER BY id)) FROM orders o"
}
fingerprint shop >"$dir/shop.md5"
fingerprint shop_restored >"$dir/shop_restored.md5"
say "comparing shop with shop_restored"
sed 's/^/  /' "$dir/shop.md5"
if ! diff -u "$dir/shop.md5" "$dir/shop_restored.md5"; then
    die "restored data differs from the original"
fi
echo "  restored data matches"
echo

# --- base backup, more writes, point-in-time restore ----------------------------------------
say "tidemark backup --instance demo-pg --kind base --wait"
"$bin/tidemark" backup --instance demo-pg --kind base --wait
# The drill's "orders" check compares with the count the agent samples every 5 s: let it
# take one before the target.
sleep 5.5
psql_q -d shop -c "CREATE TABLE events (id int PRIMARY KEY, note text)" \
    -c "INSERT INTO events SELECT g, 'before the target' FROM generate_series(1, 1000) g"
sleep 1.1
target=$(date -u '+%Y-%m-%d %H:%M:%S.%6N')
sleep 1.1
psql_q -d shop -c "INSERT INTO events SELECT g, 'after the target' FROM generate_series(1001, 2000) g" \
    -c "UPDATE customers SET name = 'changed after the target'"
# Close the current segment so the writes after the target reach the archive now, not at
# archive_timeout.
seg=$(psql -X -A -t -d postgres -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
psql_q -d postgres -c "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 150); do
    [ "$(psql -X -A -t -d postgres -c "SELECT coalesce(last_archived_wal, '') >= '$seg' FROM pg_stat_archiver")" = t ] && break
    sleep 0.2
done
"$bin/tidemark" pitr-window --instance demo-pg

say "tidemark restore --instance demo-pg --host $agent_name --pgdata $dir/pitr/data --to '$target' --port 5433 --start"
mkdir -p "$dir/pitr"
give_to_postgres "$dir/pitr"
"$bin/tidemark" restore --instance demo-pg --host "$agent_name" --pgdata "$dir/pitr/data" \
    --to "$target" --port 5433 --start --action promote
restored=$(psql -X -A -t -p 5433 -d shop -c "SELECT count(*) || ' events, ' || count(*) FILTER (WHERE note = 'after the target') || ' after the target' FROM events" \
    -c "SELECT count(*) FROM customers WHERE name = 'changed after the target'")
echo "  restored at $target: $(echo "$restored" | head -1), $(echo "$restored" | tail -1) customers changed after it"
[ "$restored" = "1000 events, 0 after the target
0" ] || die "the point-in-time restore does not hold exactly the data before $target"
PGPORT=5433 fingerprint shop >"$dir/shop-pitr.md5"
diff -q "$dir/shop-pitr.md5" "$dir/shop.md5" >/dev/null \
    || die "customers and orders restored at $target differ from the original before the target"
echo "  restored data matches the state at the target"
echo

# --- a drill to the same moment, on the sandbox -----------------------------------------------
say "tidemark drill run --instance demo-pg --target '$target' --wait"
"$bin/tidemark" drill run --instance demo-pg --target "$target" --wait \
    || die "the drill did not pass; see tidemark drill history and $dir/sandbox.log"
echo
}

demo_env() {
    printf 'export PGHOST=%s/pg\nexport PGPORT=5432\nexport PGUSER=postgres\n' "$dir"
}

demo_hints() {
    echo "  tidemark backup --instance demo-pg --wait"
    echo "  tidemark restore --backup $backup_id --host \$TIDEMARK_AGENT --into-database shop2 --database shop"
    echo "  tidemark status; tidemark pitr-window --instance demo-pg"
    echo "  tidemark drill run --instance demo-pg --target 2m --sandbox \$TIDEMARK_SANDBOX --wait"
    echo "  tidemark drill history; tidemark schedule"
    echo "  psql -p 5433 -d shop    # the point-in-time restore, promoted"
}
