#!/usr/bin/env bash
# `make compat KAFKA_VERSION=<release>`: the core suite (tests/publish.rs and
# tests/subscribe.rs: publish, subscribe, commit, groups, color) against an
# Apache Kafka of that release, started for the run on free ports and stopped
# after it (KRaft, one node, its data under .run/compat-<release>). Brokers the
# tests start of their own are of that release too. Needs MariaDB and Redis as
# `make test` does (the Makefile starts them). Prints, and appends to
# bench/compat.md, one line: release, date, commit, result; then rewrites
# the table of Kafka versions in docs/testing.md from it (the latest line of
# each release).
#
#   KAFKA_VERSION   the release (default: the pin of scripts/kafka.sh)
#   COMPAT_TESTS    the test targets (default "publish subscribe")
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -z ${KAFKA_VERSION:-} ]] || export DATABUS_KAFKA_VERSION=$KAFKA_VERSION
version=${DATABUS_KAFKA_VERSION:-$(sed -nE 's/^KAFKA_VERSION=\$\{DATABUS_KAFKA_VERSION:-(.*)\}$/\1/p' scripts/kafka.sh)}
export DATABUS_KAFKA_VERSION=$version
tests=${COMPAT_TESTS:-publish subscribe}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir=.run/compat-$version
rm -rf "$dir"
mkdir -p "$dir"
scripts/kafka.sh libs >/dev/null
port=$(free_port)
cport=$(free_port)
scripts/kafka.sh node --dir "$dir" --id 1 --port "$port" --controller-port "$cport" --heap 384m >"$dir/kafka.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
scripts/kafka.sh ready "127.0.0.1:$port" 120 || { tail -n 20 "$dir/kafka.log" >&2; exit 1; }
echo "compat.sh: Apache Kafka $version on 127.0.0.1:$port (log $dir/kafka.log)" >&2

args=()
for t in $tests; do args+=(--test "$t"); done
status=0
DATABUS_BROKERS="127.0.0.1:$port" cargo test "${args[@]}" 2>&1 | tee "$dir/tests.log" || status=$?
summary=$(grep -E '^test result:' "$dir/tests.log" | awk '{p += $4; f += $6} END {printf "%d passed, %d failed", p, f}')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo ?)
[[ -z $(git status --porcelain --untracked-files=no -- . ':!docs/testing.md' ':!bench/compat.md' 2>/dev/null) ]] || commit="$commit+dirty"
line="| $version | $(date -u +%Y-%m-%d) | $commit | $tests | $summary |"
mkdir -p bench
[[ -s bench/compat.md ]] || printf '| Kafka | date | commit | suite | result |\n|---|---|---|---|---|\n' >bench/compat.md
echo "$line" >>bench/compat.md
echo "$line"

# The table in docs/testing.md, between its two markers: the latest run of each release.
pin=$(sed -nE 's/^KAFKA_VERSION=\$\{DATABUS_KAFKA_VERSION:-(.*)\}$/\1/p' scripts/kafka.sh)
python3 - "$pin" <<'PY'
import re, sys
pin = sys.argv[1]
latest = {}
for row in open("bench/compat.md"):
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    if len(cells) == 5 and re.fullmatch(r"\d+(\.\d+)+", cells[0]):
        latest[cells[0]] = cells
lines = ["| Apache Kafka | core suite | when | commit |", "|---|---|---|---|"]
for version in sorted(latest, key=lambda v: [int(x) for x in v.split(".")]):
    release, date, commit, _, result = latest[version]
    name = f"**{release}** (the pin)" if release == pin else release
    lines.append(f"| {name} | {result} | {date} | {commit} |")
begin, end = "<!-- compat table: scripts/compat.sh -->", "<!-- end compat table -->"
doc = open("docs/testing.md").read()
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open("docs/testing.md", "w").write(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)
PY
exit "$status"
