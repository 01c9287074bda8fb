//! `hanse cluster up|status|down|add-node|remove-node --dir D`: a local cluster of real
//! `hanse server` processes on 127.0.0.x, one address per node, all state kept in D so
//! every command works from the same directory. `up` on a directory whose nodes are down
//! restarts them with their data.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use hanse_client::{Client, ClientOptions, proto};
use hanse_consensus::latency::LatencyMatrix;
use hanse_node::config::NodeConfig;
use hanse_node::units::{parse_duration, parse_size};
use hanse_security::CertsDir;

use crate::connect::{Credentials, admin, cluster_tls};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balance_section_appears_only_when_asked_for() {
        assert_eq!(balance_section(None, None, None, &[]), "");
        let settings = [
            setting("planner=model").unwrap(),
            setting("planner_node_capacity = 400").unwrap(),
        ];
        let section = balance_section(Some(64 << 10), Some(1), Some("ap-china".into()), &settings);
        assert!(section.starts_with("[balance]\n"));
        assert!(section.contains("split_size_bytes = 65536\nmerge_size_bytes = 8192\n"));
        assert!(section.contains("cool_down_secs = 1\n"));
        assert!(section.contains("preferred_leader_region = \"ap-china\"\n"));
        assert!(section.contains("planner = \"model\"\nplanner_node_capacity = 400\n"));
        assert!(setting("planner").is_err());
        assert!(setting("a b=1").is_err());
    }
}

#[derive(Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    op: ClusterOp,
}

// Parsed once from the command line: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum ClusterOp {
    /// Creates (or restarts) the cluster in DIR and waits until it serves.
    Up {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Nodes of a new cluster (ignored when DIR already holds one).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Regions, assigned to nodes in turn.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "eu-hamburg,ap-china,au-sydney"
        )]
        regions: Vec<String>,
        /// The port every node listens on, each on its own 127.0.0.(10+id).
        #[arg(long, default_value_t = 7400)]
        port: u16,
        /// Advertise each node at this port of its address instead, where a proxy (the
        /// chaos harness's) forwards to the node; connections between nodes start from
        /// the node's own address, so the proxy can tell who calls whom.
        #[arg(long, value_name = "PORT")]
        advertise_port: Option<u16>,
        /// The port of each node's HTTP endpoints (metrics, health), on the node's
        /// address [default: --port + 80]
        #[arg(long, value_name = "PORT")]
        http_port: Option<u16>,
        /// How long to wait for the cluster to serve.
        #[arg(long, default_value = "30", value_name = "SECONDS")]
        wait: u64,
        /// Split shards larger than this (e.g. 16MiB); small cold neighbours below an
        /// eighth of it merge. Default: the node's (64 MiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        split_size: Option<u64>,
        /// Leave a shard alone this long after it split or merged (node default 60).
        #[arg(long, value_name = "SECONDS")]
        balance_cool_down: Option<u64>,
        /// Move shard leaders to this region (node default: spread them evenly).
        #[arg(long, value_name = "REGION")]
        preferred_leader_region: Option<String>,
        /// Any other `[balance]` setting of the node config, as KEY=VALUE (repeatable;
        /// VALUE in TOML, a bare word taken as a string), e.g. `--balance planner=model`.
        #[arg(long = "balance", value_name = "KEY=VALUE", value_parser = setting)]
        balance_settings: Vec<String>,
        /// The region whose nodes batch client writes (node default eu-hamburg).
        #[arg(long, value_name = "REGION", default_value = "eu-hamburg")]
        ingest_region: String,
        /// An `[ingest]` setting of the node config, as KEY=VALUE (repeatable), e.g.
        /// `--ingest enabled=false` or `--ingest max_delay_ms=5`.
        #[arg(long = "ingest", value_name = "KEY=VALUE", value_parser = setting)]
        ingest_settings: Vec<String>,
        /// A `[raft]` setting of the node config, as KEY=VALUE (repeatable), e.g.
        /// `--raft hibernate_after_ms=1000` or `--raft hibernate=false`.
        #[arg(long = "raft", value_name = "KEY=VALUE", value_parser = setting)]
        raft_settings: Vec<String>,
        /// Round trips to inject between regions, e.g.
        /// `eu-hamburg:ap-china=250ms,eu-hamburg:au-sydney=300ms,ap-china:au-sydney=150ms`:
        /// Raft traffic between the nodes of those regions, and client requests that name
        /// their region, wait that long; Raft's timeouts grow to match.
        #[arg(long, value_name = "A:B=TIME,...", value_parser = latency_spec)]
        latency: Option<LatencyMatrix>,
        /// Run the nodes without TLS and authentication (by default `up` makes a CA and
        /// certificates in DIR/certs and the nodes require them); wins over --certs-dir.
        #[arg(long)]
        insecure: bool,
        /// Where the CA and the nodes' and root's certificates are, made when missing
        /// (default DIR/certs).
        #[arg(long, env = "HANSE_CERTS_DIR", value_name = "CERTS")]
        certs_dir: Option<PathBuf>,
    },
    /// Starts one stopped node of the cluster in DIR without waiting for it.
    Start {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "ID")]
        node: u64,
    },
    /// Shows each node: id, region, address, pid, state.
    Status {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// One JSON object per line, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stops every node (SIGTERM, then SIGKILL after 5 s); data stays in DIR.
    Down {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Starts one more node and adds it to every shard (learner, catch-up, voter).
    AddNode {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Its region (default: the next one in the regions of the existing nodes).
        #[arg(long)]
        region: Option<String>,
        /// Keep it a learner in every shard.
        #[arg(long)]
        learner: bool,
        /// JSON lines for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Removes a node from every shard and stops it; its directory is kept.
    RemoveNode {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "ID")]
        node: u64,
        /// JSON lines for scripts.
        #[arg(long)]
        json: bool,
    },
}

const NODES_MAX: u64 = 200;

pub fn run(args: ClusterArgs) -> Result<()> {
    match args.op {
        ClusterOp::Up {
            dir,
            nodes,
            regions,
            port,
            advertise_port,
            http_port,
            wait,
            split_size,
            balance_cool_down,
            preferred_leader_region,
            balance_settings,
            ingest_region,
            ingest_settings,
            raft_settings,
            latency,
            insecure,
            certs_dir,
        } => {
            let balance = balance_section(
                split_size,
                balance_cool_down,
                preferred_leader_region,
                &balance_settings,
            );
            let ingest = section("ingest", &ingest_settings);
            let raft = section("raft", &raft_settings);
            let ports = Ports {
                listen: port,
                advertise: advertise_port.unwrap_or(port),
                http: http_port.map_or_else(|| default_http_port(port), Ok)?,
            };
            let layout = Layout {
                nodes,
                regions: &regions,
                ports,
                tables: &format!("{balance}{ingest}{raft}"),
                ingest_region: &ingest_region,
                latency: &latency.unwrap_or_default(),
                security: match insecure {
                    true => Security::Insecure,
                    false => Security::Certs(certs_dir),
                },
            };
            up(&dir, &layout, Duration::from_secs(wait))
        }
        ClusterOp::Start { dir, node } => start(&dir, node),
        ClusterOp::Status { dir, json } => status(&dir, json),
        ClusterOp::Down { dir } => down(&dir),
        ClusterOp::AddNode {
            dir,
            region,
            learner,
            json,
        } => add_node(&dir, region, learner, json),
        ClusterOp::RemoveNode { dir, node, json } => remove_node(&dir, node, json),
    }
}

fn config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.toml"))
}

fn pid_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.pid"))
}

/// Where a removed node's configuration goes, so `up` no longer starts it.
fn removed_config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.removed.toml"))
}

/// The configurations of the cluster's current nodes in `dir`, in id order.
/// The HTTP addresses (console, metrics) of the nodes of the cluster in `dir`.
pub fn http_addrs(dir: &Path) -> Result<Vec<std::net::SocketAddr>> {
    Ok(configs(dir)?.iter().filter_map(|c| c.http_addr).collect())
}

fn configs(dir: &Path) -> Result<Vec<NodeConfig>> {
    let mut configs = Vec::new();
    for id in 1..=NODES_MAX {
        let path = config_path(dir, id);
        if path.exists() {
            configs.push(NodeConfig::load(&path)?);
        }
    }
    ensure!(
        !configs.is_empty(),
        "{} holds no cluster (no node1.toml); run `hanse cluster up --dir {}` first",
        dir.display(),
        dir.display()
    );
    Ok(configs)
}

/// The port each node listens on, the one it is reached at (a proxy's, or the same),
/// and its HTTP port.
#[derive(Clone, Copy)]
struct Ports {
    listen: u16,
    advertise: u16,
    http: u16,
}

/// How far above the gRPC port a node's HTTP port is by default.
const HTTP_PORT_OFFSET: u16 = 80;

fn default_http_port(port: u16) -> Result<u16> {
    port.checked_add(HTTP_PORT_OFFSET).with_context(|| {
        format!("--port {port} leaves no room for the HTTP port; give --http-port")
    })
}

impl Ports {
    /// Ports for gRPC on `port` (reached there too) and HTTP on the default port above.
    fn plain(port: u16) -> Result<Ports> {
        Ok(Ports {
            listen: port,
            advertise: port,
            http: default_http_port(port)?,
        })
    }

    fn ip(id: u64) -> String {
        format!("127.0.0.{}", 10 + id)
    }

    /// Node `id`'s listen and advertised addresses.
    fn addrs(self, id: u64) -> (String, String) {
        let ip = Self::ip(id);
        (
            format!("{ip}:{}", self.listen),
            format!("{ip}:{}", self.advertise),
        )
    }

    /// Node `id`'s HTTP address.
    fn http_addr(self, id: u64) -> String {
        format!("{}:{}", Self::ip(id), self.http)
    }

    /// The ports the cluster whose first node is configured by `config` uses.
    fn of(config: &NodeConfig) -> Result<Ports> {
        let listen = config.listen_addr.port();
        let advertise = config
            .advertised()
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(listen);
        let http = match config.http_addr {
            Some(addr) => addr.port(),
            None => default_http_port(listen)?,
        };
        Ok(Ports {
            listen,
            advertise,
            http,
        })
    }
}

/// What `cluster up` creates a new cluster with.
struct Layout<'a> {
    nodes: u64,
    regions: &'a [String],
    ports: Ports,
    /// The nodes' `[balance]` and `[ingest]` tables.
    tables: &'a str,
    ingest_region: &'a str,
    latency: &'a LatencyMatrix,
    security: Security,
}

/// How a new cluster's nodes run.
#[derive(Clone)]
enum Security {
    /// No TLS and nobody authenticated.
    Insecure,
    /// TLS with the certificates in this directory (default `DIR/certs`), made when
    /// missing.
    Certs(Option<PathBuf>),
}

fn create(dir: &Path, layout: &Layout) -> Result<()> {
    let Layout {
        nodes,
        regions,
        ports,
        tables,
        ingest_region,
        latency,
        ref security,
    } = *layout;
    ensure!(
        (1..=NODES_MAX).contains(&nodes),
        "--nodes must be 1 to {NODES_MAX}"
    );
    ensure!(
        !regions.is_empty() && regions.iter().all(|r| !r.trim().is_empty()),
        "--regions needs at least one name"
    );
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let certs = match security {
        Security::Insecure => None,
        Security::Certs(certs) => {
            let certs = match certs {
                Some(certs) => {
                    fs::create_dir_all(certs)?;
                    certs.canonicalize()?
                }
                None => dir.canonicalize()?.join("certs"),
            };
            let hosts: Vec<(u64, String)> = (1..=nodes)
                .map(|id| {
                    (
                        id,
                        ports.addrs(id).1.rsplit_once(':').unwrap().0.to_string(),
                    )
                })
                .collect();
            hanse_security::issue::create_local_cluster(&CertsDir::new(&certs), &hosts, &["root"])?;
            Some(certs)
        }
    };
    let region = |id: u64| regions[(id as usize - 1) % regions.len()].clone();
    let peers: String = (1..=nodes)
        .map(|id| {
            format!(
                "[[initial_peers]]\nid = {id}\naddr = \"{}\"\nregion = \"{}\"\n\n",
                ports.addrs(id).1,
                region(id)
            )
        })
        .collect();
    for id in 1..=nodes {
        let node = NodeSettings {
            id,
            region: &region(id),
            addrs: ports.addrs(id),
            http: ports.http_addr(id),
            bootstrap: id == 1,
            ingest_region,
            latency,
            certs: certs.as_deref(),
            runtime_threads: runtime_threads(nodes as usize),
        };
        write_config(dir, &node, &format!("{tables}{peers}"))?;
    }
    Ok(())
}

/// One node's top-level configuration.
struct NodeSettings<'a> {
    id: u64,
    region: &'a str,
    /// Listen and advertised addresses.
    addrs: (String, String),
    http: String,
    bootstrap: bool,
    ingest_region: &'a str,
    latency: &'a LatencyMatrix,
    /// The certificates directory, `None` for an insecure node.
    certs: Option<&'a Path>,
    /// Worker threads of the node's runtime.
    runtime_threads: usize,
}

/// Each of `nodes` nodes on this machine gets its share of the cores, but at least two
/// workers: workers beyond the cores that run them only wake and steal from each other
/// (one worker per node saved about a tenth of a write's CPU with three nodes on two
/// cores), but a node with one worker sends no heartbeat while that worker applies a
/// large batch, and under load that let a follower start an election.
fn runtime_threads(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(RUNTIME_THREADS_MIN)
}

/// The fewest runtime workers `hanse cluster up` gives a node (see [`runtime_threads`]).
const RUNTIME_THREADS_MIN: usize = 2;

/// Writes a node's configuration; `tables` are its TOML tables (`[balance]`,
/// `[[initial_peers]]`; no peers for a node that joins a running cluster).
fn write_config(dir: &Path, node: &NodeSettings, tables: &str) -> Result<()> {
    let NodeSettings {
        id,
        region,
        addrs: (listen, advertise),
        http,
        bootstrap,
        ingest_region,
        latency,
        certs,
        runtime_threads,
    } = node;
    let data_dir = dir.join(format!("node{id}"));
    let security = match certs {
        Some(certs) => format!(
            "certs_dir = {}",
            toml::Value::from(certs.display().to_string())
        ),
        None => "insecure = true".to_string(),
    };
    let config = format!(
        "# Written by `hanse cluster`.\nnode_id = {id}\nregion = \"{region}\"\nlisten_addr = \"{listen}\"\nadvertise_addr = \"{advertise}\"\nhttp_addr = \"{http}\"\ndata_dir = \"{}\"\n{security}\nbootstrap = {bootstrap}\ningest_region = \"{ingest_region}\"\nlatency = \"{latency}\"\nruntime_threads = {runtime_threads}\n\n{tables}",
        data_dir
            .canonicalize()
            .unwrap_or(data_dir.clone())
            .display(),
    );
    fs::write(config_path(dir, *id), config)?;
    Ok(())
}

/// The pid of node `id` if its process is alive and is that node's server.
fn running_pid(dir: &Path, id: u64) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_path(dir, id))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let config = config_path(dir, id);
    let ours = String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy());
    ours.then_some(pid)
}

/// A `--latency` specification, checked.
fn latency_spec(spec: &str) -> Result<LatencyMatrix, String> {
    LatencyMatrix::parse(spec, parse_duration).map_err(|e| e.to_string())
}

/// A `--balance` (or `--ingest`, `--raft`) KEY=VALUE as the TOML line `KEY = VALUE` (a VALUE that is no TOML value
/// is quoted as a string).
fn setting(setting: &str) -> Result<String, String> {
    let (key, value) = setting
        .split_once('=')
        .ok_or_else(|| format!("{setting:?} is not KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("{key:?} is not a setting name"));
    }
    let value = match format!("v = {value}").parse::<toml::Table>() {
        Ok(_) => value.to_string(),
        Err(_) => toml::Value::String(value.to_string()).to_string(),
    };
    Ok(format!("{key} = {value}"))
}

/// The `[balance]` section the options ask for (empty: the node's defaults).
fn balance_section(
    split_size: Option<u64>,
    cool_down: Option<u64>,
    preferred_leader_region: Option<String>,
    settings: &[String],
) -> String {
    let mut lines = Vec::new();
    if let Some(split) = split_size {
        lines.push(format!("split_size_bytes = {split}"));
        lines.push(format!("merge_size_bytes = {}", split / 8));
    }
    if let Some(secs) = cool_down {
        lines.push(format!("cool_down_secs = {secs}"));
    }
    if let Some(region) = preferred_leader_region {
        lines.push(format!("preferred_leader_region = \"{region}\""));
    }
    lines.extend_from_slice(settings);
    section("balance", &lines)
}

/// The TOML table `[name]` of `lines` (nothing without lines).
fn section(name: &str, lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    format!("[{name}]\n{}\n\n", lines.join("\n"))
}

/// The regions `hanse cluster up` assigns to its nodes in turn by default.
pub const DEFAULT_REGIONS: [&str; 3] = ["eu-hamburg", "ap-china", "au-sydney"];

/// Creates a cluster in `dir` with one node per entry of `regions` (in that region),
/// listening on `port`, with `tables` as the nodes' extra TOML tables (`[balance]`...)
/// and `latency` between regions, secure with the certificates in `certs` (default
/// `dir/certs`, made when missing); starts it and returns its endpoints. A directory that
/// already holds a cluster is refused.
pub fn up_new(
    dir: &Path,
    regions: &[String],
    port: u16,
    tables: &str,
    latency: &LatencyMatrix,
    certs: Option<PathBuf>,
) -> Result<Vec<String>> {
    ensure!(
        !config_path(dir, 1).exists(),
        "{} already holds a cluster; give a new directory",
        dir.display()
    );
    let layout = Layout {
        nodes: regions.len() as u64,
        regions,
        ports: Ports::plain(port)?,
        tables,
        ingest_region: "eu-hamburg",
        latency,
        security: Security::Certs(certs),
    };
    up(dir, &layout, Duration::from_secs(30))?;
    Ok(configs(&dir.canonicalize()?)?
        .iter()
        .map(NodeConfig::advertised)
        .collect())
}

/// How the commands reach the local cluster in `dir` (see [`cluster_tls`]).
pub fn tls_of(dir: &Path) -> Result<Credentials> {
    cluster_tls(dir, &configs(dir)?)
}

fn up(dir: &Path, layout: &Layout, wait: Duration) -> Result<()> {
    if !config_path(dir, 1).exists() {
        create(dir, layout)?;
    }
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let configs = configs(&dir)?;
    let mut started = Vec::new();
    for config in &configs {
        if running_pid(&dir, config.node_id).is_none() {
            spawn_node(&dir, config.node_id)?;
            started.push(config.node_id);
        }
    }
    let endpoints: Vec<String> = configs.iter().map(NodeConfig::advertised).collect();
    if let Err(e) = wait_until_serving(&dir, &configs, &endpoints, wait) {
        // A failed start leaves nothing running that it started.
        stop_nodes(&dir, &started);
        return Err(e);
    }
    println!("cluster in {} is serving", dir.display());
    for config in &configs {
        let http = config
            .http_addr
            .map(|addr| format!("  http {addr}"))
            .unwrap_or_default();
        println!(
            "  node {} {:<12} {}{http}",
            config.node_id,
            config.region,
            config.advertised()
        );
    }
    println!("endpoints: {}", endpoints.join(","));
    let http: Vec<String> = configs
        .iter()
        .filter_map(|c| c.http_addr.map(|addr| addr.to_string()))
        .collect();
    if !http.is_empty() {
        println!("http: {}", http.join(","));
    }
    Ok(())
}

/// Starts node `id`'s server process, its output appended to `node<id>.log`.
fn spawn_node(dir: &Path, id: u64) -> Result<std::process::Child> {
    let exe = std::env::current_exe().context("locating the hanse binary")?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("node{id}.log")))?;
    let child = Command::new(&exe)
        .arg("server")
        .arg("--config")
        .arg(config_path(dir, id))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in the launching shell does not reach it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting node {id}"))?;
    fs::write(pid_path(dir, id), child.id().to_string())?;
    Ok(child)
}

fn add_node(dir: &Path, region: Option<String>, learner: bool, json: bool) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let configs = configs(&dir)?;
    let members: Vec<String> = configs.iter().map(NodeConfig::advertised).collect();
    // Ids are never reused: a removed node's data directory stays behind under its id.
    let id = (1..=NODES_MAX)
        .find(|&id| !config_path(&dir, id).exists() && !removed_config_path(&dir, id).exists())
        .context("the cluster directory has no free node id")?;
    let ports = Ports::of(&configs[0])?;
    let (listen, addr) = ports.addrs(id);
    let tls = cluster_tls(&dir, &configs)?;
    let certs = configs[0]
        .certs_dir
        .clone()
        .filter(|_| !configs[0].insecure);
    if let Some(certs) = &certs {
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(host, _)| host);
        hanse_security::issue::create_local_cluster(
            &CertsDir::new(certs),
            &[(id, host.to_string())],
            &[],
        )?;
    }
    let region = region.unwrap_or_else(|| {
        let regions: Vec<&str> = configs.iter().map(|c| c.region.as_str()).collect();
        let distinct: Vec<&str> = regions
            .iter()
            .enumerate()
            .filter(|(i, r)| !regions[..*i].contains(r))
            .map(|(_, r)| *r)
            .collect();
        distinct[(id as usize - 1) % distinct.len()].to_string()
    });
    // The same size heuristic as the others: any node may come to lead the meta shard.
    let b = &configs[0].balance;
    let preferred = b
        .preferred_leader_region
        .as_ref()
        .map(|r| format!("preferred_leader_region = \"{r}\"\n"))
        .unwrap_or_default();
    let placement: String = b
        .placement
        .iter()
        .map(|r| {
            format!(
                "[[balance.placement]]\nregion = \"{}\"\nvoters = {}\nlearners = {}\n",
                r.region, r.voters, r.learners
            )
        })
        .collect();
    let weights = b
        .planner_weights
        .as_ref()
        .map(|path| {
            format!(
                "planner_weights = {}\n",
                toml::Value::from(path.display().to_string())
            )
        })
        .unwrap_or_default();
    let balance = format!(
        "[balance]\nenabled = {}\nsplit_size_bytes = {}\nmerge_size_bytes = {}\ncold_ops_per_sec = {}\ncool_down_secs = {}\nplanner = \"{}\"\nplanner_node_capacity = {}\n{weights}{preferred}{placement}\n",
        b.enabled,
        b.split_size_bytes,
        b.merge_size_bytes,
        b.cold_ops_per_sec,
        b.cool_down_secs,
        b.planner.name(),
        b.planner_node_capacity,
    );
    let latency = configs[0]
        .latency_matrix()
        .context("node 1's config field `latency`")?;
    let node = NodeSettings {
        id,
        region: &region,
        addrs: (listen.clone(), addr.clone()),
        http: ports.http_addr(id),
        bootstrap: false,
        ingest_region: &configs[0].ingest_region,
        latency: &latency,
        certs: certs.as_deref(),
        runtime_threads: runtime_threads(configs.len() + 1),
    };
    let i = &configs[0].ingest;
    let ingest = format!(
        "[ingest]\nenabled = {}\nmax_delay_ms = {}\nmax_batch = {}\nqueue_max = {}\n\n",
        i.enabled, i.max_delay_ms, i.max_batch, i.queue_max
    );
    write_config(&dir, &node, &format!("{balance}{ingest}"))?;
    let mut child = spawn_node(&dir, id)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !accepts(&listen) {
        ensure!(
            child.try_wait()?.is_none(),
            "node {id} exited (see {}/node{id}.log)",
            dir.display()
        );
        ensure!(
            Instant::now() < deadline,
            "node {id} did not start listening within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let request = proto::AddNodeRequest {
        node_id: id,
        addr: addr.clone(),
        region: region.clone(),
        learner,
        shard_ids: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let changed = runtime
        .block_on(crate::admin::first_answer(&members, async |endpoint| {
            crate::admin::add_node(endpoint, &tls, request.clone()).await
        }))
        .with_context(|| format!("adding node {id} to the cluster"))?;
    if !json {
        println!("node {id} ({region}) at {addr} joined");
    }
    crate::admin::print_changed(&changed, json);
    Ok(())
}

fn start(dir: &Path, node: u64) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    ensure!(
        config_path(&dir, node).exists(),
        "{} holds no node {node}",
        dir.display()
    );
    let pid = match running_pid(&dir, node) {
        Some(pid) => pid,
        None => spawn_node(&dir, node)?.id() as i32,
    };
    println!("node {node} runs as pid {pid}");
    Ok(())
}

fn remove_node(dir: &Path, node: u64, json: bool) -> Result<()> {
    let configs = configs(dir)?;
    ensure!(
        configs.iter().any(|c| c.node_id == node),
        "{} holds no node {node}",
        dir.display()
    );
    // Ask the other nodes: the removed one may be down.
    let others: Vec<String> = configs
        .iter()
        .filter(|c| c.node_id != node)
        .map(NodeConfig::advertised)
        .collect();
    ensure!(
        !others.is_empty(),
        "node {node} is the only node; use `cluster down`"
    );
    let node_addr = configs
        .iter()
        .find(|c| c.node_id == node)
        .map(NodeConfig::advertised)
        .expect("checked above");
    let tls = cluster_tls(dir, &configs)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let changed = runtime
        .block_on(remove_everywhere(node, &node_addr, &others, &tls))
        .with_context(|| format!("removing node {node} from the cluster"))?;
    if let Some(pid) = running_pid(dir, node) {
        signal(pid, libc::SIGTERM);
    }
    let _ = fs::remove_file(pid_path(dir, node));
    fs::rename(config_path(dir, node), removed_config_path(dir, node))?;
    if !json {
        println!("node {node} left the cluster and was stopped");
    }
    crate::admin::print_changed(&changed, json);
    Ok(())
}

/// How long `cluster remove-node` keeps removing a node from the shards that still count
/// it (ones a split made meanwhile, ones whose leader was being elected) before it gives
/// up and says which.
const REMOVE_NODE_WAIT: Duration = Duration::from_secs(60);

/// Removes `node` from every shard that counts it as a replica, until none does. Asking
/// one node to remove it from "every shard" reaches only the shards that node holds: with
/// more nodes than replicas per shard, or a shard split off meanwhile, the removed node
/// would stay a voter of the others, and each of those groups a voter short once it is
/// stopped (three such removals left a five-voter group without a quorum in a chaos run).
async fn remove_everywhere(
    node: u64,
    node_addr: &str,
    others: &[String],
    tls: &Credentials,
) -> Result<Vec<proto::ShardDescriptor>> {
    let deadline = Instant::now() + REMOVE_NODE_WAIT;
    let mut changed = Vec::new();
    let mut refusals = std::collections::BTreeMap::new();
    loop {
        let pending = match shards_counting(node, node_addr, others, tls).await {
            Ok(pending) if pending.is_empty() => return Ok(changed),
            Ok(pending) => pending,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => Vec::new(),
        };
        if Instant::now() >= deadline {
            let shards: Vec<String> = pending
                .iter()
                .map(|(id, _)| match refusals.get(id) {
                    Some(why) => format!("{id} (last refusal: {why:#})"),
                    None => id.to_string(),
                })
                .collect();
            bail!(
                "node {node} is still a replica of shard(s) {} after {REMOVE_NODE_WAIT:?}",
                shards.join(", ")
            );
        }
        for (shard, leader) in pending {
            // Its leader first, then whoever holds it (they forward to the leader).
            let targets: Vec<String> = leader.into_iter().chain(others.iter().cloned()).collect();
            let request = proto::RemoveNodeRequest {
                node_id: node,
                shard_ids: vec![shard],
            };
            // A refusal (no leader yet, already removed) is judged by the next look.
            match crate::admin::first_answer(&targets, async |endpoint| {
                crate::admin::remove_node(endpoint, tls, request.clone()).await
            })
            .await
            {
                Ok(done) => changed.extend(done),
                Err(why) => {
                    refusals.insert(shard, why);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The shards that still count `node` as a replica, each with its leader's address when
/// known: those the cluster's table lists it in (the meta shard's, which the nodes'
/// reports bring up to date each second), and those the node itself, when it answers,
/// says it belongs to and the table does not already show without it.
async fn shards_counting(
    node: u64,
    node_addr: &str,
    others: &[String],
    tls: &Credentials,
) -> Result<Vec<(u64, Option<String>)>> {
    let table = crate::admin::first_answer(others, async |endpoint| {
        Ok(admin(endpoint, tls)?
            .shards(proto::ShardsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?
            .into_inner()
            .shards)
    })
    .await?;
    let own = match admin(node_addr, tls) {
        Ok(mut client) => client
            .status(proto::StatusRequest {})
            .await
            .map(|s| s.into_inner().shards)
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let counts = |d: &proto::ShardDescriptor| d.replicas.iter().any(|r| r.node == node);
    let conf_ver = |d: &proto::ShardDescriptor| d.epoch.as_ref().map_or(0, |e| e.conf_ver);
    let leader =
        |s: &proto::ShardStatus| (!s.leader_addr.is_empty()).then(|| s.leader_addr.clone());
    let mut pending = std::collections::BTreeMap::new();
    for status in &table {
        if let Some(d) = &status.descriptor
            && counts(d)
        {
            pending.insert(d.id, leader(status));
        }
    }
    for status in &own {
        let Some(d) = status.descriptor.as_ref().filter(|d| counts(d)) else {
            continue;
        };
        let removed_since = table
            .iter()
            .filter_map(|t| t.descriptor.as_ref())
            .any(|t| t.id == d.id && !counts(t) && conf_ver(t) >= conf_ver(d));
        if !removed_since {
            pending.entry(d.id).or_insert_with(|| leader(status));
        }
    }
    Ok(pending.into_iter().collect())
}

fn wait_until_serving(
    dir: &Path,
    configs: &[NodeConfig],
    endpoints: &[String],
    wait: Duration,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tls = cluster_tls(dir, configs)?;
    let client = Client::new(
        endpoints,
        ClientOptions {
            request_timeout: wait,
            ..tls.options()
        },
    )?;
    let started = Instant::now();
    // A linearizable read needs an elected leader that has applied its log.
    let served = runtime.block_on(client.get(b"hanse-cluster-up-probe"));
    // A node that exited (say, its address was taken by another cluster, which may then
    // be the one that answered) fails the start either way.
    let dead: Vec<String> = configs
        .iter()
        .filter(|c| running_pid(dir, c.node_id).is_none())
        .map(|c| {
            format!(
                "node {} (see {}/node{}.log)",
                c.node_id,
                dir.display(),
                c.node_id
            )
        })
        .collect();
    if !dead.is_empty() {
        bail!("nodes exited: {}", dead.join(", "));
    }
    if let Err(e) = served {
        bail!(
            "the cluster did not serve within {:?}: {e}",
            started.elapsed()
        );
    }
    // The routing table fills from the leaders' first reports, a second or so after
    // they are elected; `hanse admin shards` should show the shards right after `up`.
    let deadline = started + wait;
    loop {
        let listed = runtime.block_on(async {
            for endpoint in endpoints {
                let Ok(mut admin) = admin(endpoint, &tls) else {
                    continue;
                };
                if let Ok(shards) = admin.shards(proto::ShardsRequest {}).await {
                    return shards.into_inner().shards.len();
                }
            }
            0
        });
        if listed >= 2 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the cluster serves, but its routing table stayed empty for {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(dir: &Path, json: bool) -> Result<()> {
    let configs = configs(dir)?;
    let tls = cluster_tls(dir, &configs)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !json {
        println!(
            "{:<5} {:<14} {:<22} {:<8} state",
            "node", "region", "address", "pid"
        );
    }
    for config in &configs {
        let pid = running_pid(dir, config.node_id);
        let state = match pid {
            None => "down",
            Some(_) if !accepts(&config.listen_addr.to_string()) => "starting",
            Some(_) if runtime.block_on(leads(&config.advertised(), &tls)) => "leader",
            Some(_) => "follower",
        };
        let pid_text = pid.map_or("-".to_string(), |p| p.to_string());
        if json {
            let line = serde_json::json!({
                "id": config.node_id,
                "region": config.region,
                "addr": config.advertised(),
                "pid": pid,
                "state": state,
            });
            println!("{line}");
        } else {
            println!(
                "{:<5} {:<14} {:<22} {:<8} {state}",
                config.node_id,
                config.region,
                config.advertised(),
                pid_text
            );
        }
    }
    Ok(())
}

fn accepts(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
}

/// Whether the node answers a linearizable read itself, i.e. leads the first shard.
async fn leads(addr: &str, tls: &Credentials) -> bool {
    let Ok(channel) = hanse_client::connect(addr, tls.tls.clone()) else {
        return false;
    };
    let mut kv = proto::kv_client::KvClient::new(channel);
    let request = proto::GetRequest {
        route: None,
        key: b"hanse-cluster-status-probe".to_vec(),
        max_staleness_ms: 0,
    };
    let answer = tokio::time::timeout(Duration::from_secs(2), kv.get(request)).await;
    matches!(answer, Ok(Ok(response)) if response.get_ref().error.is_none())
}

fn down(dir: &Path) -> Result<()> {
    let stopped = stop_all(dir)?;
    println!("stopped {stopped} node(s); data kept in {}", dir.display());
    Ok(())
}

/// Stops every running node of the cluster in `dir` (SIGTERM, SIGKILL after five
/// seconds); answers how many ran.
pub fn stop_all(dir: &Path) -> Result<usize> {
    let ids: Vec<u64> = configs(dir)?.iter().map(|c| c.node_id).collect();
    Ok(stop_nodes(dir, &ids))
}

/// Stops the running nodes among `ids` of the cluster in `dir` (SIGTERM, SIGKILL after
/// five seconds); answers how many ran.
fn stop_nodes(dir: &Path, ids: &[u64]) -> usize {
    let mut stopping = Vec::new();
    for &id in ids {
        if let Some(pid) = running_pid(dir, id) {
            signal(pid, libc::SIGTERM);
            stopping.push((id, pid));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && stopping
            .iter()
            .any(|(id, _)| running_pid(dir, *id).is_some())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (id, pid) in &stopping {
        if running_pid(dir, *id).is_some() {
            signal(*pid, libc::SIGKILL);
        }
        let _ = fs::remove_file(pid_path(dir, *id));
    }
    stopping.len()
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; the pid was checked to be our node's server.
    unsafe {
        libc::kill(pid, signal);
    }
}
