#!/usr/bin/env bash
# Local services for databus: MariaDB, Redis and Apache Kafka (KRaft, from Maven Central's
# jars, run with the machine's Java; see scripts/kafka.sh).
#
#   scripts/services.sh up          install (if missing) and start everything, idempotently
#   scripts/services.sh env         print `export` lines with the resolved addresses
#   scripts/services.sh down        stop the Kafka broker and cluster this script started
#                                   (their data is kept; MariaDB and Redis keep running)
#   scripts/services.sh cluster up|down|env
#                                   a three-broker Kafka cluster on loopback (replication 3,
#                                   min.insync.replicas 2), for faults that need one
#   scripts/services.sh topic NAME PARTITIONS
#                                   create a topic on the broker (DATABUS_BROKERS or ours)
#   scripts/services.sh test-tools  install what only the tests use (openssl, curl, hiredis, systemd-analyze, prometheus...), if missing
#   scripts/services.sh bench-tools install what only make bench uses (redis-benchmark, perf, javac), if missing
#   scripts/services.sh sweep       delete the topics and groups earlier test runs left on our broker
#
# Environment (all optional):
#   DATABUS_MYSQL_URL    mysql://user:pass@host:port of your own MySQL: nothing is installed or
#                        started, no user is created, and the sample database is loaded only if
#                        DATABUS_LOAD_SAMPLE=1.  Default: local MariaDB, user databus/databus.
#   DATABUS_REDIS_ADDR   host:port of your own Redis: nothing is installed or started.
#   DATABUS_BROKERS      comma-separated host:port list of your own Kafka: no broker is started;
#                        topic test156 is still created there (with Kafka's own admin tool, so
#                        Java and the Kafka jars are still installed).
#   DATABUS_KAFKA_VERSION  the Apache Kafka release to install and run (default: kafka.sh's pin).
#   DATABUS_KAFKA_PORT   port of the local broker (default 9092; its controller listens on +1).
#   DATABUS_CLUSTER_PORT first broker port of the three-broker cluster (default 29092).
#   DATABUS_TOOLS_DIR    where the Kafka jars are kept (default ~/.cache/databus).
#   DATABUS_RUN_DIR      logs, pid files and the brokers' data (default ./.run).
#
# Progress goes to stderr; `up` prints one summary line per service on stdout.
# The broker keeps its data in $DATABUS_RUN_DIR/kafka: a restart keeps its topics.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCHEMA_SQL="$SCRIPT_DIR/schema.sql"
SAMPLE_SQL="$SCRIPT_DIR/sample.sql"

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
RUN_DIR=${DATABUS_RUN_DIR:-$PWD/.run}
[[ $RUN_DIR == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
export DATABUS_TOOLS_DIR=$TOOLS_DIR
KAFKA="$SCRIPT_DIR/kafka.sh"
KAFKA_VERSION=${DATABUS_KAFKA_VERSION:-$(sed -nE 's/^KAFKA_VERSION=\$\{DATABUS_KAFKA_VERSION:-(.*)\}$/\1/p' "$KAFKA")}
KAFKA_PORT=${DATABUS_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
KAFKA_HEAP=512m
CLUSTER_PORT=${DATABUS_CLUSTER_PORT:-29092}
CLUSTER_HEAP=384m
TOPIC="test156"
TOPIC_PARTITIONS=3

MYSQL_HOST=127.0.0.1
MYSQL_PORT=3306
MYSQL_USER=databus
MYSQL_PASS=databus # fixed local development password, not a secret
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

MYSQL_WAIT=60
REDIS_WAIT=30
KAFKA_WAIT=120

export DEBIAN_FRONTEND=noninteractive
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------------------------
ME=services.sh
APT_LOG="$RUN_DIR/apt.log"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
redact() { sed -E 's#(://[^:@/]*):[^@/]*@#\1:***@#' <<<"$1"; }

# port_open HOST PORT: does something accept TCP connections there?
# shellcheck disable=SC2016 # $0/$1 expand in the inner bash
port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# wait_until SECONDS CMD...: run CMD every half second until it succeeds; 1 on timeout
wait_until() {
	local secs=$1 i
	shift
	for ((i = 0; i < secs * 2; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	return 1
}

ensure_mariadb_client() { have mariadb || apt_install mariadb-client; }

# ---------------------------------------------------------------------------------------------
# MariaDB

mariadbd_bin() {
	if [[ -x /usr/sbin/mariadbd ]]; then echo /usr/sbin/mariadbd; else command -v mariadbd || true; fi
}

# mariadbd_option NAME: the value of --NAME in the server's option files (empty if not set)
mariadbd_option() { my_print_defaults mysqld mariadb server 2>/dev/null | sed -n "s/^--$1=//p" | tail -n1; }

start_mariadb() {
	local bin started=""
	bin=$(mariadbd_bin)
	if [[ -z $bin ]]; then
		apt_install mariadb-server mariadb-client
		bin=$(mariadbd_bin)
		[[ -n $bin ]] || die "mariadb-server installed but no mariadbd binary found"
		started="installed mariadb-server, "
	fi
	ensure_mariadb_client
	# the package's postinst may already have started it
	if port_open "$MYSQL_HOST" "$MYSQL_PORT"; then
		MYSQL_ACTION="${started}running on $MYSQL_HOST:$MYSQL_PORT"
		return
	fi
	mkdir -p "$RUN_DIR" /run/mysqld
	chown mysql:mysql /run/mysqld
	local startlog="$RUN_DIR/mariadb.log" errlog pidfile
	errlog=$(mariadbd_option log-error)
	pidfile=$(mariadbd_option pid-file)
	if [[ ! -d /var/lib/mysql/mysql ]]; then
		local initlog="$RUN_DIR/mariadb-install-db.log"
		log "initialising MariaDB datadir /var/lib/mysql (log: $initlog)"
		mariadb-install-db --user=mysql >>"$initlog" 2>&1 ||
			{ tail_log "$initlog"; die "mariadb-install-db failed (log: $initlog)"; }
	fi
	log "starting $bin (log: $startlog${errlog:+, error log: $errlog})"
	local opts=() ssd
	start-stop-daemon --help 2>&1 | grep -q -- '--output' && opts+=(--output "$startlog")
	# with the server's pid file, s-s-d only counts the mariadbd that owns it as "already running"
	[[ -n $pidfile ]] && opts+=(--pidfile "$pidfile")
	ssd=$(start-stop-daemon --start --oknodo --background "${opts[@]}" --exec "$bin" -- --user=mysql 2>&1) ||
		{ log "$ssd"; tail_log "$startlog"; die "start-stop-daemon failed to start $bin (log: $startlog)"; }
	[[ -n $ssd ]] && log "start-stop-daemon: $ssd"
	if ! wait_until "$MYSQL_WAIT" mariadb_up; then
		tail_log "$startlog"
		[[ -n $errlog ]] && tail_log "$errlog"
		[[ $ssd == *"already running"* ]] && log "a $bin process was already running, but it does not answer on $MYSQL_HOST:$MYSQL_PORT"
		die "MariaDB did not answer on $MYSQL_HOST:$MYSQL_PORT within ${MYSQL_WAIT}s (logs: $startlog${errlog:+, $errlog})"
	fi
	MYSQL_ACTION="${started}started on $MYSQL_HOST:$MYSQL_PORT"
}

mariadb_up() { env -u MYSQL_PWD mariadb-admin --connect-timeout=2 ping && port_open "$MYSQL_HOST" "$MYSQL_PORT"; }

# db CLIENT-ARGS...: the mariadb client as the databus user (or DATABUS_MYSQL_URL's user) over TCP
db() { MYSQL_PWD="$DB_PASS" mariadb --connect-timeout=10 -h"$DB_HOST" -P"$DB_PORT" -u"$DB_USER" "$@"; }

ROOT_SQL=()
find_root_client() {
	local sock=(env -u MYSQL_PWD mariadb --connect-timeout=10 -uroot)
	local tcp=(env -u MYSQL_PWD mariadb --connect-timeout=10 -h"$MYSQL_HOST" -P"$MYSQL_PORT" -uroot)
	if "${sock[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
		ROOT_SQL=("${sock[@]}")
	elif "${tcp[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
		ROOT_SQL=("${tcp[@]}")
	else
		die "cannot connect to MariaDB as root (tried 'mariadb -uroot' over the unix socket and over $MYSQL_HOST:$MYSQL_PORT)"
	fi
}

databus_user_ok() {
	db -N -e 'SHOW GRANTS' 2>/dev/null | grep -q 'ALL PRIVILEGES ON \*\.\*' || return 1
	# 'databus'@'localhost' (unix socket) too, where there is a socket
	if [[ -S /run/mysqld/mysqld.sock ]]; then
		MYSQL_PWD="$DB_PASS" mariadb --connect-timeout=10 -u"$DB_USER" -e 'SELECT 1' >/dev/null 2>&1 || return 1
	fi
}

ensure_databus_user() {
	if databus_user_ok; then
		MYSQL_USER_ACTION="user $MYSQL_USER present"
		return
	fi
	find_root_client
	log "creating MariaDB user $MYSQL_USER with ALL PRIVILEGES ON *.*"
	local u h sql=""
	for h in localhost 127.0.0.1 %; do
		u="'$MYSQL_USER'@'$h'"
		sql+="CREATE USER IF NOT EXISTS $u IDENTIFIED BY '$MYSQL_PASS';"
		sql+="ALTER USER $u IDENTIFIED BY '$MYSQL_PASS';"
		sql+="GRANT ALL PRIVILEGES ON *.* TO $u;"
	done
	"${ROOT_SQL[@]}" -e "$sql" || die "creating MariaDB user $MYSQL_USER failed (as root: ${ROOT_SQL[*]:3})"
	databus_user_ok || die "MariaDB user $MYSQL_USER was created but cannot log in over $MYSQL_HOST:$MYSQL_PORT with ALL PRIVILEGES"
	MYSQL_USER_ACTION="created user $MYSQL_USER"
}

sample_present() {
	[[ "$(db -N -e 'SELECT (SELECT COUNT(*) FROM databus_db.app_tb WHERE id=1) + (SELECT COUNT(*) FROM databus_db.auth_tb WHERE id=1)' 2>/dev/null)" == 2 ]]
}

load_sample() {
	[[ -r $SCHEMA_SQL && -r $SAMPLE_SQL ]] || die "sample SQL not found: $SCHEMA_SQL, $SAMPLE_SQL"
	if sample_present; then
		MYSQL_SAMPLE_ACTION="sample databus_db present"
		return
	fi
	log "loading $SAMPLE_SQL into $DB_HOST:$DB_PORT as $DB_USER"
	{ printf 'CREATE DATABASE IF NOT EXISTS databus_db;\nUSE databus_db;\n'; cat "$SCHEMA_SQL" "$SAMPLE_SQL"; } | db ||
		die "loading $SAMPLE_SQL into $DB_HOST:$DB_PORT as $DB_USER failed"
	sample_present || die "loaded $SAMPLE_SQL but databus_db.app_tb/auth_tb row 1 is missing"
	MYSQL_SAMPLE_ACTION="loaded sample databus_db"
}

# parse_mysql_url URL: set DB_HOST DB_PORT DB_USER DB_PASS (no %-decoding)
parse_mysql_url() {
	local re='^mysql://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?([/?].*)?$'
	[[ $1 =~ $re ]] || die "cannot parse DATABUS_MYSQL_URL=$(redact "$1") (expected mysql://user:pass@host:port)"
	DB_USER=${BASH_REMATCH[1]}
	DB_PASS=${BASH_REMATCH[3]}
	DB_HOST=${BASH_REMATCH[4]}
	DB_PORT=${BASH_REMATCH[6]:-3306}
}

up_mariadb() {
	MYSQL_ACTION="" MYSQL_USER_ACTION="" MYSQL_SAMPLE_ACTION=""
	if [[ -n ${DATABUS_MYSQL_URL:-} ]]; then
		local shown
		shown=$(redact "$DATABUS_MYSQL_URL")
		if [[ ${DATABUS_LOAD_SAMPLE:-0} == 1 ]]; then
			parse_mysql_url "$DATABUS_MYSQL_URL"
			ensure_mariadb_client
			load_sample
			echo "mariadb: DATABUS_MYSQL_URL=$shown set, not installing/starting; $MYSQL_SAMPLE_ACTION"
		else
			echo "mariadb: DATABUS_MYSQL_URL=$shown set, not installing/starting (sample not loaded; DATABUS_LOAD_SAMPLE=1 to load)"
		fi
		return
	fi
	DB_HOST=$MYSQL_HOST DB_PORT=$MYSQL_PORT DB_USER=$MYSQL_USER DB_PASS=$MYSQL_PASS
	if port_open "$MYSQL_HOST" "$MYSQL_PORT"; then
		MYSQL_ACTION="already running on $MYSQL_HOST:$MYSQL_PORT"
		ensure_mariadb_client
	else
		start_mariadb
	fi
	ensure_databus_user
	load_sample
	echo "mariadb: $MYSQL_ACTION; $MYSQL_USER_ACTION; $MYSQL_SAMPLE_ACTION"
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_ping() { [[ "$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

up_redis() {
	local cli="redis-cli present"
	if ! have redis-cli; then
		apt_install redis-tools
		cli="installed redis-tools"
	fi
	if [[ -n ${DATABUS_REDIS_ADDR:-} ]]; then
		echo "redis: DATABUS_REDIS_ADDR=$DATABUS_REDIS_ADDR set, not installing/starting ($cli)"
		return
	fi
	if redis_ping; then
		echo "redis: already running on $REDIS_HOST:$REDIS_PORT ($cli)"
		return
	fi
	local action=""
	if ! have redis-server; then
		apt_install redis-server
		action="installed redis-server, "
		# a package postinst may have started one already
		if wait_until 3 redis_ping; then
			echo "redis: ${action}running on $REDIS_HOST:$REDIS_PORT ($cli)"
			return
		fi
	fi
	port_open "$REDIS_HOST" "$REDIS_PORT" &&
		die "something listens on $REDIS_HOST:$REDIS_PORT but does not answer redis-cli ping with PONG"
	mkdir -p "$RUN_DIR"
	local rlog="$RUN_DIR/redis.log"
	log "starting redis-server on $REDIS_HOST:$REDIS_PORT (log: $rlog)"
	redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
		--dir "$RUN_DIR" --logfile "$rlog" --pidfile "$RUN_DIR/redis.pid" ||
		{ tail_log "$rlog"; die "redis-server failed to start (log: $rlog)"; }
	wait_until "$REDIS_WAIT" redis_ping ||
		{ tail_log "$rlog"; die "Redis did not answer PING on $REDIS_HOST:$REDIS_PORT within ${REDIS_WAIT}s (log: $rlog)"; }
	echo "redis: ${action}started on $REDIS_HOST:$REDIS_PORT ($cli)"
}

# ---------------------------------------------------------------------------------------------
# Apache Kafka (KRaft, one process as broker and controller), by scripts/kafka.sh

kafka_pid_alive() {
	local pid
	pid=$(cat "$1" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka '
}

# An earlier version of this script ran tansu on the same port: stop the one it started.
stop_old_tansu() {
	local pidf="$RUN_DIR/tansu.pid" pid
	pid=$(cat "$pidf" 2>/dev/null) || return 0
	if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */tansu ]]; then
		log "stopping the tansu broker (pid $pid) an earlier services.sh started"
		kill "$pid" 2>/dev/null || true
		wait_until 10 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidf"
}

# start_node NAME LOG PIDFILE NODE-OPTIONS...: a Kafka node in the background, unless ours runs
start_node() {
	local name=$1 nlog=$2 pidf=$3
	shift 3
	if kafka_pid_alive "$pidf"; then
		log "$name (pid $(cat "$pidf")) is already running"
		return
	fi
	log "starting $name (log: $nlog)"
	setsid nohup "$KAFKA" node "$@" >>"$nlog" 2>&1 </dev/null &
	echo $! >"$pidf"
	disown || true
}

# await_kafka BROKERS N LOG PIDFILE...: until a metadata request names N brokers, while the
# nodes live
await_kafka() {
	local brokers=$1 want=$2 nlog=$3 deadline pidf
	shift 3
	deadline=$((SECONDS + KAFKA_WAIT))
	until "$KAFKA" ready "$brokers" 5 "$want" 2>/dev/null; do
		for pidf in "$@"; do
			kafka_pid_alive "$pidf" || { tail_log "$nlog"; die "Kafka node $pidf exited during start-up (log: $nlog)"; }
		done
		((SECONDS < deadline)) || { tail_log "$nlog"; die "Kafka at $brokers did not answer within ${KAFKA_WAIT}s (log: $nlog)"; }
	done
}

# ensure_topic BROKERS [REPLICATION]: sets TOPIC_ACTION
ensure_topic() {
	local n
	n=$("$KAFKA" topic "$1" "$TOPIC" "$TOPIC_PARTITIONS" ${2:+"$2"}) || die "creating topic $TOPIC on $1 failed"
	TOPIC_ACTION="topic $TOPIC ($n partitions)"
	((n == TOPIC_PARTITIONS)) || log "warning: topic $TOPIC has $n partitions, expected $TOPIC_PARTITIONS"
}

up_broker() {
	local libs
	libs=$("$KAFKA" libs) || die "installing Apache Kafka $KAFKA_VERSION failed"
	if [[ -n ${DATABUS_BROKERS:-} ]]; then
		ensure_topic "$DATABUS_BROKERS"
		echo "kafka: DATABUS_BROKERS=$DATABUS_BROKERS set, not starting a broker; $TOPIC_ACTION"
		return
	fi
	stop_old_tansu
	local pidf="$RUN_DIR/kafka.pid" nlog="$RUN_DIR/kafka.log" brokers="127.0.0.1:$KAFKA_PORT" action
	mkdir -p "$RUN_DIR"
	if kafka_pid_alive "$pidf"; then
		action="running on $brokers (pid $(cat "$pidf"))"
	elif port_open 127.0.0.1 "$KAFKA_PORT"; then
		action="something not started here listens on $brokers; using it"
	else
		start_node "Apache Kafka $KAFKA_VERSION on $brokers" "$nlog" "$pidf" \
			--dir "$RUN_DIR/kafka" --id 1 --port "$KAFKA_PORT" --controller-port "$KAFKA_CONTROLLER_PORT" --heap "$KAFKA_HEAP"
		action="started on $brokers (pid $(cat "$pidf"), log $nlog)"
	fi
	await_kafka "$brokers" 1 "$nlog" $(kafka_pid_alive "$pidf" && echo "$pidf")
	ensure_topic "$brokers" 1
	echo "kafka: Apache Kafka $KAFKA_VERSION $action; $TOPIC_ACTION (jars: $libs)"
}

# The three-broker cluster of the fault suite, on loopback: nodes 1-3, brokers on
# CLUSTER_PORT+0..2, controllers on CLUSTER_PORT+100..102, all three voters.
cluster_brokers() { echo "127.0.0.1:$CLUSTER_PORT,127.0.0.1:$((CLUSTER_PORT + 1)),127.0.0.1:$((CLUSTER_PORT + 2))"; }

cluster_up() {
	"$KAFKA" libs >/dev/null || die "installing Apache Kafka $KAFKA_VERSION failed"
	local dir="$RUN_DIR/cluster" i voters="" pidfs=()
	mkdir -p "$dir"
	[[ -s $dir/cluster.id ]] || "$KAFKA" new-cluster-id >"$dir/cluster.id"
	for i in 1 2 3; do voters+="${voters:+,}$i@127.0.0.1:$((CLUSTER_PORT + 99 + i))"; done
	for i in 1 2 3; do
		start_node "cluster node $i on 127.0.0.1:$((CLUSTER_PORT + i - 1))" "$dir/node$i.log" "$dir/node$i.pid" \
			--dir "$dir/node$i" --id "$i" --port "$((CLUSTER_PORT + i - 1))" --controller-port "$((CLUSTER_PORT + 99 + i))" \
			--voters "$voters" --replication 3 --cluster-id "$(cat "$dir/cluster.id")" --heap "$CLUSTER_HEAP"
		pidfs+=("$dir/node$i.pid")
	done
	await_kafka "$(cluster_brokers)" 3 "$dir/node1.log" "${pidfs[@]}"
	echo "kafka cluster: 3 nodes of Apache Kafka $KAFKA_VERSION on $(cluster_brokers) (replication 3, min.insync.replicas 2; logs $dir/node*.log)"
}

# stop_nodes PIDFILE...: SIGTERM (a clean shutdown), then SIGKILL after 30 s
stop_nodes() {
	local pidf pid
	for pidf in "$@"; do kafka_pid_alive "$pidf" && kill "$(cat "$pidf")" 2>/dev/null || true; done
	for pidf in "$@"; do
		pid=$(cat "$pidf" 2>/dev/null) || continue
		wait_until 30 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
		rm -f "$pidf"
	done
}

# What only the tests use: openssl makes a throwaway PKI, hiredis is one of the
# clients of the compatibility tests, and redis-tools brings redis-cli and
# redis-benchmark.
cmd_test_tools() {
	local missing=()
	have openssl || missing+=(openssl)
	have redis-benchmark || missing+=(redis-tools)
	have curl || missing+=(curl)
	have cc || missing+=(gcc libc6-dev)
	[[ -f /usr/include/hiredis/hiredis.h ]] || missing+=(libhiredis-dev)
	# the package test (tests/dist.rs): dpkg-deb, objdump, systemd-analyze
	have objdump || missing+=(binutils)
	have systemd-analyze || missing+=(systemd)
	# the Java client programs (tests/clients/java) are compiled
	have javac || missing+=(openjdk-17-jdk-headless)
	have mvn || missing+=(maven)
	# the dashboard and alert rules are checked against a real Prometheus
	# (tests/admin.rs): Debian's package, prometheus and promtool; the
	# test runs its own on a free port (where systemd runs, the package also
	# enables its own service on :9090)
	have prometheus && have promtool || missing+=(prometheus)
	((${#missing[@]} == 0)) || apt_install "${missing[@]}"
	echo "test tools: openssl, redis-benchmark, curl, cc, hiredis, objdump, systemd-analyze, prometheus present${missing[*]:+ (installed ${missing[*]})}"
}

# The topics and consumer groups earlier test (and bench) runs left on our
# own broker: every test makes its own (tests/kit `unique`:
# t_<what>_<pid>_<n>_<nanos>, g_<what>_...) and none deletes them, so a
# long-lived machine piles them up (1,545 topics and 619 groups after a day
# of CI here), which slows the broker. Only the broker this script started
# is swept, never a cluster named by DATABUS_BROKERS; a name whose test
# process still runs, or whose bench run (bench_<hex run id>_..., its start
# in seconds mod 2^24) is under six hours old, is kept. `make test` sweeps
# before its tests.
cmd_sweep() {
	local brokers="127.0.0.1:$KAFKA_PORT"
	if [[ ${DATABUS_BROKERS:-$brokers} != "$brokers" ]] || ! kafka_pid_alive "$RUN_DIR/kafka.pid"; then
		echo "sweep: not the broker of services.sh; nothing swept"
		return
	fi
	local tests='^[tg]_[a-z0-9_]+_([0-9]+)_[0-9]+_[0-9]+$' bench='^bench_([0-9a-f]{1,6})_[a-z0-9_]+$'
	local now=$(($(date +%s) % 16777216))
	stale() {
		local name
		while read -r name; do
			if [[ $name =~ $tests ]]; then
				kill -0 "${BASH_REMATCH[1]}" 2>/dev/null || echo "$name"
			elif [[ $name =~ $bench ]]; then
				local age=$(((now - 16#${BASH_REMATCH[1]} + 16777216) % 16777216))
				((age < 21600)) || echo "$name"
			fi
		done
	}
	local topics groups
	topics=$("$KAFKA" tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --list 2>/dev/null | stale)
	groups=$("$KAFKA" tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$brokers" --list 2>/dev/null | stale)
	# 200 names per call. TopicCommand takes one regex (and reads a comma
	# as "|"); the names hold only [a-z0-9_], so they need no escaping.
	if [[ -n $topics ]]; then
		xargs -n 200 <<<"$topics" | while read -r chunk; do
			"$KAFKA" tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$brokers" --delete \
				--topic "^(${chunk// /|})\$" >/dev/null 2>&1 || echo "sweep: deleting some topics failed" >&2
		done
	fi
	if [[ -n $groups ]]; then
		# A group with members in it stays: best effort.
		xargs -n 200 <<<"$groups" | while read -r chunk; do
			local args=()
			for g in $chunk; do args+=(--group "$g"); done
			"$KAFKA" tool org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server "$brokers" \
				--delete "${args[@]}" >/dev/null 2>&1 || true
		done
	fi
	echo "sweep: asked $brokers to delete $(grep -c . <<<"$topics") topics and $(grep -c . <<<"$groups") consumer groups left by earlier test and bench runs"
}

# What only make bench uses besides the services: redis-benchmark drives the
# grid, perf counts its Kafka requests per SET, javac builds the Java peer.
cmd_bench_tools() {
	local missing=()
	have redis-benchmark || missing+=(redis-tools)
	have perf || missing+=(linux-perf)
	have javac || missing+=(openjdk-17-jdk-headless)
	((${#missing[@]} == 0)) || apt_install "${missing[@]}"
	echo "bench tools: redis-benchmark, perf, javac present${missing[*]:+ (installed ${missing[*]})}"
}

# ---------------------------------------------------------------------------------------------

cmd_env() {
	local brokers=${DATABUS_BROKERS:-127.0.0.1:$KAFKA_PORT}
	local url=${DATABUS_MYSQL_URL:-mysql://$MYSQL_USER:$MYSQL_PASS@$MYSQL_HOST:$MYSQL_PORT}
	local redis=${DATABUS_REDIS_ADDR:-$REDIS_HOST:$REDIS_PORT}
	printf 'export DATABUS_BROKERS=%q\n' "$brokers"
	printf 'export DATABUS_MYSQL_URL=%q\n' "$url"
	printf 'export DATABUS_REDIS_ADDR=%q\n' "$redis"
	printf 'export DATABUS_KAFKA_VERSION=%q\n' "$KAFKA_VERSION"
	printf 'export DATABUS_TOOLS_DIR=%q\n' "$TOOLS_DIR"
}

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

case "${1:-}" in
up)
	up_mariadb
	up_redis
	up_broker
	;;
env) cmd_env ;;
down)
	stop_nodes "$RUN_DIR/kafka.pid" "$RUN_DIR"/cluster/node{1,2,3}.pid
	echo "kafka: stopped (data kept in $RUN_DIR/kafka and $RUN_DIR/cluster)"
	;;
cluster)
	case "${2:-}" in
	up) cluster_up ;;
	down)
		stop_nodes "$RUN_DIR"/cluster/node{1,2,3}.pid
		echo "kafka cluster: stopped (data kept in $RUN_DIR/cluster)"
		;;
	env) echo "export DATABUS_CLUSTER_BROKERS='$(cluster_brokers)'" ;;
	*) die "usage: services.sh cluster up|down|env" ;;
	esac
	;;
topic)
	(($# == 3)) || die "usage: services.sh topic NAME PARTITIONS"
	"$KAFKA" topic "${DATABUS_BROKERS:-127.0.0.1:$KAFKA_PORT}" "$2" "$3" >/dev/null
	;;
test-tools) cmd_test_tools ;;
bench-tools) cmd_bench_tools ;;
sweep) cmd_sweep ;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
