#!/usr/bin/env bash
# `make run-example`: builds example_cli and runs it against the databus that
# `make run` serves. Start `make run` in another terminal first; this script
# does not start or stop databus, and fails at once if nothing listens on the
# address in the example's config.
#
#   scripts/run-example.sh [example_cli options]    e.g. --max-messages 1
#
# Environment (optional):
#   EXAMPLE_CONF   the example's config (default example_cli/config.toml: the
#                  sample grants of `make run` on 127.0.0.1:6205)
#
# The example publishes one JSON message, then consumes test156 as group
# group_name1, printing and committing each message, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

conf=${EXAMPLE_CONF:-example_cli/config.toml}
[[ -r $conf ]] || { echo "run-example: config $conf not found" >&2; exit 1; }

# Every addr in the config (publisher and subscriber) must answer.
mapfile -t addrs < <(sed -n -E 's/^[[:space:]]*addr[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' "$conf" | sort -u)
((${#addrs[@]})) || { echo "run-example: no addr in $conf" >&2; exit 1; }
for addr in "${addrs[@]}"; do
	host=${addr%:*} port=${addr##*:}
	# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
	if ! timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null; then
		echo "run-example: nothing listens on $addr (from $conf)." >&2
		echo "run-example: start databus first with \`make run\` in another terminal, then run \`make run-example\` again." >&2
		exit 1
	fi
done

echo "run-example: building and running example_cli --conf $conf $* (Ctrl-C to stop)" >&2
# On Unix cargo run execs the binary, so Ctrl-C reaches example_cli directly.
exec cargo run --quiet -p example_cli -- --conf "$conf" "$@"
