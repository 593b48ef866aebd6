//! A fake Kafka cluster for the producer's unit tests: brokers on 127.0.0.1
//! that speak enough of the protocol for a producer (ApiVersions, SASL
//! PLAIN, Metadata, InitProducerId, Produce), keep what they were sent, and
//! check idempotent sequences as a Kafka 4 broker does, so that retries,
//! leader changes and lost responses can be tested without a Kafka. Faults
//! are injected from the test while its clients are connected.
//!
//! Blocking `std::net`: an accept thread per broker and a thread per
//! connection, which handles one request at a time as Kafka does (it reads a
//! connection's next request only once the previous one is answered), so
//! responses leave in request order.
//!
//! Not modelled: replication (a partition's log and producer state are the
//! cluster's, so a new leader knows what the old one knew, as a Kafka
//! follower would), transactions (a transactional id or batch is taken as
//! merely idempotent), fetching, and authentication (any PLAIN login
//! passes).
//!
//! `mod.rs` holds what a test sees ([`FakeCluster`]: start, faults,
//! what was written) and the cluster's state; `server.rs` the sockets and
//! the requests' framing; `answers.rs` what the brokers answer to
//! Metadata, InitProducerId and Produce; `partition.rs` a partition's log
//! and its idempotence checks.

mod answers;
mod partition;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use self::partition::Partition;
use self::server::{accept, rebind};

const FIRST_PRODUCER_ID: i64 = 1000;

/// A record as a partition holds it. A header with a null value has an
/// empty one here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub offset: i64,
    pub producer_id: i64,
    pub epoch: i16,
    /// -1 for a record of a producer that is not idempotent.
    pub sequence: i32,
}

/// How a partition answers a producer it has no state for (never seen, or
/// forgotten: [`FakeCluster::forget_producers`]) whose batch does not start
/// at sequence 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum UnknownProducerAnswer {
    /// Appends it, as Kafka does since 2.5 (KIP-360), 4.x included, for an
    /// idempotent producer: "If there is no current producer epoch [...]
    /// accept writes with any sequence number" (`ProducerAppendInfo`).
    #[default]
    Accept,
    /// UNKNOWN_PRODUCER_ID (59), as Kafka answered before 2.5.
    UnknownProducerId,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45), as Kafka 4 answers a
    /// transactions-v2 producer.
    OutOfOrder,
}

/// Brokers `0..nodes` on 127.0.0.1. Dropping it stops them all.
pub(crate) struct FakeCluster {
    shared: Arc<Shared>,
}

impl FakeCluster {
    /// Starts `nodes` brokers serving `topics` (name, partition count);
    /// partition `p` is led by node `p % nodes`.
    pub(crate) fn start(nodes: usize, topics: &[(&str, i32)]) -> FakeCluster {
        assert!(nodes > 0, "a cluster needs a node");
        let listeners: Vec<TcpListener> =
            (0..nodes).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let state = State {
            nodes: listeners.iter().map(|l| Node::new(l.local_addr().unwrap().port())).collect(),
            topics: topics
                .iter()
                .map(|&(name, count)| {
                    (name.to_owned(), (0..count).map(|p| Partition::led_by(p as usize % nodes)).collect())
                })
                .collect(),
            producer_epochs: HashMap::new(),
            next_producer_id: FIRST_PRODUCER_ID,
            unknown_producer: UnknownProducerAnswer::default(),
            reinit_gives_new_id: false,
            partitions_per_request: Vec::new(),
            next_connection: 0,
        };
        let cluster = FakeCluster { shared: Arc::new(Shared(Mutex::new(state))) };
        for (node, listener) in listeners.into_iter().enumerate() {
            cluster.listen(node, listener);
        }
        cluster
    }

    /// "127.0.0.1:port" of each node, in node order.
    pub(crate) fn bootstrap(&self) -> Vec<String> {
        self.shared.lock().nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect()
    }

    /// Makes `to_node` the partition's leader (with a new leader epoch):
    /// metadata says so, and the old leader answers NOT_LEADER_OR_FOLLOWER.
    pub(crate) fn move_leader(&self, topic: &str, partition: i32, to_node: usize) {
        let mut state = self.shared.lock();
        assert!(to_node < state.nodes.len(), "no node {to_node}");
        let partition = state.partition(topic, partition);
        partition.leader = to_node;
        partition.leader_epoch += 1;
    }

    /// Answers the partition's next `times` produce attempts (on its leader)
    /// with `error_code`, appending nothing; the request's other partitions
    /// go on as usual. Calls add up, in order.
    pub(crate) fn fail_next(&self, topic: &str, partition: i32, error_code: i16, times: usize) {
        let mut state = self.shared.lock();
        state.partition(topic, partition).failures.extend(std::iter::repeat_n(error_code, times));
    }

    /// The node's next `times` Produce requests are applied but answered by
    /// closing the connection: a lost response, which the producer retries.
    pub(crate) fn write_but_drop_response(&self, node: usize, times: usize) {
        self.shared.lock().nodes[node].drop_responses += times;
    }

    /// Holds the node's Produce responses this long after applying the
    /// request (as a leader waits for its followers at acks=all). Metadata
    /// and the rest are answered at once, so that a client reconnecting after
    /// a timeout is not held too.
    pub(crate) fn delay_responses(&self, node: usize, delay: Duration) {
        self.shared.lock().nodes[node].delay = delay;
    }

    /// Closes the node's listener and connections: connecting is refused
    /// until [`FakeCluster::start_node`]. Leadership does not move (see
    /// [`FakeCluster::move_leader`]).
    pub(crate) fn stop_node(&self, node: usize) {
        let (acceptor, port) = {
            let mut state = self.shared.lock();
            let node = &mut state.nodes[node];
            node.generation += 1;
            for (_, connection) in node.connections.drain() {
                let _ = connection.shutdown(Shutdown::Both);
            }
            (node.acceptor.take(), node.port)
        };
        if let Some(acceptor) = acceptor {
            // accept() blocks: a connection wakes it to see the new
            // generation and return, which closes the listener.
            let _ = TcpStream::connect(("127.0.0.1", port));
            acceptor.join().unwrap();
        }
    }

    /// Listens again on the port the node had.
    pub(crate) fn start_node(&self, node: usize) {
        let port = {
            let state = self.shared.lock();
            if state.nodes[node].acceptor.is_some() {
                return;
            }
            state.nodes[node].port
        };
        self.listen(node, rebind(port));
    }

    /// Forgets every producer's sequences and epoch on the partition, as a
    /// broker does once their records are gone: see
    /// [`FakeCluster::on_unknown_producer`] for what a producer's next batch
    /// then gets.
    pub(crate) fn forget_producers(&self, topic: &str, partition: i32) {
        self.shared.lock().partition(topic, partition).producers.clear();
    }

    /// How partitions answer a producer they have no state for whose batch
    /// does not start at sequence 0 (by default as Kafka 4 does: append it).
    pub(crate) fn on_unknown_producer(&self, answer: UnknownProducerAnswer) {
        self.shared.lock().unknown_producer = answer;
    }

    /// Whether an InitProducerId naming the producer's id and epoch
    /// (KIP-360) gets a new producer id at epoch 0, as Kafka 4 answers a
    /// producer without a transactional id, instead of the same id at the
    /// next epoch (the default, as Kafka's transaction coordinator answers).
    pub(crate) fn reinit_gives_new_id(&self, yes: bool) {
        self.shared.lock().reinit_gives_new_id = yes;
    }

    /// What the partition holds, in offset order.
    pub(crate) fn records(&self, topic: &str, partition: i32) -> Vec<Written> {
        self.shared.lock().partition(topic, partition).log.clone()
    }

    /// How many Produce requests the node received (answered or not).
    pub(crate) fn produce_requests(&self, node: usize) -> usize {
        self.shared.lock().nodes[node].produce_requests
    }

    /// For each Produce request to any node, in arrival order, how many
    /// partitions it carried.
    pub(crate) fn partitions_per_request(&self) -> Vec<usize> {
        self.shared.lock().partitions_per_request.clone()
    }

    fn listen(&self, node: usize, listener: TcpListener) {
        let mut state = self.shared.lock();
        let generation = state.nodes[node].generation;
        let shared = Arc::clone(&self.shared);
        let acceptor = thread::Builder::new()
            .name(format!("fake-broker-{node}"))
            .spawn(move || accept(&shared, node, generation, listener))
            .unwrap();
        state.nodes[node].acceptor = Some(acceptor);
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let nodes = self.shared.lock().nodes.len();
        for node in 0..nodes {
            self.stop_node(node);
        }
    }
}

struct Shared(Mutex<State>);

impl Shared {
    /// The state, even if a broker thread panicked holding it: the test
    /// then fails on what that thread did not answer, not on every call.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    nodes: Vec<Node>,
    topics: BTreeMap<String, Vec<Partition>>,
    /// The producer ids handed out, with their current epochs.
    producer_epochs: HashMap<i64, i16>,
    next_producer_id: i64,
    unknown_producer: UnknownProducerAnswer,
    reinit_gives_new_id: bool,
    partitions_per_request: Vec<usize>,
    next_connection: u64,
}

struct Node {
    port: u16,
    /// The accept thread, while the node runs.
    acceptor: Option<JoinHandle<()>>,
    /// Bumped at each stop: a connection accepted before answers nothing
    /// more, even one busy with a request at the time.
    generation: u64,
    /// A handle on each open connection, to close it at a stop.
    connections: HashMap<u64, TcpStream>,
    produce_requests: usize,
    drop_responses: usize,
    delay: Duration,
}

impl Node {
    fn new(port: u16) -> Node {
        Node {
            port,
            acceptor: None,
            generation: 0,
            connections: HashMap::new(),
            produce_requests: 0,
            drop_responses: 0,
            delay: Duration::ZERO,
        }
    }
}

impl State {
    fn partition(&mut self, topic: &str, partition: i32) -> &mut Partition {
        self.topics
            .get_mut(topic)
            .and_then(|p| p.get_mut(usize::try_from(partition).ok()?))
            .unwrap_or_else(|| panic!("the fake cluster has no partition {topic}-{partition}"))
    }
}
