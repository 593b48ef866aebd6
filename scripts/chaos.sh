#!/usr/bin/env bash
# `make chaos`: runs the fault suite (tests/chaos.rs and tests/chaos_cluster.rs) one scenario at a time
# and prints its results as a markdown table (scenario, records
# acknowledged, records in Kafka, lost, duplicated, present but never
# acknowledged, out of order per key, redelivered, time to recover), also written to bench/chaos.md; exits non-zero when a scenario failed
# (its row is still in the table). Needs the services of
# `make test` (the Makefile starts them) and DATABUS_* from services.sh env.
set -euo pipefail
cd "$(dirname "$0")/.."
results=${CHAOS_RESULTS:-$PWD/target/chaos-results.jsonl}
out=${CHAOS_OUT:-bench/chaos.md}
mkdir -p "$(dirname "$results")" "$(dirname "$out")"
rm -f "$results"
# CHAOS_ARGS passes more arguments to the test binary (a scenario's name, --nocapture ...).
status=0
CHAOS_RESULTS=$results cargo test --test chaos --test chaos_cluster -- --test-threads=1 ${CHAOS_ARGS:-} "$@" || status=$?
[[ -s $results ]] || { echo "chaos.sh: no scenario wrote a result" >&2; exit 1; }
python3 - "$results" "$out" <<'PY'
import json, sys, subprocess, datetime
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
import re
order = lambda r: (lambda m: (int(m.group(1)), m.group(2)) if m else (1 << 30, r["scenario"]))(re.match(r"(\d+)(\w*)\.", r["scenario"]))
rows.sort(key=order)
cell = lambda v: "—" if v is None else str(v)
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
lines = [f"### make chaos ({datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}, {rev})", "",
         "| scenario | acknowledged | in Kafka | lost | duplicated | present, never acknowledged | out of order per key | redelivered | recovered after (ms) | note |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append("| " + " | ".join([r["scenario"], cell(r["acknowledged"]), cell(r["in_kafka"]), cell(r["lost"]),
                                     cell(r["duplicated"]), cell(r.get("unacknowledged")), cell(r.get("out_of_order")),
                                     cell(r["redelivered"]), cell(r["recover_ms"]), r["note"]]) + " |")
text = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(text)
print(text)
PY
exit "$status"
