#!/usr/bin/env bash
# `make bench`: builds databus and databus-bench in release mode and runs the
# bench against the services `make bench` set up (or those named by
# DATABUS_BROKERS / DATABUS_MYSQL_URL). Prints a markdown table and writes
# bench/results.md and bench/results.json, then runs redis-benchmark against
# databus (scripts/bench-redis-benchmark.sh: bench/redis-benchmark.{md,csv}).
# BENCH_QUICK=1 is a smoke run of
# under a minute that writes bench/results-quick.* instead. See BENCHMARKS.md
# for every knob.
#
# When the broker is the local Apache Kafka of scripts/services.sh, its CPU
# goes into the table too (BENCH_BROKER_PID).
#
# The bench starts databus itself and stops it when done; should the bench
# die first, the trap below kills the databus whose pid it left in the pid
# file.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${BENCH_RUN_DIR:-.run/bench}
export BENCH_RUN_DIR=$RUN_DIR
PID_FILE="$RUN_DIR/databus.pid"
mkdir -p "$RUN_DIR"

cleanup() {
	local pid
	pid=$(cat "$PID_FILE" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
	fi
	rm -f "$PID_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1,000 connections on each side, plus librdkafka's sockets.
want=8192
if (($(ulimit -n) < want)); then
	hard=$(ulimit -Hn)
	[[ $hard == unlimited ]] || ((hard >= want)) || want=$hard
	ulimit -n "$want" || echo "bench.sh: could not raise the open-file limit to $want" >&2
fi

cargo build --release -p databus -p databus-bench

local_broker="127.0.0.1:${DATABUS_KAFKA_PORT:-9092}"
if [[ ${DATABUS_BROKERS:-$local_broker} == "$local_broker" && -z ${BENCH_BROKER_PID:-} ]]; then
	pid=$(cat "${DATABUS_RUN_DIR:-.run}/kafka.pid" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
		export BENCH_BROKER_PID=$pid
	fi
fi

BENCH_DATE=$(date -u +%Y-%m-%dT%H:%MZ)
BENCH_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || true)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
	BENCH_GIT_COMMIT="$BENCH_GIT_COMMIT+dirty"
fi
export BENCH_DATE BENCH_GIT_COMMIT
export BENCH_CLK_TCK=${BENCH_CLK_TCK:-$(getconf CLK_TCK)}

target/release/databus-bench

# redis-benchmark against databus on the same broker (BENCH_REDIS_BENCHMARK=0 skips it).
if [[ ${BENCH_REDIS_BENCHMARK:-1} != 0 ]]; then
	scripts/bench-redis-benchmark.sh
fi
