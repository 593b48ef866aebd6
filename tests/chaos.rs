//! Faults with numbers (`make chaos`; `make test` runs them too): real load
//! through real faults, each scenario asserting counts — acknowledged, in
//! Kafka, lost, duplicated, redelivered — never a speed. Each appends its
//! row to the results file that `make chaos` prints (RELIABILITY.md).

mod support;

use std::time::{Duration, Instant};

use databus::resp::Frame;
use support::*;

/// One scenario's outcome, appended as a JSON line to `CHAOS_RESULTS`
/// (default `target/chaos-results.jsonl`).
#[derive(Debug, Default, serde::Serialize)]
struct Row {
    scenario: &'static str,
    acknowledged: Option<usize>,
    in_kafka: Option<usize>,
    lost: Option<usize>,
    duplicated: Option<usize>,
    redelivered: Option<usize>,
    recover_ms: Option<u128>,
    note: String,
}

impl Row {
    fn record(&self) {
        let path = std::env::var("CHAOS_RESULTS")
            .unwrap_or_else(|_| format!("{}/target/chaos-results.jsonl", env!("CARGO_MANIFEST_DIR")));
        let mut line = serde_json::to_string(self).unwrap();
        line.push('\n');
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
        eprintln!("chaos: {line}");
    }
}

/// Scenario 7: a subscriber can tell "no new records" (an empty array) from
/// "Kafka is unreachable" (TRYAGAIN) and its connection survives the outage.
#[test]
fn mget_tells_an_unreachable_cluster_from_an_empty_topic() {
    let mut broker = OwnBroker::start();
    let db = TestDb::new("chaos_mget");
    let topic = unique("t_chaos_mget");
    let group = unique("g_chaos_mget");
    db.add_app(1, "key1", "secret1", "own");
    db.add_grant(1, &group, 3, &topic);
    create_topic_on(&broker.addr(), &topic, 1);
    let sections = format!("[clusters.own]\nbrokers = [\"{}\"]\n", broker.addr());
    let config = test_config(&db, "", &sections).replace("wait_timeout_ms = 3000", "wait_timeout_ms = 1000");
    let server = TestServer::start(&config);
    let mut sub = server.connect();
    assert_eq!(sub.call(&["AUTH", &format!("key1:secret1@{group}/topic={topic}&role=sub")]), ok());
    assert_eq!(sub.call(&["MGET"]), Frame::Array(Vec::new()), "an empty topic answers an empty array");

    broker.stop();
    let down_at = Instant::now();
    // The first wait may end before librdkafka notices; within a few waits
    // every MGET must say why it has nothing.
    let (mut empty, mut errors) = (0, 0);
    for _ in 0..10 {
        match sub.call(&["MGET"]) {
            Frame::Array(a) if a.is_empty() => empty += 1,
            Frame::Error(e) => {
                assert!(e.starts_with("TRYAGAIN cluster 'own' is unreachable: "), "{e}");
                errors += 1;
                if errors == 3 {
                    break;
                }
            }
            other => panic!("records with the broker down: {other:?}"),
        }
    }
    assert_eq!(errors, 3, "MGET kept answering empty arrays ({empty}) with the broker down");
    assert!(empty <= 1, "{empty} empty answers after the broker was down");
    assert_eq!(sub.call(&["PING"]), Frame::Simple("PONG".into()), "the connection survives");

    broker.restart();
    create_topic_on(&broker.addr(), &topic, 1);
    let back_at = Instant::now();
    let deadline = back_at + Duration::from_secs(60);
    loop {
        match sub.call(&["MGET"]) {
            Frame::Array(_) => break,
            Frame::Error(e) if e.starts_with("TRYAGAIN") => {}
            other => panic!("unexpected reply after the broker returned: {other:?}"),
        }
        assert!(Instant::now() < deadline, "MGET still failing 60 s after the broker returned");
    }
    Row {
        scenario: "7. MGET while the cluster is unreachable",
        recover_ms: Some(back_at.elapsed().as_millis()),
        note: format!(
            "down {} ms: {errors} MGETs answered TRYAGAIN, {empty} empty before the first error",
            back_at.duration_since(down_at).as_millis()
        ),
        ..Row::default()
    }
    .record();
}
