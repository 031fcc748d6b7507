#!/usr/bin/env bash
# shellcheck shell=bash
# Start a local S3-compatible server (moto, from the test extra) for the tests
# and export TFDS_BUILDERS_S3_ENDPOINT, plus the AWS_* variables that point
# s3fs/boto3 at it with dummy credentials.
#
#   source scripts/start_s3.sh   # exports them in your shell (replacing any AWS_* credentials there)
#   bash scripts/start_s3.sh     # prints the export lines (eval-able)
#
# Idempotent: reuses the server a previous run started (its port is kept in
# ${TMPDIR:-/tmp}/tfds_builders_s3/port) while it answers. The server holds
# its buckets in memory; it runs until killed (its pid is in the same folder).

_tfds_s3_setup() (
  set +e -u -o pipefail
  me="start_s3.sh"
  die() { echo "$me: error: $*" >&2; exit 1; }
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  python=${PYTHON:-$repo/.venv/bin/python}
  [[ -x $python ]] || python=$(command -v python3) || die "no Python found (set PYTHON)"
  state=${TMPDIR:-/tmp}/tfds_builders_s3
  mkdir -p "$state" || die "cannot create $state"

  # An S3 server answers an anonymous GET / with a bucket listing (or an access error): any HTTP reply will do.
  answers() {
    "$python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
  urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)
except urllib.error.HTTPError:
  pass
EOF
  }

  if [[ -s $state/port ]] && answers "$(cat "$state/port")"; then
    echo "$me: reusing the S3 server on 127.0.0.1:$(cat "$state/port")" >&2
    cat "$state/port"
    exit 0
  fi
  "$python" -c 'import moto.server' 2>/dev/null ||
    die "moto is not installed for $python; install the test extra: pip install -e '.[test]'"
  port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
    die "cannot find a free port"
  # setsid + nohup: the server outlives this (sub)shell and the terminal it started in.
  setsid nohup "$python" -m moto.server -H 127.0.0.1 -p "$port" >"$state/server.log" 2>&1 < /dev/null &
  echo $! >"$state/pid"
  for ((i = 0; i < 60; i++)); do
    answers "$port" && break
    kill -0 "$(cat "$state/pid")" 2>/dev/null || die "the S3 server exited: $(tail -n 5 "$state/server.log")"
    sleep 0.5
  done
  answers "$port" || die "the S3 server does not answer on 127.0.0.1:$port after 30 s (see $state/server.log)"
  echo "$port" >"$state/port"
  echo "$me: S3 server (moto) ready on 127.0.0.1:$port" >&2
  echo "$port"
)

_tfds_s3_export() {
  export TFDS_BUILDERS_S3_ENDPOINT="http://127.0.0.1:$1"
  export AWS_ENDPOINT_URL=$TFDS_BUILDERS_S3_ENDPOINT  # read by botocore, so by s3fs and boto3
  # Dummy credentials: the server accepts any, and real ones must never reach a test.
  export AWS_ACCESS_KEY_ID=tfds-builders-test-key AWS_SECRET_ACCESS_KEY=tfds-builders-test-secret
  export AWS_DEFAULT_REGION=us-east-1
  unset AWS_SESSION_TOKEN AWS_PROFILE
}

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Executed: prints the export lines and exits. Sourced: returns the status to the caller's shell.
_tfds_start_server "${BASH_SOURCE[0]}" "$0" start_s3.sh "the S3 server" _tfds_s3_setup _tfds_s3_export \
  TFDS_BUILDERS_S3_ENDPOINT AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
eval "unset -f _tfds_start_server _tfds_s3_setup _tfds_s3_export; return $?"
