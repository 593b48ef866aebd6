#!/usr/bin/env bash
# `make bench`: builds databus and databus-bench in release mode and runs the
# bench against the services `make bench` set up (or those named by
# DATABUS_BROKERS / DATABUS_MYSQL_URL). Prints a markdown table and writes
# bench/results.md and bench/results.json. See BENCHMARKS.md for the knobs
# (BENCH_QUICK=1 for a smoke run of about a minute).
#
# The bench starts databus itself and kills it when done; should the bench die
# first, the trap below kills the databus whose pid it left in the pid file.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${BENCH_RUN_DIR:-.run/bench}
export BENCH_RUN_DIR=$RUN_DIR
PID_FILE="$RUN_DIR/databus.pid"
mkdir -p "$RUN_DIR"

cleanup() {
	local pid
	pid=$(cat "$PID_FILE" 2>/dev/null) || return 0
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

cargo build --release --bins -p databus

# The broker's CPU goes into the table when it is the local tansu of services.sh.
if [[ -z ${BENCH_BROKER_PID:-} ]]; then
	tansu_pid=$(cat "${DATABUS_RUN_DIR:-.run}/tansu.pid" 2>/dev/null || true)
	if [[ ${DATABUS_BROKERS:-127.0.0.1:9092} == "127.0.0.1:${DATABUS_TANSU_PORT:-9092}" &&
		$tansu_pid =~ ^[0-9]+$ ]] && kill -0 "$tansu_pid" 2>/dev/null; then
		export BENCH_BROKER_PID=$tansu_pid
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
