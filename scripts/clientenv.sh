#!/usr/bin/env bash
# The Go and Java Redis client programs of tests/clients (go-redis and redigo;
# Jedis and Lettuce), for the tests that drive databus with them. Idempotent:
# a build whose sources (and toolchain) did not change is left alone.
#
#   scripts/clientenv.sh go      build tests/clients/go if needed (modules from the Go
#                                module proxy); prints the binary's absolute path on stdout
#   scripts/clientenv.sh java    build tests/clients/java if needed (jars from Maven Central,
#                                then javac); prints one line on stdout, a classpath for
#                                `java -cp <line> ClientSession jedis|lettuce`
#
# Environment (optional):
#   DATABUS_TOOLS_DIR    where the builds live (default ~/.cache/databus); they go to <dir>/clients
#   GOPATH, GOMODCACHE, GOCACHE, GOPROXY   as for any go command (defaults under ~)
#   MAVEN_OPTS           as for any mvn (-Dmaven.repo.local=... for another repository than ~/.m2)
#
# Progress and errors go to stderr; on failure the exit status is non-zero and
# the message says what to install or where the log is.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_ROOT=$(cd "$SCRIPT_DIR/../tests/clients" && pwd)
SELF="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
TOOLS_DIR=${DATABUS_TOOLS_DIR:-$HOME/.cache/databus}
[[ $TOOLS_DIR == /* ]] || TOOLS_DIR="$PWD/$TOOLS_DIR"
CLIENTS_DIR="$TOOLS_DIR/clients"

log() { printf 'clientenv.sh: %s\n' "$*" >&2; }
die() { printf 'clientenv.sh: ERROR: %s\n' "$*" >&2; exit 1; }
tail_log() { [[ -s $1 ]] && { printf -- '--- last lines of %s ---\n' "$1"; tail -n 30 "$1"; } >&2 || true; }
have() { command -v "$1" >/dev/null 2>&1; }

usage() { die "usage: scripts/clientenv.sh go|java"; }

# source_hash DIR EXTRA...: one hash of every file under DIR (names and contents), of this
# script, and of the EXTRA strings (toolchain versions), so any change means a rebuild.
source_hash() {
	local dir=$1
	shift
	{
		(cd "$dir" && find . -type f ! -path './target/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
		sha256sum <"$SELF"
		printf '%s\n' "$@"
	} | sha256sum | cut -d' ' -f1
}

# ---------------------------------------------------------------------------------------------
# Go: one binary for go-redis and redigo

go_build() {
	local src="$SRC_ROOT/go" out="$CLIENTS_DIR/go"
	local bin="$out/databus-client-test" stamp="$out/databus-client-test.sha256"
	local glog="$CLIENTS_DIR/go-build.log"
	if ! have go && [[ -x /usr/local/go/bin/go ]]; then
		PATH="$PATH:/usr/local/go/bin"
	fi
	have go || die "go not found on PATH; install Go $(sed -nE 's/^go ([0-9.]+).*/\1/p' "$src/go.mod") or newer"
	# Never fetch another toolchain: go.mod's go line is one this Go accepts.
	export GOTOOLCHAIN=local
	local goversion hash
	goversion=$(go version) || die "'go version' failed"
	hash=$(source_hash "$src" "$goversion")
	ready() { [[ -x $bin && -f $stamp && $(cat "$stamp") == "$hash" ]]; }
	if ready; then
		echo "$bin"
		return
	fi
	mkdir -p "$out"
	# one builder at a time (tests may run this concurrently); then check again
	exec 9>"$CLIENTS_DIR/go.lock"
	flock 9
	if ready; then
		echo "$bin"
		return
	fi
	log "building $src with $goversion into $bin (log: $glog)"
	local tmp="$bin.tmp.$$"
	if ! (cd "$src" && go build -mod=readonly -buildvcs=false -trimpath -o "$tmp" .) >"$glog" 2>&1; then
		rm -f "$tmp"
		tail_log "$glog"
		die "go build in $src failed (log: $glog)"
	fi
	mv -f "$tmp" "$bin"
	echo "$hash" >"$stamp"
	echo "$bin"
}

# ---------------------------------------------------------------------------------------------
# Java: ClientSession for Jedis and Lettuce

java_major() { "$1" -version 2>&1 | sed -nE '1s/.*(version|javac) "?([0-9]+).*/\2/p'; }

java_build() {
	local src="$SRC_ROOT/java" out="$CLIENTS_DIR/java"
	local stamp="$out/source.sha256" cpfile="$out/classpath"
	local jlog="$CLIENTS_DIR/java-build.log"
	have java || die "java not found on PATH; install Java 17 or newer (Debian: apt-get install openjdk-17-jdk-headless)"
	have javac || die "javac not found on PATH; install a JDK 17 or newer (Debian: apt-get install openjdk-17-jdk-headless)"
	have mvn || die "mvn not found on PATH; install Maven (Debian: apt-get install maven)"
	(($(java_major javac || echo 0) >= 17)) || die "javac is $(javac -version 2>&1); Java 17 or newer is needed"
	local jversion hash
	jversion=$(javac -version 2>&1)
	hash=$(source_hash "$src" "$jversion")
	# ready: same sources, and every entry of the classpath still there
	ready() {
		[[ -f $stamp && -f $cpfile && $(cat "$stamp") == "$hash" ]] || return 1
		local entry entries
		IFS=: read -r -a entries <"$cpfile"
		for entry in "${entries[@]}"; do
			[[ -e $entry ]] || return 1
		done
	}
	if ready; then
		cat "$cpfile"
		return
	fi
	mkdir -p "$CLIENTS_DIR"
	# one builder at a time (tests may run this concurrently); then check again
	exec 9>"$CLIENTS_DIR/java.lock"
	flock 9
	if ready; then
		cat "$cpfile"
		return
	fi
	log "building $src with $jversion into $out (jars from Maven Central; log: $jlog)"
	local stage="$out.new"
	rm -rf "$stage"
	mkdir -p "$stage/lib" "$stage/classes"
	: >"$jlog"
	# The runtime jars, copied out of the local Maven repository so the build does not
	# depend on it staying; -B: no prompts and no progress (CI, no terminal).
	if ! mvn -B -q -ntp -Dstyle.color=never -f "$src/pom.xml" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$stage/lib" >>"$jlog" 2>&1; then
		tail_log "$jlog"
		rm -rf "$stage"
		die "mvn could not fetch the jars of $src/pom.xml (log: $jlog)"
	fi
	local sources=()
	mapfile -t sources < <(find "$src/src/main/java" -name '*.java' | LC_ALL=C sort)
	((${#sources[@]})) || die "no Java sources under $src/src/main/java"
	if ! javac --release 17 -encoding UTF-8 -Xlint:all,-processing -cp "$stage/lib/*" \
		-d "$stage/classes" "${sources[@]}" >>"$jlog" 2>&1; then
		tail_log "$jlog"
		rm -rf "$stage"
		die "javac failed on $src (log: $jlog)"
	fi
	rm -rf "$out"
	mv "$stage" "$out"
	local cp="$out/classes" jar
	for jar in "$out"/lib/*.jar; do
		[[ -e $jar ]] || die "mvn copied no jars into $out/lib (log: $jlog)"
		cp+=":$jar"
	done
	echo "$cp" >"$cpfile"
	echo "$hash" >"$stamp"
	echo "$cp"
}

(($# == 1)) || usage
mkdir -p "$CLIENTS_DIR"
case $1 in
go) go_build ;;
java) java_build ;;
*) usage ;;
esac
