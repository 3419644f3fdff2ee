# shellcheck shell=bash
# PostgreSQL for the test suite: sourced by scripts/test, not run on its own.
#
# rf_pg_setup exports TEST_POSTGRES_URL, a URL whose role may CREATE DATABASE (the tests make one
# database each). In order:
#   1. TEST_POSTGRES_URL already set      -> checked (connects, may create databases) and used.
#   2. a server on 127.0.0.1:5432          -> the first of postgres@/postgres, root@/postgres,
#                                             root@/test, postgres@/test that connects and may
#                                             create databases.
#   3. otherwise                           -> a throwaway cluster: initdb into
#                                             ${TMPDIR:-/tmp}/rf-pg.XXXX (owned by the postgres user),
#                                             trust auth, 127.0.0.1 on a free port from 55432 up,
#                                             socket in that dir; stopped and removed on exit.
#                                             Installs Debian's `postgresql` when no initdb is found.
# Any failure returns non-zero after a loud message: a test that needs PostgreSQL must never pass
# without one.
#
# Knobs (environment):
#   RF_FORCE_THROWAWAY_PG=1   skip step 2 (used to test step 3 on a machine that has 5432 up)
#   RF_PG_HOST / RF_PG_PORT   the server probed in step 2 (default 127.0.0.1 / 5432)
#
# Needs from the sourcing script: rf_log, rf_warn, rf_error, rf_apt_install, rf_add_cleanup.

RF_PG_HOST="${RF_PG_HOST:-127.0.0.1}"
RF_PG_PORT="${RF_PG_PORT:-5432}"
RF_PG_THROWAWAY_DIR=""
RF_PG_PSQL=""

# Prints the path of a PostgreSQL program: from PATH, else the newest /usr/lib/postgresql/*/bin.
rf_pg_find_bin() {
    local name="$1" found dir
    if found="$(command -v "$name" 2>/dev/null)" && [[ -x "$found" ]]; then
        printf '%s\n' "$found"
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x "$dir/$name" ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r)
    return 1
}

# True when something accepts TCP connections on host:port.
rf_port_open() {
    local host="$1" port="$2"
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
}

# Runs psql against URL with no prompts and no ~/.psqlrc; extra args follow.
rf_psql() {
    local url="$1"
    shift
    PGCONNECT_TIMEOUT=5 "$RF_PG_PSQL" -X -w -q -A -t -v ON_ERROR_STOP=1 -d "$url" "$@" </dev/null
}

# True when URL connects and its role may create databases.
rf_pg_url_ok() {
    local url="$1" answer
    answer="$(rf_psql "$url" -c \
        'select rolcreatedb or rolsuper from pg_roles where rolname = current_user' 2>/dev/null)" ||
        return 1
    [[ "$answer" == "t" ]]
}

rf_pg_ensure_psql() {
    [[ -n "$RF_PG_PSQL" ]] && return 0
    if RF_PG_PSQL="$(rf_pg_find_bin psql)"; then
        return 0
    fi
    rf_log "psql not found: installing postgresql-client"
    rf_apt_install postgresql-client || return 1
    RF_PG_PSQL="$(rf_pg_find_bin psql)" || {
        rf_error "psql still not found after installing postgresql-client"
        return 1
    }
}

# True when the local server answers (pg_isready when there is one, else a TCP connect).
rf_pg_local_up() {
    local isready
    if isready="$(rf_pg_find_bin pg_isready)"; then
        "$isready" -q -t 3 -h "$RF_PG_HOST" -p "$RF_PG_PORT"
    else
        rf_port_open "$RF_PG_HOST" "$RF_PG_PORT"
    fi
}

# Runs a command as the owner of the throwaway cluster (initdb and postgres refuse root).
rf_pg_as_owner() {
    if [[ "$EUID" -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        su -s /bin/sh postgres -c "$(printf '%q ' "$@")"
    fi
}

# Installs the PostgreSQL server without letting the package start its own cluster.
rf_pg_install_server() {
    if [[ "$EUID" -ne 0 ]]; then
        rf_error "no initdb found and not root: install PostgreSQL (Debian: apt-get install postgresql) or set TEST_POSTGRES_URL"
        return 1
    fi
    local made_policy=0 status=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # Keeps the package's postinst from starting a cluster on 5432 behind our back.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rf_log "no initdb found: installing Debian's postgresql (apt-get)"
    rf_apt_install postgresql || status=$?
    if [[ "$made_policy" -eq 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    return "$status"
}

rf_pg_stop_throwaway() {
    local dir="$RF_PG_THROWAWAY_DIR" pg_ctl pid
    [[ -n "$dir" && -d "$dir" ]] || return 0
    RF_PG_THROWAWAY_DIR=""
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        pg_ctl="$(cat "$dir/pg_ctl.path" 2>/dev/null || true)"
        if [[ -z "$pg_ctl" ]] ||
            ! rf_pg_as_owner "$pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1; then
            pid="$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]]; then
                rf_warn "pg_ctl stop failed: killing the throwaway postmaster (pid $pid)"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 1
            fi
        fi
    fi
    rm -rf "$dir"
    rf_log "throwaway PostgreSQL stopped and $dir removed"
}

rf_pg_start_throwaway() {
    local initdb pg_ctl base dir port started=0
    if ! initdb="$(rf_pg_find_bin initdb)"; then
        rf_pg_install_server || {
            rf_error "could not install PostgreSQL (apt-get install postgresql failed)"
            return 1
        }
        initdb="$(rf_pg_find_bin initdb)" || {
            rf_error "initdb not found even after installing postgresql"
            return 1
        }
    fi
    if [[ -x "$(dirname "$initdb")/pg_ctl" ]]; then
        pg_ctl="$(dirname "$initdb")/pg_ctl"
    else
        pg_ctl="$(rf_pg_find_bin pg_ctl)" || {
            rf_error "pg_ctl not found next to $initdb"
            return 1
        }
    fi
    rf_pg_ensure_psql || return 1

    if [[ "$EUID" -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        rf_log "creating the system user postgres"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres || {
            rf_error "could not create the postgres user"
            return 1
        }
    fi

    # The socket path must stay under 107 bytes and the postgres user must reach the dir.
    base="${TMPDIR:-/tmp}"
    if [[ "${#base}" -gt 60 || "$base" == *[[:space:]]* || ! -d "$base" ]]; then
        base=/tmp
    fi
    dir="$(mktemp -d "$base/rf-pg.XXXX")" || {
        rf_error "mktemp -d in $base failed"
        return 1
    }
    RF_PG_THROWAWAY_DIR="$dir"
    rf_add_cleanup rf_pg_stop_throwaway
    if [[ "$EUID" -eq 0 ]]; then
        chown postgres: "$dir"
        if ! rf_pg_as_owner test -w "$dir"; then
            rm -rf "$dir"
            RF_PG_THROWAWAY_DIR=""
            base=/tmp
            dir="$(mktemp -d "$base/rf-pg.XXXX")" || return 1
            RF_PG_THROWAWAY_DIR="$dir"
            chown postgres: "$dir"
        fi
    fi
    chmod 700 "$dir"
    printf '%s\n' "$pg_ctl" >"$dir/pg_ctl.path"

    rf_log "starting a throwaway PostgreSQL in $dir ($initdb)"
    if ! rf_pg_as_owner "$initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        rf_error "initdb failed:"
        cat "$dir/initdb.log" >&2
        return 1
    fi
    # Settings for a disposable test server: loopback only, socket in our dir, no durability.
    cat >>"$dir/data/postgresql.conf" <<EOF

# added by scripts/test for a throwaway test cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

    for port in $(seq 55432 55462); do
        rf_port_open 127.0.0.1 "$port" && continue
        if rf_pg_as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start \
            >"$dir/pg_ctl.log" 2>&1; then
            started=1
            break
        fi
        rf_warn "throwaway PostgreSQL did not start on port $port; server log:"
        tail -n 20 "$dir/server.log" >&2 2>/dev/null || cat "$dir/pg_ctl.log" >&2
        # a leftover half-started postmaster must not hold the data dir
        rf_pg_as_owner "$pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 || true
    done
    if [[ "$started" -ne 1 ]]; then
        rf_error "could not start a throwaway PostgreSQL on any port 55432-55462"
        return 1
    fi
    export TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    if ! rf_pg_url_ok "$TEST_POSTGRES_URL"; then
        rf_error "the throwaway PostgreSQL started but $TEST_POSTGRES_URL does not answer"
        return 1
    fi
    rf_log "throwaway PostgreSQL is up: TEST_POSTGRES_URL=$TEST_POSTGRES_URL"
}

# Drops the per-test databases (rf_test_<uuidv7>) that a crashed or interrupted earlier run left
# behind. A UUIDv7 starts with its creation time in milliseconds: only databases older than two
# hours are dropped, so a suite running beside this one keeps its own.
rf_pg_sweep_test_databases() {
    local url="$1" name hex created now_ms
    now_ms=$(($(date +%s) * 1000))
    for name in $(rf_psql "$url" -c "select datname from pg_database where datname like 'rf\_test\_%'" 2>/dev/null); do
        hex="${name#rf_test_}"
        [[ "$hex" =~ ^[0-9a-f]{32}$ ]] || continue
        created=$((16#${hex:0:12}))
        if ((now_ms - created > 2 * 3600 * 1000)); then
            rf_psql "$url" -c "drop database if exists $name with (force)" >/dev/null 2>&1 || true
        fi
    done
}

rf_pg_setup() {
    rf_pg_find_and_export || return 1
    rf_pg_sweep_test_databases "$TEST_POSTGRES_URL"
}

rf_pg_find_and_export() {
    if [[ -n "${TEST_POSTGRES_URL:-}" ]]; then
        rf_pg_ensure_psql || return 1
        if ! rf_pg_url_ok "$TEST_POSTGRES_URL"; then
            rf_error "TEST_POSTGRES_URL=$TEST_POSTGRES_URL was given, but it does not connect or its role may not CREATE DATABASE"
            rf_psql "$TEST_POSTGRES_URL" -c 'select 1' >&2 || true
            return 1
        fi
        rf_log "PostgreSQL: using the given TEST_POSTGRES_URL=$TEST_POSTGRES_URL"
        export TEST_POSTGRES_URL
        return 0
    fi

    if [[ "${RF_FORCE_THROWAWAY_PG:-0}" == "1" ]]; then
        rf_log "RF_FORCE_THROWAWAY_PG=1: not looking at $RF_PG_HOST:$RF_PG_PORT"
    elif rf_pg_local_up; then
        rf_pg_ensure_psql || return 1
        local role db url role_db
        for role_db in postgres/postgres root/postgres root/test postgres/test; do
            role="${role_db%/*}"
            db="${role_db#*/}"
            url="postgres://$role@$RF_PG_HOST:$RF_PG_PORT/$db"
            if rf_pg_url_ok "$url"; then
                export TEST_POSTGRES_URL="$url"
                rf_log "PostgreSQL: using the server on $RF_PG_HOST:$RF_PG_PORT as TEST_POSTGRES_URL=$url"
                return 0
            fi
        done
        rf_warn "a server answers on $RF_PG_HOST:$RF_PG_PORT but no role of postgres/root connects with CREATE DATABASE rights: starting a throwaway cluster instead"
    else
        rf_log "no PostgreSQL on $RF_PG_HOST:$RF_PG_PORT: starting a throwaway cluster"
    fi
    rf_pg_start_throwaway
}
