#!/usr/bin/env bash
# shellcheck shell=bash
# Start a local PostgreSQL (Debian cluster) for the tests and export
# TFDS_BUILDERS_PG_DSN.
#
#   source scripts/start_postgres.sh   # exports TFDS_BUILDERS_PG_DSN in your shell
#   bash scripts/start_postgres.sh     # prints the export line (eval-able)
#
# Idempotent: reuses an existing cluster, role and database. Needs root (or
# passwordless sudo) the first time, to install/start PostgreSQL.

# All the work happens in a subshell function so that shell options (set -e,
# set -u, ...) and helper variables never leak into the caller's shell. It
# prints only the port on stdout; diagnostics go to stderr.
_tfds_pg_setup() (
  set +e -u -o pipefail
  # A caller's libpq settings must not redirect our admin psql calls.
  unset PGHOST PGHOSTADDR PGPORT PGDATABASE PGUSER PGPASSWORD PGSERVICE PGOPTIONS

  readonly role=tfds_builders password=tfds_builders_pw db=tfds_builders_test
  me="start_postgres.sh"
  die() { echo "$me: error: $*" >&2; exit 1; }

  # Run a command as root: directly, or via passwordless sudo.
  as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo -n "$@"; fi
  }
  # Run a command as the postgres superuser (peer auth on the local socket).
  # cd / first: postgres cannot read e.g. /root and would warn about it.
  as_pg() {
    if [[ $(id -un) == postgres ]]; then (cd / && "$@")
    elif [[ $(id -u) == 0 ]] && command -v runuser >/dev/null; then
      (cd / && runuser -u postgres -- "$@")
    elif [[ $(id -u) == 0 ]]; then
      (cd / && su postgres -s /bin/bash -c "$(printf '%q ' "$@")")
    else (cd / && sudo -n -u postgres -- "$@")
    fi
  }

  # 1. Install the server when missing (fresh CI machine). Output is kept in
  #    a log and only shown on failure.
  if ! command -v pg_ctlcluster >/dev/null ||
     ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
    echo "$me: PostgreSQL not found; installing it with apt-get ..." >&2
    log=$(mktemp)
    if ! { as_root apt-get update -q &&
           as_root env DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q postgresql; } >"$log" 2>&1; then
      tail -n 30 "$log" >&2
      die "apt-get install postgresql failed (need root or passwordless sudo)"
    fi
    rm -f "$log"
  fi

  # 2. Pick a cluster: a running one if any, else the newest; create one if
  #    none exists. pg_lsclusters -h: "ver name port status owner datadir log".
  clusters=$(pg_lsclusters -h 2>/dev/null)
  if [[ -z $clusters ]]; then
    ver=$(compgen -G '/usr/lib/postgresql/*/bin/postgres' |
          awk -F/ '{print $5}' | sort -V | tail -n 1)
    [[ -n $ver ]] || die "no PostgreSQL server found under /usr/lib/postgresql"
    as_root pg_createcluster "$ver" main >/dev/null 2>&1 ||
      die "pg_createcluster $ver main failed"
    clusters=$(pg_lsclusters -h)
  fi
  line=$(awk '$4 == "online"' <<<"$clusters" | head -n 1)
  [[ -n $line ]] || line=$(tail -n 1 <<<"$clusters")
  read -r ver name port _ <<<"$line"
  [[ -n $ver && -n $name && $port =~ ^[0-9]+$ ]] ||
    die "cannot parse pg_lsclusters output: $line"

  # 3. Start it unless already running (pg_ctlcluster start fails if it is).
  if ! pg_ctlcluster "$ver" "$name" status >/dev/null 2>&1; then
    out=$(as_root pg_ctlcluster "$ver" "$name" start 2>&1) ||
      die "pg_ctlcluster $ver $name start failed: $out"
  fi

  # 4. Wait (bounded) until it accepts TCP connections on 127.0.0.1.
  for ((i = 0; i < 60; i++)); do
    pg_isready -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
  done
  pg_isready -q -h 127.0.0.1 -p "$port" ||
    die "cluster $ver/$name not accepting TCP connections on 127.0.0.1:$port" \
        "after 30 s (check listen_addresses and /var/log/postgresql/)"

  # 5. Role and database, idempotently. The password is (re)set every time so a
  #    pre-existing role still matches the DSN. CREATE DATABASE cannot run in
  #    a DO block, hence \gexec.
  psql_admin=(psql -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres)
  sql="
    DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role') THEN
        CREATE ROLE $role;
      END IF;
    END \$\$;
    ALTER ROLE $role WITH LOGIN CREATEDB PASSWORD '$password';
    SELECT 'CREATE DATABASE $db OWNER $role'
      WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec
    ALTER DATABASE $db OWNER TO $role;
  "
  out=$(as_pg "${psql_admin[@]}" <<<"$sql" 2>&1) ||
    die "creating role/database failed: ${out//$password/***}"

  # 6. Verify password auth over TCP, exactly as the tests will connect.
  tcp_ok() {
    PGPASSWORD=$password PGCONNECT_TIMEOUT=5 psql -X -q -At -c 'SELECT 1' \
      "host=127.0.0.1 port=$port dbname=$db user=$role" >/dev/null 2>&1
  }
  if ! tcp_ok; then
    # Debian's default pg_hba.conf allows this; a customised one may not.
    # Prepend (first match wins) a rule for just this role/db. "md5" also
    # accepts SCRAM-stored passwords.
    hba=$(as_pg "${psql_admin[@]}" -At -c 'SHOW hba_file') ||
      die "cannot locate pg_hba.conf"
    rule="host $db $role 127.0.0.1/32 md5  # added by tfds_builders start_postgres.sh"
    if ! grep -qF "$rule" "$hba"; then
      echo "$me: adding to $hba: $rule" >&2
      as_root sed -i "1i $rule" "$hba" || die "cannot edit $hba"
    fi
    as_pg "${psql_admin[@]}" -c 'SELECT pg_reload_conf()' >/dev/null 2>&1
    sleep 1
    tcp_ok || die "password login as $role on 127.0.0.1:$port fails" \
                  "(check $hba and /var/log/postgresql/)"
  fi

  echo "$me: PostgreSQL $ver/$name ready on 127.0.0.1:$port (db $db)" >&2
  echo "$port"
)

_tfds_pg_export() {
  export TFDS_BUILDERS_PG_DSN="host=127.0.0.1 port=$1 dbname=tfds_builders_test user=tfds_builders password=tfds_builders_pw"
}

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Executed: prints the export line and exits. Sourced: returns the status to the caller's shell.
_tfds_start_server "${BASH_SOURCE[0]}" "$0" start_postgres.sh PostgreSQL _tfds_pg_setup _tfds_pg_export \
  TFDS_BUILDERS_PG_DSN
eval "unset -f _tfds_start_server _tfds_pg_setup _tfds_pg_export; return $?"
