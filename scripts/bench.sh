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
#
# A network between the fronts and Kafka: with BENCH_RELAY_US > 0 (default
# 250, a datacenter's 0.5 ms round trip; 1000 is across zones) the bench
# runs against a broker of its own (a Kafka node under .run/bench/relayed,
# kept between runs) whose clients' listener advertises a delay relay
# (`databus-bench relay`) that holds every byte BENCH_RELAY_US each way:
# databus, the bare and the Java producer all reach Kafka through it (point
# a Go databus's cluster at $BENCH_RELAY_ADDR). BENCH_RELAY_US=0 runs on
# DATABUS_BROKERS directly (loopback), as before.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${BENCH_RUN_DIR:-.run/bench}
export BENCH_RUN_DIR=$RUN_DIR
PID_FILE="$RUN_DIR/databus.pid"
mkdir -p "$RUN_DIR"

RELAY_US=${BENCH_RELAY_US:-250}
RELAYED_DIR="$RUN_DIR/relayed"
# The relayed broker's ports: its own listener, controller, the listener
# behind the relay, and the relay's.
RELAY_PORTS=(${BENCH_RELAY_PORTS:-19192 19193 19194 19195})

kill_pid_file() {
	local pid
	pid=$(cat "$1" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
	fi
	rm -f "$1"
}

cleanup() {
	kill_pid_file "$PID_FILE"
	kill_pid_file "$RUN_DIR/relay.pid"
	kill_pid_file "$RUN_DIR/relayed-kafka.pid"
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

if ((RELAY_US > 0)); then
	read -r kport cport inner relay <<<"${RELAY_PORTS[*]}"
	mkdir -p "$RELAYED_DIR"
	cat >"$RELAYED_DIR/relay.properties" <<-EOF
		# the clients' listener (RELAYED) is reached through the delay relay
		advertised.listeners=PLAINTEXT://127.0.0.1:$kport,RELAYED://127.0.0.1:$relay
	EOF
	scripts/kafka.sh node --dir "$RELAYED_DIR" --id 1 --port "$kport" --controller-port "$cport" \
		--listener "RELAYED:PLAINTEXT:$inner" --props "$RELAYED_DIR/relay.properties" \
		>"$RELAYED_DIR/kafka.log" 2>&1 &
	echo $! >"$RUN_DIR/relayed-kafka.pid"
	# The relay reads a line on stdin to print what it held; the fifo is kept open.
	rm -f "$RUN_DIR/relay.in"
	mkfifo "$RUN_DIR/relay.in"
	target/release/databus-bench relay "127.0.0.1:$relay" "127.0.0.1:$inner" "$RELAY_US" \
		<"$RUN_DIR/relay.in" >"$RUN_DIR/relay.log" 2>&1 &
	echo $! >"$RUN_DIR/relay.pid"
	exec 9>"$RUN_DIR/relay.in"
	scripts/kafka.sh ready "127.0.0.1:$relay" 120 ||
		{ tail -n 30 "$RELAYED_DIR/kafka.log" >&2; exit 1; }
	export DATABUS_BROKERS="127.0.0.1:$relay" BENCH_RELAY_ADDR="127.0.0.1:$relay"
	export BENCH_BROKER_PID=$(cat "$RUN_DIR/relayed-kafka.pid")
	export BENCH_RELAY_US=$RELAY_US
	echo "bench.sh: Kafka on 127.0.0.1:$kport, reached through a ${RELAY_US} µs (each way) relay on $BENCH_RELAY_ADDR" >&2
fi

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

status=0
target/release/databus-bench || status=$?
if ((RELAY_US > 0)); then
	echo >&9
	sleep 0.5
	grep '^relay:' "$RUN_DIR/relay.log" | tail -n 1 >&2 || true
fi
exit "$status"
