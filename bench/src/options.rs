//! Settings: everything the environment can change.

use std::path::PathBuf;
use std::process::Command;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use crate::Res;

/// Everything the environment can change.
pub(crate) struct Opts {
    pub(crate) quick: bool,
    pub(crate) label: String,
    pub(crate) brokers: String,
    pub(crate) mysql_url: String,
    pub(crate) database: String,
    pub(crate) databus_bin: PathBuf,
    pub(crate) out_dir: PathBuf,
    pub(crate) run_dir: PathBuf,
    /// Messages per publish case at pipeline depth ≥ 16, and at depth 1.
    pub(crate) messages: usize,
    pub(crate) messages_depth1: usize,
    pub(crate) depths: Vec<usize>,
    pub(crate) conns: Vec<usize>,
    pub(crate) latency_samples: usize,
    pub(crate) consume_messages: usize,
    pub(crate) idle_publishers: usize,
    pub(crate) idle_subscribers: usize,
    /// Idle queue consumers of one group in the memory phase.
    pub(crate) queue_consumers: usize,
    pub(crate) partitions: i32,
    pub(crate) replication: i32,
    pub(crate) value_size: usize,
    pub(crate) linger_ms: u64,
    pub(crate) max_in_flight: u64,
    /// `producer.instances` of databus; its default when unset.
    pub(crate) producer_instances: Option<usize>,
    /// Extra librdkafka properties for databus's cluster and the direct clients.
    pub(crate) kafka_properties: Vec<(String, String)>,
    /// `subscriber.batch_size`; databus's default when unset.
    pub(crate) sub_batch: Option<usize>,
    /// Top-level TOML lines added to the generated config (tuning experiments).
    pub(crate) config_top: String,
    /// The brokers whose CPU goes into the tables (a cluster's, summed).
    pub(crate) broker_pids: Vec<u32>,
    pub(crate) clk_tck: f64,
    pub(crate) phases: Phases,
    /// Runs of each publish case; the median is reported.
    pub(crate) repeat: usize,
    /// Fewest pipelines each publish case at depth > 1 sends per connection.
    pub(crate) bursts: usize,
    /// The grid (`grid.rs`): clients, pipeline depths, partition counts,
    /// rounds, and a factor on the requests per cell.
    pub(crate) grid_clients: Vec<usize>,
    pub(crate) grid_pipelines: Vec<usize>,
    pub(crate) grid_partitions: Vec<i32>,
    pub(crate) grid_rounds: usize,
    pub(crate) grid_scale: f64,
    /// The Go databus's address (ip:port) and pid, when it is in the run.
    pub(crate) go_databus: Option<String>,
    /// The grid also measures databus on librdkafka's producer
    /// (`producer.engine = "librdkafka"`) beside its own.
    pub(crate) other_engine: bool,
    pub(crate) go_databus_pid: Option<u32>,
    /// Where `GridProducer` and the Kafka jars are (scripts/bench.sh sets
    /// it); the Java producer is in the grid when set.
    pub(crate) java_classpath: Option<String>,
    pub(crate) java: String,
}

/// Which parts run (`BENCH_PHASES=publish,latency,consume,grid,memory`, default all).
pub(crate) struct Phases {
    pub(crate) publish: bool,
    pub(crate) latency: bool,
    pub(crate) consume: bool,
    pub(crate) grid: bool,
    pub(crate) memory: bool,
    /// The noisy neighbour (`neighbours.rs`).
    pub(crate) neighbours: bool,
}

impl Phases {
    fn from_env() -> Res<Phases> {
        let Some(list) = env_str("BENCH_PHASES") else {
            return Ok(Phases {
                publish: true,
                latency: true,
                consume: true,
                grid: true,
                memory: true,
                neighbours: true,
            });
        };
        let mut p = Phases {
            publish: false,
            latency: false,
            consume: false,
            grid: false,
            memory: false,
            neighbours: false,
        };
        for name in list.split(',').map(str::trim) {
            match name {
                "publish" => p.publish = true,
                "latency" => p.latency = true,
                "consume" => p.consume = true,
                "grid" => p.grid = true,
                "memory" => p.memory = true,
                "neighbours" => p.neighbours = true,
                _ => return Err(format!("BENCH_PHASES: unknown phase '{name}'").into()),
            }
        }
        Ok(p)
    }
}

pub(crate) fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Res<T> {
    match env_str(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a valid number").into()),
    }
}

fn env_list(name: &str, default: &[usize]) -> Res<Vec<usize>> {
    match env_str(name) {
        None => Ok(default.to_vec()),
        Some(v) => v
            .split(',')
            .map(|s| s.trim().parse().map_err(|_| format!("{name}={v:?}: '{s}' is not a number").into()))
            .collect(),
    }
}

impl Opts {
    pub(crate) fn from_env() -> Res<Opts> {
        let quick = env_str("BENCH_QUICK").is_some_and(|v| v != "0");
        let pick = |full: usize, fast: usize| if quick { fast } else { full };
        let kafka_properties = env_str("BENCH_KAFKA_PROPERTIES")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| format!("BENCH_KAFKA_PROPERTIES: '{kv}' is not key=value").into())
            })
            .collect::<Res<Vec<_>>>()?;
        let clk_tck = env_num("BENCH_CLK_TCK", 0.0)?;
        let clk_tck = if clk_tck > 0.0 { clk_tck } else { getconf_clk_tck() };
        Ok(Opts {
            quick,
            label: env_str("BENCH_LABEL").unwrap_or_default(),
            brokers: env_str("DATABUS_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".into()),
            mysql_url: env_str("DATABUS_MYSQL_URL")
                .unwrap_or_else(|| "mysql://databus:databus@127.0.0.1:3306".into())
                .trim_end_matches('/')
                .to_owned(),
            database: env_str("BENCH_DATABASE").unwrap_or_else(|| "databus_bench".into()),
            databus_bin: env_str("BENCH_DATABUS_BIN")
                .unwrap_or_else(|| "target/release/databus".into())
                .into(),
            out_dir: env_str("BENCH_OUT_DIR").unwrap_or_else(|| "bench".into()).into(),
            run_dir: env_str("BENCH_RUN_DIR").unwrap_or_else(|| ".run/bench".into()).into(),
            messages: env_num("BENCH_MESSAGES", pick(50_000, 10_000))?,
            messages_depth1: env_num("BENCH_MESSAGES_DEPTH1", pick(5_000, 1_000))?,
            depths: env_list("BENCH_DEPTHS", &[1, 16, 128])?,
            conns: env_list("BENCH_CONNS", &[1, 8])?,
            latency_samples: env_num("BENCH_LATENCY_SAMPLES", pick(5_000, 500))?,
            consume_messages: env_num("BENCH_CONSUME_MESSAGES", pick(100_000, 10_000))?,
            idle_publishers: env_num("BENCH_IDLE_PUBLISHERS", pick(1_000, 200))?,
            idle_subscribers: env_num("BENCH_IDLE_SUBSCRIBERS", pick(50, 10))?,
            queue_consumers: env_num("BENCH_QUEUE_CONSUMERS", pick(1000, 100))?,
            partitions: env_num("BENCH_PARTITIONS", 3)?,
            replication: env_num("BENCH_REPLICATION", 1)?,
            value_size: env_num("BENCH_VALUE_SIZE", 100)?,
            linger_ms: env_num("BENCH_LINGER_MS", 0)?,
            max_in_flight: env_num("BENCH_MAX_IN_FLIGHT", 5)?,
            producer_instances: env_str("BENCH_PRODUCER_INSTANCES")
                .map(|v| v.parse().map_err(|_| format!("BENCH_PRODUCER_INSTANCES={v:?} is not a number")))
                .transpose()?,
            kafka_properties,
            sub_batch: env_str("BENCH_SUB_BATCH")
                .map(|v| v.parse().map_err(|_| format!("BENCH_SUB_BATCH={v:?} is not a number")))
                .transpose()?,
            config_top: env_str("BENCH_CONFIG_TOP").unwrap_or_default(),
            broker_pids: env_str("BENCH_BROKER_PID")
                .map(|v| v.split([',', ' ']).filter_map(|p| p.trim().parse().ok()).collect())
                .unwrap_or_default(),
            clk_tck,
            phases: Phases::from_env()?,
            repeat: env_num("BENCH_REPEAT", pick(3, 1))?.max(1),
            bursts: env_num("BENCH_BURSTS", pick(400, 40))?,
            grid_clients: env_list("BENCH_GRID_CLIENTS", &[1, 10, 50, 100])?,
            grid_pipelines: env_list("BENCH_GRID_PIPELINES", &[1, 16])?,
            grid_partitions: env_list("BENCH_GRID_PARTITIONS", &[3, 12, 64])?
                .into_iter()
                .map(|p| p as i32)
                .collect(),
            grid_rounds: env_num("BENCH_GRID_ROUNDS", 1)?.max(1),
            grid_scale: env_num("BENCH_GRID_SCALE", if quick { 0.1 } else { 1.0 })?,
            go_databus: env_str("BENCH_GO_DATABUS"),
            other_engine: env_num("BENCH_OTHER_ENGINE", 1)? != 0,
            go_databus_pid: env_str("BENCH_GO_DATABUS_PID").and_then(|v| v.trim().parse().ok()),
            java_classpath: env_str("BENCH_JAVA_CLASSPATH"),
            java: env_str("JAVA").unwrap_or_else(|| "java".into()),
        })
    }

    /// Properties every direct client shares with databus's cluster config.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("reconnect.backoff.max.ms", "1000");
        c.set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.kafka_properties {
            c.set(k, v);
        }
        c
    }
}

fn getconf_clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
