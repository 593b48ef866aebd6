#!/usr/bin/env bash
# `make bench`: builds databus and databus-bench in release mode and runs the
# bench against the services `make bench` set up (or those named by
# DATABUS_BROKERS / DATABUS_MYSQL_URL). Prints a markdown table and writes
# bench/results.md, bench/results.json and the grid's chart bench/grid.svg
# (the grid drives databus, and the Go databus when BENCH_GO_DATABUS names
# it, with redis-benchmark). BENCH_QUICK=1 is a smoke run of
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

# The grid's load generator, and perf for its Kafka requests per SET.
# (perf and javac are optional: without them the grid has no Kafka requests
# per SET, or no Java producer.)
scripts/services.sh bench-tools >/dev/null || echo "bench.sh: could not install every bench tool (see above)" >&2
command -v redis-benchmark >/dev/null || { echo "bench.sh: redis-benchmark is required (apt-get install redis-tools)" >&2; exit 1; }
if ! command -v perf >/dev/null; then
	echo "bench.sh: perf not found (apt-get install linux-perf): the grid has no Kafka requests per SET" >&2
fi

# Kafka's Java producer as a peer in the grid: GridProducer against the
# jars of the broker scripts/kafka.sh installs.
if [[ -z ${BENCH_JAVA_CLASSPATH:-} ]] && command -v javac >/dev/null; then
	libs=$(scripts/kafka.sh libs | tail -1)
	classes="$RUN_DIR/java"
	mkdir -p "$classes"
	javac -nowarn -d "$classes" -cp "$libs/*" bench/java/GridProducer.java
	export BENCH_JAVA_CLASSPATH="$classes:$libs/*"
fi

target/release/databus-bench
