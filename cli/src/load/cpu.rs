//! CPU use over a sweep step, from `/proc`: the machine's (`/proc/stat`), the system's
//! processes (the `flotilla up` supervisor and its children), the infrastructure servers
//! of the infra profile (by process name) and the load generator itself.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux
/// architecture the system runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// Process names (`comm`) of the servers the infra profile runs on.
const SERVERS: [&str; 6] = [
    "postgres",
    "mariadbd",
    "mysqld",
    "redis-server",
    "nats-server",
    "etcd",
];

/// One process's `/proc/<pid>/stat`, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: u32,
    /// User plus system time, in ticks.
    ticks: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid … utime stime …` (the name may hold
/// spaces and parentheses, so the fields are counted after its last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some(Stat {
        comm,
        ppid,
        ticks: utime + stime,
    })
}

/// Busy and total ticks of all cores from the `cpu` line of `/proc/stat` (idle and
/// iowait are not busy; guest time is already inside user time).
fn parse_machine(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// Every process's stat, by pid.
fn processes() -> Vec<(u32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = parse_stat(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
        Some((pid, stat))
    })
    .collect()
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    machine: Option<(u64, u64)>,
    /// Ticks per pid of the system's processes, of the servers and of this process.
    system: Vec<(u32, u64)>,
    servers: Vec<(u32, u64)>,
    generator: Option<u64>,
}

/// Reads the counters now. The system's processes are `up` (pid `up`) and its
/// children; without `up`, every process running `flotilla run <service>`.
pub fn sample(up: Option<u32>) -> Sample {
    let all = processes();
    let system = all
        .iter()
        .filter(|(pid, s)| match up {
            Some(up) => *pid == up || s.ppid == up,
            None => runs_a_service(*pid),
        })
        .map(|(pid, s)| (*pid, s.ticks))
        .collect();
    let servers = all
        .iter()
        .filter(|(_, s)| SERVERS.contains(&s.comm.as_str()))
        .map(|(pid, s)| (*pid, s.ticks))
        .collect();
    Sample {
        at: Instant::now(),
        machine: std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_machine(&t)),
        system,
        servers,
        generator: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
            .map(|s| s.ticks),
    }
}

/// Whether `pid`'s command line is `…flotilla run <service>`.
fn runs_a_service(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("cmdline"))
    else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.len() >= 3 && args[0].ends_with(b"flotilla") && args[1] == b"run"
}

/// Ticks used between two readings by the processes present in both.
fn used(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    after
        .iter()
        .filter_map(|(pid, t)| {
            let (_, b) = before.iter().find(|(p, _)| p == pid)?;
            Some(t.saturating_sub(*b))
        })
        .sum()
}

/// CPU used between two samples, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Cores of the machine.
    pub cores: usize,
    /// Share of all cores busy (0–1), from `/proc/stat`.
    pub machine_busy: Option<f64>,
    /// The system's processes (`up` and the services it runs).
    pub system_cores: f64,
    /// How many of the system's processes were sampled.
    pub system_processes: usize,
    /// PostgreSQL, MariaDB, Redis, NATS and etcd together (whatever of them runs here,
    /// used by this system or not).
    pub servers_cores: f64,
    /// The load generator.
    pub generator_cores: Option<f64>,
}

impl CpuUse {
    /// What was used from `before` to `after`.
    pub fn between(before: &Sample, after: &Sample) -> Self {
        let secs = after
            .at
            .saturating_duration_since(before.at)
            .as_secs_f64()
            .max(1e-3);
        let cores = |ticks: u64| round3(ticks as f64 / TICKS_PER_SECOND / secs);
        let machine_busy = match (before.machine, after.machine) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some(round3(b1.saturating_sub(b0) as f64 / (t1 - t0) as f64))
            }
            _ => None,
        };
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            machine_busy,
            system_cores: cores(used(&before.system, &after.system)),
            system_processes: after.system.len(),
            servers_cores: cores(used(&before.servers, &after.servers)),
            generator_cores: match (before.generator, after.generator) {
                (Some(b), Some(a)) => Some(cores(a.saturating_sub(b))),
                _ => None,
            },
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_name_parent_and_cpu_ticks() {
        let line = "4242 (flotilla (run)) S 4000 4242 4000 0 -1 4194560 1234 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                comm: "flotilla (run)".into(),
                ppid: 4000,
                ticks: 175
            })
        );
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn the_machine_line_counts_idle_and_iowait_as_not_busy() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_machine(text), Some((160, 1000)));
        assert_eq!(parse_machine("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_machine("cpu  1 x 3 4 5\n"), None);
        assert_eq!(parse_machine("cpu  1 2\n"), None);
    }

    #[test]
    fn use_counts_only_processes_seen_at_both_ends() {
        let at = Instant::now();
        let before = Sample {
            at,
            machine: Some((100, 1000)),
            system: vec![(1, 10), (2, 20), (3, 5)],
            servers: vec![],
            generator: Some(7),
        };
        let after = Sample {
            at: at + std::time::Duration::from_secs(2),
            machine: Some((400, 1400)),
            // 3 exited, 4 is new: neither counts.
            system: vec![(1, 110), (2, 120), (4, 500)],
            servers: vec![(9, 50)],
            generator: Some(27),
        };
        let u = CpuUse::between(&before, &after);
        assert_eq!(u.system_cores, 1.0);
        assert_eq!(u.servers_cores, 0.0);
        assert_eq!(u.generator_cores, Some(0.1));
        assert_eq!(u.machine_busy, Some(0.75));
        assert_eq!(u.system_processes, 3);
    }

    #[test]
    fn this_machine_can_be_sampled() {
        let s = sample(Some(std::process::id()));
        assert!(s.generator.is_some());
        assert!(s.system.iter().any(|(p, _)| *p == std::process::id()));
    }
}
