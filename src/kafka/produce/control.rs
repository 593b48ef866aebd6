//! The producer's control thread: the producer id, the metadata (which
//! broker leads which partition, and a sender for each broker), the epoch
//! bump, and the records that time out before they are sent.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, MetadataResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::wire::{Conn, WireError};
use super::{fail, sender, settle, Failure, Link, Partition, Shared, State, Stats, Verdicts};

/// How often the control thread looks at the timeouts.
const TICK: Duration = Duration::from_millis(100);

/// The metadata is asked again at most this often when it is wanted (a
/// topic not yet known, a leader moved).
const METADATA_RETRY: Duration = Duration::from_millis(250);

/// The metadata is refreshed this often anyway (librdkafka's
/// `topic.metadata.refresh.interval.ms`).
const METADATA_REFRESH: Duration = Duration::from_secs(300);

pub(super) fn spawn(shared: Arc<Shared>) -> std::io::Result<()> {
    thread::Builder::new().name("databus-produce".into()).spawn(move || run(&shared))?;
    Ok(())
}

fn run(shared: &Arc<Shared>) {
    let mut conn: Option<Conn> = None;
    // Which address to try next, in the rotation of the known ones.
    let mut turn = 0usize;
    let mut last_metadata: Option<Instant> = None;
    loop {
        let mut state = shared.lock();
        if state.stopping {
            return;
        }
        let mut verdicts = Verdicts::new();
        expire(shared, &mut state, &mut verdicts);
        if state.bump && state.in_flight == 0 {
            bump(&mut state);
            Stats::add(&shared.config.stats.epoch_bumps, 1);
            shared.wake_all(&state);
        }
        let need_id = state.producer.is_none();
        let since = last_metadata.map(|at| at.elapsed());
        let need_metadata = (!state.topics.is_empty() || !state.waiting.is_empty())
            && match since {
                None => true,
                Some(since) => (state.metadata_due && since >= METADATA_RETRY) || since >= METADATA_REFRESH,
            };
        // While the brokers refuse databus, a new login is tried every
        // second: records fail at once meanwhile, so no sender would.
        let recheck = state.refused.is_some();
        if recheck {
            conn = None;
        }
        if !need_id && !need_metadata && !recheck {
            if !verdicts.is_empty() {
                shared.settled.notify_all();
            }
            let state = shared.control.wait_timeout(state, TICK).unwrap_or_else(|e| e.into_inner()).0;
            drop(state);
            settle(verdicts);
            continue;
        }
        let mut addresses: Vec<String> = state.links.values().map(|l| l.address.clone()).collect();
        addresses.extend(shared.config.brokers.iter().cloned());
        let topics: Vec<String> =
            state.topics.keys().chain(state.waiting.iter().map(|w| &w.topic)).cloned().collect();
        if !verdicts.is_empty() {
            shared.settled.notify_all();
        }
        drop(state);
        settle(verdicts);

        let c = match conn.as_mut() {
            Some(c) => c,
            None => {
                turn += 1;
                let address = &addresses[turn % addresses.len()];
                match Conn::open(address, &shared.config.security, shared.config.timeout) {
                    Ok(c) => {
                        accepted(shared);
                        conn.insert(c)
                    }
                    Err(e) => {
                        failed(shared, address, e);
                        thread::sleep(TICK);
                        continue;
                    }
                }
            }
        };
        if !need_id && !need_metadata {
            continue;
        }
        let asked = if need_id { producer_id(shared, c) } else { metadata(shared, c, topics) };
        match asked {
            Ok(()) if !need_id => last_metadata = Some(Instant::now()),
            Ok(()) => {}
            Err(e) => {
                let address = c.address.clone();
                conn = None;
                failed(shared, &address, e);
                thread::sleep(TICK);
            }
        }
    }
}

/// A login passed: any refusal is over.
pub(super) fn accepted(shared: &Shared) {
    if shared.lock().refused.take().is_some() {
        log::info!("cluster '{}' accepts databus's producer again", shared.config.cluster);
    }
    shared.context.accepted();
}

/// A control connection failed: a refused login fails the records held.
fn failed(shared: &Shared, address: &str, e: WireError) {
    match e {
        WireError::Refused(reason) => {
            let mut state = shared.lock();
            let verdicts = sender::refuse(shared, &mut state, reason);
            drop(state);
            settle(verdicts);
            thread::sleep(Duration::from_secs(1));
        }
        other => shared.context.broker_error(&format!("{address}: {other}")),
    }
}

/// Asks any broker for an idempotent producer id (no transactional id, so
/// no coordinator is needed).
fn producer_id(shared: &Shared, c: &mut Conn) -> Result<(), WireError> {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let response = c.call(&request, c.versions.init_producer_id)?;
    if response.error_code != 0 {
        let e = kafka_protocol::error::ResponseError::try_from_code(response.error_code);
        let reason = format!("InitProducerId: {}", e.map(|e| e.to_string()).unwrap_or_default());
        if response.error_code == 31 {
            // CLUSTER_AUTHORIZATION_FAILED: no IdempotentWrite.
            return Err(WireError::Refused(reason));
        }
        shared.context.broker_error(&reason);
        thread::sleep(TICK);
        return Ok(());
    }
    let mut state = shared.lock();
    state.producer = Some((response.producer_id.0, response.producer_epoch));
    restart_sequences(&mut state);
    log::debug!(
        "cluster '{}': producer id {} epoch {}",
        shared.config.cluster,
        response.producer_id.0,
        response.producer_epoch
    );
    shared.wake_all(&state);
    Ok(())
}

/// Asks for the metadata of `topics` and applies it.
fn metadata(shared: &Arc<Shared>, c: &mut Conn, topics: Vec<String>) -> Result<(), WireError> {
    let mut names: Vec<String> = topics;
    names.sort();
    names.dedup();
    let request = MetadataRequest::default()
        .with_topics(Some(
            names
                .into_iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(t)))))
                .collect(),
        ))
        // As librdkafka's producer does: the broker creates a missing
        // topic if its `auto.create.topics.enable` says so.
        .with_allow_auto_topic_creation(true);
    let response = c.call(&request, c.versions.metadata)?;
    apply(shared, response);
    Ok(())
}

/// Takes in new metadata: brokers (a sender for each new one), leaders,
/// partition counts; then places the records that waited for it.
fn apply(shared: &Arc<Shared>, response: MetadataResponse) {
    let mut state = shared.lock();
    let mut still_due = false;
    let mut denied: Vec<String> = Vec::new();
    for broker in &response.brokers {
        let node = broker.node_id.0;
        let address = format!("{}:{}", broker.host.as_str(), broker.port);
        match state.links.get_mut(&node) {
            Some(link) => {
                link.address = address;
                link.gone = false;
            }
            None => {
                state.links.insert(node, Link::new(address));
                sender::spawn(shared.clone(), node);
            }
        }
    }
    for (node, link) in state.links.iter_mut() {
        if !response.brokers.iter().any(|b| b.node_id.0 == *node) {
            link.gone = true;
        }
    }
    for t in &response.topics {
        let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else { continue };
        if t.error_code == super::TOPIC_AUTHORIZATION_FAILED {
            // The cluster's ACLs: the records waiting for it fail now, and
            // the next record asks again (the ACL may be granted meanwhile).
            state.topics.remove(&name);
            denied.push(name);
            continue;
        }
        if t.error_code != 0 {
            // Unknown (3), or being created (5): asked again shortly.
            still_due = true;
            state.topics.entry(name).or_default();
            continue;
        }
        let topic = state.topics.entry(name).or_default();
        for p in &t.partitions {
            let Ok(index) = usize::try_from(p.partition_index) else { continue };
            while topic.partitions.len() <= index {
                topic.partitions.push(Partition::new(-1));
            }
            let partition = &mut topic.partitions[index];
            let leader = if p.error_code == 5 { -1 } else { p.leader_id.0 };
            if partition.leader != leader && partition.in_flight > 0 {
                // Batches in flight to the old leader come back first.
                partition.careful = true;
            }
            partition.leader = leader;
            still_due |= leader < 0;
        }
    }
    state.metadata_due = still_due;
    let waiting = std::mem::take(&mut state.waiting);
    let config = &shared.config;
    let mut verdicts = Verdicts::new();
    for w in waiting {
        if denied.contains(&w.topic) {
            let failure = Failure::denied(&w.topic);
            state.held -= fail(&*shared.context, &failure, [w.reporter], &mut verdicts);
        } else {
            state.place(config, w);
        }
    }
    if !verdicts.is_empty() {
        shared.settled.notify_all();
    }
    shared.wake_all(&state);
    drop(state);
    settle(verdicts);
}

/// Fails the records whose produce timeout passed before they were sent.
fn expire(shared: &Shared, state: &mut State, verdicts: &mut Verdicts) {
    let now = Instant::now();
    let context = &*shared.context;
    let mut failed = 0;
    for w in std::mem::take(&mut state.waiting) {
        if w.deadline > now {
            state.waiting.push(w);
        } else {
            let failure = Failure::Timeout { topic: w.topic.clone(), partition: None };
            failed += fail(context, &failure, [w.reporter], verdicts);
        }
    }
    let mut bump = false;
    for (name, topic) in state.topics.iter_mut() {
        for (i, p) in topic.partitions.iter_mut().enumerate() {
            let mut late = Vec::new();
            if p.open.as_ref().is_some_and(|b| b.deadline <= now) {
                late.extend(p.open.take());
            }
            while p.ready.front().is_some_and(|b| b.deadline <= now) {
                late.extend(p.ready.pop_front());
            }
            for batch in late {
                // One that was sent may have been written: only a new epoch
                // lets the partition's sequences go on past it.
                bump |= batch.sequence.is_some();
                let failure = Failure::Timeout { topic: name.clone(), partition: Some(i as i32) };
                failed += fail(context, &failure, batch.reporters, verdicts);
            }
        }
    }
    state.held -= failed;
    state.bump |= bump;
}

/// Bumps the epoch (a new producer id at the last epoch, or when the
/// broker fenced this one), restarting every partition's sequences.
fn bump(state: &mut State) {
    state.bump = false;
    match state.producer {
        Some((id, epoch)) if epoch < i16::MAX && !state.new_id => {
            log::info!("producer id {id}: epoch {} to {}", epoch, epoch + 1);
            state.producer = Some((id, epoch + 1));
            restart_sequences(state);
        }
        _ => state.producer = None,
    }
    state.new_id = false;
}

/// Every partition's sequences start again at 0 (a new producer id or
/// epoch); batches that had sequences keep their order.
fn restart_sequences(state: &mut State) {
    for p in state.topics.values_mut().flat_map(|t| &mut t.partitions) {
        p.renumber(0);
        p.renumber_from = None;
    }
}
