# shellcheck shell=bash
# What the start_*.sh scripts share (each sources this file): their ending, which
# exports a started server's variables and either returns to the shell that
# sourced the script or prints the export lines for `eval "$(bash scripts/start_x.sh)"`.

# _tfds_start_server SCRIPT_PATH ZERO SCRIPT WHAT SETUP EXPORT NAME...
#   SCRIPT_PATH, ZERO: the script's ${BASH_SOURCE[0]} and $0 (they differ when it is sourced).
#   SCRIPT, WHAT: the script's name and its server's, for the failure message.
#   SETUP: a subshell function that starts the server and prints its port.
#   EXPORT PORT: a function that exports the NAMEs for that port.
# Sourced: returns 0 or 1 (the script returns it in turn). Executed: prints
# `export NAME='value'` lines when the server started, and exits 0 or 1.
_tfds_start_server() {
  local script_path=$1 zero=$2 script=$3 what=$4 setup=$5 export_names=$6 port rc=0 name
  shift 6
  if port=$("$setup"); then
    "$export_names" "$port"
  else
    echo "$script: could not start $what; $1 not set" >&2
    rc=1
  fi
  if [[ $script_path != "$zero" ]]; then
    return "$rc"
  fi
  if ((rc == 0)); then
    for name; do printf "export %s='%s'\n" "$name" "${!name}"; done
  fi
  exit "$rc"
}
