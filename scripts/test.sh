#!/usr/bin/env bash
# Run the test suite: virtualenv, editable install, local PostgreSQL, pytest.
# Extra arguments are passed to pytest, e.g. scripts/test.sh -k postgres
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Reuse .venv when present; upgrading pip only on creation keeps reruns fast.
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# Always run: a no-op when requirements are already satisfied.
.venv/bin/pip install -q -e '.[test]'

# Sourced so it can export TFDS_BUILDERS_PG_DSN. CI must have a database;
# locally the database tests just skip.
if ! source scripts/start_postgres.sh; then
  if [[ ${CI:-} == true ]]; then
    echo "test.sh: error: PostgreSQL is required when CI=true" >&2
    exit 1
  fi
  echo "test.sh: warning: no PostgreSQL; database tests will be skipped" >&2
fi
# Likewise a local S3 server (moto): exports TFDS_BUILDERS_S3_ENDPOINT and dummy AWS_* for s3fs.
if ! source scripts/start_s3.sh; then
  if [[ ${CI:-} == true ]]; then
    echo "test.sh: error: the S3 server is required when CI=true" >&2
    exit 1
  fi
  echo "test.sh: warning: no S3 server; remote storage tests will be skipped" >&2
fi

# No GCE metadata probing (there is no metadata server), quieter TF logs.
export NO_GCE_CHECK=true
export TF_CPP_MIN_LOG_LEVEL=2

# Two workers, a test file each at a time (files share module fixtures): most
# tests wait on `tfds build` subprocesses importing TensorFlow, so two cores
# finish the suite in about two thirds of the time. TEST_WORKERS=0 runs serially.
exec .venv/bin/python -m pytest tests -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
