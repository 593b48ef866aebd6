#!/usr/bin/env bash
# `make run`: writes .run/databus.toml for this machine (see run-config.sh),
# loads the sample grants into Redis when DATABUS_AUTH=redis, and runs the
# release build in the foreground.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run
scripts/run-config.sh > .run/databus.toml
if [[ ${DATABUS_AUTH:-mysql} == redis ]]; then
  scripts/sample-redis.sh
fi
echo "databus: auth store ${DATABUS_AUTH:-mysql}, config .run/databus.toml (from databus.toml)"
exec target/release/databus --conf .run/databus.toml
