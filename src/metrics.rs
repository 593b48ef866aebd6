//! The numbers an operator scrapes from the admin port (`GET /metrics`):
//! Prometheus collectors in one registry per server, encoded by the
//! `prometheus` crate. Every label value is bounded: apps, groups and topics
//! come from grants (so only from clients that passed AUTH, or named an app
//! the store holds), clusters from the config, commands and results from
//! fixed lists, partitions from Kafka.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    exponential_buckets, CounterVec, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every collector databus exports; see docs/operating.md, "Metrics".
pub(crate) struct Metrics {
    registry: Registry,
    connections: IntGaugeVec,
    refused: IntCounterVec,
    commands: IntCounterVec,
    publish_seconds: Histogram,
    mget_wait_seconds: Histogram,
    published_records: IntCounterVec,
    published_bytes: IntCounterVec,
    delivered_records: IntCounterVec,
    delivered_bytes: IntCounterVec,
    commits: IntCounterVec,
    lag: IntGaugeVec,
    members: IntGaugeVec,
    grants: IntGauge,
    refresh_age: Gauge,
    refresh_failures: IntCounter,
    last_refresh: Mutex<Instant>,
    queue_depth: IntGaugeVec,
    broker_up: IntGaugeVec,
    produce_errors: IntCounterVec,
    /// databus's own producer: requests, batches, records, retries, epoch
    /// bumps; brought up to the producers' counts at each scrape, one
    /// scrape at a time.
    produce_counts: [IntCounterVec; 5],
    produce_counted: Mutex<()>,
    queue_pending: IntGaugeVec,
    queue_entries: IntCounterVec,
    queue_commit_failures: IntCounterVec,
    throttle_seconds: CounterVec,
    limit_refusals: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
            registry.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let counters = |name: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            reg(&registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str, start: f64| {
            let opts = HistogramOpts::new(name, help)
                .buckets(exponential_buckets(start, 2.0, 17).expect("valid buckets"));
            reg(&registry, Histogram::with_opts(opts).expect("valid metric"))
        };
        Metrics {
            connections: gauges(
                "databus_connections",
                "Open client connections by role (unauthenticated, pub, sub).",
                &["role", "app"],
            ),
            refused: counters(
                "databus_connections_refused_total",
                "Connections refused: max_clients, or AUTH failures by reply code.",
                &["reason", "app"],
            ),
            commands: counters(
                "databus_commands_total",
                "Commands answered, by command and result (ok or the error code).",
                &["command", "result"],
            ),
            publish_seconds: histogram(
                "databus_publish_duration_seconds",
                "From a SET/HSET (or HTTP record) being read to the broker's verdict.",
                0.0001,
            ),
            mget_wait_seconds: histogram(
                "databus_mget_wait_seconds",
                "How long each MGET waited before answering.",
                0.001,
            ),
            published_records: counters(
                "databus_published_records_total",
                "Records acknowledged by Kafka.",
                &["app", "group", "topic"],
            ),
            published_bytes: counters(
                "databus_published_bytes_total",
                "Value bytes of the records acknowledged by Kafka.",
                &["app", "group", "topic"],
            ),
            delivered_records: counters(
                "databus_delivered_records_total",
                "Records handed to subscribers by MGET.",
                &["app", "group", "topic"],
            ),
            delivered_bytes: counters(
                "databus_delivered_bytes_total",
                "Value bytes of the records handed to subscribers.",
                &["app", "group", "topic"],
            ),
            commits: counters(
                "databus_commits_total",
                "Offset commits (SET partition offset) by result (ok or error).",
                &["group", "topic", "result"],
            ),
            lag: gauges(
                "databus_consumer_lag",
                "High watermark minus committed offset, per partition assigned to a subscriber here.",
                &["group", "topic", "partition"],
            ),
            members: gauges(
                "databus_group_members",
                "Subscriber connections on this instance per consumer group and topic.",
                &["group", "topic"],
            ),
            grants: reg(
                &registry,
                IntGauge::new("databus_auth_grants", "Grants loaded from the auth store.").expect("valid"),
            ),
            refresh_age: reg(
                &registry,
                Gauge::new(
                    "databus_auth_refresh_age_seconds",
                    "Seconds since the grants were last loaded successfully.",
                )
                .expect("valid"),
            ),
            refresh_failures: reg(
                &registry,
                IntCounter::new("databus_auth_refresh_failures_total", "Failed reloads of the auth store.")
                    .expect("valid"),
            ),
            last_refresh: Mutex::new(Instant::now()),
            queue_depth: gauges(
                "databus_producer_queue_depth",
                "Records handed to the producer and not yet acknowledged, per cluster.",
                &["cluster"],
            ),
            broker_up: gauges(
                "databus_kafka_broker_up",
                "1 when librdkafka's connection to the broker is UP, else 0 (its statistics).",
                &["cluster", "broker"],
            ),
            produce_errors: counters(
                "databus_produce_errors_total",
                "Records not acknowledged, by cluster and cause.",
                &["cluster", "cause"],
            ),
            produce_counts: [
                (
                    "databus_produce_requests_total",
                    "Produce requests databus's own producer wrote (one carries a batch of every partition \
                     of a broker that had records).",
                ),
                ("databus_produce_batches_total", "Record batches in those requests (one per partition)."),
                ("databus_produce_request_records_total", "Records in those requests (a retried one counts again)."),
                (
                    "databus_produce_retries_total",
                    "Batches sent again: answered with a retriable error, or in flight on a connection that \
                     broke or went unanswered.",
                ),
                (
                    "databus_produce_epoch_bumps_total",
                    "New producer epochs or ids (KIP-360), each restarting every partition's sequences.",
                ),
            ]
            .map(|(name, help)| counters(name, help, &["cluster"])),
            produce_counted: Mutex::new(()),
            queue_pending: gauges(
                "databus_queue_pending",
                "Queue mode: entries handed out and not acknowledged (the pending entries list), per group.",
                &["group", "topic"],
            ),
            queue_entries: counters(
                "databus_queue_entries_total",
                "Queue mode: entries by event (delivered, redelivered after the visibility timeout, \
                 claimed, dead_lettered, acknowledged).",
                &["group", "topic", "event"],
            ),
            queue_commit_failures: counters(
                "databus_queue_commit_failures_total",
                "Queue mode: offset commits Kafka did not acknowledge (each is tried again).",
                &["group", "topic"],
            ),
            throttle_seconds: reg(
                &registry,
                CounterVec::new(
                    Opts::new(
                        "databus_throttle_seconds_total",
                        "Time publishing requests were held to keep their app within its [limits] rates.",
                    ),
                    &["app"],
                )
                .expect("valid metric"),
            ),
            limit_refusals: counters(
                "databus_limit_refusals_total",
                "Requests refused for their app's [limits]: connections, subscribers, or a rate past limits.max_delay_ms.",
                &["app", "limit"],
            ),
            registry,
        }
    }

    /// The text format of every metric, as `GET /metrics` serves it.
    pub(crate) fn render(&self) -> String {
        let age = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
        self.refresh_age.set(age.as_secs_f64());
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Counts an open connection in `role` until the guard is dropped.
    /// (`app`: the app key once authenticated, empty before.)
    pub(crate) fn connection(&self, role: &str, app: &str) -> OpenConnection {
        let gauge = self.connections.with_label_values(&[role, app]);
        gauge.inc();
        OpenConnection(gauge)
    }

    /// A publishing request of `app` held `wait` for its rate limits.
    pub(crate) fn throttled(&self, app: &str, wait: std::time::Duration) {
        self.throttle_seconds.with_label_values(&[app]).inc_by(wait.as_secs_f64());
    }

    /// A request of `app` refused for one of its limits.
    pub(crate) fn limit_refused(&self, app: &str, limit: &str) {
        self.limit_refusals.with_label_values(&[app, limit]).inc();
    }

    /// A connection refused: `max_clients`, or the code of a failed AUTH.
    /// `app` is the app key the client named if the store knows it, else
    /// empty (so a stranger cannot grow the labels).
    pub(crate) fn refused(&self, reason: &str, app: &str) {
        self.refused.with_label_values(&[reason, app]).inc();
    }

    /// A command answered with `error_code` (`None` for success), under
    /// its `label`: the command table's name (`session::commands::label`,
    /// `other` for any name databus does not know) or `http_publish`.
    pub(crate) fn command(&self, label: &'static str, error_code: Option<&str>) {
        self.commands.with_label_values(&[label, error_code.unwrap_or("ok")]).inc();
    }

    /// The counters of a publisher of `app` and `group` on `topic` in `cluster`.
    pub(crate) fn publisher(
        self: &Arc<Self>,
        app: &str,
        group: &str,
        topic: &str,
        cluster: &str,
    ) -> PublishMeter {
        PublishMeter {
            metrics: self.clone(),
            records: self.published_records.with_label_values(&[app, group, topic]),
            bytes: self.published_bytes.with_label_values(&[app, group, topic]),
            cluster: cluster.to_owned(),
        }
    }

    /// The counters of a subscriber of `app` in consumer group `group` on `topic`.
    pub(crate) fn subscriber(&self, app: &str, group: &str, topic: &str) -> SubscribeMeter {
        SubscribeMeter {
            records: self.delivered_records.with_label_values(&[app, group, topic]),
            bytes: self.delivered_bytes.with_label_values(&[app, group, topic]),
            commits_ok: self.commits.with_label_values(&[group, topic, "ok"]),
            commits_failed: self.commits.with_label_values(&[group, topic, "error"]),
            mget_wait: self.mget_wait_seconds.clone(),
        }
    }

    /// Where one consumer reports the lag of the partitions it holds.
    pub(crate) fn lag(&self, group: &str, topic: &str) -> LagGauge {
        LagGauge {
            gauge: self.lag.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            partitions: Mutex::new(HashSet::new()),
        }
    }

    /// The numbers of a queue group's shared member.
    pub(crate) fn queue(&self, group: &str, topic: &str) -> QueueMeter {
        let event = |e: &str| self.queue_entries.with_label_values(&[group, topic, e]);
        QueueMeter {
            pending: self.queue_pending.with_label_values(&[group, topic]),
            events: QUEUE_EVENTS.map(event),
            commit_failures: self.queue_commit_failures.with_label_values(&[group, topic]),
            seen: Mutex::default(),
        }
    }

    /// A record that was not acknowledged, by why (a short cause name).
    pub(crate) fn produce_error(&self, cluster: &str, cause: &str) {
        self.produce_errors.with_label_values(&[cluster, cause]).inc();
    }

    /// A successful load of `grants` grants from the auth store.
    pub(crate) fn refreshed(&self, grants: usize) {
        self.grants.set(grants as i64);
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub(crate) fn refresh_failed(&self) {
        self.refresh_failures.inc();
    }

    /// Replaces the member counts with `counts` ((group, topic), members).
    pub(crate) fn set_members(&self, counts: &[((String, String), usize)]) {
        self.members.reset();
        for ((group, topic), n) in counts {
            self.members.with_label_values(&[group, topic]).set(*n as i64);
        }
    }

    /// Replaces the producer queue depths with `depths` (cluster, records).
    pub(crate) fn set_queue_depths(&self, depths: &[(String, usize)]) {
        self.queue_depth.reset();
        for (cluster, n) in depths {
            self.queue_depth.with_label_values(&[cluster]).set(*n as i64);
        }
    }

    /// Brings the own producer's counters up to `counts` (cluster, the
    /// counts since start in the order of [`Metrics::produce_counts`]).
    pub(crate) fn set_produce_counts(&self, counts: &[(String, [u64; 5])]) {
        let _one_scrape = self.produce_counted.lock().unwrap_or_else(|e| e.into_inner());
        for (cluster, now) in counts {
            for (counter, now) in self.produce_counts.iter().zip(now) {
                let counter = counter.with_label_values(&[cluster]);
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
    }

    /// Replaces `cluster`'s broker states with `brokers` (name, up).
    pub(crate) fn set_brokers(&self, cluster: &str, brokers: &[(String, bool)]) {
        for (broker, up) in brokers {
            self.broker_up.with_label_values(&[cluster, broker]).set(i64::from(*up));
        }
    }
}

/// An open connection, counted under its role until dropped.
pub(crate) struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A publisher's counters, resolved once at AUTH.
pub(crate) struct PublishMeter {
    metrics: Arc<Metrics>,
    records: IntCounter,
    bytes: IntCounter,
    cluster: String,
}

impl PublishMeter {
    /// Counts one record's verdict, `started` when its request was read:
    /// acknowledged (`failure` is `None`) or not, and why.
    pub(crate) fn finish(&self, started: Instant, value_len: usize, failure: Option<&str>) {
        self.metrics.publish_seconds.observe(started.elapsed().as_secs_f64());
        match failure {
            None => {
                self.records.inc();
                self.bytes.inc_by(value_len as u64);
            }
            Some(cause) => self.metrics.produce_error(&self.cluster, cause),
        }
    }

    /// Counts the SET/HSET that carried the record.
    pub(crate) fn command(&self, label: &'static str, error_code: Option<&str>) {
        self.metrics.command(label, error_code);
    }

    /// A record the producer would not even take, and why.
    pub(crate) fn refused(&self, cause: &str) {
        self.metrics.produce_error(&self.cluster, cause);
    }
}

/// A subscriber's counters, resolved once at AUTH.
pub(crate) struct SubscribeMeter {
    records: IntCounter,
    bytes: IntCounter,
    commits_ok: IntCounter,
    commits_failed: IntCounter,
    mget_wait: Histogram,
}

impl SubscribeMeter {
    /// One MGET answered after `started` with `records` records of `bytes` value bytes.
    pub(crate) fn mget(&self, started: Instant, records: usize, bytes: usize) {
        self.mget_wait.observe(started.elapsed().as_secs_f64());
        self.records.inc_by(records as u64);
        self.bytes.inc_by(bytes as u64);
    }

    pub(crate) fn commit(&self, ok: bool) {
        if ok { &self.commits_ok } else { &self.commits_failed }.inc();
    }
}

/// The events of [`QueueMeter::set`]'s totals, in their order.
pub(crate) const QUEUE_EVENTS: [&str; 5] =
    ["delivered", "redelivered", "claimed", "dead_lettered", "acknowledged"];

/// A queue group's numbers. Its member counts from zero each time it joins;
/// the counters take what it counted since the last look.
pub(crate) struct QueueMeter {
    pending: IntGauge,
    events: [IntCounter; 5],
    commit_failures: IntCounter,
    /// The totals of the last look: the events', then commit failures.
    seen: Mutex<[u64; 6]>,
}

impl QueueMeter {
    /// `events`: the member's totals so far, in [`QUEUE_EVENTS`]' order.
    pub(crate) fn set(&self, pending: usize, events: [u64; 5], commit_failures: u64) {
        self.pending.set(pending as i64);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (i, total) in events.into_iter().chain([commit_failures]).enumerate() {
            let counter = self.events.get(i).unwrap_or(&self.commit_failures);
            counter.inc_by(total.saturating_sub(seen[i]));
            seen[i] = total;
        }
    }
}

/// One consumer's lag per partition; its series go when it is dropped, so
/// a partition that moved to another member is reported by that one only.
pub(crate) struct LagGauge {
    gauge: IntGaugeVec,
    group: String,
    topic: String,
    partitions: Mutex<HashSet<i32>>,
}

impl LagGauge {
    /// `lags`: (partition, lag) of every partition the consumer holds now.
    pub(crate) fn set(&self, lags: &[(i32, i64)]) {
        let mut held = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        let now: HashSet<i32> = lags.iter().map(|(p, _)| *p).collect();
        for gone in held.difference(&now) {
            let _ = self.gauge.remove_label_values(&[&self.group, &self.topic, &gone.to_string()]);
        }
        for (partition, lag) in lags {
            self.gauge.with_label_values(&[&self.group, &self.topic, &partition.to_string()]).set(*lag);
        }
        *held = now;
    }
}

impl Drop for LagGauge {
    fn drop(&mut self) {
        self.set(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn the_own_producers_counts_follow_it_and_never_go_back() {
        let m = Metrics::new();
        m.set_produce_counts(&[("c1".into(), [3, 7, 40, 1, 0])]);
        m.set_produce_counts(&[("c1".into(), [3, 7, 40, 1, 0])]);
        let text = m.render();
        assert!(text.contains("databus_produce_requests_total{cluster=\"c1\"} 3"), "{text}");
        assert!(text.contains("databus_produce_batches_total{cluster=\"c1\"} 7"));
        assert!(text.contains("databus_produce_request_records_total{cluster=\"c1\"} 40"));
        assert!(text.contains("databus_produce_retries_total{cluster=\"c1\"} 1"));
        assert!(text.contains("databus_produce_epoch_bumps_total{cluster=\"c1\"} 0"));
        m.set_produce_counts(&[("c1".into(), [5, 9, 42, 1, 1])]);
        let text = m.render();
        assert!(text.contains("databus_produce_requests_total{cluster=\"c1\"} 5"));
        assert!(text.contains("databus_produce_epoch_bumps_total{cluster=\"c1\"} 1"));
    }

    #[test]
    fn counts_and_bounded_labels() {
        let m = Arc::new(Metrics::new());
        let open = m.connection("pub", "k");
        let label = crate::session::commands::label;
        m.command(label(b"SET"), None);
        m.command(label(b"SET"), Some("TRYAGAIN"));
        m.command(label(b"flushall"), Some("ERR"));
        m.command(label(b"something-else"), Some("ERR"));
        let meter = m.publisher("k", "g", "t", "c1");
        meter.finish(Instant::now(), 5, None);
        meter.finish(Instant::now(), 5, Some("closed"));
        let text = m.render();
        assert_eq!(
            line(&text, "databus_connections{app=\"k\",role=\"pub\"}"),
            Some("databus_connections{app=\"k\",role=\"pub\"} 1")
        );
        assert!(text.contains("databus_commands_total{command=\"set\",result=\"ok\"} 1"), "{text}");
        assert!(text.contains("databus_commands_total{command=\"set\",result=\"TRYAGAIN\"} 1"));
        assert!(text.contains("databus_commands_total{command=\"other\",result=\"ERR\"} 2"));
        assert!(text.contains("databus_published_records_total{app=\"k\",group=\"g\",topic=\"t\"} 1"));
        assert!(text.contains("databus_published_bytes_total{app=\"k\",group=\"g\",topic=\"t\"} 5"));
        assert!(text.contains("databus_produce_errors_total{cause=\"closed\",cluster=\"c1\"} 1"));
        assert!(text.contains("databus_publish_duration_seconds_count 2"));
        drop(open);
        assert!(m.render().contains("databus_connections{app=\"k\",role=\"pub\"} 0"));
    }

    #[test]
    fn lag_series_follow_the_partitions_held() {
        let m = Metrics::new();
        let lag = m.lag("g", "t");
        lag.set(&[(0, 3), (1, 0)]);
        let text = m.render();
        assert!(text.contains("databus_consumer_lag{group=\"g\",partition=\"0\",topic=\"t\"} 3"), "{text}");
        lag.set(&[(1, 2)]);
        let text = m.render();
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(text.contains("databus_consumer_lag{group=\"g\",partition=\"1\",topic=\"t\"} 2"));
        drop(lag);
        assert!(!m.render().contains("databus_consumer_lag{"));
    }
}
