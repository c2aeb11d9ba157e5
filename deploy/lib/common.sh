# Shared by deploy/quickstart.sh, tests/run.sh and the benchmarks. Source it; do not run it.

PG_BIN=/usr/lib/postgresql/15/bin

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

# Install Debian packages that are missing. Installed ones are left alone: apt-get install
# of an installed package would upgrade it.
need_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages ${missing[*]}; install them as root (apt-get install ${missing[*]})"
        sudo="sudo"
    fi
    say "installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Run a PostgreSQL server command: as the postgres user when we are root (the server refuses
# to run as root), as ourselves otherwise.
pg_server() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_init DIR [CONF]: initdb into DIR/data with a unix socket in DIR and no TCP listener,
# append CONF (extra postgresql.conf lines) if given, then start.
pg_init() {
    local dir=$1 extra=${2:-}
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    pg_server "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || die "initdb failed; see $dir/initdb.log"
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
$extra
CONF
    pg_server "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null \
        || die "PostgreSQL did not start; see $dir/server.log"
}

# give_to_postgres PATH...: let the postgres user own PATH when we are root (its
# archive_command reads the agent's config and key).
give_to_postgres() {
    if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$@"; fi
}

# pg_stop DIR: stop the cluster in DIR/data if it runs; fails if it cannot be stopped.
pg_stop() {
    local dir=$1
    [ -f "$dir/data/postmaster.pid" ] || return 0
    pg_server "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 \
        || ! pg_server "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

# maria_stop DIR: stop the MariaDB server whose socket (mysqld.sock) and pid file
# (mysqld.pid) are in DIR, if it runs: a clean shutdown, then a kill if that fails.
maria_stop() {
    local dir=$1 pid
    [ -f "$dir/mysqld.pid" ] || return 0
    pid=$(cat "$dir/mysqld.pid")
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot shutdown >/dev/null 2>&1 \
        || kill "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    ! kill -0 "$pid" 2>/dev/null
}
