# PostgreSQL for tests, without Docker: source this file, then `pg_start` / `pg_stop`.
#
#   . .ci/pg.sh && pg_start && cargo test -p flowkit-server --test store_conformance; pg_stop
#
# pg_start installs Debian's `postgresql` if it is missing, creates a throwaway cluster in a
# temporary directory (trust authentication, listening on 127.0.0.1 only, on ${PGPORT:-25432} or
# the next free port) and exports FLOWKIT_TEST_PG_URL: the admin URL from which the conformance
# suite creates one database per test. PostgreSQL refuses to run as root, so its binaries run as
# the `postgres` user.

pg_start() {
  if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
    echo "== installing postgresql (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null || return 1
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  # The default port lies below Linux's ephemeral range (32768-60999), where a client socket of
  # any program may hold a port for a moment. Another cluster (another checkout's tests) may hold
  # it too: then the next port is tried.
  local port=${PGPORT:-25432} tries=0
  PGDATA=$(mktemp -d /tmp/pgdata.XXXXXX)
  chown postgres:postgres "$PGDATA"
  if ! (cd /tmp && runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust \
          -E UTF8 --no-sync >/dev/null); then
    echo "pg_start: initdb failed" >&2; rm -rf "${PGDATA:?}"; return 1
  fi
  # fsync off: the cluster is thrown away, and the suite runs several times faster without it.
  until (cd /tmp && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" \
           -w -t 60 -o "-c listen_addresses=127.0.0.1 -p $port -k $PGDATA -c fsync=off \
           -c max_connections=300" start >/dev/null 2>&1); do
    tries=$((tries + 1))
    if [ "$tries" -ge 20 ] || ! grep -q "could not create any TCP/IP sockets" "$PGDATA/server.log"; then
      echo "pg_start: PostgreSQL did not start; its log:" >&2; cat "$PGDATA/server.log" >&2
      rm -rf "${PGDATA:?}"; return 1
    fi
    port=$((port + 1))
  done
  export PGBIN PGDATA FLOWKIT_TEST_PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
  echo "== PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (FLOWKIT_TEST_PG_URL)"
}

pg_stop() {
  if [ -n "${PGDATA:-}" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    (cd /tmp && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop \
       >/dev/null) || true
  fi
  if [ -n "${PGDATA:-}" ]; then rm -rf "${PGDATA:?}"; fi
  unset PGDATA FLOWKIT_TEST_PG_URL
  return 0
}
