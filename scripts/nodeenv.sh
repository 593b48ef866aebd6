#!/usr/bin/env bash
# npm's Redis clients (ioredis and node-redis), for the tests that drive
# databus with them. Idempotent: installed versions that match the pins are
# left alone.
#
#   scripts/nodeenv.sh    install if needed; prints the node_modules directory on stdout
#
# Environment (optional):
#   DATABUS_TOOLS_DIR    where they live (default ~/.cache/databus); the packages go to <dir>/node
#
# Progress and errors go to stderr; on failure the exit status is non-zero and
# the message says what to install or where the log is.
set -euo pipefail

IOREDIS_VERSION="6.0.0"
NODE_REDIS_VERSION="6.3.1"

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
PREFIX="$TOOLS_DIR/node"
MODULES="$PREFIX/node_modules"

log() { printf 'nodeenv.sh: %s\n' "$*" >&2; }
die() { printf 'nodeenv.sh: ERROR: %s\n' "$*" >&2; exit 1; }

installed() { node -p "require('$MODULES/$1/package.json').version" 2>/dev/null || true; }
ready() { [[ $(installed ioredis) == "$IOREDIS_VERSION" && $(installed redis) == "$NODE_REDIS_VERSION" ]]; }

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
	die "node and npm are needed (Debian: apt-get install nodejs npm)"
if ready; then
	echo "$MODULES"
	exit 0
fi
mkdir -p "$PREFIX"
# one installer at a time (tests may run this concurrently); then check again
exec 9>"$TOOLS_DIR/nodeenv.lock"
flock 9
if ready; then
	echo "$MODULES"
	exit 0
fi
nlog="$TOOLS_DIR/nodeenv-npm.log"
log "installing ioredis@$IOREDIS_VERSION redis@$NODE_REDIS_VERSION into $PREFIX (log: $nlog)"
npm install --prefix "$PREFIX" --no-audit --no-fund "ioredis@$IOREDIS_VERSION" "redis@$NODE_REDIS_VERSION" >"$nlog" 2>&1 ||
	{ tail -n 20 "$nlog" >&2; die "npm install failed (log: $nlog)"; }
ready || die "npm install finished but the pinned versions are not in $MODULES (log: $nlog)"
echo "$MODULES"
