//! The report: a markdown table and a JSON document of the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::options::{env_str, Opts};
use crate::phases::{round, ConsumeRun, Percentiles, PubCase, RssRun};
use crate::procfs::{CpuPerMsg, Machine};
use crate::PARTITIONER;

fn fmt_rate(x: f64) -> String {
    if x >= 1000.0 {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else {
        format!("{x:.1}")
    }
}

fn fmt_opt(x: Option<f64>, places: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.places$}"))
}

fn cpu_json(c: &CpuPerMsg) -> Value {
    json!({
        "databus_us_per_msg": round(c.databus, 2),
        "bench_us_per_msg": round(c.bench, 2),
        "broker_us_per_msg": c.broker.map(|b| round(b, 2)),
        "others_us_per_msg": round(c.others, 2),
    })
}

fn pct_json(p: &Percentiles) -> Value {
    json!({"p50_ms": round(p.p50, 3), "p99_ms": round(p.p99, 3), "p999_ms": round(p.p999, 3), "mean_ms": round(p.mean, 3), "max_ms": round(p.max, 3)})
}

pub(crate) type ConsumeRuns = [(&'static str, ConsumeRun); 4];

pub(crate) struct Report<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) machine: &'a Machine,
    pub(crate) run_id: &'a str,
    pub(crate) elapsed: f64,
    pub(crate) pub_cases: &'a [PubCase],
    /// (databus SET, direct produce)
    pub(crate) lat: Option<(Percentiles, Percentiles)>,
    /// direct, json, pb
    pub(crate) consume: Option<&'a ConsumeRuns>,
    /// (idle publishers, subscribers)
    pub(crate) memory: Option<&'a (RssRun, RssRun, RssRun)>,
    pub(crate) log_lines: usize,
}

struct Target {
    name: &'static str,
    goal: &'static str,
    value: String,
    met: bool,
}

impl Report<'_> {
    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let deep: Vec<&PubCase> = self.pub_cases.iter().filter(|c| c.depth >= 16).collect();
        if !deep.is_empty() {
            let worst = deep.iter().map(|c| c.ratio()).fold(f64::INFINITY, f64::min);
            t.push(Target {
                name: "publish throughput databus/direct, depth ≥ 16 (worst case)",
                goal: "≥ 0.90",
                value: format!("{worst:.3}"),
                met: worst >= 0.9,
            });
        }
        if let Some((db, direct)) = &self.lat {
            let added = db.p50 - direct.p50;
            t.push(Target {
                name: "added single-SET latency, p50",
                goal: "≤ 0.30 ms",
                value: format!("{added:.3} ms"),
                met: added <= 0.3,
            });
        }
        if let Some([(_, direct), (_, json), (_, pb), _]) = self.consume {
            for (name, r) in
                [("consume throughput MGET json / direct", json), ("consume throughput MGET pb / direct", pb)]
            {
                let ratio = r.rate() / direct.rate();
                t.push(Target { name, goal: "≥ 0.80", value: format!("{ratio:.3}"), met: ratio >= 0.8 });
            }
        }
        let d16: Vec<&PubCase> = self.pub_cases.iter().filter(|c| c.depth == 16).collect();
        if !d16.is_empty() {
            let worst = d16.iter().map(|c| c.databus.cpu.databus).fold(0.0, f64::max);
            t.push(Target {
                name: "databus CPU per published message, depth 16 (worst case)",
                goal: "≤ 10 µs",
                value: format!("{worst:.1} µs"),
                met: worst <= 10.0,
            });
        }
        if let Some((publishers, _, _)) = self.memory {
            let per = publishers.per_conn_kib(publishers.after_kib);
            t.push(Target {
                name: "RSS per idle publisher connection",
                goal: "≤ 100 KiB",
                value: format!("{per:.1} KiB"),
                met: per <= 100.0,
            });
        }
        t
    }

    pub(crate) fn markdown(&self) -> String {
        let o = self.opts;
        let m = self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## databus bench{}{}\n",
            if o.quick { " (quick mode)" } else { "" },
            if o.label.is_empty() { String::new() } else { format!(" — {}", o.label) }
        );
        let _ = writeln!(
            s,
            "Run `{}` at {} (commit {}) on {} × {}, {} RAM, Linux {}; broker {}; {} partitions per topic; \
             {}-byte JSON values; `linger.ms` {}, {} in flight, `acks=all`, idempotent, `{PARTITIONER}` on both sides; \
             subscriber batch size {}{}; took {:.0} s. Load generator, databus and broker share the machine.\n",
            self.run_id,
            env_str("BENCH_DATE").unwrap_or_else(|| "unknown time".into()),
            env_str("BENCH_GIT_COMMIT").unwrap_or_else(|| "unknown".into()),
            m.cpus,
            m.cpu_model,
            m.mem_total,
            m.kernel,
            o.brokers,
            o.partitions,
            o.value_size,
            o.linger_ms,
            o.max_in_flight,
            o.sub_batch.map_or("100 (default)".into(), |b| b.to_string()),
            if o.config_top.is_empty() { String::new() } else { format!("; extra config `{}`", o.config_top) },
            self.elapsed
        );
        if !self.pub_cases.is_empty() {
            self.publish_table(&mut s);
        }
        if let Some((db, direct)) = &self.lat {
            let _ = writeln!(
                s,
                "### Publish latency, one record at a time ({} samples each, ms)\n",
                o.latency_samples
            );
            let _ = writeln!(s, "| | p50 | p99 | p99.9 | mean |\n|---|---:|---:|---:|---:|");
            for (name, p) in [("databus `SET`", db), ("direct produce-and-wait", direct)] {
                let _ =
                    writeln!(s, "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |", p.p50, p.p99, p.p999, p.mean);
            }
            let _ = writeln!(
                s,
                "| difference | {:+.3} | {:+.3} | {:+.3} | {:+.3} |\n",
                db.p50 - direct.p50,
                db.p99 - direct.p99,
                db.p999 - direct.p999,
                db.mean - direct.mean
            );
        }
        if let Some(runs) = self.consume {
            let direct_rate = runs[0].1.rate();
            let _ = writeln!(s, "### Consume throughput, draining one pre-filled topic\n");
            let _ = writeln!(
                s,
                "| reader | messages | messages/s | ratio | databus CPU µs/msg | client CPU µs/msg | \
                 broker CPU µs/msg | databus RSS at end | MGETs (short) | MGET p50 / p99 / max ms |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (name, r) in runs {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.2} | {:.1} | {:.1} | {} | {} | {} | {} |",
                    r.received,
                    fmt_rate(r.rate()),
                    r.rate() / direct_rate,
                    r.cpu.databus,
                    r.cpu.bench,
                    fmt_opt(r.cpu.broker, 1),
                    r.databus_rss_kib.map_or("–".into(), |k| format!("{k} KiB")),
                    r.mgets.as_ref().map_or("–".into(), |m| format!("{} ({})", m.calls, m.short)),
                    r.mgets.as_ref().map_or("–".into(), |m| format!(
                        "{:.2} / {:.2} / {:.0}",
                        m.time.p50, m.time.p99, m.time.max
                    )),
                );
            }
            let [_, (_, json), _, (_, queue)] = runs;
            let _ = writeln!(
                s,
                "\nQueue mode (`XREADGROUP COUNT 100` and an `XACK` of each batch, a group of its own on the same \
                 records) against classic `MGET json`: {:.2}.",
                queue.rate() / json.rate()
            );
            s.push('\n');
        }
        if let Some((p, q, queue)) = self.memory {
            let _ = writeln!(s, "### databus memory (a fresh process for each row group)\n");
            let _ = writeln!(
                s,
                "| connections | RSS before | RSS after | per connection | threads before → after |\n\
                 |---|---:|---:|---:|---:|"
            );
            let _ = writeln!(
                s,
                "| {} idle publishers (after AUTH) | {} KiB | {} KiB | {:.1} KiB | {} → {} |",
                p.connections,
                p.before_kib,
                p.after_kib,
                p.per_conn_kib(p.after_kib),
                p.threads_before,
                p.threads_after
            );
            if let Some(a) = p.after_set_kib {
                let _ = writeln!(
                    s,
                    "| the same, after one `SET` each | {} KiB | {} KiB | {:.1} KiB | |",
                    p.before_kib,
                    a,
                    p.per_conn_kib(a)
                );
            }
            let _ = writeln!(
                s,
                "| {} subscribers (joined, first `MGET` served) | {} KiB | {} KiB | {:.1} KiB | {} → {} |",
                q.connections,
                q.before_kib,
                q.after_kib,
                q.per_conn_kib(q.after_kib),
                q.threads_before,
                q.threads_after
            );
            let _ = writeln!(
                s,
                "| {} queue consumers of one group (first `XREADGROUP` served) | {} KiB | {} KiB | {:.1} KiB | {} → {} |\n",
                queue.connections,
                queue.before_kib,
                queue.after_kib,
                queue.per_conn_kib(queue.after_kib),
                queue.threads_before,
                queue.threads_after
            );
            let n = queue.connections as f64;
            let classic_threads =
                (q.threads_after as f64 - q.threads_before as f64) / q.connections.max(1) as f64;
            let _ = writeln!(
                s,
                "{} queue consumers cost {:.1} MiB and {} threads; {} classic subscribers' worth (each a Kafka \
                 member, so a topic needs as many partitions) would cost {:.1} MiB and {:.0} threads, by the \
                 per-subscriber figures above.\n",
                queue.connections,
                (queue.after_kib as f64 - queue.before_kib as f64) / 1024.0,
                queue.threads_after as i64 - queue.threads_before as i64,
                queue.connections,
                q.per_conn_kib(q.after_kib) * n / 1024.0,
                classic_threads * n
            );
        }
        let _ = writeln!(s, "### Targets\n\n| target | goal | measured | met |\n|---|---|---:|---|");
        for t in self.targets() {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                t.name,
                t.goal,
                t.value,
                if t.met { "yes" } else { "**no**" }
            );
        }
        if self.log_lines > 0 {
            let _ = writeln!(
                s,
                "\ndatabus logged {} lines at `warn` or above during the run (see {}/databus.log).",
                self.log_lines,
                o.run_dir.display()
            );
        }
        s
    }

    fn publish_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "### Publish throughput (messages/s, median of {} runs; CPU is the mean)\n",
            self.opts.repeat
        );
        let _ = writeln!(
            s,
            "| conns | depth | messages | databus | direct | ratio | databus CPU µs/msg | \
             load generator CPU µs/msg (databus run: RESP client / direct run: librdkafka producer) | \
             broker CPU µs/msg (databus run / direct run) | other processes µs/msg (databus run / direct run) |"
        );
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in self.pub_cases {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.1} / {:.1} | {} / {} | {:.1} / {:.1} |",
                c.conns,
                c.depth,
                c.messages,
                fmt_rate(c.databus.rate(c.messages)),
                fmt_rate(c.direct.rate(c.messages)),
                c.ratio(),
                c.databus.cpu.databus,
                c.databus.cpu.bench,
                c.direct.cpu.bench,
                fmt_opt(c.databus.cpu.broker, 1),
                fmt_opt(c.direct.cpu.broker, 1),
                c.databus.cpu.others,
                c.direct.cpu.others,
            );
        }
        let errors: usize = self.pub_cases.iter().map(|c| c.databus.errors + c.direct.errors).sum();
        if errors > 0 {
            let first = self
                .pub_cases
                .iter()
                .find_map(|c| c.databus.first_error.clone().or(c.direct.first_error.clone()));
            let _ = writeln!(s, "\n**{errors} publish errors**, first: {first:?}");
        }
        s.push('\n');
    }

    pub(crate) fn json(&self) -> Value {
        let o = self.opts;
        let m = self.machine;
        let publish: Vec<Value> = self
            .pub_cases
            .iter()
            .map(|c| {
                json!({
                    "conns": c.conns,
                    "depth": c.depth,
                    "messages": c.messages,
                    "databus_msgs_per_s": round(c.databus.rate(c.messages), 1),
                    "direct_msgs_per_s": round(c.direct.rate(c.messages), 1),
                    "ratio": round(c.ratio(), 3),
                    "databus_rates_per_repeat": c.databus.rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
                    "direct_rates_per_repeat": c.direct.rates.iter().map(|r| round(*r, 1)).collect::<Vec<_>>(),
                    "databus_seconds": round(c.databus.seconds, 3),
                    "direct_seconds": round(c.direct.seconds, 3),
                    "databus_errors": c.databus.errors,
                    "direct_errors": c.direct.errors,
                    "cpu_databus_run": cpu_json(&c.databus.cpu),
                    "cpu_direct_run": cpu_json(&c.direct.cpu),
                })
            })
            .collect();
        let consume = self.consume.map(|runs| {
            let direct_rate = runs[0].1.rate();
            runs.iter()
                .map(|(name, r)| {
                    let v = json!({
                        "received": r.received,
                        "timed_messages": r.timed,
                        "seconds": round(r.seconds, 3),
                        "msgs_per_s": round(r.rate(), 1),
                        "ratio": round(r.rate() / direct_rate, 3),
                        "cpu": cpu_json(&r.cpu),
                        "databus_rss_kib": r.databus_rss_kib,
                        "mget_calls": r.mgets.as_ref().map(|m| m.calls),
                        "mget_short_batches": r.mgets.as_ref().map(|m| m.short),
                        "mget_time": r.mgets.as_ref().map(|m| pct_json(&m.time)),
                    });
                    (name.to_string(), v)
                })
                .collect::<BTreeMap<String, Value>>()
        });
        let latency = self.lat.map(|(db, direct)| {
            json!({
                "samples": o.latency_samples,
                "databus_set": pct_json(&db),
                "direct_produce": pct_json(&direct),
                "added_p50_ms": round(db.p50 - direct.p50, 3),
                "added_p99_ms": round(db.p99 - direct.p99, 3),
                "added_p999_ms": round(db.p999 - direct.p999, 3),
            })
        });
        let memory =
            self.memory.map(|(p, q, queue)| {
                json!({"idle_publishers": p.to_json(), "subscribers": q.to_json(), "queue_consumers": queue.to_json()})
            });
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| json!({"target": t.name, "goal": t.goal, "measured": t.value, "met": t.met}))
            .collect();
        json!({
            "run_id": self.run_id,
            "date": env_str("BENCH_DATE"),
            "git_commit": env_str("BENCH_GIT_COMMIT"),
            "label": o.label,
            "quick": o.quick,
            "elapsed_s": round(self.elapsed, 1),
            "machine": {"cpus": m.cpus, "cpu_model": m.cpu_model, "memory": m.mem_total, "kernel": m.kernel},
            "settings": {
                "brokers": o.brokers,
                "partitions": o.partitions,
                "publish_repeats": o.repeat,
                "replication": o.replication,
                "value_size": o.value_size,
                "linger_ms": o.linger_ms,
                "max_in_flight": o.max_in_flight,
                "acks": "all",
                "enable_idempotence": true,
                "partitioner": PARTITIONER,
                "subscriber_batch_size": o.sub_batch,
                "config_top": o.config_top,
                "kafka_properties": o.kafka_properties.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                "broker_cpu_measured": !o.broker_pids.is_empty(),
            },
            "publish": publish,
            "latency": latency,
            "consume": consume,
            "memory": memory,
            "targets": targets,
            "databus_log_lines": self.log_lines,
        })
    }
}
