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
# DATABUS_BROKERS directly (loopback), as before. BENCH_RELAY_NODES=3 makes
# it a three-broker cluster (.run/bench/relayed3; topics with replication 3
# and min.insync.replicas 2 unless BENCH_REPLICATION says otherwise), each
# broker behind a relay of its own; replication between the brokers is not
# delayed. BENCH_KEEP_CLUSTER=1 leaves those brokers and relays running when
# the bench ends and reuses them when it starts (with the delay they were
# started with): runs that compare two builds then meet the same warm
# cluster, where a fresh one spends its first minutes compiling and
# settling, slowest for whoever runs first.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN_DIR=${BENCH_RUN_DIR:-.run/bench}
export BENCH_RUN_DIR=$RUN_DIR
PID_FILE="$RUN_DIR/databus.pid"
mkdir -p "$RUN_DIR"

RELAY_US=${BENCH_RELAY_US:-250}
RELAY_NODES=${BENCH_RELAY_NODES:-1}
# Node i's ports: its own listener, controller, the listener behind the
# relay, and the relay's: BENCH_RELAY_PORT (19192) + 10 (i - 1) + 0..3.
RELAY_BASE=${BENCH_RELAY_PORT:-19192}
RELAYED_DIR="$RUN_DIR/relayed"
((RELAY_NODES == 1)) || RELAYED_DIR="$RUN_DIR/relayed$RELAY_NODES"
KEEP_CLUSTER=${BENCH_KEEP_CLUSTER:-0}

alive() {
	local pid
	pid=$(cat "$1" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# Stops the processes of these pid files: TERM to all at once, then waits
# (at most 60 s) until every one is gone, then KILL. A broker takes seconds
# to stop, longer when the others have gone first, and the next run's must
# find its ports free.
stop_pid_files() {
	local f pid pids=() left
	for f in "$@"; do
		if alive "$f"; then
			pid=$(cat "$f")
			kill "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
		rm -f "$f"
	done
	for _ in {1..300}; do
		left=()
		for pid in "${pids[@]}"; do
			kill -0 "$pid" 2>/dev/null && left+=("$pid")
		done
		pids=("${left[@]}")
		((${#pids[@]})) || return 0
		sleep 0.2
	done
	kill -9 "${pids[@]}" 2>/dev/null || true
}

# A fresh broker's JVM is slow for its first minutes of load (compiling,
# settling): on three brokers at 12 partitions, c=1, every peer ran at a
# third to two thirds of its rate on a cluster minutes old, the first to run
# the slowest; on loopback, c=100, databus / the Go databus went from 0.8 on
# a broker just started to 1.1-1.2 once it had carried load. Kafka's own
# producer load warms it, untimed: BENCH_WARMUP_SECS (90, 0 with
# BENCH_QUICK=1; 0 skips it) at 3,000 records/s, acks=all, to a topic of 12
# partitions.
#   warm <bootstrap> <replication> <log>
warm() {
	local secs=90
	[[ ${BENCH_QUICK:-0} != 1 ]] || secs=0
	secs=${BENCH_WARMUP_SECS:-$secs}
	((secs > 0)) || return 0
	echo "bench.sh: warming the broker(s) at $1 for ${secs}s (BENCH_WARMUP_SECS)" >&2
	scripts/kafka.sh tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" --create \
		--if-not-exists --topic bench_warmup --partitions 12 --replication-factor "$2" \
		--config retention.ms=600000 >"$3" 2>&1 &&
		TOOL_TIMEOUT=$((secs + 60)) scripts/kafka.sh tool org.apache.kafka.tools.ProducerPerformance \
			--topic bench_warmup --num-records $((secs * 3000)) --record-size 100 --throughput 3000 \
			--producer-props "bootstrap.servers=$1" acks=all linger.ms=0 >>"$3" 2>&1 ||
		echo "bench.sh: the warm-up failed (see $3)" >&2
}

cleanup() {
	local cluster=()
	shopt -s nullglob
	[[ $KEEP_CLUSTER == 1 ]] || cluster=("$RUN_DIR"/relay[0-9]*.pid "$RUN_DIR"/relayed-kafka*.pid)
	stop_pid_files "$PID_FILE" "$RUN_DIR"/databus-*.pid "${cluster[@]}"
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
	mkdir -p "$RELAYED_DIR"
	voters="" relays=""
	for ((n = 1; n <= RELAY_NODES; n++)); do
		voters+="${voters:+,}$n@127.0.0.1:$((RELAY_BASE + 10 * (n - 1) + 1))"
		relays+="${relays:+,}127.0.0.1:$((RELAY_BASE + 10 * (n - 1) + 3))"
	done
	if ((RELAY_NODES > 1)); then
		[[ -f $RELAYED_DIR/cluster.id ]] || scripts/kafka.sh new-cluster-id >"$RELAYED_DIR/cluster.id"
		export BENCH_REPLICATION=${BENCH_REPLICATION:-$RELAY_NODES}
	fi
	broker_pids="" relay_fds=() started=0
	for ((n = 1; n <= RELAY_NODES; n++)); do
		kport=$((RELAY_BASE + 10 * (n - 1))) cport=$((RELAY_BASE + 10 * (n - 1) + 1))
		inner=$((RELAY_BASE + 10 * (n - 1) + 2)) relay=$((RELAY_BASE + 10 * (n - 1) + 3))
		dir=$RELAYED_DIR
		((RELAY_NODES == 1)) || dir="$RELAYED_DIR/node$n"
		mkdir -p "$dir"
		cat >"$dir/relay.properties" <<-EOF
			# the clients' listener (RELAYED) is reached through the delay relay
			advertised.listeners=PLAINTEXT://127.0.0.1:$kport,RELAYED://127.0.0.1:$relay
		EOF
		node_args=(--dir "$dir" --id "$n" --port "$kport" --controller-port "$cport" --voters "$voters"
			--replication "$RELAY_NODES" --listener "RELAYED:PLAINTEXT:$inner" --props "$dir/relay.properties")
		((RELAY_NODES == 1)) || node_args+=(--cluster-id "$(cat "$RELAYED_DIR/cluster.id")")
		if ! alive "$RUN_DIR/relayed-kafka$n.pid"; then
			scripts/kafka.sh node "${node_args[@]}" >"$dir/kafka.log" 2>&1 &
			echo $! >"$RUN_DIR/relayed-kafka$n.pid"
			started=1
		fi
		broker_pids+="${broker_pids:+,}$(cat "$RUN_DIR/relayed-kafka$n.pid")"
		if [[ $(cat "$RUN_DIR/relay$n.us" 2>/dev/null) != "$RELAY_US" ]]; then
			stop_pid_files "$RUN_DIR/relay$n.pid"
		fi
		# A relay prints what it held when it reads a line; its fifo stays open.
		if ! alive "$RUN_DIR/relay$n.pid"; then
			rm -f "$RUN_DIR/relay$n.in"
			mkfifo "$RUN_DIR/relay$n.in"
			exec {fd}<>"$RUN_DIR/relay$n.in"
			target/release/databus-bench relay "127.0.0.1:$relay" "127.0.0.1:$inner" "$RELAY_US" \
				<"$RUN_DIR/relay$n.in" >"$RUN_DIR/relay$n.log" 2>&1 &
			echo $! >"$RUN_DIR/relay$n.pid"
			echo "$RELAY_US" >"$RUN_DIR/relay$n.us"
		else
			exec {fd}<>"$RUN_DIR/relay$n.in"
		fi
		relay_fds+=("$fd")
	done
	scripts/kafka.sh ready "$relays" 180 "$RELAY_NODES" ||
		{ tail -n 30 "$RELAYED_DIR"/kafka.log "$RELAYED_DIR"/node*/kafka.log >&2 2>/dev/null; exit 1; }
	if ((started)); then warm "$relays" "$RELAY_NODES" "$RELAYED_DIR/warmup.log"; fi
	if ((RELAY_NODES > 1 && started)); then
		# The first broker up after a restart leads every partition of the
		# topics kept from earlier runs until the controller's imbalance
		# check (up to 5 minutes later) moves them back mid-run: put them
		# back now, once the followers are in sync again (seen: broker 1
		# leading all 12 partitions, its relay carrying all the traffic).
		for try in {1..6}; do
			scripts/kafka.sh tool org.apache.kafka.tools.LeaderElectionCommand \
				--bootstrap-server "127.0.0.1:$RELAY_BASE" --election-type PREFERRED --all-topic-partitions \
				>"$RELAYED_DIR/election.log" 2>&1 && break
			((try < 6)) || echo "bench.sh: the preferred leader election failed (see $RELAYED_DIR/election.log)" >&2
			sleep 5
		done
	fi
	export DATABUS_BROKERS=$relays BENCH_RELAY_ADDR=$relays BENCH_BROKER_PID=$broker_pids BENCH_RELAY_US=$RELAY_US
	echo "bench.sh: $RELAY_NODES Kafka node(s) reached through ${RELAY_US} µs (each way) relays on $relays" >&2
fi

local_broker="127.0.0.1:${DATABUS_KAFKA_PORT:-9092}"
if [[ ${DATABUS_BROKERS:-$local_broker} == "$local_broker" && -z ${BENCH_BROKER_PID:-} ]]; then
	pid=$(cat "${DATABUS_RUN_DIR:-.run}/kafka.pid" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
		export BENCH_BROKER_PID=$pid
		# Warmed once per broker process (it stays up between runs).
		if [[ $(cat "$RUN_DIR/warmed.pid" 2>/dev/null) != "$pid" ]]; then
			warm "$local_broker" 1 "$RUN_DIR/warmup.log"
			echo "$pid" >"$RUN_DIR/warmed.pid"
		fi
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
	for fd in "${relay_fds[@]}"; do echo >&"$fd"; done
	sleep 0.5
	grep -h '^relay: .* held' "$RUN_DIR"/relay[0-9]*.log >&2 || true
fi
exit "$status"
