//! /proc readings: CPU time and RSS of processes, the busy time of the
//! machine, and a description of the machine for the report.

use std::fs;
use std::thread;

/// Two fields of /proc/<pid>/stat summed, in seconds: `first` is the
/// field's number in proc(5) (utime is 14, cutime 16).
fn stat_seconds(pid: &str, first: usize, clk_tck: f64) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0].
    let a: f64 = fields.get(first - 3)?.parse().ok()?;
    let b: f64 = fields.get(first - 2)?.parse().ok()?;
    Some((a + b) / clk_tck)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str, clk_tck: f64) -> Option<f64> {
    stat_seconds(pid, 14, clk_tck)
}

/// utime + stime of a process (`None`: this one), in seconds.
pub(crate) fn cpu_of(pid: Option<u32>, clk_tck: f64) -> Option<f64> {
    cpu_seconds(&pid.map_or("self".into(), |p| p.to_string()), clk_tck)
}

/// cutime + cstime of this process: the CPU of the children it waited for
/// (a load generator run as a child), in seconds.
pub(crate) fn children_cpu(clk_tck: f64) -> f64 {
    stat_seconds("self", 16, clk_tck).unwrap_or(0.0)
}

/// Voluntary and involuntary context switches in a thread's `status`.
fn switches_in(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Context switches of every live thread of a process (`None`: this one).
/// A thread that has exited is not counted: see [`thread_context_switches`].
pub(crate) fn context_switches(pid: Option<u32>) -> u64 {
    let dir = format!("/proc/{}/task", pid.map_or("self".into(), |p| p.to_string()));
    let Ok(tasks) = fs::read_dir(dir) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("status")).ok())
        .map(|s| switches_in(&s))
        .sum()
}

/// Context switches of the calling thread so far: a worker reads its own
/// before it exits, since an exited thread leaves `/proc/<pid>/task`.
pub(crate) fn thread_context_switches() -> u64 {
    fs::read_to_string("/proc/thread-self/status").map_or(0, |s| switches_in(&s))
}

/// The pid of the process listening on TCP `port` (IPv4 or IPv6), from
/// /proc/net/tcp* and the processes' open sockets.
pub(crate) fn pid_listening(port: u16) -> Option<u32> {
    let hex = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, ..., st = 0A (LISTEN), ..., inode
            if f.len() > 9 && f[1].ends_with(&hex) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_str()?.parse().ok()?;
        let fds = fs::read_dir(p.path().join("fd")).ok()?;
        fds.flatten()
            .any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
            })
            .then_some(pid)
    })
}

/// Busy time of all CPUs of the machine, in seconds.
pub(crate) fn machine_busy(clk_tck: f64) -> f64 {
    machine_busy_seconds(clk_tck)
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS").unwrap_or(0)
}

pub(crate) fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads").unwrap_or(0)
}

/// CPU of databus, of this load generator and (when known) of the broker.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuSnap {
    databus: f64,
    bench: f64,
    broker: Option<f64>,
    /// Busy time of every CPU of the machine.
    machine: f64,
}

/// CPU used between two snapshots, in µs per message.
#[derive(Clone, Copy, Default)]
pub(crate) struct CpuPerMsg {
    pub(crate) databus: f64,
    pub(crate) bench: f64,
    pub(crate) broker: Option<f64>,
    /// Everything else on the machine (other processes, interrupts): shows
    /// when something disturbed the measurement.
    pub(crate) others: f64,
}

pub(crate) struct Cpu {
    pub(crate) databus_pid: Option<u32>,
    pub(crate) broker_pids: Vec<u32>,
    pub(crate) clk_tck: f64,
}

/// The CPU seconds of `pids` together; `None` when there are none or one
/// cannot be read.
pub(crate) fn cpu_of_all(pids: &[u32], clk_tck: f64) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_of(Some(*p), clk_tck)).sum()
}

impl Cpu {
    pub(crate) fn snap(&self) -> CpuSnap {
        let of = |pid: Option<u32>| pid.and_then(|p| cpu_seconds(&p.to_string(), self.clk_tck));
        CpuSnap {
            databus: of(self.databus_pid).unwrap_or(0.0),
            bench: cpu_seconds("self", self.clk_tck).unwrap_or(0.0),
            broker: cpu_of_all(&self.broker_pids, self.clk_tck),
            machine: machine_busy_seconds(self.clk_tck),
        }
    }

    pub(crate) fn per_msg(before: CpuSnap, after: CpuSnap, messages: usize) -> CpuPerMsg {
        let us = |s: f64| s * 1e6 / messages.max(1) as f64;
        let databus = us(after.databus - before.databus);
        let bench = us(after.bench - before.bench);
        let broker = after.broker.zip(before.broker).map(|(a, b)| us(a - b));
        let machine = us(after.machine - before.machine);
        let others = (machine - databus - bench - broker.unwrap_or(0.0)).max(0.0);
        CpuPerMsg { databus, bench, broker, others }
    }
}

/// Busy time of all CPUs from the first line of /proc/stat (user, nice,
/// system, irq, softirq, steal), in seconds.
fn machine_busy_seconds(clk_tck: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let busy: f64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy / clk_tck
}

pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) mem_total: String,
    pub(crate) kernel: String,
}

pub(crate) fn machine() -> Machine {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mem_kib = status_like("/proc/meminfo", "MemTotal").unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    Machine {
        cpus: thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total: format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        kernel,
    }
}

fn status_like(path: &str, field: &str) -> Option<u64> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_self_parses() {
        assert!(cpu_seconds("self", 100.0).is_some());
        assert!(rss_kib(std::process::id()) > 0);
        assert!(context_switches(None) > 0);
        std::thread::yield_now();
        assert!(thread_context_switches() <= context_switches(None));
    }

    #[test]
    fn the_listener_of_a_port_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(pid_listening(port), Some(std::process::id()));
        drop(l);
        assert_eq!(pid_listening(port), None);
    }
}
