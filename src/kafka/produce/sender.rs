//! A broker's two threads: the sender writes produce requests, each with a
//! batch of every partition the broker leads that has records, while up to
//! `max_in_flight` are unanswered; the reader of each connection takes the
//! responses in order and settles their records, or sends their batches
//! back to their partitions to go again.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::batch::Batch;
use super::response::{self, PartitionAnswer};
use super::wire::{self, Conn, Reader, WireError, Writer};
use super::{fail, settle, Failure, Sent, Shared, State, Stats, Verdicts};
use crate::kafka::Delivered;

/// How long a sender waits after a failed connection before the next.
const RECONNECT: Duration = Duration::from_millis(200);

/// Errors after which the partition's leader may have moved: the metadata
/// is refreshed.
const STALE_METADATA: &[i16] = &[3, 5, 6, 56, 74, 75];

pub(super) fn spawn(shared: Arc<Shared>, node: i32) {
    let name = format!("databus-send-{node}");
    if let Err(e) = thread::Builder::new().name(name).spawn(move || send(&shared, node)) {
        log::error!("cannot start the sender of broker {node}: {e}");
    }
}

/// Whether a partition led by `node` has a batch to send now.
pub(super) fn has_work(state: &State, node: i32, max_in_flight: usize, linger: Duration) -> bool {
    state
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .any(|p| p.leader == node && p.sendable(max_in_flight, linger))
}

fn send(shared: &Arc<Shared>, node: i32) {
    let config = &shared.config;
    let mut writer: Option<Writer> = None;
    loop {
        let mut state = shared.lock();
        let address = loop {
            if state.stopping {
                return;
            }
            // Its reader found the connection broken (and sent what was in
            // flight back to the partitions): nothing more goes on it. Seen
            // under the same lock as a request is registered below, so no
            // request is left on a connection nobody reads.
            if !state.links.get(&node).is_some_and(|l| l.connected) {
                writer = None;
            }
            let ready = state.producer.is_some()
                && !state.bump
                && has_work(&state, node, config.max_in_flight, config.linger);
            let Some(link) = state.links.get(&node) else { return };
            if link.gone && !ready && link.sent.is_empty() && !link.connected {
                state.links.remove(&node);
                return;
            }
            let pace = link.pace(config);
            let room = link.sent.len() < link.in_flight_limit(config);
            if ready && writer.is_some() && room && pace.is_zero() {
                break None;
            }
            if ready && writer.is_none() && !link.connected {
                break Some(link.address.clone());
            }
            let wake = link.wake.clone();
            // With no room, the next response wakes it (wake_busy).
            let paced = ready && room && !pace.is_zero();
            let wait = match (paced, config.linger.is_zero()) {
                (true, _) => pace,
                (false, true) => Duration::from_millis(100),
                (false, false) => config.linger,
            };
            state.links.get_mut(&node).expect("looked up above").paced = paced;
            state = wake.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
            if let Some(link) = state.links.get_mut(&node) {
                link.paced = false;
            }
        };
        if let Some(address) = address {
            drop(state);
            writer = connect(shared, node, &address);
            continue;
        }
        let Some(w) = writer.as_mut() else { continue };
        let (producer_id, epoch) = state.producer.unwrap_or((-1, -1));
        let mut batches: Vec<(String, i32, Batch)> = Vec::new();
        for (name, topic) in state.topics.iter_mut() {
            for (i, p) in topic.partitions.iter_mut().enumerate() {
                if p.leader == node && p.sendable(config.max_in_flight, config.linger) {
                    batches.extend(p.take().map(|b| (name.clone(), i as i32, b)));
                }
            }
        }
        let mut wires: Vec<(String, i32, Bytes)> = Vec::with_capacity(batches.len());
        let mut verdicts = Verdicts::new();
        batches.retain_mut(|(topic, partition, batch)| match batch.seal(config.compression) {
            Ok(()) => {
                wires.push((topic.clone(), *partition, batch.encode(config.compression, producer_id, epoch)));
                true
            }
            Err(message) => {
                // Never sent: its sequences are free again.
                state.topics.get_mut(topic.as_str()).expect("taken from it").partitions[*partition as usize]
                    .refused(batch.sequence);
                let failure = Failure::Rejected { topic: topic.clone(), code: -1, message };
                state.held -= fail(&*shared.context, &failure, batch.reporters.drain(..), &mut verdicts);
                false
            }
        });
        if batches.is_empty() {
            drop(state);
            settle(verdicts);
            continue;
        }
        let stats = &config.stats;
        Stats::add(&stats.requests, 1);
        Stats::add(&stats.batches, batches.len());
        let correlation = w.next_correlation();
        let version = w.versions.produce;
        let link = state.links.get_mut(&node).expect("checked above");
        link.last_sent = Instant::now();
        let sent = Sent { correlation, version, at: link.last_sent, batches };
        Stats::add(&stats.records, sent.records());
        link.sent.push_back(sent);
        state.in_flight += 1;
        drop(state);
        settle(verdicts);
        let request = request(config.timeout, wires);
        match wire::frame(&request, version, correlation) {
            Ok(frame) => {
                if let Err(e) = w.write(&frame) {
                    log::debug!("writing to broker {node}: {e}");
                    // The reader fails what is in flight.
                    w.shutdown();
                    writer = None;
                }
            }
            Err(e) => {
                log::error!("{e}");
                w.shutdown();
                writer = None;
            }
        }
    }
}

/// A produce request of these batches, grouped by topic.
fn request(timeout: Duration, wires: Vec<(String, i32, Bytes)>) -> ProduceRequest {
    let mut topics: Vec<TopicProduceData> = Vec::new();
    for (topic, partition, records) in wires {
        let data = PartitionProduceData::default().with_index(partition).with_records(Some(records));
        match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
            Some(t) => t.partition_data.push(data),
            None => topics.push(
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partition_data(vec![data]),
            ),
        }
    }
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(timeout.as_millis() as i32)
        .with_topic_data(topics)
}

/// Opens a connection to `node` and starts its reader; on a refused login
/// fails the records held.
fn connect(shared: &Arc<Shared>, node: i32, address: &str) -> Option<Writer> {
    let config = &shared.config;
    let opened = Conn::open(address, &config.security, config.timeout).and_then(Conn::split);
    let mut state = shared.lock();
    match opened {
        Ok((writer, reader)) => {
            let link = state.links.get_mut(&node)?;
            link.connected = true;
            drop(state);
            super::control::accepted(shared);
            let shared = shared.clone();
            let spawned = thread::Builder::new()
                .name(format!("databus-recv-{node}"))
                .spawn(move || receive(&shared, node, reader));
            if let Err(e) = spawned {
                log::error!("cannot start the reader of broker {node}: {e}");
                writer.shutdown();
                return None;
            }
            Some(writer)
        }
        Err(WireError::Refused(reason)) => {
            let verdicts = refuse(shared, &mut state, reason);
            drop(state);
            settle(verdicts);
            thread::sleep(RECONNECT * 5);
            None
        }
        Err(e) => {
            shared.context.broker_error(&format!("{address}: {e}"));
            state.metadata_due = true;
            drop(state);
            shared.control.notify_one();
            thread::sleep(RECONNECT);
            None
        }
    }
}

/// The brokers refused databus's login: every record not yet sent fails at
/// once with the reason, and so does every new one until a login succeeds.
pub(super) fn refuse(shared: &Shared, state: &mut State, reason: String) -> Verdicts {
    if state.refused.is_none() {
        log::warn!("cluster '{}' refused databus's producer: {reason}", shared.config.cluster);
    }
    shared.context.broker_error(&reason);
    let failure = Failure::Refused(reason.clone());
    state.refused = Some(reason);
    let mut verdicts = Verdicts::new();
    state.fail_queued(&*shared.context, &failure, &mut verdicts);
    shared.settled.notify_all();
    verdicts
}

/// A connection's reader: settles each response's batches, until the
/// connection breaks or a request goes unanswered past the timeout.
fn receive(shared: &Shared, node: i32, mut reader: Reader) {
    let stale = shared.config.timeout + Duration::from_secs(1);
    let why = loop {
        match reader.next() {
            Ok(Some(body)) => {
                let mut state = shared.lock();
                let Some(link) = state.links.get_mut(&node) else {
                    break "a response to no request".to_owned();
                };
                let Some(sent) = link.sent.pop_front() else { break "a response to no request".to_owned() };
                link.answered(sent.at.elapsed(), sent.records());
                state.in_flight -= 1;
                let response = response::decode(&body, sent.version, sent.correlation);
                let mut verdicts = Verdicts::new();
                let why = match response {
                    Ok(response) => {
                        answer(shared, &mut state, sent, response, &mut verdicts);
                        None
                    }
                    Err(e) => {
                        state.in_flight += 1;
                        if let Some(link) = state.links.get_mut(&node) {
                            link.sent.push_front(sent);
                        }
                        Some(e.to_string())
                    }
                };
                if !verdicts.is_empty() {
                    shared.settled.notify_all();
                }
                shared.wake_busy(&state);
                drop(state);
                settle(verdicts);
                if let Some(why) = why {
                    break why;
                }
            }
            Ok(None) => {
                let state = shared.lock();
                if state.stopping {
                    return;
                }
                let oldest = state.links.get(&node).and_then(|l| l.sent.front().map(|s| s.at));
                if oldest.is_some_and(|at| at.elapsed() > stale) {
                    break format!("no response within {} ms", stale.as_millis());
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    reader.shutdown();
    broken(shared, node, &why);
}

/// A connection broke: whatever was in flight on it may or may not have
/// been written, so each batch goes again with its sequences (the broker
/// answers a duplicate with the first offsets).
fn broken(shared: &Shared, node: i32, why: &str) {
    let mut state = shared.lock();
    let address = state.links.get(&node).map(|l| l.address.clone()).unwrap_or_default();
    shared.context.broker_error(&format!("{address}: {why}"));
    log::debug!("connection to broker {node} ({address}) lost: {why}");
    let sent: Vec<Sent> = match state.links.get_mut(&node) {
        Some(link) => {
            link.connected = false;
            link.sent.drain(..).collect()
        }
        None => Vec::new(),
    };
    let mut verdicts = Verdicts::new();
    for s in sent {
        state.in_flight -= 1;
        for (topic, partition, batch) in s.batches {
            again(shared, &mut state, &topic, partition, batch, &mut verdicts);
        }
    }
    state.metadata_due = true;
    if !verdicts.is_empty() {
        shared.settled.notify_all();
    }
    shared.wake_all(&state);
    drop(state);
    shared.control.notify_one();
    settle(verdicts);
}

/// Settles or requeues each batch of an answered request.
fn answer(
    shared: &Shared,
    state: &mut State,
    sent: Sent,
    response: Vec<PartitionAnswer>,
    verdicts: &mut Verdicts,
) {
    for (topic, partition, batch) in sent.batches {
        let answered = response.iter().find(|a| a.partition == partition && a.topic == topic);
        match answered {
            Some(r) => outcome(shared, state, &topic, partition, batch, r, verdicts),
            None => {
                shared.context.broker_error(&format!("no answer for partition {partition} of '{topic}'"));
                again(shared, state, &topic, partition, batch, verdicts);
            }
        }
    }
}

fn outcome(
    shared: &Shared,
    state: &mut State,
    topic: &str,
    partition: i32,
    mut batch: Batch,
    r: &PartitionAnswer,
    verdicts: &mut Verdicts,
) {
    let Some(p) = state.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(partition as usize)) else {
        return forgotten(shared, state, topic, batch, verdicts);
    };
    match r.error_code {
        // 46: DUPLICATE_SEQUENCE_NUMBER, written before.
        0 | 46 => {
            p.in_flight -= 1;
            p.through();
            shared.context.acknowledged(topic, partition);
            state.held -= batch.reporters.len();
            for (i, reporter) in batch.reporters.drain(..).enumerate() {
                let offset = if r.base_offset < 0 { -1 } else { r.base_offset + i as i64 };
                verdicts.push((reporter, Ok(Delivered { partition, offset })));
            }
        }
        // OUT_OF_ORDER_SEQUENCE_NUMBER after an earlier batch of the
        // partition failed: expected, it goes again after that one.
        45 if p.careful => again(shared, state, topic, partition, batch, verdicts),
        // A gap the broker cannot place, or its producer state lost: a
        // new epoch starts every sequence again.
        45 | 59 => {
            log::warn!(
                "partition {partition} of '{topic}': {}; bumping the producer epoch",
                error_name(r.error_code)
            );
            state.bump = true;
            again(shared, state, topic, partition, batch, verdicts);
        }
        // INVALID_PRODUCER_EPOCH, PRODUCER_FENCED: a new producer id.
        47 | 90 => {
            log::warn!(
                "partition {partition} of '{topic}': {}; asking for a new producer id",
                error_name(r.error_code)
            );
            state.bump = true;
            state.new_id = true;
            again(shared, state, topic, partition, batch, verdicts);
        }
        code if is_retriable(code) => {
            if STALE_METADATA.contains(&code) {
                state.metadata_due = true;
                shared.control.notify_one();
            }
            shared.context.broker_error(&describe(r));
            again(shared, state, topic, partition, batch, verdicts);
        }
        code => {
            p.refused(batch.sequence);
            let failure = Failure::Rejected { topic: topic.to_owned(), code, message: describe(r) };
            state.held -= fail(&*shared.context, &failure, batch.reporters, verdicts);
        }
    }
}

/// A batch whose outcome is not known, or that was refused for a while:
/// back to the front of its partition to go again, unless its records
/// timed out meanwhile (then, since it may have been written, only a new
/// epoch lets the partition's sequences go on).
fn again(
    shared: &Shared,
    state: &mut State,
    topic: &str,
    partition: i32,
    batch: Batch,
    verdicts: &mut Verdicts,
) {
    let Some(p) = state.topics.get_mut(topic).and_then(|t| t.partitions.get_mut(partition as usize)) else {
        return forgotten(shared, state, topic, batch, verdicts);
    };
    p.in_flight -= 1;
    p.careful = true;
    if batch.deadline > Instant::now() {
        p.put_back(batch);
        Stats::add(&shared.config.stats.retries, 1);
        return;
    }
    state.bump = true;
    let failure = Failure::Timeout { topic: topic.to_owned(), partition: Some(partition) };
    state.held -= fail(&*shared.context, &failure, batch.reporters, verdicts);
}

/// A batch of a topic the producer no longer knows (its ACL denied since
/// the batch was sent): its records fail as the broker would answer them.
fn forgotten(shared: &Shared, state: &mut State, topic: &str, batch: Batch, verdicts: &mut Verdicts) {
    state.held -= fail(&*shared.context, &Failure::denied(topic), batch.reporters, verdicts);
}

fn is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

fn error_name(code: i16) -> String {
    ResponseError::try_from_code(code).map_or_else(|| "no error".into(), |e| e.to_string())
}

/// A partition's error as the broker gave it.
fn describe(r: &PartitionAnswer) -> String {
    match r.error_message.as_ref().filter(|m| !m.is_empty()) {
        Some(m) => format!("{}: {m}", error_name(r.error_code)),
        None => error_name(r.error_code),
    }
}
