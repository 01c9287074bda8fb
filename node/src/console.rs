//! The web console on the HTTP port: a read-only page (`/`, its script and style built
//! into the binary) and the JSON it reads (`/api/cluster`: nodes, shards, the planner
//! and the balancing actions; `/api/heatmap`). Any node serves it: the data comes from the meta shard's leader
//! through the node's own Admin service, which forwards there. The page is static and
//! public; the data needs the role `monitor` (or a node's or `admin`'s certificate, or
//! a token of such a user, which the page sends from its address's `#token=`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hanse_proto::v1 as pb;
use serde::Serialize;
use tonic::Status;

use crate::knobs::NODE_LIVE_MS;
use crate::reporter::now_ms;
use crate::state::NodeState;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

pub(crate) async fn script() -> Response {
    page("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> Response {
    page("text/css; charset=utf-8", STYLE)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A key as the console shows it: printable ASCII as is, other bytes escaped; nothing
/// of it where the node redacts keys.
fn shown_key(state: &NodeState, key: &[u8]) -> String {
    match state.redact && !key.is_empty() {
        true => "(redacted)".into(),
        false => key.escape_ascii().to_string(),
    }
}

/// A failed call to the cluster, as the page shows it.
fn unavailable(status: Status) -> Response {
    let why = format!("the cluster did not answer: {}\n", status.message());
    (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
}

#[derive(Serialize)]
struct Node {
    id: u64,
    region: String,
    addr: String,
    /// It reported to the meta shard within the liveness window.
    live: bool,
    seconds_since_report: u64,
    leaders: usize,
    replicas: usize,
}

#[derive(Serialize)]
struct Replica {
    node: u64,
    region: String,
    role: &'static str,
}

#[derive(Serialize)]
struct Shard {
    id: u64,
    start: String,
    end: String,
    epoch: String,
    leader_node: u64,
    leader_region: String,
    replicas: Vec<Replica>,
    size_bytes: u64,
    keys: u64,
    reads_per_sec: u64,
    writes_per_sec: u64,
}

/// Everything the console shows but the heat map, from one call to the meta leader.
#[derive(Serialize)]
struct Cluster {
    served_by: u64,
    nodes: Vec<Node>,
    shards: Vec<Shard>,
    reads_per_sec: u64,
    writes_per_sec: u64,
    /// The planner on the meta shard's leader; none where it runs without one.
    planner: Option<Planner>,
    actions: Vec<Action>,
}

/// What the meta shard's leader kept: nodes, actions, the planner, and with `heat_map`
/// the heat map's columns.
async fn activity(state: &NodeState, heat_map: bool) -> Result<pb::ActivityResponse, Status> {
    let mut admin = state.peers.admin(&state.addr)?;
    let request = state.peers.request(pb::ActivityRequest { heat_map });
    Ok(admin.activity(request).await?.into_inner())
}

fn shard_of(state: &NodeState, status: &pb::ShardStatus) -> Shard {
    let d = status.descriptor.clone().unwrap_or_default();
    let epoch = d.epoch.unwrap_or_default();
    let load = status.load.clone().unwrap_or_default();
    Shard {
        id: d.id,
        start: shown_key(state, &d.start),
        end: shown_key(state, &d.end),
        epoch: format!("{}/{}", epoch.version, epoch.conf_ver),
        leader_node: status.leader_node,
        leader_region: status.leader_region.clone(),
        replicas: d
            .replicas
            .iter()
            .map(|r| Replica {
                node: r.node,
                region: r.region.clone(),
                role: match r.role == pb::ReplicaRole::Learner as i32 {
                    true => "learner",
                    false => "voter",
                },
            })
            .collect(),
        size_bytes: load.size_bytes,
        keys: load.keys,
        reads_per_sec: load.reads_per_sec,
        writes_per_sec: load.writes_per_sec,
    }
}

pub(crate) async fn cluster(State(state): State<Arc<NodeState>>) -> Response {
    let activity = match activity(&state, false).await {
        Ok(activity) => activity,
        Err(status) => return unavailable(status),
    };
    let statuses = &activity.shards;
    let shards: Vec<Shard> = statuses.iter().map(|s| shard_of(&state, s)).collect();
    let now = now_ms();
    let mut nodes: BTreeMap<u64, Node> = activity
        .nodes
        .iter()
        .map(|n| {
            let since = now.saturating_sub(n.reported_at_ms);
            let node = Node {
                id: n.node_id,
                region: n.region.clone(),
                addr: n.addr.clone(),
                live: since < NODE_LIVE_MS,
                seconds_since_report: since / 1000,
                leaders: 0,
                replicas: 0,
            };
            (n.node_id, node)
        })
        .collect();
    for shard in &shards {
        if let Some(node) = nodes.get_mut(&shard.leader_node) {
            node.leaders += 1;
        }
        for replica in &shard.replicas {
            if let Some(node) = nodes.get_mut(&replica.node) {
                node.replicas += 1;
            }
        }
    }
    Json(Cluster {
        served_by: state.node_id,
        reads_per_sec: shards.iter().map(|s| s.reads_per_sec).sum(),
        writes_per_sec: shards.iter().map(|s| s.writes_per_sec).sum(),
        nodes: nodes.into_values().collect(),
        shards,
        planner: activity.planner.map(planner_of),
        actions: activity.actions.into_iter().map(action_of).collect(),
    })
    .into_response()
}

#[derive(Serialize)]
struct Decision {
    tick: u64,
    policy: String,
    action: String,
    features: Vec<f32>,
}

#[derive(Serialize)]
struct Planner {
    mode: String,
    acting: String,
    fallback: String,
    ticks: u64,
    decisions: Vec<Decision>,
    refused: Vec<String>,
}

#[derive(Serialize)]
struct Action {
    unix_ms: u64,
    kind: String,
    shard_id: u64,
    decided_by: String,
    detail: String,
}

fn planner_of(p: pb::PlannerStatus) -> Planner {
    Planner {
        mode: p.mode,
        acting: p.acting,
        fallback: p.fallback,
        ticks: p.ticks,
        decisions: p
            .decisions
            .into_iter()
            .map(|d| Decision {
                tick: d.tick,
                policy: d.policy,
                action: d.action,
                features: d.features,
            })
            .collect(),
        refused: p.refused,
    }
}

fn action_of(a: pb::BalanceAction) -> Action {
    Action {
        unix_ms: a.unix_ms,
        kind: a.kind,
        shard_id: a.shard_id,
        decided_by: a.decided_by,
        detail: a.detail,
    }
}

/// The heat map on one key axis: a row per key range between the range boundaries any
/// column saw (in key order), a column per interval; a cell holds the requests per second
/// of the shard that held the row's keys then.
#[derive(Serialize)]
struct HeatMap {
    interval_ms: u64,
    /// Each row's first key, as shown.
    rows: Vec<String>,
    /// When each column's interval ended (Unix time, ms).
    times: Vec<u64>,
    /// Per column, per row.
    reads: Vec<Vec<u64>>,
    writes: Vec<Vec<u64>>,
}

/// Each row's (reads, writes) in `column`, for rows starting at `rows` (sorted).
fn cells(column: &pb::HeatColumn, rows: &[Vec<u8>]) -> (Vec<u64>, Vec<u64>) {
    let ranges = &column.ranges;
    let (mut reads, mut writes) = (
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    let mut at = 0;
    for key in rows {
        while at + 1 < ranges.len() && ranges[at + 1].start <= *key {
            at += 1;
        }
        let holds = ranges
            .get(at)
            .filter(|r| r.start <= *key && (r.end.is_empty() || *key < r.end));
        reads.push(holds.map_or(0, |r| r.reads_per_sec));
        writes.push(holds.map_or(0, |r| r.writes_per_sec));
    }
    (reads, writes)
}

pub(crate) async fn heatmap(State(state): State<Arc<NodeState>>) -> Response {
    let activity = match activity(&state, true).await {
        Ok(activity) => activity,
        Err(status) => return unavailable(status),
    };
    let rows: Vec<Vec<u8>> = activity
        .columns
        .iter()
        .flat_map(|c| c.ranges.iter().map(|r| r.start.clone()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (reads, writes) = activity.columns.iter().map(|c| cells(c, &rows)).unzip();
    Json(HeatMap {
        interval_ms: activity.column_interval_ms,
        rows: rows.iter().map(|key| shown_key(&state, key)).collect(),
        times: activity.columns.iter().map(|c| c.unix_ms).collect(),
        reads,
        writes,
    })
    .into_response()
}
