//! hanse-planner: turns the load that shard leaders report into the inputs of the Torch
//! model that decides splits, merges and placement.
//!
//! Today: the per-shard load report and its feature encoding as a tch tensor, the size
//! heuristic ([`balance`]) the cluster runs until the model exists, and the simulator
//! ([`sim`]) with its workload families, the TiKV- and CockroachDB-style baselines and
//! the look-ahead oracle, and the network ([`model`]) trained to imitate the oracle. The
//! training and evaluation commands and the planner actor build on these.

pub mod balance;
pub mod decide;
pub mod envelope;
pub mod live;
pub mod model;
pub mod sim;
pub mod stats;
pub mod train;

use hanse_storage::ShardId;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// What a shard's leader reports about one tick of load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardLoad {
    pub shard: ShardId,
    pub reads_per_sec: f64,
    pub writes_per_sec: f64,
    pub bytes_written_per_sec: f64,
    pub size_bytes: u64,
    pub keys: u64,
}

/// Features per shard in [`feature_matrix`].
pub const FEATURES_PER_SHARD: usize = 5;

impl ShardLoad {
    /// The report as model features. Loads span many orders of magnitude (an idle shard
    /// next to a hotspot), so each is `ln(1 + x)`: the network sees ratios, not raw counts.
    pub fn features(&self) -> [f32; FEATURES_PER_SHARD] {
        [
            self.reads_per_sec,
            self.writes_per_sec,
            self.bytes_written_per_sec,
            self.size_bytes as f64,
            self.keys as f64,
        ]
        .map(|x| x.max(0.0).ln_1p() as f32)
    }
}

/// A `[shards, FEATURES_PER_SHARD]` float tensor of the reports, one row each, in order.
pub fn feature_matrix(loads: &[ShardLoad]) -> Tensor {
    let flat: Vec<f32> = loads.iter().flat_map(ShardLoad::features).collect();
    Tensor::from_slice(&flat)
        .to_kind(Kind::Float)
        .reshape([loads.len() as i64, FEATURES_PER_SHARD as i64])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(shard: ShardId, writes: f64) -> ShardLoad {
        ShardLoad {
            shard,
            reads_per_sec: 0.0,
            writes_per_sec: writes,
            bytes_written_per_sec: writes * 256.0,
            size_bytes: 1 << 20,
            keys: 4096,
        }
    }

    #[test]
    fn features_are_log_scaled_and_ordered() {
        let f = load(1, 1000.0).features();
        assert_eq!(f[0], 0.0);
        assert!((f[1] - (1001f64).ln() as f32).abs() < 1e-5);
        assert!(
            load(1, 2000.0).features()[1] > f[1],
            "more load, larger feature"
        );
    }

    #[test]
    fn matrix_has_one_row_per_shard_in_order() {
        let loads = [load(1, 10.0), load(2, 5000.0), load(3, 0.0)];
        let matrix = feature_matrix(&loads);
        assert_eq!(matrix.size(), vec![3, FEATURES_PER_SHARD as i64]);
        for (row, l) in loads.iter().enumerate() {
            let got: Vec<f32> = Vec::try_from(matrix.get(row as i64)).unwrap();
            assert_eq!(got, l.features().to_vec());
        }
        // The hottest shard is the argmax of the write column, computed by libtorch.
        let hottest = matrix.select(1, 1).argmax(0, false).int64_value(&[]);
        assert_eq!(hottest, 1);
    }
}
