//! The chaos harness: a real local cluster under a seeded schedule of faults, a workload
//! whose every operation is recorded, and a verdict from the linearizability checker.
//!
//! A run starts `nodes` `hanse server` processes with the cluster launcher, each advertised
//! at a [`proxy`] address so that the network between them can be cut and slowed; the
//! [`workload`]'s clients read, write and compare-and-swap a few keys while the
//! [`nemesis`] kills, pauses, partitions, slows, reshapes (membership) and reshards the
//! cluster; then everything heals, every key is read once more, and the [`history`] is
//! judged by [`crate::linearizability`].

pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod workload;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hanse_client::{Client, ClientOptions};
use tokio::sync::watch;

use crate::linearizability::{self, Call, Operation, Return, Verdict};
use history::{HistoryError, Recorder};
use nemesis::{Cluster, FaultKind, FaultLog, Nemesis};
use proxy::{NodeId, Proxy, node_ip};

/// Why a run could not be carried out (a run that finds a bug is not an error: see
/// [`Report::valid`]).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the workload could not start: {0}")]
    Client(#[from] hanse_client::ClientError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let context = context.into();
    move |source| ChaosError::Io { context, source }
}

/// What a run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `hanse` binary.
    pub hanse: PathBuf,
    /// Where the run keeps its history, fault log and the cluster (nodes' data and logs).
    pub dir: PathBuf,
    pub nodes: u64,
    pub duration: Duration,
    pub faults: Vec<FaultKind>,
    pub seed: u64,
    pub clients: u64,
    pub keys: u64,
    /// Nodes listen on this port of 127.0.0.(10+id); their proxies on the next one.
    pub port: u16,
    /// How long a client waits for an answer before the outcome counts as unknown.
    pub request_timeout: Duration,
    /// The checker's time budget per key.
    pub check_budget: Duration,
    /// Runs the nodes with the deliberate ack-before-commit bug (to test the checker).
    pub ack_before_commit: bool,
}

/// Node ids beyond the first ones that membership changes may add (a ten-minute run
/// adds about a dozen).
const ADDED_NODES_MAX: u64 = 40;
/// How long the healed cluster serves the workload before the final reads.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the final read of one key keeps trying.
const FINAL_READ_WAIT: Duration = Duration::from_secs(60);

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub options: ChaosOptions,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Operations by function and outcome (`put ok`, `cas unknown`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Unknown outcomes by cause (see [`history::unknown_causes`]).
    pub unknown_causes: BTreeMap<&'static str, u64>,
    /// Acknowledged operations per second while a fault was in force, and otherwise.
    pub throughput_faulted: f64,
    pub throughput_quiet: f64,
    pub verdict: Verdict,
    /// For an invalid verdict, the shortest prefix of the failing key's history that is
    /// already invalid.
    pub witness: Vec<Operation>,
    pub lost_writes: Vec<String>,
    pub stale_reads: Vec<String>,
    /// Keys whose final read never got an answer.
    pub unread_keys: Vec<String>,
}

impl Report {
    /// Whether the cluster passed: a linearizable history, nothing lost, every key read.
    pub fn valid(&self) -> bool {
        self.verdict == Verdict::Valid
            && self.lost_writes.is_empty()
            && self.stale_reads.is_empty()
            && self.unread_keys.is_empty()
    }

    /// The report as the command prints it.
    pub fn render(&self) -> String {
        let o = &self.options;
        let mut out = String::new();
        let kinds: Vec<&str> = o.faults.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "chaos run: seed {}, {} nodes, {:?}, faults {}{}",
            o.seed,
            o.nodes,
            o.duration,
            kinds.join(","),
            if o.ack_before_commit {
                " (nodes deliberately broken: ack before commit)"
            } else {
                ""
            }
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "faults:      {}", faults.join(", "));
        for f in ["get", "put", "cas"] {
            let counts: Vec<String> = ["ok", "fail", "unknown"]
                .iter()
                .filter_map(|outcome| {
                    let n = self.outcomes.get(&format!("{f} {outcome}"))?;
                    Some(format!("{n} {outcome}"))
                })
                .collect();
            let _ = writeln!(out, "{f:<12} {}", counts.join(", "));
        }
        if !self.unknown_causes.is_empty() {
            let causes: Vec<String> = self
                .unknown_causes
                .iter()
                .map(|(cause, n)| format!("{n} {cause}"))
                .collect();
            let _ = writeln!(out, "unknown:     {}", causes.join(", "));
        }
        let _ = writeln!(
            out,
            "throughput:  {:.1} ops/s acknowledged during faults, {:.1} ops/s otherwise",
            self.throughput_faulted, self.throughput_quiet
        );
        for (what, list) in [
            ("lost write", &self.lost_writes),
            ("stale read", &self.stale_reads),
            ("unread key", &self.unread_keys),
        ] {
            for line in list.iter().take(5) {
                let _ = writeln!(out, "{what}:  {line}");
            }
        }
        match &self.verdict {
            Verdict::Valid if self.valid() => {
                let _ = writeln!(out, "verdict:     VALID");
            }
            Verdict::Valid => {
                let _ = writeln!(out, "verdict:     INVALID (see above)");
            }
            Verdict::Invalid { key, history } => {
                let _ = writeln!(
                    out,
                    "verdict:     INVALID: no order explains key {}'s {} operations; its first {} \
                     already contradict each other (operations open at the cut: unknown). \
                     The last {}:",
                    String::from_utf8_lossy(key),
                    history.len(),
                    self.witness.len(),
                    self.witness.len().min(WITNESS_SHOWN)
                );
                let shown = self.witness.len().saturating_sub(WITNESS_SHOWN);
                for op in &self.witness[shown..] {
                    let _ = writeln!(out, "  {}", describe(op));
                }
            }
            Verdict::Unknown { key } => {
                let _ = writeln!(
                    out,
                    "verdict:     UNKNOWN: the search for key {} ran out of its {:?}",
                    String::from_utf8_lossy(key),
                    o.check_budget
                );
            }
        }
        out
    }
}

/// Operations of a failing history the report shows.
const WITNESS_SHOWN: usize = 24;

/// One operation as a line: its times (ms), the call and the answer.
fn describe(op: &Operation) -> String {
    let text = |v: &Option<Vec<u8>>| match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "absent".into(),
    };
    let call = match &op.call {
        Call::Get => "get".to_string(),
        Call::Put(v) => format!("put {}", String::from_utf8_lossy(v)),
        Call::Cas { expected, new } => format!("cas {} -> {}", text(expected), text(new)),
    };
    let ret = match &op.ret {
        Return::Read(v) => text(v),
        Return::Written => "ok".into(),
        Return::Swapped(s) => format!("swapped={s}"),
        Return::Failed => "failed".into(),
        Return::Unknown => "unknown".into(),
    };
    let completed = if op.ret == Return::Unknown {
        "?".to_string()
    } else {
        format!("{:.3}", op.completed as f64 / 1e6)
    };
    format!(
        "[{:.3}s .. {completed}s] {call} => {ret}",
        op.invoked as f64 / 1e6
    )
}

/// Runs the cluster under faults and judges the history; the nodes are stopped at the end.
pub async fn run(options: ChaosOptions) -> Result<Report, ChaosError> {
    let o = &options;
    std::fs::create_dir_all(&o.dir).map_err(io(format!("creating {}", o.dir.display())))?;
    let proxy_port = o.port + 1;
    let ids_max = o.nodes + ADDED_NODES_MAX;
    let routes: Vec<(NodeId, SocketAddr, SocketAddr)> = (1..=ids_max)
        .map(|id| {
            let ip = node_ip(id).into();
            (
                id,
                SocketAddr::new(ip, proxy_port),
                SocketAddr::new(ip, o.port),
            )
        })
        .collect();
    let proxy = Proxy::start(&routes)
        .await
        .map_err(io("starting the network proxy"))?;
    let mut cluster = Cluster {
        hanse: o.hanse.clone(),
        dir: o.dir.join("cluster"),
        endpoints: routes
            .iter()
            .map(|(id, at, _)| (*id, at.to_string()))
            .collect(),
        members: (1..=o.nodes).collect(),
        ack_before_commit: o.ack_before_commit,
        impaired: Vec::new(),
    };
    // Dropping `cluster` (here, or with this future when a run is interrupted) stops it.
    drive(o, &mut cluster, &proxy, ids_max).await
}

async fn drive(
    o: &ChaosOptions,
    cluster: &mut Cluster,
    proxy: &Proxy,
    ids_max: NodeId,
) -> Result<Report, ChaosError> {
    let (nodes, port, proxy_port) = (
        o.nodes.to_string(),
        o.port.to_string(),
        (o.port + 1).to_string(),
    );
    let dir = cluster.dir.display().to_string();
    let up = [
        "cluster",
        "up",
        "--dir",
        &dir,
        "--nodes",
        &nodes,
        "--port",
        &port,
        "--advertise-port",
        &proxy_port,
        "--wait",
        "60",
        // Shards of the workload's past key generations go idle: with a short idle time
        // they hibernate within a fault, so kills, pauses and partitions also strike
        // sleeping groups, which only node-level liveness wakes.
        "--raft",
        "hibernate_after_ms=1000",
    ];
    cluster.hanse(&up).await?;

    let history_path = o.dir.join("history.jsonl");
    let recorder = Arc::new(
        Recorder::create(&history_path)
            .map_err(io(format!("creating {}", history_path.display())))?,
    );
    let log_path = o.dir.join("faults.log");
    let log =
        FaultLog::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    log.line(&recorder, &format!("cluster of {} nodes serving", o.nodes));

    let (stop, stopped) = watch::channel(false);
    let endpoints = cluster.member_endpoints();
    let tls = cluster.root_tls()?;
    let options = ClientOptions {
        request_timeout: o.request_timeout,
        tls: Some(tls.clone()),
        ..ClientOptions::default()
    };
    let clients: Vec<_> = (1..=o.clients)
        .map(|id| {
            tokio::spawn(workload::run_client(
                id,
                endpoints.clone(),
                options.clone(),
                o.keys,
                o.seed,
                recorder.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    let mut nemesis = Nemesis {
        cluster,
        proxy,
        recorder: &recorder,
        log: &log,
        kinds: o.faults.clone(),
        keys: o.keys,
        nodes_min: o.nodes as usize,
        ids_max,
        reader_id: o.clients + 2,
        client_timeout: o.request_timeout,
        reads: 0,
    };
    let until = recorder.now_us() + o.duration.as_micros() as u64;
    if !o.faults.is_empty() {
        nemesis.run(o.seed, until).await;
    } else {
        tokio::time::sleep(o.duration).await;
    }
    nemesis.heal_all().await;
    tokio::time::sleep(SETTLE).await;
    stop.send_replace(true);
    for client in clients {
        client.await.expect("a workload client panicked")?;
    }
    log.line(&recorder, "workload stopped; final reads");

    let reader = Client::new(
        &cluster.member_endpoints(),
        ClientOptions {
            request_timeout: FINAL_READ_WAIT,
            tls: Some(tls),
            ..ClientOptions::default()
        },
    )?;
    let reader_id = o.clients + 1;
    let keys: Vec<Vec<u8>> = (0..=workload::generation(recorder.now_us()))
        .flat_map(|generation| (0..o.keys).map(move |index| workload::key(generation, index)))
        .collect();
    for (op, key) in (1..).zip(&keys) {
        workload::perform(&reader, &recorder, (reader_id, op), key, Call::Get).await;
    }
    recorder
        .flush()
        .map_err(io(format!("writing {}", history_path.display())))?;

    let history = history::read(&history_path)?;
    // Each key's last read after the faults ended: its final value.
    let mut last_reads: HashMap<&[u8], (u64, Option<Vec<u8>>)> = HashMap::new();
    for op in history.iter().filter(|op| op.invoked >= until) {
        if let (Call::Get, Return::Read(value)) = (&op.call, &op.ret) {
            let last = last_reads.entry(&op.key).or_insert((0, None));
            if op.completed >= last.0 {
                *last = (op.completed, value.clone());
            }
        }
    }
    let mut finals = BTreeMap::new();
    let mut unread_keys = Vec::new();
    for key in keys {
        match last_reads.get(key.as_slice()) {
            Some((_, value)) => {
                finals.insert(key, value.clone());
            }
            None => unread_keys.push(String::from_utf8_lossy(&key).into_owned()),
        }
    }
    let windows = log.windows.lock().expect("fault windows lock").clone();
    let mut faults = BTreeMap::new();
    for (kind, _, _) in &windows {
        *faults.entry(*kind).or_insert(0) += 1;
    }
    let mut outcomes = BTreeMap::new();
    for op in &history {
        let f = match op.call {
            Call::Get => "get",
            Call::Put(_) => "put",
            Call::Cas { .. } => "cas",
        };
        let outcome = match op.ret {
            Return::Failed => "fail",
            Return::Unknown => "unknown",
            _ => "ok",
        };
        *outcomes.entry(format!("{f} {outcome}")).or_insert(0) += 1;
    }
    let (throughput_faulted, throughput_quiet) = throughput(&history, &windows, until);
    let (verdict, witness) = judge(&history, o.check_budget)?;
    Ok(Report {
        options: o.clone(),
        faults,
        outcomes,
        unknown_causes: history::unknown_causes(&history_path)?,
        throughput_faulted,
        throughput_quiet,
        verdict,
        witness,
        lost_writes: linearizability::lost_writes(&history, &finals),
        stale_reads: linearizability::stale_reads(&history),
        unread_keys,
    })
}

/// The checker's verdict on `history` and, when invalid, the shortest failing prefix of
/// the failing key's history.
pub fn judge(
    history: &[Operation],
    budget: Duration,
) -> Result<(Verdict, Vec<Operation>), ChaosError> {
    std::thread::scope(|scope| {
        // The search recurses once per operation of a key: give it a deep stack.
        let checker = std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn_scoped(scope, || {
                let verdict = linearizability::check(history, budget);
                let witness = match &verdict {
                    Verdict::Invalid { history, .. } => {
                        linearizability::shortest_invalid_prefix(history, budget)
                    }
                    _ => Vec::new(),
                };
                (verdict, witness)
            })
            .map_err(io("starting the checker"))?;
        Ok(checker.join().expect("the checker panicked"))
    })
}

/// Acknowledged operations per second completed while some fault was in force, and
/// otherwise (up to `until`, the end of the fault schedule). Windows may overlap (an
/// action during another fault): time is counted once.
fn throughput(history: &[Operation], windows: &[(FaultKind, u64, u64)], until: u64) -> (f64, f64) {
    let mut spans: Vec<(u64, u64)> = windows
        .iter()
        .map(|&(_, start, end)| (start, end))
        .collect();
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let faulted_us: u64 = merged
        .iter()
        .map(|(start, end)| end.min(&until) - start.min(&until))
        .sum();
    let quiet_us = until.saturating_sub(faulted_us);
    let in_fault = |at: u64| {
        let i = merged.partition_point(|&(start, _)| start <= at);
        i > 0 && at < merged[i - 1].1
    };
    let (mut during, mut otherwise) = (0u64, 0u64);
    for op in history {
        if matches!(op.ret, Return::Failed | Return::Unknown) || op.completed > until {
            continue;
        }
        if in_fault(op.completed) {
            during += 1;
        } else {
            otherwise += 1;
        }
    }
    let rate = |n: u64, us: u64| {
        if us == 0 {
            0.0
        } else {
            n as f64 * 1e6 / us as f64
        }
    };
    (rate(during, faulted_us), rate(otherwise, quiet_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_at(completed: u64) -> Operation {
        Operation {
            key: b"k".to_vec(),
            call: Call::Get,
            ret: Return::Read(None),
            invoked: completed,
            completed,
        }
    }

    #[test]
    fn throughput_counts_overlapping_fault_time_once() {
        // Faults over [10, 40) (two windows overlapping) of a 100 s run, in seconds.
        let s = 1_000_000;
        let windows = [
            (FaultKind::Kill, 10 * s, 30 * s),
            (FaultKind::Shards, 20 * s, 40 * s),
        ];
        let history: Vec<Operation> = (0..100).map(|t| ok_at(t * s + 1)).collect();
        let (during, otherwise) = throughput(&history, &windows, 100 * s);
        assert!((during - 1.0).abs() < 1e-9, "{during}");
        assert!((otherwise - 1.0).abs() < 1e-9, "{otherwise}");
    }
}
