#!/usr/bin/env bash
# The redis-benchmark phase of `make bench`: drives a release databus with
# `redis-benchmark -t set -r 100000` at c in {1, 10, 50} and P in {1, 16}, so
# databus can be compared with any other Redis-protocol front of the same
# broker (the Go databus, say) by running the same command against it.
#
# Needs DATABUS_BROKERS and DATABUS_MYSQL_URL (bench.sh exports them) and
# target/release/databus. Writes bench/redis-benchmark.md and .csv (the
# -quick files with BENCH_QUICK=1); prints the table on stdout.
#
# Environment (optional):
#   BENCH_RB_REQUESTS   requests per run (default 20000, 2000 with BENCH_QUICK=1)
#   BENCH_RB_ROUNDS     rounds of the whole grid (default 2, 1 with BENCH_QUICK=1)
#   BENCH_RB_CLIENTS    default "1 10 50"
#   BENCH_RB_PIPELINES  default "1 16"
#   BENCH_RB_PARTITIONS partitions of the topic (default 3)
#   BENCH_RB_CONFIG     extra lines for the top of databus.toml (e.g. "[producer]\ninstances = 2")
#   BENCH_RB_PROPERTIES librdkafka properties of the cluster, as TOML inline-table content
set -euo pipefail
cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
[[ $quick == 0 ]] && suffix="" || suffix="-quick"
requests=${BENCH_RB_REQUESTS:-$([[ $quick == 0 ]] && echo 20000 || echo 2000)}
rounds=${BENCH_RB_ROUNDS:-$([[ $quick == 0 ]] && echo 2 || echo 1)}
clients=${BENCH_RB_CLIENTS:-"1 10 50"}
pipelines=${BENCH_RB_PIPELINES:-"1 16"}
partitions=${BENCH_RB_PARTITIONS:-3}
run_dir=${BENCH_RUN_DIR:-.run/bench}
out_dir=${BENCH_OUT_DIR:-bench}
mkdir -p "$run_dir" "$out_dir"

die() { printf 'bench-redis-benchmark.sh: %s\n' "$*" >&2; exit 1; }
[[ -n ${DATABUS_BROKERS:-} && -n ${DATABUS_MYSQL_URL:-} ]] || die "DATABUS_BROKERS and DATABUS_MYSQL_URL must be set (make bench sets them)"
command -v redis-benchmark >/dev/null || die "redis-benchmark not found (apt-get install redis-tools)"
[[ -x target/release/databus ]] || die "target/release/databus not built"

# A database of its own with one app granted pub on a topic of its own.
db=databus_rb
topic="rb_$(date +%s)"
group=rb_group
url=${DATABUS_MYSQL_URL%/}
rest=${url#mysql://}
creds=${rest%@*}
hostport=${rest#*@}
user=${creds%%:*}
pass=
[[ $creds == *:* ]] && pass=${creds#*:}
host=${hostport%%:*}
port=3306
[[ $hostport == *:* ]] && port=${hostport#*:}
mysql_cmd=(mariadb -h "$host" -P "$port" -u "$user")
[[ -n $pass ]] && mysql_cmd+=("-p$pass")
"${mysql_cmd[@]}" <<SQL
DROP DATABASE IF EXISTS $db;
CREATE DATABASE $db;
USE $db;
$(cat scripts/schema.sql)
INSERT INTO app_tb (id, app_key, app_secret, cluster) VALUES (1, 'rb_key', 'rb_secret', 'bench');
INSERT INTO auth_tb (app_id, group_name, operation, topic) VALUES (1, '$group', 2, '$topic');
SQL

scripts/kafka.sh topic "$DATABUS_BROKERS" "$topic" "$partitions" >/dev/null ||
	die "cannot create topic $topic on $DATABUS_BROKERS"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
db_port=$(free_port)
brokers=$(printf '"%s",' ${DATABUS_BROKERS//,/ })
conf="$run_dir/rb-databus.toml"
printf 'addr = "127.0.0.1:%s"\nauth = "mysql"\nlog_level = "warn"\n%b\n[clusters.bench]\nbrokers = [%s]\nproperties = { %s }\n[mysql]\nurl = "%s/%s"\n' \
	"$db_port" "${BENCH_RB_CONFIG:-}" "${brokers%,}" "${BENCH_RB_PROPERTIES:-}" "$url" "$db" >"$conf"
target/release/databus --conf "$conf" >"$run_dir/rb-databus.log" 2>&1 &
databus_pid=$!
trap 'kill $databus_pid 2>/dev/null || true; wait $databus_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$db_port" 2>/dev/null && break
	kill -0 $databus_pid 2>/dev/null || { cat "$run_dir/rb-databus.log" >&2; die "databus exited"; }
	sleep 0.1
done

auth="rb_key:rb_secret@$group/topic=$topic&role=pub"
csv="$out_dir/redis-benchmark$suffix.csv"
echo "round,clients,pipeline,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms" >"$csv"
for round in $(seq "$rounds"); do
	for c in $clients; do
		for p in $pipelines; do
			line=$(redis-benchmark -h 127.0.0.1 -p "$db_port" -a "$auth" -t set -r 100000 \
				-n "$requests" -c "$c" -P "$p" --csv 2>/dev/null | grep '^"SET"' | tail -1)
			[[ -n $line ]] || die "redis-benchmark c=$c P=$p printed no result"
			# "SET","rps","avg","min","p50","p95","p99","max"
			IFS=, read -r _ rps avg _ p50 p95 p99 max <<<"${line//\"/}"
			echo "$round,$c,$p,$requests,$rps,$avg,$p50,$p95,$p99,$max" >>"$csv"
		done
	done
done

md="$out_dir/redis-benchmark$suffix.md"
{
	echo "### redis-benchmark against databus ($(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo
	echo "\`redis-benchmark -t set -r 100000 -n $requests -c C -P P\`, broker $DATABUS_BROKERS, $partitions partitions."
	echo
	echo "| round | c | P | req/s | p50 ms | p95 ms | p99 ms | max ms |"
	echo "|---|---|---|---|---|---|---|---|"
	tail -n +2 "$csv" | while IFS=, read -r round c p _ rps _ p50 p95 p99 max; do
		echo "| $round | $c | $p | $rps | $p50 | $p95 | $p99 | $max |"
	done
} >"$md"
cat "$md"
