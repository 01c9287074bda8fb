//! hanse-planner: decides when shards split and merge and where leaders and replicas
//! live.
//!
//! - [`balance`]: the size, placement and leader heuristics the balancer runs.
//! - [`stats`]: the key sampler shard leaders report with.
//! - [`sim`]: the deterministic simulator, its workload families and recorded traces, the
//!   TiKV- and CockroachDB-style baselines, the look-ahead oracle, evaluation and tuning.
//! - [`envelope`]: the hard rules every policy's actions pass through.
//! - [`model`]: the tch network trained to imitate the oracle.
//! - [`decide`]: the [`decide::Planner`]: the network with the tuned heuristic as
//!   fallback, or in shadow mode.
//! - [`train`]: training and comparison on held-out families.
//! - [`live`]: the [`live::PlannerActor`] that plans for a running cluster.

pub mod balance;
pub mod decide;
pub mod envelope;
pub mod live;
pub mod model;
pub mod sim;
pub mod stats;
pub mod train;
