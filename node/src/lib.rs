//! hanse-node: the server runtime of a Hanse cluster node.
//!
//! A node owns one RocksDB, hosts a replica of each shard it belongs to (a
//! `ShardReplica` actor around the shard's Raft group), and serves `hanse.v1.Kv` to
//! clients, `hanse.v1.Admin` to operators and `hanse.v1.Raft` to its peers on one
//! address, and (with `http_addr`) metrics and health probes over HTTP. Beside them run the ingest actor (in the ingest region), the load reporter,
//! the balancer and, on the meta shard's leader, the planner. [`server::start`] assembles
//! it from a [`config::NodeConfig`]; the `hanse` binary (crate `hanse-cli`) runs it.

mod activity;
mod actors;
mod admin_service;
mod balancer;
pub mod chart;
pub mod config;
mod console;
mod coordination;
mod follower;
mod grants;
mod http;
pub mod knobs;
mod kv_service;
mod metrics;
mod peers;
pub mod progress;
mod reporter;
mod requests;
mod round_trips;
pub mod server;
mod state;
pub mod units;
