//! `hanse bench compare`: the same workloads against Hanse (a 3-node cluster of real
//! processes and the embedded mode) and the stores a user would pick instead, back to back
//! in one invocation on this machine, as one table with each figure and Hanse's ratio to
//! each peer, and a bar chart.
//!
//! Peers run here, each with the same durability as Hanse (acknowledged means on disk):
//! raw RocksDB with synced writes, a 3-member etcd cluster and PostgreSQL (see
//! [`crate::peers`]). A peer that cannot run is listed as skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hanse_client::{Client, ClientOptions};
use tokio::runtime::Runtime;

use crate::cpu::{Processes, ms_per_kop};
use crate::load::{LoadReport, LoadSpec, Target, Workload, preload, run};
use crate::peers::{Etcd, Postgres};
use hanse_node::chart::Series;

/// What a comparison runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Contender {
    /// A 3-node Hanse cluster of real processes on 127.0.0.x (`hanse cluster up`), with
    /// mutual TLS as it runs by default.
    Hanse,
    /// The same cluster run `--insecure` (plaintext, nobody authenticated): Hanse's ratio
    /// to it is what TLS costs.
    HanseInsecure,
    /// Hanse's embedded mode in this process.
    Embedded,
    /// Raw RocksDB with synced writes in this process.
    Rocksdb,
    /// A 3-member etcd cluster of real processes on 127.0.0.21-23.
    Etcd,
    /// PostgreSQL on 127.0.0.30, a key-value table, synchronous commits.
    Postgres,
}

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Contender::Hanse => "hanse",
            Contender::HanseInsecure => "hanse-insecure",
            Contender::Embedded => "embedded",
            Contender::Rocksdb => "rocksdb",
            Contender::Etcd => "etcd",
            Contender::Postgres => "postgres",
        }
    }

    fn is_hanse(self) -> bool {
        matches!(self, Contender::Hanse | Contender::Embedded)
    }

    /// Whether its keys can be split into shards (a Hanse cluster's can).
    fn has_shards(self) -> bool {
        matches!(self, Contender::Hanse | Contender::HanseInsecure)
    }

    /// Whether it runs in the load generator's process (its CPU time includes the
    /// generator's).
    fn in_process(self) -> bool {
        matches!(self, Contender::Embedded | Contender::Rocksdb)
    }
}

/// Opens `contender`'s store in this process, in `dir`: the embedded mode or raw RocksDB
/// (its own runtime: call it outside any). The others run elsewhere.
pub fn open_local(contender: Contender, dir: &Path) -> Result<Target, String> {
    match contender {
        Contender::Embedded => hanse::Db::open(dir, hanse::Options::default())
            .map(|db| Target::Embedded(Arc::new(db)))
            .map_err(|e| format!("opening {}: {e}", dir.display())),
        Contender::Rocksdb => {
            let mut options = hanse_storage_rocksdb::rocksdb_options();
            options.create_if_missing(true);
            rocksdb::DB::open(&options, dir)
                .map(|db| Target::RocksDb(Arc::new(db)))
                .map_err(|e| format!("opening {}: {e}", dir.display()))
        }
        Contender::Hanse | Contender::HanseInsecure | Contender::Etcd | Contender::Postgres => {
            Err(format!(
                "{} runs in its own processes, not in this one",
                contender.name()
            ))
        }
    }
}

/// The processes a contender runs in, started for a run; stopped when dropped.
pub enum Servers {
    Hanse(LocalCluster),
    Etcd(Etcd),
    Postgres(Postgres),
}

impl Servers {
    pub fn processes(&self) -> Processes {
        match self {
            Servers::Hanse(cluster) => cluster_processes(&cluster.dir.path().join("cluster")),
            Servers::Etcd(etcd) => etcd.processes(),
            Servers::Postgres(postgres) => postgres.processes(),
        }
    }
}

/// The server processes of the local cluster in `dir` (`hanse cluster up --dir`), by
/// the pid files `up` wrote.
pub fn cluster_processes(dir: &Path) -> Processes {
    let pids = (1..)
        .map(|id| dir.join(format!("node{id}.pid")))
        .take_while(|path| path.exists())
        .filter_map(|path| std::fs::read_to_string(path).ok()?.trim().parse().ok())
        .collect();
    Processes(pids)
}

/// Whose CPU time a run of `servers` (none: a store in this process) costs.
pub fn processes_of(servers: Option<&Servers>) -> Processes {
    servers.map_or_else(Processes::this_process, Servers::processes)
}

/// Starts `contender` fresh and answers the target to drive, with the processes it runs
/// in: a cluster listens on `port` of its own 127.0.0.x addresses, an in-process store
/// lives in `dir`, a pool has `clients` connections. Call it outside `runtime` and from
/// the thread that lives for the run: the processes die with it.
pub fn start(
    contender: Contender,
    dir: &Path,
    port: u16,
    clients: usize,
    runtime: &Runtime,
) -> Result<(Target, Option<Servers>), String> {
    match contender {
        Contender::Hanse | Contender::HanseInsecure => {
            let secure = contender == Contender::Hanse;
            let cluster = LocalCluster::start(port, secure)?;
            let options = ClientOptions {
                tls: cluster.root_tls()?,
                ..ClientOptions::default()
            };
            let client = Client::new(&cluster.endpoints, options).map_err(|e| e.to_string())?;
            Ok((
                Target::Cluster(Arc::new(client)),
                Some(Servers::Hanse(cluster)),
            ))
        }
        Contender::Etcd => {
            let mut etcd = Etcd::start(port).map_err(|e| e.to_string())?;
            let client = runtime
                .block_on(etcd.connect())
                .map_err(|e| e.to_string())?;
            Ok((Target::Etcd(Arc::new(client)), Some(Servers::Etcd(etcd))))
        }
        Contender::Postgres => {
            let mut postgres = Postgres::start(port).map_err(|e| e.to_string())?;
            let pool = runtime
                .block_on(postgres.connect(clients))
                .map_err(|e| e.to_string())?;
            Ok((
                Target::Postgres(Arc::new(pool)),
                Some(Servers::Postgres(postgres)),
            ))
        }
        local => open_local(local, dir).map(|target| (target, None)),
    }
}

/// One workload against one contender.
#[derive(Debug, Clone)]
pub struct Measured {
    pub workload: Workload,
    pub contender: Contender,
    /// Shards the store's keys were split into (1 for a store that has no shards).
    pub shards: usize,
    pub clients: usize,
    pub report: LoadReport,
    /// The CPU time the store's processes spent in the run (see [`crate::cpu`]).
    pub cpu: Option<std::time::Duration>,
}

impl Measured {
    /// CPU milliseconds per 1,000 operations.
    pub fn cpu_ms_per_kop(&self) -> Option<f64> {
        ms_per_kop(self.cpu?, self.report.ops)
    }
}

/// A contender that could not run, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub contender: Contender,
    pub reason: String,
}

/// A local cluster started with the `hanse` binary beside this one; down when dropped.
pub struct LocalCluster {
    hanse: PathBuf,
    dir: tempfile::TempDir,
    endpoints: Vec<String>,
}

impl LocalCluster {
    /// Starts the cluster, with TLS when `secure`.
    fn start(port: u16, secure: bool) -> Result<LocalCluster, String> {
        LocalCluster::start_with(port, (!secure).then_some("--insecure"))
    }

    /// Starts a 3-node cluster with TLS and `hanse cluster up`'s arguments `up`.
    pub fn start_with<S: AsRef<std::ffi::OsStr>>(
        port: u16,
        up: impl IntoIterator<Item = S>,
    ) -> Result<LocalCluster, String> {
        let hanse = std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("hanse");
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new(&hanse)
            .args(["cluster", "up", "--nodes", "3", "--port", &port.to_string()])
            .args(up)
            .arg("--dir")
            .arg(dir.path().join("cluster"))
            .output()
            .map_err(|e| format!("running {}: {e}", hanse.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let endpoints = stdout
            .lines()
            .find_map(|l| l.strip_prefix("endpoints: "))
            .map(|line| line.split(',').map(str::to_string).collect());
        let cluster = LocalCluster {
            hanse,
            dir,
            endpoints: endpoints.unwrap_or_default(),
        };
        if !out.status.success() || cluster.endpoints.is_empty() {
            return Err(format!(
                "hanse cluster up failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(cluster)
    }
}

impl LocalCluster {
    /// The directory `hanse cluster up` keeps the cluster in (configs, pid files, logs).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().join("cluster")
    }

    /// The nodes' client addresses, node 1 first.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Each node's config as `up` wrote it, node 1 first.
    pub fn configs(&self) -> Result<Vec<hanse_node::config::NodeConfig>, String> {
        let cluster = self.dir.path().join("cluster");
        (1..=self.endpoints.len())
            .map(|id| {
                hanse_node::config::NodeConfig::load(&cluster.join(format!("node{id}.toml")))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Each node's `/metrics` page, fetched over HTTPS as `root` with curl.
    pub fn metrics(&self) -> Result<Vec<String>, String> {
        let mut pages = Vec::new();
        for config in self.configs()? {
            let (Some(http), Some(certs)) = (config.http_addr, config.certs_dir) else {
                return Err(format!("node {} serves no HTTPS metrics", config.node_id));
            };
            let identity = hanse_client::Identity::user("root").map_err(|e| e.to_string())?;
            let files = hanse_client::CertsDir::new(&certs).files(&identity);
            let out = Command::new("curl")
                .args(["-sS", "--fail", "--cacert"])
                .arg(&files.ca)
                .arg("--cert")
                .arg(&files.cert)
                .arg("--key")
                .arg(&files.key)
                .arg(format!("https://{http}/metrics"))
                .output()
                .map_err(|e| format!("running curl (scripts/setup.sh installs it): {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "curl https://{http}/metrics: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            pages.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Ok(pages)
    }

    /// How the load reaches the cluster: as `root`, with the certificates `up` made
    /// (`None`: the cluster runs insecure).
    pub fn root_tls(&self) -> Result<Option<Arc<hanse_client::ClientTls>>, String> {
        let node = self.dir.path().join("cluster").join("node1.toml");
        let config = hanse_node::config::NodeConfig::load(&node).map_err(|e| e.to_string())?;
        match config.certs_dir.filter(|_| !config.insecure) {
            Some(certs) => hanse_client::user_tls(&certs, "root")
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}

impl LocalCluster {
    /// Runs `hanse admin ARGS` against the cluster as `root`; answers what it printed.
    fn admin(&self, args: &[&str]) -> Result<String, String> {
        let cluster = self.dir.path().join("cluster");
        let config = hanse_node::config::NodeConfig::load(&cluster.join("node1.toml"))
            .map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.hanse);
        command
            .arg("admin")
            .args(args)
            .args(["--endpoints", &self.endpoints.join(",")]);
        match config.certs_dir.filter(|_| !config.insecure) {
            Some(certs) => command.env("HANSE_CERTS_DIR", certs),
            None => command.arg("--insecure"),
        };
        let out = command.output().map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!(
                "hanse admin {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// Splits the load's `key_count` keys into `shards` shards of about equal numbers of
    /// keys, and moves their leadership round-robin over the nodes.
    pub fn presplit(&self, shards: usize, key_count: u64) -> Result<(), String> {
        for i in 1..shards as u64 {
            let at = crate::load::load_key(key_count * i / shards as u64);
            self.admin(&["split", &String::from_utf8_lossy(&at)])?;
        }
        let table: serde_json::Value = serde_json::from_str(&self.admin(&["shards", "--json"])?)
            .map_err(|e| format!("hanse admin shards --json: {e}"))?;
        let mut data: Vec<(String, u64, u64)> = table["shards"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| !s["start"].as_str().unwrap_or("").starts_with("\\xff"))
            .map(|s| {
                let start = s["start"].as_str().unwrap_or("").to_string();
                (
                    start,
                    s["id"].as_u64().unwrap_or(0),
                    s["leader_node"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        data.sort();
        let nodes = self.endpoints.len() as u64;
        for (i, (_, shard, leader)) in data.iter().enumerate() {
            let to = i as u64 % nodes + 1;
            if *leader != to {
                let (shard, to) = (shard.to_string(), to.to_string());
                self.admin(&["transfer-leader", "--shard", &shard, "--to", &to])?;
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(&self.hanse)
            .args(["cluster", "down", "--dir"])
            .arg(self.dir.path().join("cluster"))
            .output();
    }
}

/// The points of a curve: each number of clients, and each number of shards a store
/// that has shards is split into (one start of the store per number of shards).
#[derive(Debug, Clone)]
pub struct Shape {
    pub clients: Vec<usize>,
    pub shards: Vec<usize>,
}

/// Runs every workload of `workloads` (with `base`'s other settings) against each of
/// `contenders` at each point of `shape`; `port` is the local cluster's. `progress` hears
/// each run's name.
pub fn compare(
    contenders: &[Contender],
    workloads: &[Workload],
    base: &LoadSpec,
    shape: &Shape,
    port: u16,
    progress: impl Fn(&str),
) -> (Vec<Measured>, Vec<Skipped>) {
    let mut measured = Vec::new();
    let mut skipped = Vec::new();
    for &contender in contenders {
        let shard_counts = match contender.has_shards() {
            true => shape.shards.clone(),
            false => vec![1],
        };
        for shards in shard_counts {
            let runs = measure_store(
                contender,
                shards,
                workloads,
                base,
                &shape.clients,
                port,
                &progress,
            );
            match runs {
                Ok(runs) => measured.extend(runs),
                Err(reason) => skipped.push(Skipped { contender, reason }),
            }
        }
    }
    (measured, skipped)
}

/// Starts `contender` fresh, its keys split into `shards`, and runs every workload with
/// each number of `clients` against it.
fn measure_store(
    contender: Contender,
    shards: usize,
    workloads: &[Workload],
    base: &LoadSpec,
    clients: &[usize],
    port: u16,
    progress: &impl Fn(&str),
) -> Result<Vec<Measured>, String> {
    let mut measured = Vec::new();
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let scratch = tempfile::tempdir().expect("a temporary directory");
        let most = clients.iter().copied().max().unwrap_or(base.clients);
        let (target, servers) = start(contender, scratch.path(), port, most, &runtime)?;
        if shards > 1 {
            match &servers {
                Some(Servers::Hanse(cluster)) => cluster.presplit(shards, base.key_count)?,
                _ => return Err(format!("{} has no shards to split", contender.name())),
            }
        }
        runtime
            .block_on(preload(&target, base, |_| {}))
            .map_err(|e| format!("loading its keys failed: {e}"))?;
        let processes = processes_of(servers.as_ref());
        for &clients in clients {
            for &workload in workloads {
                progress(&format!(
                    "{} {} ({shards} shards, {clients} clients)",
                    contender.name(),
                    workload_name(workload)
                ));
                let spec = LoadSpec {
                    workload,
                    clients,
                    ..base.clone()
                };
                let before = processes.cpu();
                let report = runtime.block_on(run(target.clone(), &spec, None, |_| {}));
                let cpu = before
                    .zip(processes.cpu())
                    .map(|(b, a)| a.saturating_sub(b));
                measured.push(Measured {
                    workload,
                    contender,
                    shards,
                    clients,
                    report,
                    cpu,
                });
            }
        }
        // Connections end with the runtime, then the servers stop; a store with its own
        // runtime is dropped outside this one.
        drop(runtime);
        drop(target);
        drop(servers);
    }
    Ok(measured)
}

pub fn workload_name(workload: Workload) -> &'static str {
    match workload {
        Workload::Write => "write",
        Workload::Read => "ycsb-c",
        Workload::Mixed => "ycsb-a",
        Workload::YcsbB => "ycsb-b",
        Workload::YcsbE => "ycsb-e",
        Workload::Hot => "hot",
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The comparison as a markdown table: each workload and contender with its throughput,
/// latency and CPU per operation; Hanse's throughput over each peer's, and, for a peer
/// in its own processes, Hanse's CPU per operation over the peer's (below 1: Hanse needs
/// less).
pub fn table(measured: &[Measured]) -> String {
    let peers: Vec<Contender> = unique(measured.iter().map(|m| m.contender))
        .into_iter()
        .filter(|c| !c.is_hanse())
        .collect();
    let cpu_peers: Vec<Contender> = peers.iter().copied().filter(|p| !p.in_process()).collect();
    let mut out = String::from(
        "| workload | store | shards | clients | ops/s | p50 ms | p99 ms | p999 ms | CPU ms/kop |",
    );
    for peer in &peers {
        out += &format!(" ×{} |", peer.name());
    }
    for peer in &cpu_peers {
        out += &format!(" CPU ×{} |", peer.name());
    }
    out += "\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |";
    out += &" --- |".repeat(peers.len() + cpu_peers.len());
    out += "\n";
    // The peer's run of the same workload with as many clients (and, for a peer that
    // has shards, as many shards).
    let theirs = |m: &Measured, peer: Contender| {
        measured
            .iter()
            .find(|o| {
                o.workload == m.workload
                    && o.contender == peer
                    && o.clients == m.clients
                    && (!peer.has_shards() || o.shards == m.shards)
            })
            .filter(|_| m.contender.is_hanse())
    };
    for m in measured {
        let h = &m.report.latency_us;
        let cpu = match (m.cpu_ms_per_kop(), m.contender.in_process()) {
            (Some(cpu), false) => format!("{cpu:.1}"),
            (Some(cpu), true) => format!("{cpu:.1}†"),
            (None, _) => "-".to_string(),
        };
        out += &format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {cpu} |",
            workload_name(m.workload),
            m.contender.name(),
            m.shards,
            m.clients,
            m.report.throughput(),
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
        );
        for &peer in &peers {
            out += &match theirs(m, peer) {
                Some(theirs) if theirs.report.throughput() > 0.0 => {
                    format!(
                        " {:.2} |",
                        m.report.throughput() / theirs.report.throughput()
                    )
                }
                _ => " |".to_string(),
            };
        }
        for &peer in &cpu_peers {
            let ratio = theirs(m, peer)
                .and_then(Measured::cpu_ms_per_kop)
                .zip(m.cpu_ms_per_kop())
                .filter(|(theirs, _)| *theirs > 0.0 && !m.contender.in_process());
            out += &match ratio {
                Some((theirs, ours)) => format!(" {:.2} |", ours / theirs),
                None => " |".to_string(),
            };
        }
        out += "\n";
    }
    if measured.iter().any(|m| m.contender.in_process()) {
        out += "\n† in the load generator's process: its CPU time includes the generator's.\n";
    }
    out
}

/// The comparison as JSON.
pub fn json(measured: &[Measured], skipped: &[Skipped]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = measured
        .iter()
        .map(|m| {
            let h = &m.report.latency_us;
            serde_json::json!({
                "workload": workload_name(m.workload),
                "store": m.contender.name(),
                "shards": m.shards,
                "clients": m.clients,
                "ops": m.report.ops,
                "errors": m.report.errors,
                "ops_per_sec": m.report.throughput(),
                "p50_ms": ms(h.value_at_quantile(0.5)),
                "p99_ms": ms(h.value_at_quantile(0.99)),
                "p999_ms": ms(h.value_at_quantile(0.999)),
                "cpu_ms_per_kop": m.cpu_ms_per_kop(),
                "cpu_includes_generator": m.contender.in_process(),
            })
        })
        .collect();
    let skipped: Vec<serde_json::Value> = skipped
        .iter()
        .map(|s| serde_json::json!({ "store": s.contender.name(), "reason": s.reason }))
        .collect();
    serde_json::json!({ "runs": rows, "skipped": skipped })
}

/// Writes `compare.md` and `compare.json` into `dir`, and the charts: `compare.png`
/// (throughput per workload and store) for a comparison at one point, else a curve per
/// workload (`curve-WORKLOAD.png`: throughput over clients, a line per store and number
/// of shards). Answers the charts' paths.
pub fn write_report(
    dir: &Path,
    measured: &[Measured],
    skipped: &[Skipped],
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("compare.md"), table(measured))?;
    std::fs::write(
        dir.join("compare.json"),
        serde_json::to_vec_pretty(&json(measured, skipped))?,
    )?;
    let workloads = unique(measured.iter().map(|m| m.workload));
    let points = unique(measured.iter().map(|m| (m.clients, m.shards)));
    if points.len() <= 1 {
        let groups: Vec<String> = workloads
            .iter()
            .map(|w| workload_name(*w).to_string())
            .collect();
        let series: Vec<(String, Vec<f64>)> = unique(measured.iter().map(|m| m.contender))
            .into_iter()
            .map(|c| {
                let values = workloads
                    .iter()
                    .map(|w| {
                        measured
                            .iter()
                            .find(|m| m.contender == c && m.workload == *w)
                            .map_or(0.0, |m| m.report.throughput())
                    })
                    .collect();
                (c.name().to_string(), values)
            })
            .collect();
        let chart = dir.join("compare.png");
        std::fs::write(
            &chart,
            hanse_node::chart::bar_chart("throughput by store", "ops/s", &groups, &series),
        )?;
        return Ok(vec![chart]);
    }
    let mut charts = Vec::new();
    for workload in workloads {
        let lines = unique(
            measured
                .iter()
                .filter(|m| m.workload == workload)
                .map(|m| (m.contender, m.shards)),
        );
        let series: Vec<Series> = lines
            .into_iter()
            .map(|(contender, shards)| Series {
                name: match contender.has_shards() {
                    true => format!("{} {shards} shards", contender.name()),
                    false => contender.name().to_string(),
                },
                points: measured
                    .iter()
                    .filter(|m| {
                        m.workload == workload && m.contender == contender && m.shards == shards
                    })
                    .map(|m| (m.clients as f64, m.report.throughput()))
                    .collect(),
            })
            .collect();
        let name = workload_name(workload);
        let chart = dir.join(format!("curve-{name}.png"));
        let title = format!("{name}: throughput by clients");
        std::fs::write(
            &chart,
            hanse_node::chart::line_chart(&title, "clients", "ops/s", &series),
        )?;
        charts.push(chart);
    }
    Ok(charts)
}

/// The distinct items in their first order.
pub(crate) fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}
