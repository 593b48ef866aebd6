#!/usr/bin/env bash
# Loads the seed's sample app and grant into Redis in the redis_orm layout
# (what redis_orm_workbench writes), for `auth = "redis"`. Idempotent.
# Address from DATABUS_REDIS_ADDR (default 127.0.0.1:6379), database from
# DATABUS_REDIS_DB (default 0).
set -euo pipefail
addr=${DATABUS_REDIS_ADDR:-127.0.0.1:6379}
db=${DATABUS_REDIS_DB:-0}
r() { redis-cli -h "${addr%:*}" -p "${addr##*:}" -n "$db" "$@" >/dev/null; }
now=$(date +%s)
r HSET tb:apptb 1_Id 1 1_AppKey app_key1 1_AppSecret app_secret1 1_Cluster cluster1 \
  1_CreatedAt "$now" 1_UpdatedAt "$now"
r HSET tb:authtb 1_Id 1 1_AppId 1 1_Group group_name1 1_Operation 3 1_Topic test156 \
  1_CreatedAt "$now" 1_UpdatedAt "$now"
r ZADD ix:authtb_group 1 group_name1
echo "sample-redis: app_key1 / group_name1 / test156 loaded into redis $addr db $db"
