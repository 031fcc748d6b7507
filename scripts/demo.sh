#!/usr/bin/env bash
# Builds the default config of every builder from the bundled dummy_data/ and
# says where the datasets are and how to load them.
set -euo pipefail
cd "$(dirname "$0")/.."

export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export NO_GCE_CHECK=true  # no metadata-server probe on machines without one
DATA_DIR="${DATA_DIR:-$PWD/demo_data}"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
echo "== installing tfds_builders into .venv"
pip_log="$(mktemp)"
if ! .venv/bin/pip install -q -e . >"$pip_log" 2>&1; then
  cat "$pip_log" >&2
  exit 1
fi
rm -f "$pip_log"

# A builder is a folder tfds_builders/NAME holding NAME_dataset_builder.py.
builders=()
for folder in tfds_builders/*/; do
  name=$(basename "$folder")
  [ -f "$folder/${name}_dataset_builder.py" ] && builders+=("$name")
done

for name in "${builders[@]}"; do
  echo "== building $name (default config) into $DATA_DIR"
  # --config_idx 0 is the default config: the first of BUILDER_CONFIGS.
  log="$(mktemp)"
  if ! .venv/bin/tfds build "tfds_builders/$name" --config_idx 0 --data_dir "$DATA_DIR" >"$log" 2>&1; then
    grep -v -e '^[IWE]0000 ' -e 'All log messages before absl' "$log" >&2
    echo "demo: building $name failed (full log: $log)" >&2
    exit 1
  fi
  rm -f "$log"
done

echo
echo "Datasets are in $DATA_DIR:"
find "$DATA_DIR" -name dataset_info.json -printf '  %h\n' | sort
cat <<MSG

Load one in Python (the package registers the builders on import):
  .venv/bin/python -c "import tfds_builders, tensorflow_datasets as tfds; \\
ds = tfds.load('${builders[0]}', split='train', data_dir='$DATA_DIR'); print(next(iter(ds)))"
or without the builder code:
  tfds.builder_from_directory('<one of the folders above>').as_dataset(split='train')
Inspect one:
  .venv/bin/tfds-builders inspect <one of the folders above>
MSG
