#!/usr/bin/env bash
# Prints databus.toml with this machine's services filled in, for `make run`:
# DATABUS_BROKERS (comma-separated) as cluster1's brokers, DATABUS_MYSQL_URL
# (server URL, no database) for the MySQL store, DATABUS_REDIS_ADDR for the
# Redis store, DATABUS_ADDR (default 127.0.0.1:6205: only this machine; the
# shipped file's 0.0.0.0 exposes the sample credentials to the network) and
# DATABUS_ADMIN_ADDR (default 127.0.0.1:6206) for the listeners, and
# DATABUS_AUTH (mysql | redis | file) picks the store; for "file" the seed's
# sample app and grant are appended.
set -euo pipefail
cd "$(dirname "$0")/.."
brokers=${DATABUS_BROKERS:-127.0.0.1:9092}
mysql=${DATABUS_MYSQL_URL:-mysql://databus:databus@127.0.0.1:3306}
redis=${DATABUS_REDIS_ADDR:-127.0.0.1:6379}
auth=${DATABUS_AUTH:-mysql}
listen=${DATABUS_ADDR:-127.0.0.1:6205}
admin=${DATABUS_ADMIN_ADDR:-127.0.0.1:6206}
case $auth in mysql|redis|file) ;; *) echo "DATABUS_AUTH must be mysql, redis or file, not '$auth'" >&2; exit 2;; esac
list=$(sed -E 's/[[:space:]]//g; s/([^,]+)/"\1"/g; s/,/, /g' <<<"$brokers")
sed -E \
  -e "0,/^addr = / s|^addr = .*|addr = \"${listen}\"|" \
  -e "s|^admin_addr = .*|admin_addr = \"${admin}\"|" \
  -e "s|^auth = .*|auth = \"${auth}\"|" \
  -e "/^\[clusters\.cluster1\]/,/^\[/ s|^brokers = .*|brokers = [${list}]|" \
  -e "/^\[mysql\]/,/^\[/ s|^url = .*|url = \"${mysql%/}/databus_db\"|" \
  -e "/^\[redis\]/,/^\[/ s|^addr = .*|addr = \"${redis}\"|" \
  databus.toml
if [[ $auth == file ]]; then
  cat <<'TOML'

[[apps]]
id = 1
key = "app_key1"
secret = "app_secret1"
cluster = "cluster1"

[[grants]]
app_id = 1
group = "group_name1"
operation = 3
topic = "test156"
TOML
fi
