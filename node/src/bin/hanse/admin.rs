//! `hanse admin status|shards --endpoints ...`: what a node knows about itself and its
//! shards, for people or (with `--json`) for scripts.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hanse_client::proto;
use hanse_client::proto::admin_client::AdminClient;
use serde_json::json;

use crate::display;

#[derive(Args)]
pub struct AdminArgs {
    /// The node to ask, HOST:PORT (the first of a comma-separated list that answers).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// JSON for scripts instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    op: AdminOp,
}

#[derive(Subcommand)]
enum AdminOp {
    /// The node's id, region and address, and its shards.
    Status,
    /// Every shard the node holds: id, range, epoch, leader, replicas, applied index.
    Shards,
}

pub fn run(args: AdminArgs) -> Result<()> {
    anyhow::ensure!(!args.endpoints.is_empty(), "give --endpoints HOST:PORT,...");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut last_error = None;
        for endpoint in &args.endpoints {
            match ask(endpoint, &args.op, args.json).await {
                Ok(()) => return Ok(()),
                Err(e) => last_error = Some(e.context(format!("asking {endpoint}"))),
            }
        }
        Err(last_error.expect("at least one endpoint was tried"))
    })
}

async fn ask(endpoint: &str, op: &AdminOp, json: bool) -> Result<()> {
    let mut admin = AdminClient::connect(format!("http://{endpoint}")).await?;
    let (node, shards) = match op {
        AdminOp::Status => {
            let status = admin.status(proto::StatusRequest {}).await?.into_inner();
            (
                Some((status.node_id, status.region, status.addr)),
                status.shards,
            )
        }
        AdminOp::Shards => (
            None,
            admin
                .shards(proto::ShardsRequest {})
                .await?
                .into_inner()
                .shards,
        ),
    };
    if json {
        let shards: Vec<_> = shards.iter().map(shard_json).collect();
        let out = match node {
            Some((id, region, addr)) => {
                json!({"node_id": id, "region": region, "addr": addr, "shards": shards})
            }
            None => json!({ "shards": shards }),
        };
        println!("{out}");
        return Ok(());
    }
    if let Some((id, region, addr)) = node {
        println!("node {id} in {region} at {addr}");
    }
    println!(
        "{:<6} {:<28} {:<8} {:<10} {:<22} {:<10} replicas",
        "shard", "range", "epoch", "role", "leader", "applied"
    );
    for shard in &shards {
        let d = shard.descriptor.clone().unwrap_or_default();
        let epoch = d.epoch.unwrap_or_default();
        let replicas: Vec<String> = d
            .replicas
            .iter()
            .map(|r| format!("{}@{}", r.node, r.region))
            .collect();
        println!(
            "{:<6} {:<28} {:<8} {:<10} {:<22} {:<10} {}",
            d.id,
            display::range(&d.start, &d.end),
            format!("{}/{}", epoch.version, epoch.conf_ver),
            shard.role,
            format!("{} {}", shard.leader_node, shard.leader_addr),
            shard.applied_index,
            replicas.join(",")
        );
    }
    Ok(())
}

fn shard_json(shard: &proto::ShardStatus) -> serde_json::Value {
    let d = shard.descriptor.clone().unwrap_or_default();
    let epoch = d.epoch.unwrap_or_default();
    json!({
        "id": d.id,
        "start": d.start.escape_ascii().to_string(),
        "end": d.end.escape_ascii().to_string(),
        "epoch": {"version": epoch.version, "conf_ver": epoch.conf_ver},
        "role": shard.role,
        "leader_node": shard.leader_node,
        "leader_addr": shard.leader_addr,
        "applied_index": shard.applied_index,
        "last_log_index": shard.last_log_index,
        "replicas": d.replicas.iter().map(|r| json!({
            "node": r.node,
            "region": r.region,
            "role": if r.role == proto::ReplicaRole::Learner as i32 { "learner" } else { "voter" },
        })).collect::<Vec<_>>(),
    })
}
