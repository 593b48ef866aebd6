#!/usr/bin/env bash
# Prints databus.toml with the service addresses of this machine substituted:
# DATABUS_BROKERS (comma-separated) for cluster1's brokers, DATABUS_MYSQL_URL
# (server URL, no database) for the MySQL store. `make run` uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
brokers=${DATABUS_BROKERS:-127.0.0.1:9092}
mysql=${DATABUS_MYSQL_URL:-mysql://databus:databus@127.0.0.1:3306}
list=$(sed -E 's/[[:space:]]//g; s/([^,]+)/"\1"/g; s/,/, /g' <<<"$brokers")
sed -E \
  -e "/^\[clusters\.cluster1\]/,/^\[/ s|^brokers = .*|brokers = [${list}]|" \
  -e "/^\[mysql\]/,/^\[/ s|^url = .*|url = \"${mysql%/}/databus_db\"|" \
  databus.toml
