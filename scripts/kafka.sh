#!/usr/bin/env bash
# Apache Kafka from Maven Central's jars, run with the machine's Java: the one
# way the project installs, formats and starts a broker (services.sh for the
# shared broker and the three-broker cluster, the test kit for a test's own).
#
#   scripts/kafka.sh libs                 install the jars (if missing); print their directory
#   scripts/kafka.sh node OPTIONS         format the node's directory once, then run the broker
#                                         in the foreground (exec: the pid is the JVM's)
#   scripts/kafka.sh ready BROKERS SECS [N]
#                                         wait until a metadata request to BROKERS answers,
#                                         naming at least N brokers (default 1)
#   scripts/kafka.sh topic BROKERS NAME PARTITIONS [REPLICATION]
#                                         create topic NAME unless present; print its partition count
#   scripts/kafka.sh new-cluster-id       print a fresh cluster id (for nodes formatted as one cluster)
#   scripts/kafka.sh tool CLASS ARGS...   run one of Kafka's tools (org.apache.kafka.tools.TopicCommand ...)
#
# node OPTIONS: --dir DIR --id N --port PORT --controller-port PORT (required);
#   --voters 1@127.0.0.1:P,2@...   the controller quorum (default: this node alone)
#   --replication N                 replication of internal and new topics (default 1;
#                                   min.insync.replicas is 2 when N >= 3)
#   --listener NAME:PROTOCOL:PORT   one more listener on 127.0.0.1, advertised (repeatable;
#                                   SECURE:SASL_SSL:9094 ...); its settings go in --props
#   --props FILE                    more server properties, appended: they override
#                                   (SSL, SASL, an authorizer ...)
#   --format-arg ARG                passed to `StorageTool format` (repeatable: --add-scram ...)
#   --cluster-id ID                 the cluster id given to format (default: generated once)
#   --heap SIZE                     JVM heap (default 512m)
# The node's log goes to stderr; its data lives in DIR/data and survives restarts.
#
# Environment: DATABUS_KAFKA_VERSION (default below), DATABUS_TOOLS_DIR (default
# ~/.cache/databus), JAVA (default: java on PATH).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# 4.3.1: the newest Kafka line with a bug-fix release when this was pinned.
# KIP-848 consumer groups are GA since 4.0 and share groups (KIP-932) since
# 4.2, which queue mode may build on; the broker runs on Java 17.
KAFKA_VERSION=${DATABUS_KAFKA_VERSION:-4.3.1}
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
KAFKA_HOME="$TOOLS_DIR/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
JAVA=${JAVA:-java}

ME=kafka.sh
APT_LOG="$TOOLS_DIR/apt.log"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"

# ---------------------------------------------------------------------------------------------
# The jars

java_major() { "$JAVA" -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'; }

# Java 17 or newer (Kafka 4's broker needs 17), and Maven to fetch the jars.
ensure_java() {
	if ! have "$JAVA" || (($(java_major || echo 0) < 17)); then
		apt_install openjdk-17-jre-headless
		JAVA=java
	fi
	(($(java_major) >= 17)) || die "$JAVA is Java $(java_major); Kafka needs Java 17 or newer"
}

ensure_libs() {
	ensure_java
	[[ -f $LIBS/.complete ]] && return
	have mvn || apt_install maven
	mkdir -p "$KAFKA_HOME"
	local mlog="$KAFKA_HOME/mvn.log" tmp="$KAFKA_HOME/libs.tmp"
	rm -rf "$tmp"
	log "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS (log: $mlog)"
	mvn -B -q -f "$SCRIPT_DIR/kafka/pom.xml" "-Dkafka.version=$KAFKA_VERSION" \
		dependency:copy-dependencies -DincludeScope=runtime "-DoutputDirectory=$tmp" >"$mlog" 2>&1 ||
		{ tail -n 20 "$mlog" >&2; die "mvn dependency:copy-dependencies failed for Kafka $KAFKA_VERSION (log: $mlog)"; }
	[[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "Maven copied no kafka_2.13-$KAFKA_VERSION.jar into $tmp"
	rm -rf "$LIBS"
	mv "$tmp" "$LIBS"
	touch "$LIBS/.complete"
}

# tool CLASS ARGS...: a short-lived Kafka tool (small heap, quick start, warnings only on
# stderr), killed after TOOL_TIMEOUT seconds: an admin client retries a dead broker for a minute.
TOOL_TIMEOUT=${TOOL_TIMEOUT:-60}
tool() {
	timeout "$TOOL_TIMEOUT" "$JAVA" -cp "$LIBS/*" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
		-Dorg.slf4j.simpleLogger.logFile=System.err -Dorg.slf4j.simpleLogger.defaultLogLevel=warn "$@"
}

# ---------------------------------------------------------------------------------------------
# A node: broker and controller in one process (KRaft)

# A random Kafka Uuid: 16 bytes, URL-safe base64 without padding, not starting with '-'.
new_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
		[[ $id != -* ]] && { echo "$id"; return; }
	done
}

cmd_node() {
	local dir="" id="" port="" cport="" voters="" rf=1 props="" cluster_id="" heap=512m
	local format_args=() listeners="" advertised="" protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
	local re='^([A-Z_]+):([A-Z_]+):([0-9]+)$'
	while (($#)); do
		case $1 in
		--dir) dir=$2 ;;
		--id) id=$2 ;;
		--port) port=$2 ;;
		--controller-port) cport=$2 ;;
		--voters) voters=$2 ;;
		--replication) rf=$2 ;;
		--props) props=$2 ;;
		--listener)
			[[ $2 =~ $re ]] || die "node: --listener wants NAME:PROTOCOL:PORT, not $2"
			listeners+=",${BASH_REMATCH[1]}://127.0.0.1:${BASH_REMATCH[3]}"
			advertised+=",${BASH_REMATCH[1]}://127.0.0.1:${BASH_REMATCH[3]}"
			protocols+=",${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
			;;
		--format-arg) format_args+=("$2") ;;
		--cluster-id) cluster_id=$2 ;;
		--heap) heap=$2 ;;
		*) die "node: unknown option $1" ;;
		esac
		shift 2
	done
	[[ -n $dir && -n $id && -n $port && -n $cport ]] || die "node needs --dir, --id, --port and --controller-port"
	[[ -n $voters ]] || voters="$id@127.0.0.1:$cport"
	ensure_libs
	mkdir -p "$dir/data"
	dir=$(cd "$dir" && pwd)
	local min_isr=1
	((rf >= 3)) && min_isr=2
	{
		cat <<-EOF
			# written by scripts/kafka.sh node; rewritten at every start
			process.roles=broker,controller
			node.id=$id
			controller.quorum.voters=$voters
			listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport$listeners
			advertised.listeners=PLAINTEXT://127.0.0.1:$port$advertised
			controller.listener.names=CONTROLLER
			inter.broker.listener.name=PLAINTEXT
			listener.security.protocol.map=$protocols
			log.dirs=$dir/data
			num.partitions=1
			default.replication.factor=$rf
			min.insync.replicas=$min_isr
			offsets.topic.replication.factor=$rf
			transaction.state.log.replication.factor=$rf
			transaction.state.log.min.isr=$min_isr
			share.coordinator.state.topic.replication.factor=$rf
			share.coordinator.state.topic.min.isr=$min_isr
			# a test's group is assigned as soon as its first member joins
			group.initial.rebalance.delay.ms=0
		EOF
		[[ -z $props ]] || { echo "# from $props"; cat "$props"; }
	} >"$dir/server.properties"
	if [[ ! -f $dir/data/meta.properties ]]; then
		[[ -n $cluster_id ]] || cluster_id=$(cat "$dir/cluster.id" 2>/dev/null || new_cluster_id)
		echo "$cluster_id" >"$dir/cluster.id"
		tool kafka.tools.StorageTool format --ignore-formatted -t "$cluster_id" \
			-c "$dir/server.properties" "${format_args[@]}" >"$dir/format.log" 2>&1 ||
			{ cat "$dir/format.log" >&2; die "formatting $dir/data failed"; }
	fi
	# kafka-server-start.sh's GC settings; the heap bounded so that a cluster fits beside
	# everything else on a small machine.
	exec "$JAVA" -cp "$LIBS/*" "-Xms${heap}" "-Xmx${heap}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		-Dorg.slf4j.simpleLogger.logFile=System.err -Dorg.slf4j.simpleLogger.showDateTime=true \
		"-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS" \
		-Dorg.slf4j.simpleLogger.defaultLogLevel=info \
		kafka.Kafka "$dir/server.properties"
}

# ---------------------------------------------------------------------------------------------
# Admin, with Kafka's own tools

topics() { tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$@"; }

# The brokers a metadata request to BROKERS names (one line each); the tool moved from
# kafka.admin (3.x) to org.apache.kafka.tools (4.x).
live_brokers() {
	local class=org.apache.kafka.tools.BrokerApiVersionsCommand
	[[ $KAFKA_VERSION == 3.* ]] && class=kafka.admin.BrokerApiVersionsCommand
	TOOL_TIMEOUT=20 tool "$class" --bootstrap-server "$1" 2>/dev/null | grep -c ' (id: ' || true
}

cmd_ready() {
	local brokers=$1 secs=$2 want=${3:-1} deadline n=0
	ensure_libs
	deadline=$((SECONDS + secs))
	until n=$(live_brokers "$brokers") && ((n >= want)); do
		((SECONDS < deadline)) || die "$n of $want brokers answered a metadata request to $brokers within ${secs}s"
		sleep 0.5
	done
}

# partition_count BROKERS NAME: the topic's partitions, or nothing when it is absent.
partition_count() {
	local out
	out=$(TOOL_TIMEOUT=30 topics "$1" --describe --topic "$2" 2>&1) || {
		[[ $out == *"does not exist"* ]] && return 0
		die "describing topic $2 on $1 failed: $(tail -n 3 <<<"$out")"
	}
	sed -nE 's/.*PartitionCount: ([0-9]+).*/\1/p' <<<"$out" | head -n1
}

cmd_topic() {
	local brokers=$1 name=$2 partitions=$3 rf=${4:-} n out
	ensure_libs
	n=$(partition_count "$brokers" "$name")
	if [[ -z $n ]]; then
		# "already exists" from a concurrent creator is fine: the count below decides
		out=$(TOOL_TIMEOUT=30 topics "$brokers" --create --if-not-exists --topic "$name" \
			--partitions "$partitions" ${rf:+--replication-factor "$rf"} 2>&1) || log "creating topic $name: $out"
		n=$(partition_count "$brokers" "$name")
		[[ -n $n ]] || die "topic $name was not created on $brokers"
	fi
	echo "$n"
}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

case "${1:-}" in
libs)
	ensure_libs
	echo "$LIBS"
	;;
node)
	shift
	cmd_node "$@"
	;;
ready)
	(($# == 3 || $# == 4)) || die "usage: kafka.sh ready BROKERS SECONDS [N]"
	shift
	cmd_ready "$@"
	;;
topic)
	(($# == 4 || $# == 5)) || die "usage: kafka.sh topic BROKERS NAME PARTITIONS [REPLICATION]"
	shift
	cmd_topic "$@"
	;;
new-cluster-id) new_cluster_id ;;
tool)
	shift
	ensure_libs
	tool "$@"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
