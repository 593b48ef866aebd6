//! `databus-bench`: measures a release build of databus against direct
//! librdkafka clients on the same broker, with the same producer settings, in
//! one run: publish throughput and latency, consume throughput, databus CPU
//! per message and RSS per connection. `make bench` (scripts/bench.sh) runs
//! it; it prints a markdown table and writes `bench/results.{md,json}`
//! (`bench/results-quick.*` with `BENCH_QUICK=1`).
//!
//! The bench sets up its own MySQL database (`databus_bench`, reset each run),
//! its own fresh topics, a generated config, and starts databus as a child
//! process on a free port (killed when the bench ends). Every knob is an
//! environment variable; see `Opts::from_env` and BENCHMARKS.md.

#![forbid(unsafe_code)]

mod grid;
mod neighbours;
mod options;
mod phases;
mod procfs;
mod queue;
mod relay;
mod report;
mod resp;
mod setup;

use std::error::Error;
use std::fs;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::options::{env_str, Opts};
use crate::phases::{
    consume_databus, consume_direct, direct_producer, latency, percentiles, prefill, publish_databus,
    publish_direct, rss_publishers, rss_subscribers, PubCase, PubRun,
};
use crate::procfs::{machine, Cpu};
use crate::report::Report;
use crate::resp::auth_string;
use crate::setup::{reset_database, Databus, Topics};

pub(crate) type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// The app every grant of the bench belongs to, and the cluster name the
/// generated config gives the broker.
pub(crate) const APP_KEY: &str = "bench_key";
pub(crate) const APP_SECRET: &str = "bench_secret";
pub(crate) const CLUSTER: &str = "bench";
/// Defaults of databus's producer that the direct producer copies.
pub(crate) const PRODUCE_TIMEOUT_MS: u64 = 10_000;
pub(crate) const PARTITIONER: &str = "murmur2_random";
/// Only empty MGETs wait this long; it bounds the idle-subscriber phase.
pub(crate) const SUB_WAIT_TIMEOUT_MS: u64 = 3_000;
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [relay, listen, target, delay_us] if relay == "relay" => match delay_us.parse::<u64>() {
            Ok(us) => relay::run(listen, target, Duration::from_micros(us)),
            Err(_) => Err(format!("relay: DELAY_US must be microseconds, not {delay_us:?}").into()),
        },
        [] => run(),
        _ => Err("usage: databus-bench (the bench, set up by the environment), or \
                  databus-bench relay LISTEN TARGET DELAY_US"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("databus-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Res<()> {
    let opts = Opts::from_env()?;
    let started = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    // Topic and group names are VARCHAR(45) in auth_tb.
    let run_id = format!("{:x}", now % 0x100_0000);
    let t = |name: &str| format!("bench_{run_id}_{name}");
    let m = machine();
    eprintln!(
        "databus-bench: run {run_id}{} on {} CPUs ({}), broker {}",
        if opts.quick { " (quick)" } else { "" },
        m.cpus,
        m.cpu_model,
        opts.brokers
    );

    // Topics and grants, all made before databus starts.
    let mut cases = Vec::new();
    if opts.phases.publish {
        for &c in &opts.conns {
            for &d in &opts.depths {
                cases.push((c, d));
            }
        }
    }
    let case_topic = |via: &str, c: usize, d: usize| t(&format!("{via}_c{c}_d{d}"));
    let mut topics = Vec::new();
    for &(c, d) in &cases {
        topics.push(case_topic("db", c, d));
        topics.push(case_topic("direct", c, d));
    }
    let (warm_topic, lat_topic, cons_topic, idle_topic) = (t("warm"), t("latency"), t("consume"), t("idle"));
    topics.extend([warm_topic.clone(), lat_topic.clone(), cons_topic.clone(), idle_topic.clone()]);
    let (noisy_topic, quiet_topic) = (t("noisy_a"), t("noisy_b"));
    if opts.phases.neighbours {
        topics.extend([noisy_topic.clone(), quiet_topic.clone()]);
    }
    let (json_group, pb_group) = (format!("bench_{run_id}_json"), format!("bench_{run_id}_pb"));
    let (queue_group, queue_idle_group) = (format!("bench_{run_id}_queue"), format!("bench_{run_id}_qidle"));
    let idle_groups: Vec<String> =
        (0..opts.idle_subscribers).map(|i| format!("bench_{run_id}_idle{i}")).collect();
    let mut grants: Vec<(String, u8, String)> =
        topics.iter().map(|topic| ("bench_pub".to_owned(), 2, topic.clone())).collect();
    // The grid's topics are fixed and kept (grid.rs says why).
    let grid_topics: Vec<String> = opts.grid_partitions.iter().map(|&p| grid::grid_topic(p)).collect();
    if opts.phases.grid {
        grants.extend(grid_topics.iter().map(|topic| ("bench_pub".to_owned(), 2, topic.clone())));
    }
    grants.push((json_group.clone(), 1, cons_topic.clone()));
    grants.push((pb_group.clone(), 1, cons_topic.clone()));
    grants.push((queue_group.clone(), 1, cons_topic.clone()));
    grants.push((queue_idle_group.clone(), 1, idle_topic.clone()));
    grants.extend(idle_groups.iter().map(|g| (g.clone(), 1, idle_topic.clone())));
    eprintln!("databus-bench: creating {} topics and database {}", topics.len(), opts.database);
    let mut groups =
        vec![json_group.clone(), pb_group.clone(), queue_group.clone(), queue_idle_group.clone()];
    groups.extend(idle_groups.iter().cloned());
    // Deleted when the run ends, after databus and the direct producer are
    // gone: a client that still knows a topic asks for its metadata every
    // few minutes, and the broker would make a deleted topic anew.
    let _created = Topics::create(&opts, topics, groups)?;
    if opts.phases.neighbours {
        grants.push((neighbours::QUIET_GROUP.to_owned(), 2, quiet_topic.clone()));
    }
    reset_database(&opts, &grants)?;
    if opts.phases.neighbours {
        let a_grant = (neighbours::NOISY_GROUP.to_owned(), 2, noisy_topic.clone());
        setup::add_app(&opts, 2, neighbours::NOISY_KEY, &[a_grant])?;
    }

    let databus = Databus::start(&opts, "databus")?;
    let cpu = Cpu {
        databus_pid: Some(databus.pid()),
        broker_pids: opts.broker_pids.clone(),
        clk_tck: opts.clk_tck,
    };
    let producer = direct_producer(&opts)?;
    let pub_auth = |topic: &str| auth_string("bench_pub", topic, "pub", "");

    // Warm-up: both producers get their idempotent producer id and metadata.
    eprintln!("databus-bench: warm-up");
    publish_databus(databus.addr, &pub_auth(&warm_topic), 2_000, 1, 100, opts.value_size, &cpu)?;
    publish_direct(&producer, &warm_topic, 2_000, 1, 100, opts.value_size, &cpu)?;

    // 1. Publish throughput, databus then direct for each case.
    let mut pub_cases = Vec::new();
    for &(conns, depth) in &cases {
        // Deep, wide cases are fast: give each at least `bursts` full
        // pipelines so that a run lasts long enough to be stable.
        let messages =
            if depth == 1 { opts.messages_depth1 } else { opts.messages.max(conns * depth * opts.bursts) };
        let (db_topic, direct_topic) = (case_topic("db", conns, depth), case_topic("direct", conns, depth));
        // Untimed: both producers learn the new topic's partitions and leaders.
        publish_databus(databus.addr, &pub_auth(&db_topic), 200, 1, 50, opts.value_size, &cpu)?;
        publish_direct(&producer, &direct_topic, 200, 1, 50, opts.value_size, &cpu)?;
        let (mut via, mut direct) = (Vec::new(), Vec::new());
        for _ in 0..opts.repeat {
            let auth = pub_auth(&db_topic);
            via.push(publish_databus(databus.addr, &auth, messages, conns, depth, opts.value_size, &cpu)?);
            direct.push(publish_direct(
                &producer,
                &direct_topic,
                messages,
                conns,
                depth,
                opts.value_size,
                &cpu,
            )?);
        }
        let case = PubCase {
            conns,
            depth,
            messages,
            databus: PubRun::combine(via),
            direct: PubRun::combine(direct),
        };
        eprintln!(
            "databus-bench: publish conns={conns} depth={depth}: databus {:.0}/s, direct {:.0}/s, \
             ratio {:.2}, databus CPU {:.1} µs/msg",
            case.databus.rate(messages),
            case.direct.rate(messages),
            case.ratio(),
            case.databus.cpu.databus
        );
        pub_cases.push(case);
    }

    // 2. Latency of one non-pipelined SET against one produce-and-wait.
    let mut lat = None;
    if opts.phases.latency {
        eprintln!("databus-bench: latency, {} samples each", opts.latency_samples);
        let (mut via, mut direct) = latency(
            databus.addr,
            &pub_auth(&lat_topic),
            &producer,
            &lat_topic,
            opts.latency_samples,
            opts.value_size,
        )?;
        lat = Some((percentiles(&mut via), percentiles(&mut direct)));
    }

    // 3. Consume throughput over one pre-filled topic.
    let mut consume = None;
    if opts.phases.consume {
        eprintln!("databus-bench: pre-filling {cons_topic} with {} records", opts.consume_messages);
        prefill(&opts, &producer, &cons_topic, opts.consume_messages)?;
        eprintln!("databus-bench: consume, direct");
        let direct = consume_direct(&opts, &cons_topic, opts.consume_messages, &cpu)?;
        let sub = |group: &str| auth_string(group, &cons_topic, "sub", "&offset=old");
        eprintln!("databus-bench: consume, MGET json");
        let json = consume_databus(databus.addr, &sub(&json_group), false, opts.consume_messages, &cpu)?;
        eprintln!("databus-bench: consume, MGET pb");
        let pb = consume_databus(databus.addr, &sub(&pb_group), true, opts.consume_messages, &cpu)?;
        eprintln!("databus-bench: consume, XREADGROUP + XACK");
        let queue = queue::consume_queue(
            databus.addr,
            &sub(&queue_group),
            &queue_group,
            &cons_topic,
            opts.consume_messages,
            &cpu,
        )?;
        consume = Some([
            ("direct BaseConsumer", direct),
            ("MGET json", json),
            ("MGET pb", pb),
            ("XREADGROUP + XACK", queue),
        ]);
    }
    // 4. The grid: redis-benchmark against databus and the Go databus,
    // beside the bare producer, on each grid topic.
    let mut grid_cells = Vec::new();
    if opts.phases.grid {
        grid::prepare_database(&opts, &grid_topics)?;
        let other = if opts.other_engine {
            Some(Databus::start_with(&opts, "databus-librdkafka", "librdkafka")?)
        } else {
            None
        };
        let mut fronts = vec![grid::Front {
            name: grid::DATABUS,
            addr: databus.addr,
            pid: Some(databus.pid()),
            auth: Box::new(move |topic: &str| auth_string("bench_pub", topic, "pub", "")),
            sends: Some(grid::LIBRDKAFKA_SENDS),
        }];
        if let Some(other) = &other {
            fronts.push(grid::Front {
                name: grid::DATABUS_RDKAFKA,
                addr: other.addr,
                pid: Some(other.pid()),
                auth: Box::new(move |topic: &str| auth_string("bench_pub", topic, "pub", "")),
                sends: Some(grid::LIBRDKAFKA_SENDS),
            });
        }
        if let Some(go) = grid::Front::go_databus(&opts)? {
            fronts.push(go);
        }
        for (&parts, topic) in opts.grid_partitions.iter().zip(&grid_topics) {
            grid::prepare_topic(&opts, topic, parts)?;
            eprintln!("databus-bench: grid on {topic}");
            grid_cells.extend(grid::run(&opts, &fronts, &producer, parts)?);
        }
    }
    if opts.phases.memory {
        // A few batches per partition for the subscribers of the memory phase.
        let fill = 3 * 100 * opts.partitions.max(1) as usize;
        prefill(&opts, &producer, &idle_topic, fill)?;
    }
    let log_lines = fs::read_to_string(opts.run_dir.join("databus.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    drop(producer);
    drop(databus);

    // 4/5. Memory, each on a fresh databus.
    let mut memory = None;
    if opts.phases.memory {
        eprintln!("databus-bench: RSS with {} idle publishers", opts.idle_publishers);
        let publishers = rss_publishers(&opts, &lat_topic, opts.idle_publishers)?;
        eprintln!("databus-bench: RSS with {} subscribers", idle_groups.len());
        let subscribers = rss_subscribers(&opts, &idle_groups, &idle_topic)?;
        eprintln!("databus-bench: RSS with {} queue consumers of one group", opts.queue_consumers);
        let queue = queue::rss_queue(&opts, &queue_idle_group, &idle_topic, opts.queue_consumers)?;
        memory = Some((publishers, subscribers, queue));
    }

    let mut noisy = None;
    if opts.phases.neighbours {
        eprintln!("databus-bench: noisy neighbour, {} samples of B per round", opts.latency_samples);
        let own = Databus::start(&opts, "neighbours")?;
        let reload = |extra: &str| own.reload(&opts, extra);
        noisy = Some(neighbours::run(&own, reload, &noisy_topic, &quiet_topic, opts.latency_samples)?);
    }

    let elapsed = started.elapsed().as_secs_f64();
    let report = Report {
        opts: &opts,
        machine: &m,
        run_id: &run_id,
        elapsed,
        pub_cases: &pub_cases,
        lat,
        consume: consume.as_ref(),
        memory: memory.as_ref(),
        log_lines,
    };
    let mut md = report.markdown();
    let mut js = report.json();
    if opts.phases.grid {
        let g = grid::Grid { opts: &opts, cells: &grid_cells };
        md.push('\n');
        md.push_str(&g.markdown());
        js["grid"] = g.json();
        let stem = if opts.quick { "grid-quick" } else { "grid" };
        let title = format!(
            "databus and its peers on Apache Kafka, {} ({})",
            env_str("BENCH_DATE").unwrap_or_default(),
            env_str("BENCH_GIT_COMMIT").unwrap_or_default()
        );
        fs::create_dir_all(&opts.out_dir)?;
        fs::write(opts.out_dir.join(format!("{stem}.svg")), g.svg(&title))?;
    }
    if let Some(v) = noisy {
        md.push_str(&neighbours::markdown(&v));
        js["neighbours"] = v;
    }
    // A smoke run never replaces the recorded full results.
    let stem = if opts.quick { "results-quick" } else { "results" };
    fs::create_dir_all(&opts.out_dir)?;
    fs::write(opts.out_dir.join(format!("{stem}.md")), &md)?;
    fs::write(opts.out_dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&js)? + "\n")?;
    println!("{md}");
    eprintln!(
        "databus-bench: wrote {0}/{stem}.md and {0}/{stem}.json in {elapsed:.0} s",
        opts.out_dir.display()
    );
    Ok(())
}
