#!/usr/bin/env bash
# A Python venv with redis-py and prometheus_client (from PyPI), for the tests
# that drive databus with a real Python Redis client and parse its metrics with
# the Prometheus text parser. Idempotent: a venv that already has the pinned
# versions is left alone.
#
#   scripts/pyvenv.sh    create or update the venv; prints the path of its python on stdout
#
# Environment (optional):
#   DATABUS_TOOLS_DIR    where the venv lives (default ~/.cache/databus); the venv is <dir>/pyvenv
#
# Progress and errors go to stderr; on failure the exit status is non-zero and
# the message says what to install or where the log is.
set -euo pipefail

REDIS_PY_VERSION="8.1.0"
PROMETHEUS_CLIENT_VERSION="0.23.1"

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
VENV="$TOOLS_DIR/pyvenv"
PY="$VENV/bin/python"

log() { printf 'pyvenv.sh: %s\n' "$*" >&2; }
die() { printf 'pyvenv.sh: ERROR: %s\n' "$*" >&2; exit 1; }
tail_log() { [[ -s $1 ]] && { printf -- '--- last lines of %s ---\n' "$1"; tail -n 20 "$1"; } >&2 || true; }

installed_version() {
	"$PY" -c 'import importlib.metadata as m; print(m.version("redis"), m.version("prometheus_client"))' 2>/dev/null || true
}
WANTED="$REDIS_PY_VERSION $PROMETHEUS_CLIENT_VERSION"

if [[ -x $PY && $(installed_version) == "$WANTED" ]]; then
	echo "$PY"
	exit 0
fi

mkdir -p "$TOOLS_DIR"
# one installer at a time (tests may run this concurrently); then check again
exec 9>"$TOOLS_DIR/pyvenv.lock"
flock 9
if [[ -x $PY && $(installed_version) == "$WANTED" ]]; then
	echo "$PY"
	exit 0
fi
command -v python3 >/dev/null 2>&1 ||
	die "python3 not found; install it (Debian: apt-get install python3 python3-venv)"
if [[ ! -x $PY || ! -x $VENV/bin/pip ]]; then
	rm -rf "$VENV"
	vlog="$TOOLS_DIR/pyvenv-create.log"
	log "creating $VENV (log: $vlog)"
	if ! python3 -m venv "$VENV" >"$vlog" 2>&1; then
		rm -rf "$VENV"
		# Debian's python3 lacks ensurepip without python3-venv
		if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
			log "python3 -m venv failed; installing python3-venv"
			apt-get update >>"$vlog" 2>&1 && apt-get install -y --no-install-recommends python3-venv >>"$vlog" 2>&1 ||
				{ tail_log "$vlog"; die "apt-get install python3-venv failed (log: $vlog)"; }
			python3 -m venv "$VENV" >>"$vlog" 2>&1 ||
				{ tail_log "$vlog"; rm -rf "$VENV"; die "python3 -m venv $VENV failed (log: $vlog)"; }
		else
			tail_log "$vlog"
			die "python3 -m venv $VENV failed (log: $vlog); install python3-venv"
		fi
	fi
fi

plog="$TOOLS_DIR/pyvenv-pip.log"
packages=("redis==$REDIS_PY_VERSION" "prometheus_client==$PROMETHEUS_CLIENT_VERSION")
log "installing ${packages[*]} into $VENV (log: $plog)"
"$PY" -m pip install --disable-pip-version-check "${packages[@]}" >"$plog" 2>&1 ||
	{ tail_log "$plog"; die "pip install ${packages[*]} failed (log: $plog)"; }
[[ $(installed_version) == "$WANTED" ]] ||
	die "pip install finished but ${packages[*]} are not importable from $PY (log: $plog)"
echo "$PY"
