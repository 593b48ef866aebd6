//! Apache Kafka brokers of a test's own, for tests that stop, freeze or
//! restart a broker, secure one, or need replicas. They are started by
//! `scripts/kafka.sh node` — the launcher of the shared broker of
//! `scripts/services.sh` too — in the foreground, so the process a test
//! signals is the broker's JVM. Every node is a broker and a KRaft
//! controller; its data lives in a directory of the test's own and survives
//! a restart.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::process::Guard;
use crate::services::{free_port, repo_root, TempDir, HOW_TO_START};

/// The launcher of every broker.
fn kafka_sh() -> PathBuf {
    repo_root().join("scripts/kafka.sh")
}
/// A JVM broker formats its storage and starts in 5-15 s on two cores; the
/// first start of a machine also fetches the jars.
const START: Duration = Duration::from_secs(180);
const HEAP: &str = "320m";

/// Runs one of Kafka's own tools (`org.apache.kafka.tools.AclCommand`,
/// `kafka.admin.ConfigCommand` ...) with `args`; panics with its output if
/// it fails.
pub fn kafka_tool(class: &str, args: &[&str]) -> String {
    let out = Command::new(kafka_sh()).arg("tool").arg(class).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{class} {args:?}: {text}");
    text
}

/// The `group.version` the cluster at `brokers` has finalized, from
/// Kafka's own FeatureCommand: 1 and more serve KIP-848's consumer group
/// protocol; 0 when it finalized none (Kafka 3.x) or was formatted so.
pub fn group_version(brokers: &str) -> i64 {
    let out =
        kafka_tool("org.apache.kafka.tools.FeatureCommand", &["--bootstrap-server", brokers, "describe"]);
    let line = out.lines().find(|l| l.starts_with("Feature: group.version"));
    line.and_then(|l| l.split("FinalizedVersionLevel:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(0, |level| level.parse().unwrap_or_else(|_| panic!("FeatureCommand said {line:?}")))
}

/// What a node adds to the defaults of `scripts/kafka.sh node`.
#[derive(Default, Clone)]
pub struct NodeOptions {
    /// Server properties appended after the defaults (they override).
    pub props: String,
    /// Arguments of `StorageTool format` (`--add-scram ...`).
    pub format_args: Vec<String>,
    /// More listeners on 127.0.0.1, advertised: (name, security protocol, port).
    pub listeners: Vec<(String, String, u16)>,
}

/// One Kafka process: broker and controller.
pub struct Node {
    pub id: u32,
    /// The PLAINTEXT listener, which tests and admin clients use.
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
    process: Option<Guard>,
}

impl Node {
    /// Node `id` of the quorum `voters` (`id@host:port,...`), listening
    /// for controllers on `controller_port` (its own entry in `voters`).
    fn new(
        dir: &Path,
        id: u32,
        controller_port: u16,
        voters: &str,
        cluster: &Cluster,
        options: &NodeOptions,
    ) -> Node {
        let port = free_port();
        let home = dir.join(format!("node{id}"));
        std::fs::create_dir_all(&home).unwrap();
        let props = home.join("extra.properties");
        std::fs::write(&props, &options.props).unwrap();
        let mut args: Vec<String> = [
            "node",
            "--dir",
            home.to_str().unwrap(),
            "--id",
            &id.to_string(),
            "--port",
            &port.to_string(),
            "--controller-port",
            &controller_port.to_string(),
            "--voters",
            voters,
            "--replication",
            &cluster.replication.to_string(),
            "--cluster-id",
            &cluster.id,
            "--props",
            props.to_str().unwrap(),
            "--heap",
            HEAP,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for a in &options.format_args {
            args.extend(["--format-arg".to_owned(), a.clone()]);
        }
        for (name, protocol, port) in &options.listeners {
            args.extend(["--listener".to_owned(), format!("{name}:{protocol}:{port}")]);
        }
        Node { id, port, args, log: home.join("kafka.log"), process: None }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        self.process = Some(Guard::spawn(
            Command::new(kafka_sh())
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
            "scripts/kafka.sh",
        ));
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, `TERM`...) to the broker's JVM.
    pub fn signal(&self, signal: &str) {
        self.process.as_ref().expect("broker running").signal(signal);
    }

    /// SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// SIGTERM, Kafka's controlled shutdown (its partitions' leadership
    /// moves away first), and waits for the JVM to exit.
    pub fn terminate(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal("TERM");
            process.wait();
        }
    }

    /// The end of its log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) {
        if let Some(status) = self.process.as_mut().and_then(Guard::try_wait) {
            panic!("Kafka node {} exited with {status} during start-up:\n{}", self.id, self.log_tail());
        }
    }
}

/// Waits until a metadata request to `nodes` answers with all of them (and
/// every node still runs): the broker is serving, not merely listening.
fn await_nodes(nodes: &mut [&mut Node]) {
    let brokers = nodes.iter().map(|n| n.addr()).collect::<Vec<_>>().join(",");
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .unwrap();
    let deadline = Instant::now() + START;
    loop {
        for n in nodes.iter_mut() {
            n.check_alive();
        }
        if let Ok(md) = client.fetch_metadata(None, Duration::from_secs(1)) {
            if md.brokers().len() == nodes.len() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Kafka at {brokers} did not answer metadata within {START:?} ({HOW_TO_START}):\n{}",
            nodes[0].log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the nodes of one cluster share.
struct Cluster {
    id: String,
    /// Of internal and new topics.
    replication: u32,
}

impl Cluster {
    fn new(replication: u32) -> Cluster {
        let out = Command::new(kafka_sh()).arg("new-cluster-id").output().unwrap();
        assert!(
            out.status.success(),
            "scripts/kafka.sh new-cluster-id: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { id: String::from_utf8(out.stdout).unwrap().trim().to_owned(), replication }
    }
}

/// A single-node Kafka of the test's own.
pub struct OwnBroker {
    node: Node,
    pub port: u16,
    _dir: TempDir,
}

impl OwnBroker {
    pub fn start() -> OwnBroker {
        OwnBroker::start_with(&NodeOptions::default())
    }

    /// With more listeners, server properties and format arguments.
    pub fn start_with(options: &NodeOptions) -> OwnBroker {
        let dir = TempDir::new("kafka");
        let controller_port = free_port();
        let voters = format!("1@127.0.0.1:{controller_port}");
        let node = Node::new(&dir.0, 1, controller_port, &voters, &Cluster::new(1), options);
        let mut b = OwnBroker { port: node.port, node, _dir: dir };
        b.restart();
        b
    }

    pub fn addr(&self) -> String {
        self.node.addr()
    }

    /// Starts it again (its data kept) and waits until it serves.
    pub fn restart(&mut self) {
        self.node.spawn();
        await_nodes(&mut [&mut self.node]);
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`...) to the broker process.
    pub fn signal(&self, signal: &str) {
        self.node.signal(signal);
    }

    /// Kills the broker (SIGKILL).
    pub fn stop(&mut self) {
        self.node.kill();
    }
}

/// Three nodes on loopback, each a broker and one of three controller
/// voters; new topics get replication 3 and `min.insync.replicas=2`.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

impl KafkaCluster {
    pub fn start() -> KafkaCluster {
        let dir = TempDir::new("kafka_cluster");
        let cluster = Cluster::new(3);
        let controller_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let voters: Vec<String> =
            controller_ports.iter().zip(1..).map(|(p, id)| format!("{id}@127.0.0.1:{p}")).collect();
        let voters = voters.join(",");
        let mut nodes: Vec<Node> = controller_ports
            .iter()
            .zip(1..)
            .map(|(&p, id)| Node::new(&dir.0, id, p, &voters, &cluster, &NodeOptions::default()))
            .collect();
        for n in &mut nodes {
            n.spawn();
        }
        await_nodes(&mut nodes.iter_mut().collect::<Vec<_>>());
        KafkaCluster { nodes, _dir: dir }
    }

    /// The bootstrap list of all three.
    pub fn brokers(&self) -> String {
        self.nodes.iter().map(Node::addr).collect::<Vec<_>>().join(",")
    }

    /// The node with broker id `id`.
    pub fn node(&mut self, id: i32) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.id as i32 == id).expect("a node of the cluster")
    }

    /// Starts node `id` again and waits until the cluster answers with it.
    pub fn restart(&mut self, id: i32) {
        self.node(id).spawn();
        await_nodes(&mut self.nodes.iter_mut().collect::<Vec<_>>());
    }

    /// Waits (bounded) until every partition of `topic` has a leader and all
    /// its replicas in sync, so that the next fault starts from a whole cluster.
    pub fn await_in_sync(&self, topic: &str) {
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        let deadline = Instant::now() + START;
        loop {
            if let Ok(md) = client.fetch_metadata(Some(topic), Duration::from_secs(2)) {
                let whole = md.topics().first().is_some_and(|t| {
                    !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.isr().len() == p.replicas().len())
                });
                if whole {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{topic} not fully in sync within {START:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The broker id leading `partition` of `topic`, from the metadata.
    pub fn leader(&self, topic: &str, partition: i32) -> i32 {
        let client: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.brokers()).create().unwrap();
        let md = client.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        md.topics()[0].partitions().iter().find(|p| p.id() == partition).expect("the partition").leader()
    }
}
