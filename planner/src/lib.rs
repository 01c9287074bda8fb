//! hanse-planner: decides when shards split and merge and where leaders and replicas
//! live.
//!
//! - [`vocab`]: what policies see and do ([`vocab::Action`], [`vocab::View`],
//!   [`vocab::Policy`]), shared by everything below; [`knobs`]: the shared thresholds.
//! - [`balance`]: the size, placement and leader heuristics the balancer runs.
//! - [`stats`]: the key sampler shard leaders report with.
//! - [`sim`]: the deterministic simulator, its workload families and recorded traces, the
//!   TiKV- and CockroachDB-style baselines, the look-ahead oracle, evaluation and tuning.
//! - [`envelope`]: the hard rules every policy's actions pass through.
//! - [`model`]: what the network sees and answers; [`net`]: the network itself, in plain
//!   Rust from the weights Torch trained (crate `hanse-planner-train`).
//! - [`decide`]: the [`decide::Planner`]: the network with the tuned heuristic as
//!   fallback, or in shadow mode.
//! - [`train`]: what training learns from, and the comparison on held-out families.
//! - [`live`]: the [`live::PlannerActor`] that plans for a running cluster.

pub mod balance;
pub mod candidates;
pub mod decide;
pub mod envelope;
pub mod knobs;
pub mod live;
pub mod model;
pub mod net;
pub mod sim;
pub mod stats;
pub mod train;
pub mod vocab;
