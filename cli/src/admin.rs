//! `hanse admin status|shards|split|merge|add-node|remove-node|change-role|transfer-leader --endpoints ...`: what
//! a node knows about itself and its shards, and membership changes, for people or (with
//! `--json`) for scripts.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hanse_client::proto;
use serde_json::json;

use crate::connect::{Credentials, Target, admin};
use crate::display;

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    op: AdminOp,
}

#[derive(Subcommand)]
enum AdminOp {
    /// The node's id, region and address, and its shards.
    Status,
    /// Every shard the node holds: id, range, epoch, leader, replicas, applied index.
    Shards,
    /// Adds a running, empty node (started without `bootstrap` and `initial_peers`) to
    /// shards: it joins as a learner, catches up, and becomes a voter.
    AddNode {
        #[arg(long)]
        node_id: u64,
        /// The address the new node advertises, HOST:PORT.
        #[arg(long)]
        addr: String,
        #[arg(long)]
        region: String,
        /// Keep it a learner (a non-voting copy, e.g. in the recovery region).
        #[arg(long)]
        learner: bool,
        /// Only these shards (default: every shard of the node asked).
        #[arg(long = "shard", value_name = "ID")]
        shards: Vec<u64>,
    },
    /// Removes a node's replicas from shards; the node deletes its copies.
    RemoveNode {
        #[arg(long)]
        node_id: u64,
        /// Only these shards (default: every shard of the node asked that the node is a
        /// replica of; `hanse cluster remove-node` removes it from every shard).
        #[arg(long = "shard", value_name = "ID")]
        shards: Vec<u64>,
    },
    /// Splits the shard holding KEY at KEY: it keeps the keys before, a new shard with the
    /// same replicas takes KEY and after. Returns once the new shard has a leader.
    Split {
        /// The first key of the new shard.
        key: String,
    },
    /// Merges SHARD with its right neighbour (both need the same replicas) into one shard
    /// that keeps SHARD's id. Running it again finishes an interrupted merge.
    Merge {
        /// The left shard of the pair.
        shard: u64,
    },
    /// Makes a shard's replica on a node a voter or a learner.
    ChangeRole {
        #[arg(long, value_name = "ID")]
        shard: u64,
        #[arg(long, value_name = "NODE")]
        node: u64,
        #[arg(long, value_parser = ["voter", "learner"])]
        role: String,
    },
    /// Readies the node asked to stop (Kubernetes' preStop): it reports itself not ready,
    /// takes no leadership any more, and hands every leadership it holds to another
    /// voter. Lasts until the node restarts.
    Drain {
        /// How long to keep handing leaderships over.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        timeout: u64,
    },
    /// Moves a shard's leadership to its voter on another node.
    TransferLeader {
        #[arg(long, value_name = "ID")]
        shard: u64,
        #[arg(long, value_name = "NODE")]
        to: u64,
    },
}

pub fn run(args: AdminArgs) -> Result<()> {
    let tls = args.target.credentials()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(first_answer(&args.target.endpoints, async |endpoint| {
        ask(endpoint, &tls, &args.op, args.target.json).await
    }))
}

/// Runs `call` against each endpoint in turn until one answers.
pub async fn first_answer<T>(
    endpoints: &[String],
    call: impl AsyncFn(&str) -> Result<T>,
) -> Result<T> {
    let mut last_error = None;
    for endpoint in endpoints {
        match call(endpoint).await {
            Ok(answer) => return Ok(answer),
            Err(e) => last_error = Some(e.context(format!("asking {endpoint}"))),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no node to ask")))
}

/// The node's answer as one line: its message, then the gRPC code.
fn refused(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{} ({:?})", status.message(), status.code())
}

/// Adds a node to shards through the node at `endpoint`; returns the changed shards.
pub async fn add_node(
    endpoint: &str,
    tls: &Credentials,
    request: proto::AddNodeRequest,
) -> Result<Vec<proto::ShardDescriptor>> {
    let mut admin = admin(endpoint, tls)?;
    Ok(admin
        .add_node(request)
        .await
        .map_err(refused)?
        .into_inner()
        .shards)
}

/// Removes a node from shards through the node at `endpoint`; returns the changed shards.
pub async fn remove_node(
    endpoint: &str,
    tls: &Credentials,
    request: proto::RemoveNodeRequest,
) -> Result<Vec<proto::ShardDescriptor>> {
    let mut admin = admin(endpoint, tls)?;
    Ok(admin
        .remove_node(request)
        .await
        .map_err(refused)?
        .into_inner()
        .shards)
}

/// Prints the shards a membership change produced.
pub fn print_changed(shards: &[proto::ShardDescriptor], json: bool) {
    for d in shards {
        let epoch = d.epoch.unwrap_or_default();
        if json {
            println!("{}", descriptor_json(d));
        } else {
            println!(
                "shard {} {} epoch {}/{}: {}",
                d.id,
                display::range(&d.start, &d.end),
                epoch.version,
                epoch.conf_ver,
                replicas_text(d)
            );
        }
    }
}

fn replicas_text(d: &proto::ShardDescriptor) -> String {
    d.replicas
        .iter()
        .map(|r| {
            let learner = if r.role == proto::ReplicaRole::Learner as i32 {
                " (learner)"
            } else {
                ""
            };
            format!("{}@{}{learner}", r.node, r.region)
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn ask(endpoint: &str, tls: &Credentials, op: &AdminOp, json: bool) -> Result<()> {
    let mut admin = admin(endpoint, tls)?;
    let (node, shards) = match op {
        AdminOp::AddNode {
            node_id,
            addr,
            region,
            learner,
            shards,
        } => {
            let request = proto::AddNodeRequest {
                node_id: *node_id,
                addr: addr.clone(),
                region: region.clone(),
                learner: *learner,
                shard_ids: shards.clone(),
            };
            print_changed(&add_node(endpoint, tls, request).await?, json);
            return Ok(());
        }
        AdminOp::RemoveNode { node_id, shards } => {
            let request = proto::RemoveNodeRequest {
                node_id: *node_id,
                shard_ids: shards.clone(),
            };
            print_changed(&remove_node(endpoint, tls, request).await?, json);
            return Ok(());
        }
        AdminOp::Split { key } => {
            let request = proto::SplitRequest {
                key: key.as_bytes().to_vec(),
            };
            let split = admin.split(request).await.map_err(refused)?.into_inner();
            let halves: Vec<proto::ShardDescriptor> =
                [split.left, split.right].into_iter().flatten().collect();
            print_changed(&halves, json);
            return Ok(());
        }
        AdminOp::Merge { shard } => {
            let request = proto::MergeRequest { shard_id: *shard };
            let merged = admin.merge(request).await.map_err(refused)?.into_inner();
            print_changed(&merged.merged.into_iter().collect::<Vec<_>>(), json);
            return Ok(());
        }
        AdminOp::ChangeRole { shard, node, role } => {
            let role = if role == "learner" {
                proto::ReplicaRole::Learner
            } else {
                proto::ReplicaRole::Voter
            };
            let request = proto::ChangeRoleRequest {
                shard_id: *shard,
                node_id: *node,
                role: role as i32,
            };
            let changed = admin
                .change_role(request)
                .await
                .map_err(refused)?
                .into_inner();
            print_changed(&changed.shard.into_iter().collect::<Vec<_>>(), json);
            return Ok(());
        }
        AdminOp::Drain { timeout } => {
            let request = proto::DrainRequest {
                timeout_ms: timeout.saturating_mul(1000),
            };
            let drained = admin.drain(request).await.map_err(refused)?.into_inner();
            if json {
                println!("{}", json!({"moved": drained.moved, "kept": drained.kept}));
            } else {
                println!("leaderships handed over: shards {:?}", drained.moved);
                if !drained.kept.is_empty() {
                    println!(
                        "still led here when the time was up: shards {:?}",
                        drained.kept
                    );
                }
            }
            anyhow::ensure!(
                drained.kept.is_empty(),
                "the node still leads shards {:?}",
                drained.kept
            );
            return Ok(());
        }
        AdminOp::TransferLeader { shard, to } => {
            let request = proto::TransferLeaderRequest {
                shard_id: *shard,
                to_node: *to,
            };
            admin.transfer_leader(request).await.map_err(refused)?;
            if json {
                println!("{}", json!({"shard": shard, "leader": to}));
            } else {
                println!("shard {shard} is now led by node {to}");
            }
            return Ok(());
        }
        AdminOp::Status => {
            let mut status = admin
                .status(proto::StatusRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let shards = std::mem::take(&mut status.shards);
            (Some(status), shards)
        }
        AdminOp::Shards => {
            // The meta shard's leadership may move while it answers: ask again a few
            // times rather than fail a read.
            let mut attempts = 0;
            let shards = loop {
                match admin.shards(proto::ShardsRequest {}).await {
                    Ok(answer) => break answer.into_inner().shards,
                    Err(status) if status.code() == tonic::Code::Unavailable && attempts < 10 => {
                        attempts += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(status) => return Err(refused(status)),
                }
            };
            (None, shards)
        }
    };
    if json {
        let shards: Vec<_> = shards.iter().map(shard_json).collect();
        let out = match node {
            Some(status) => {
                json!({
                    "node_id": status.node_id,
                    "region": status.region,
                    "addr": status.addr,
                    "storage_error": (!status.storage_error.is_empty()).then_some(&status.storage_error),
                    "certificate_expires_unix_ms": (status.certificate_expires_unix_ms != 0).then_some(status.certificate_expires_unix_ms),
                    "shards": shards,
                    "round_trips": status.round_trips.iter().map(|t| json!({
                        "node_id": t.node_id,
                        "region": t.region,
                        "micros": t.micros,
                    })).collect::<Vec<_>>(),
                    "planner": status.planner.as_ref().map(planner_json),
                    "ingest": status.ingest.as_ref().map(|i| json!({
                        "writes": i.writes,
                        "batches": i.batches,
                        "largest_batch": i.largest_batch,
                        "waited_micros": i.waited_micros,
                        "refused_busy": i.refused_busy,
                        "forwarded_batches": i.forwarded_batches,
                    })),
                })
            }
            None => json!({ "shards": shards }),
        };
        println!("{out}");
        return Ok(());
    }
    match node {
        Some(status) => {
            println!(
                "node {} in {} at {}",
                status.node_id, status.region, status.addr
            );
            if !status.storage_error.is_empty() {
                println!(
                    "STORAGE FAILED, every write is refused: {}",
                    status.storage_error
                );
            }
            println!("{}", certificate_line(status.certificate_expires_unix_ms));
            print_round_trips(&status.round_trips);
            print_local(&shards);
            match &status.ingest {
                Some(ingest) => print_ingest(ingest),
                None => println!("\ningest: writes go straight to the shard leaders here"),
            }
            match &status.planner {
                Some(planner) => print_planner(planner),
                None => println!("\nplanner: runs on the meta shard's leader, not here"),
            }
        }
        None => print_cluster(&shards),
    }
    Ok(())
}

/// The shards as one node holds them: its role and how far it has applied.
fn print_local(shards: &[proto::ShardStatus]) {
    println!(
        "{:<20} {:<24} {:<8} {:<10} {:<22} {:<9} replicas",
        "shard", "range", "epoch", "role", "leader", "applied"
    );
    for shard in shards {
        let d = shard.descriptor.clone().unwrap_or_default();
        let epoch = d.epoch.unwrap_or_default();
        println!(
            "{:<20} {:<24} {:<8} {:<10} {:<22} {:<9} {}",
            d.id,
            display::range(&d.start, &d.end),
            format!("{}/{}", epoch.version, epoch.conf_ver),
            shard.role,
            format!("{} {}", shard.leader_node, shard.leader_addr),
            shard.applied_index,
            replicas_text(&d)
        );
    }
}

/// How the ingest actor batched writes.
fn print_ingest(ingest: &proto::IngestStatus) {
    let per_batch = |total: u64| total as f64 / ingest.batches.max(1) as f64;
    println!(
        "\ningest: {} writes in {} log entries ({:.1} per entry, at most {}; {} sent to \
         leaders elsewhere), {:.0} µs mean wait, {} refused busy",
        ingest.writes,
        ingest.batches,
        per_batch(ingest.writes),
        ingest.largest_batch,
        ingest.forwarded_batches,
        ingest.waited_micros as f64 / ingest.writes.max(1) as f64,
        ingest.refused_busy
    );
}

/// What the planner decided lately and why.
fn print_planner(planner: &proto::PlannerStatus) {
    println!(
        "\nplanner: {} mode, {} ticks; the last decided by {}",
        planner.mode, planner.ticks, planner.acting
    );
    if !planner.fallback.is_empty() {
        println!(
            "  fallback to the heuristic ({} ticks so far): {}",
            planner.fallback_ticks, planner.fallback
        );
    }
    for d in &planner.decisions {
        let features: Vec<String> = d.features.iter().map(|x| format!("{x:.2}")).collect();
        println!(
            "  tick {:>6} {:<16} {}  [{}]",
            d.tick,
            d.policy,
            d.action,
            features.join(" ")
        );
    }
    for action in &planner.shadow {
        println!("  the network would: {action}");
    }
    for refusal in &planner.refused {
        println!("  refused: {refusal}");
    }
    let between: Vec<String> = planner
        .region_latency
        .iter()
        .filter(|l| l.from < l.to)
        .map(|l| {
            let how = if l.measured { "measured" } else { "assumed" };
            format!("{}-{} {:.1} ms ({how})", l.from, l.to, l.one_way_ms)
        })
        .collect();
    if !between.is_empty() {
        println!("  one-way latency planned with: {}", between.join(", "));
    }
}

/// This node's measured round trip to each peer.
fn print_round_trips(trips: &[proto::PeerRoundTrip]) {
    if trips.is_empty() {
        println!("round trips: none measured yet (no peer called in the last 30 s)");
        return;
    }
    let each: Vec<String> = trips
        .iter()
        .map(|t| {
            format!(
                "node {} ({}) {:.1} ms",
                t.node_id,
                t.region,
                t.micros as f64 / 1_000.0
            )
        })
        .collect();
    println!(
        "round trips (Raft transport, smoothed): {}",
        each.join(", ")
    );
}

fn planner_json(planner: &proto::PlannerStatus) -> serde_json::Value {
    json!({
        "mode": planner.mode,
        "ticks": planner.ticks,
        "acting": planner.acting,
        "fallback": (!planner.fallback.is_empty()).then_some(&planner.fallback),
        "fallback_ticks": planner.fallback_ticks,
        "decisions": planner.decisions.iter().map(|d| json!({
            "tick": d.tick,
            "policy": d.policy,
            "action": d.action,
            "features": d.features,
        })).collect::<Vec<_>>(),
        "shadow": planner.shadow,
        "refused": planner.refused,
        "region_latency": planner.region_latency.iter().map(|l| json!({
            "from": l.from,
            "to": l.to,
            "one_way_ms": l.one_way_ms,
            "measured": l.measured,
        })).collect::<Vec<_>>(),
    })
}

/// Every shard of the cluster as the routing table has it: leader, size and load.
fn print_cluster(shards: &[proto::ShardStatus]) {
    println!(
        "{:<20} {:<24} {:<8} {:<16} {:>10} {:>9} {:>7} {:>7}  replicas",
        "shard", "range", "epoch", "leader", "size", "keys", "reads/s", "writes/s"
    );
    for shard in shards {
        let d = shard.descriptor.clone().unwrap_or_default();
        let epoch = d.epoch.unwrap_or_default();
        let load = shard.load.clone().unwrap_or_default();
        println!(
            "{:<20} {:<24} {:<8} {:<16} {:>10} {:>9} {:>7} {:>7}  {}",
            d.id,
            display::range(&d.start, &d.end),
            format!("{}/{}", epoch.version, epoch.conf_ver),
            format!("{}@{}", shard.leader_node, shard.leader_region),
            display::bytes(load.size_bytes),
            load.keys,
            load.reads_per_sec,
            load.writes_per_sec,
            replicas_text(&d)
        );
    }
}

fn descriptor_json(d: &proto::ShardDescriptor) -> serde_json::Value {
    let epoch = d.epoch.unwrap_or_default();
    json!({
        "id": d.id,
        "start": d.start.escape_ascii().to_string(),
        "end": d.end.escape_ascii().to_string(),
        "epoch": {"version": epoch.version, "conf_ver": epoch.conf_ver},
        "replicas": d.replicas.iter().map(|r| json!({
            "node": r.node,
            "region": r.region,
            "role": if r.role == proto::ReplicaRole::Learner as i32 { "learner" } else { "voter" },
        })).collect::<Vec<_>>(),
    })
}

fn shard_json(shard: &proto::ShardStatus) -> serde_json::Value {
    let mut out = descriptor_json(&shard.descriptor.clone().unwrap_or_default());
    out["role"] = json!(shard.role);
    out["leader_node"] = json!(shard.leader_node);
    out["leader_addr"] = json!(shard.leader_addr);
    out["applied_index"] = json!(shard.applied_index);
    out["last_log_index"] = json!(shard.last_log_index);
    out["leader_region"] = json!(shard.leader_region);
    let load = shard.load.clone().unwrap_or_default();
    out["load"] = json!({
        "size_bytes": load.size_bytes,
        "keys": load.keys,
        "reads_per_sec": load.reads_per_sec,
        "writes_per_sec": load.writes_per_sec,
        "bytes_written_per_sec": load.bytes_written_per_sec,
        "sampled_keys": load.sampled_keys.iter().map(|s| json!({
            "key": String::from_utf8_lossy(&s.key),
            "count": s.count,
        })).collect::<Vec<_>>(),
        "origins": load
            .origins
            .iter()
            .map(|o| (o.region.clone(), json!(o.per_sec)))
            .collect::<serde_json::Map<_, _>>(),
        "replica_lag": load.replica_lag,
    });
    out
}

/// How long the node's certificate has left, for people.
fn certificate_line(expires_unix_ms: u64) -> String {
    if expires_unix_ms == 0 {
        return "TLS: off (the node runs insecure: plaintext, nobody authenticated)".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match expires_unix_ms.checked_sub(now) {
        Some(left) => format!("TLS: its certificate expires in {} days", left / 86_400_000),
        None => {
            "TLS: its certificate HAS EXPIRED: rotate it (`hanse cert create-node --overwrite`)"
                .into()
        }
    }
}
