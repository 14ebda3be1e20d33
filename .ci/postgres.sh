#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: installed from Debian when missing, a fresh data dir
# in a temporary folder, listening on loopback only. Sourced after .ci/tools.sh (apt_install).
# `start_test_postgres` exports PUSHCHAT_TEST_POSTGRES_URL, a server the tests may create
# databases on; `stop_test_postgres` stops it and removes its data.

start_test_postgres() {
    apt_install postgresql
    local bin
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    PUSHCHAT_PG_DIR="$(mktemp -d)"
    # PostgreSQL refuses to run as root: as root, run it as Debian's postgres user.
    local as_owner=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$PUSHCHAT_PG_DIR"
        as_owner=(runuser -u postgres --)
    fi
    "${as_owner[@]}" "$bin/initdb" -D "$PUSHCHAT_PG_DIR/data" -U pushchat --auth=trust \
        -E UTF8 --locale=C.UTF-8 >/dev/null
    PUSHCHAT_PG_CTL=("${as_owner[@]}" "$bin/pg_ctl")
    # A port below Linux's ephemeral range (32768 and up), where the tests' own outgoing
    # connections cannot be holding it; the next one if it is taken all the same.
    local port
    for port in $(seq 25432 25441); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        # Three instances of pushchat, each with its fan-out connections, and the tests'.
        if "${PUSHCHAT_PG_CTL[@]}" -D "$PUSHCHAT_PG_DIR/data" -l "$PUSHCHAT_PG_DIR/log" -w \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $PUSHCHAT_PG_DIR -c max_connections=300" \
            start >/dev/null; then
            export PUSHCHAT_TEST_POSTGRES_URL="postgres://pushchat@127.0.0.1:$port/postgres"
            echo "postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
            return 0
        fi
        { tail -n 5 "$PUSHCHAT_PG_DIR/log" || true; } >&2
    done
    echo "postgres: could not start a test server (its log is above)" >&2
    return 1
}

stop_test_postgres() {
    if [ -n "${PUSHCHAT_PG_DIR:-}" ]; then
        "${PUSHCHAT_PG_CTL[@]}" -D "$PUSHCHAT_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PUSHCHAT_PG_DIR"
    fi
}
