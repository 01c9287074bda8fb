//! The CPU time a store spends serving a run, from `/proc`: user and system time of its
//! server processes and every process they started (PostgreSQL serves each connection
//! in a child), read before and after the measured window. On a machine whose cores the
//! servers and the load generator share, this is steadier than throughput: a store
//! that needs less CPU per operation does more with the same cores.
//!
//! For a store that runs inside the generator's process (the embedded mode, raw
//! RocksDB), the process's own time is all there is to read: it includes the generator.

use std::collections::HashMap;
use std::time::Duration;

/// The processes whose time counts: these and every process below them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processes(pub Vec<u32>);

impl Processes {
    /// This process (for a store inside it).
    pub fn this_process() -> Processes {
        Processes(vec![std::process::id()])
    }

    /// The CPU time the processes have used so far (`None`: `/proc` could not be read,
    /// or none of them runs).
    pub fn cpu(&self) -> Option<Duration> {
        let table = process_table()?;
        let ticks: u64 = table
            .iter()
            .filter(|(pid, _)| descends_from(**pid, &self.0, &table))
            .map(|(_, process)| process.ticks)
            .sum();
        let any_alive = self.0.iter().any(|pid| table.contains_key(pid));
        any_alive.then(|| ticks_to_duration(ticks))
    }
}

/// One process as `/proc/PID/stat` describes it.
struct Process {
    parent: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

fn process_table() -> Option<HashMap<u32, Process>> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read.
        if let Some(process) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
        {
            table.insert(pid, process);
        }
    }
    Some(table)
}

/// The parent and CPU ticks in a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself: fields are counted from the
/// last `)`.
fn parse_stat(stat: &str) -> Option<Process> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Process {
        parent: u32::try_from(field(4)?).ok()?,
        ticks: field(14)?.checked_add(field(15)?)?,
    })
}

fn descends_from(pid: u32, roots: &[u32], table: &HashMap<u32, Process>) -> bool {
    let mut at = pid;
    // Bounded: a parent chain is never longer than the table.
    for _ in 0..=table.len() {
        if roots.contains(&at) {
            return true;
        }
        match table.get(&at) {
            Some(process) if process.parent != 0 && process.parent != at => at = process.parent,
            _ => return false,
        }
    }
    false
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf reads a constant of the system; it has no memory effects.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&t| t > 0)
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// CPU milliseconds per 1,000 operations.
pub fn ms_per_kop(cpu: Duration, ops: u64) -> Option<f64> {
    (ops > 0).then(|| cpu.as_secs_f64() * 1000.0 / (ops as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line =
            "4242 (tokio (worker) 1) S 17 4242 17 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 9 0 1 1 1";
        let process = parse_stat(line).unwrap();
        assert_eq!(process.parent, 17);
        assert_eq!(process.ticks, 280);
        assert!(parse_stat("4242 (x) S").is_none());
        assert!(parse_stat("no parenthesis").is_none());
    }

    #[test]
    fn a_child_counts_with_its_parent_and_a_stranger_does_not() {
        let table: HashMap<u32, Process> = [
            (
                1,
                Process {
                    parent: 0,
                    ticks: 1,
                },
            ),
            (
                10,
                Process {
                    parent: 1,
                    ticks: 5,
                },
            ),
            (
                11,
                Process {
                    parent: 10,
                    ticks: 7,
                },
            ),
            (
                20,
                Process {
                    parent: 1,
                    ticks: 9,
                },
            ),
        ]
        .into();
        assert!(descends_from(11, &[10], &table));
        assert!(descends_from(10, &[10], &table));
        assert!(!descends_from(20, &[10], &table));
        assert!(!descends_from(99, &[10], &table));
    }

    #[test]
    fn this_process_uses_cpu_and_its_time_grows_with_work() {
        let me = Processes::this_process();
        let before = me.cpu().unwrap();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        // Spins until the kernel has counted a tick of it (bounded).
        let after = loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let now = me.cpu().unwrap();
            if now > before || started.elapsed() > Duration::from_secs(10) {
                break now;
            }
        };
        assert!(after > before, "{before:?} then {after:?}");
        assert_eq!(Processes(vec![u32::MAX]).cpu(), None);
        assert_eq!(ms_per_kop(Duration::from_secs(2), 4000), Some(500.0));
        assert_eq!(ms_per_kop(Duration::from_secs(2), 0), None);
    }
}
