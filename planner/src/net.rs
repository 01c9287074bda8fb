//! The planner's network, as the live planner runs it: plain Rust over the weights that
//! training with Torch (crate `hanse-planner-train`) wrote, so a node, the CLI and every
//! command that does not train load no libtorch.
//!
//! The scorer ([`PlannerNet::score`], what the planner runs): a small ensemble rating the
//! actions proposed for the busiest shards ([`crate::candidates`]). Beside it two earlier
//! designs, kept as contenders, two small MLPs that share the standardisation of their
//! inputs. The per-shard one: features
//! in, two hidden layers of [`HIDDEN`] with ReLU, an action head (softmax over
//! [`ACTIONS`]) and a split head (the arg-max of [`SPLIT_QUANTILES`]). The selector: the
//! tick's features in, one hidden layer, one expected rollout cost per choice out. Layer
//! weights are stored `[outputs, inputs]` as Torch's `nn::Linear` keeps them, in a
//! safetensors file of f32 tensors named as Torch names them (`l1.weight`, `l1.bias`, ...).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sim::policy::PROPOSERS;

/// What the network may answer for a shard.
pub const ACTIONS: [&str; 6] = [
    "none",
    "split",
    "merge-right",
    "transfer-leader",
    "move-replica",
    "follow-workload",
];
/// Features per shard.
pub const FEATURES: usize = 16;
/// Split points: the 1/8 .. 7/8 quantiles of the sampled keys.
pub const SPLIT_QUANTILES: usize = 7;
/// Features of a whole tick, for choosing a proposer: the mean and the max over the
/// shards of each shard feature.
pub const TICK_FEATURES: usize = 2 * FEATURES;
/// What the selector chooses among each tick: the tuned heuristic or one of the oracle's
/// proposers.
pub const CHOICES: usize = 1 + PROPOSERS;
/// The selector's margin (see [`PlannerNet::set_selector_margin`]) before it is tuned.
pub const ADVANTAGE_MIN_DEFAULT: f32 = 0.01;
/// Rollout cost differences are hundredths; the selector learns them scaled up by this,
/// in the range of the other heads' losses.
pub const ADVANTAGE_SCALE: f32 = 10.0;
/// How far outside the training data's range (a fraction of it) a feature may lie before
/// the network's answer is not trusted.
pub const RANGE_MARGIN: f64 = 0.5;

/// Units in each hidden layer.
pub const HIDDEN: usize = 64;

/// The candidate scorer's features of a shard (see [`crate::candidates`]).
pub const SHARD_FEATURES: usize = 17;
/// ... and of one action proposed for it.
pub const CANDIDATE_FEATURES: usize = 14;
/// Units in each of the scorer's hidden layers.
pub const SCORER_HIDDEN: usize = 128;
/// Scorers trained side by side from different starting weights; an action is rated by
/// the most pessimistic of them, so that one member's confident error on a load unlike
/// any it learnt from does not move a shard (a deep ensemble's disagreement as the
/// uncertainty).
pub const SCORER_MEMBERS: usize = 3;
/// The scorer's margin before it is tuned: in the summed cost's units (one tick's p99
/// lengthened by 100 ms is 1).
pub const SCORER_MARGIN_DEFAULT: f32 = 1.0;

/// The committed weights (see [`PlannerNet::built_in`]).
const BUILT_IN_WEIGHTS: &[u8] = include_bytes!("../weights/planner.safetensors");

/// Why a network could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a planner weights file: {0}")]
    Format(String),
}

/// Named tensors: each a shape and its values in row-major order.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// One fully connected layer.
#[derive(Debug, Clone, PartialEq)]
struct Dense {
    inputs: usize,
    outputs: usize,
    /// `[outputs, inputs]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Dense {
    fn zeros(inputs: usize, outputs: usize) -> Dense {
        Dense {
            inputs,
            outputs,
            weight: vec![0.0; inputs * outputs],
            bias: vec![0.0; outputs],
        }
    }

    fn forward(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.inputs);
        self.weight
            .chunks_exact(self.inputs)
            .zip(&self.bias)
            .map(|(row, b)| b + row.iter().zip(x).map(|(w, x)| w * x).sum::<f32>())
            .collect()
    }

    fn take(
        tensors: &mut Tensors,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<Dense, NetError> {
        Ok(Dense {
            inputs,
            outputs,
            weight: take(tensors, &format!("{name}.weight"), &[outputs, inputs])?,
            bias: take(tensors, &format!("{name}.bias"), &[outputs])?,
        })
    }

    fn put(&self, tensors: &mut Tensors, name: &str) {
        tensors.insert(
            format!("{name}.weight"),
            (vec![self.outputs, self.inputs], self.weight.clone()),
        );
        tensors.insert(
            format!("{name}.bias"),
            (vec![self.outputs], self.bias.clone()),
        );
    }
}

fn relu(mut x: Vec<f32>) -> Vec<f32> {
    for v in &mut x {
        *v = v.max(0.0);
    }
    x
}

fn standardise(x: &[f32], mean: &[f32], std: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(mean)
        .zip(std)
        .map(|((x, m), s)| (x - m) / s)
        .collect()
}

/// The index of the largest value, the first of equals.
fn arg_max(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

fn take(tensors: &mut Tensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, NetError> {
    match tensors.remove(name) {
        Some((found, values)) if found == shape => Ok(values),
        Some((found, _)) => Err(NetError::Format(format!(
            "tensor {name} has shape {found:?}, the network needs {shape:?}"
        ))),
        None => Err(NetError::Format(format!("tensor {name} is missing"))),
    }
}

/// The trained network.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerNet {
    /// Per feature over the training examples: mean and standard deviation (inputs are
    /// standardised with them), minimum and maximum (the range the answers are trusted
    /// in).
    input_mean: Vec<f32>,
    input_std: Vec<f32>,
    input_min: Vec<f32>,
    input_max: Vec<f32>,
    l1: Dense,
    l2: Dense,
    action: Dense,
    split: Dense,
    /// The tick features' mean and standard deviation over the training ticks.
    tick_mean: Vec<f32>,
    tick_std: Vec<f32>,
    s1: Dense,
    s2: Dense,
    /// How much cheaper than the tuned heuristic's (in cost over the oracle's horizon) the
    /// selector must expect a proposer's rollout to be before it follows the proposer.
    selector_margin: f32,
    scorer: Scorer,
}

/// The candidate scorer: [`SCORER_MEMBERS`] members, each a per-shard encoder, a forecast
/// head (the shard's load a few ticks ahead) and an advantage head that rates each action
/// proposed for the shard from the encoding, the forecast and the action's own features:
/// how much it would add to the run's summed cost against leaving the shard to the size
/// rule (negative: cheaper).
#[derive(Debug, Clone, PartialEq)]
struct Scorer {
    /// Per feature over the training examples: mean, standard deviation, and the range
    /// the answers are trusted in, for the shard's features and the candidates'.
    shard_mean: Vec<f32>,
    shard_std: Vec<f32>,
    shard_min: Vec<f32>,
    shard_max: Vec<f32>,
    candidate_mean: Vec<f32>,
    candidate_std: Vec<f32>,
    candidate_min: Vec<f32>,
    candidate_max: Vec<f32>,
    members: Vec<Member>,
    /// How much cheaper (in summed cost) the scorer must expect an action to be before
    /// the planner takes it.
    margin: f32,
}

/// One of the scorer's members, its layers named `m{k}.e1` ... as Torch names them.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    e1: Dense,
    e2: Dense,
    forecast: Dense,
    c1: Dense,
    c2: Dense,
}

const SCORER_INPUTS: usize = SCORER_HIDDEN + 1 + CANDIDATE_FEATURES;

impl Member {
    fn zeros() -> Member {
        Member {
            e1: Dense::zeros(SHARD_FEATURES, SCORER_HIDDEN),
            e2: Dense::zeros(SCORER_HIDDEN, SCORER_HIDDEN),
            forecast: Dense::zeros(SCORER_HIDDEN, 1),
            c1: Dense::zeros(SCORER_INPUTS, SCORER_HIDDEN),
            c2: Dense::zeros(SCORER_HIDDEN, 1),
        }
    }

    fn take(t: &mut Tensors, k: usize) -> Result<Member, NetError> {
        Ok(Member {
            e1: Dense::take(t, &format!("m{k}.e1"), SHARD_FEATURES, SCORER_HIDDEN)?,
            e2: Dense::take(t, &format!("m{k}.e2"), SCORER_HIDDEN, SCORER_HIDDEN)?,
            forecast: Dense::take(t, &format!("m{k}.forecast"), SCORER_HIDDEN, 1)?,
            c1: Dense::take(t, &format!("m{k}.c1"), SCORER_INPUTS, SCORER_HIDDEN)?,
            c2: Dense::take(t, &format!("m{k}.c2"), SCORER_HIDDEN, 1)?,
        })
    }

    fn put(&self, t: &mut Tensors, k: usize) {
        self.e1.put(t, &format!("m{k}.e1"));
        self.e2.put(t, &format!("m{k}.e2"));
        self.forecast.put(t, &format!("m{k}.forecast"));
        self.c1.put(t, &format!("m{k}.c1"));
        self.c2.put(t, &format!("m{k}.c2"));
    }
}

impl Scorer {
    fn untrained() -> Scorer {
        Scorer {
            shard_mean: vec![0.0; SHARD_FEATURES],
            shard_std: vec![1.0; SHARD_FEATURES],
            shard_min: vec![0.0; SHARD_FEATURES],
            shard_max: vec![0.0; SHARD_FEATURES],
            candidate_mean: vec![0.0; CANDIDATE_FEATURES],
            candidate_std: vec![1.0; CANDIDATE_FEATURES],
            candidate_min: vec![0.0; CANDIDATE_FEATURES],
            candidate_max: vec![0.0; CANDIDATE_FEATURES],
            members: (0..SCORER_MEMBERS).map(|_| Member::zeros()).collect(),
            margin: SCORER_MARGIN_DEFAULT,
        }
    }

    fn take(t: &mut Tensors) -> Result<Scorer, NetError> {
        Ok(Scorer {
            shard_mean: take(t, "shard_mean", &[SHARD_FEATURES])?,
            shard_std: take(t, "shard_std", &[SHARD_FEATURES])?,
            shard_min: take(t, "shard_min", &[SHARD_FEATURES])?,
            shard_max: take(t, "shard_max", &[SHARD_FEATURES])?,
            candidate_mean: take(t, "candidate_mean", &[CANDIDATE_FEATURES])?,
            candidate_std: take(t, "candidate_std", &[CANDIDATE_FEATURES])?,
            candidate_min: take(t, "candidate_min", &[CANDIDATE_FEATURES])?,
            candidate_max: take(t, "candidate_max", &[CANDIDATE_FEATURES])?,
            members: (0..SCORER_MEMBERS)
                .map(|k| Member::take(t, k))
                .collect::<Result<_, _>>()?,
            margin: take(t, "scorer_margin", &[1])?[0],
        })
    }

    fn put(&self, t: &mut Tensors) {
        for (name, v) in [
            ("shard_mean", &self.shard_mean),
            ("shard_std", &self.shard_std),
            ("shard_min", &self.shard_min),
            ("shard_max", &self.shard_max),
            ("candidate_mean", &self.candidate_mean),
            ("candidate_std", &self.candidate_std),
            ("candidate_min", &self.candidate_min),
            ("candidate_max", &self.candidate_max),
        ] {
            t.insert(name.to_string(), (vec![v.len()], v.clone()));
        }
        t.insert("scorer_margin".into(), (vec![1], vec![self.margin]));
        for (k, member) in self.members.iter().enumerate() {
            member.put(t, k);
        }
    }
}

/// A shard as each of the scorer's members encoded it: (forecast, hidden units).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded(Vec<(f32, Vec<f32>)>);

impl Encoded {
    /// The members' mean forecast: `ln(1 + x)` of the shard's load
    /// [`crate::candidates::FORECAST_TICKS`] ahead relative to the mean shard's.
    pub fn forecast(&self) -> f32 {
        self.0.iter().map(|(f, _)| f).sum::<f32>() / self.0.len().max(1) as f32
    }
}

/// Where one row of features lies outside `[min, max]` widened by [`RANGE_MARGIN`] of
/// the range, or is not finite: the first such feature.
fn outside(row: &[f32], min: &[f32], max: &[f32]) -> Option<usize> {
    row.iter()
        .zip(min.iter().zip(max))
        .position(|(&x, (&lo, &hi))| {
            let slack = (f64::from(hi) - f64::from(lo)) * RANGE_MARGIN;
            !x.is_finite()
                || f64::from(x) < f64::from(lo) - slack
                || f64::from(x) > f64::from(hi) + slack
        })
}

impl PlannerNet {
    /// A network before training: all weights zero and an empty trusted range, so it
    /// trusts none of its input and the planner always falls back.
    pub fn untrained() -> PlannerNet {
        PlannerNet {
            input_mean: vec![0.0; FEATURES],
            input_std: vec![1.0; FEATURES],
            input_min: vec![0.0; FEATURES],
            input_max: vec![0.0; FEATURES],
            l1: Dense::zeros(FEATURES, HIDDEN),
            l2: Dense::zeros(HIDDEN, HIDDEN),
            action: Dense::zeros(HIDDEN, ACTIONS.len()),
            split: Dense::zeros(HIDDEN, SPLIT_QUANTILES),
            tick_mean: vec![0.0; TICK_FEATURES],
            tick_std: vec![1.0; TICK_FEATURES],
            s1: Dense::zeros(TICK_FEATURES, HIDDEN),
            s2: Dense::zeros(HIDDEN, CHOICES),
            selector_margin: ADVANTAGE_MIN_DEFAULT,
            scorer: Scorer::untrained(),
        }
    }

    /// The network `tensors` (named as Torch names them) describe.
    pub fn from_tensors(mut tensors: Tensors) -> Result<PlannerNet, NetError> {
        let t = &mut tensors;
        let net = PlannerNet {
            input_mean: take(t, "input_mean", &[FEATURES])?,
            input_std: take(t, "input_std", &[FEATURES])?,
            input_min: take(t, "input_min", &[FEATURES])?,
            input_max: take(t, "input_max", &[FEATURES])?,
            l1: Dense::take(t, "l1", FEATURES, HIDDEN)?,
            l2: Dense::take(t, "l2", HIDDEN, HIDDEN)?,
            action: Dense::take(t, "action", HIDDEN, ACTIONS.len())?,
            split: Dense::take(t, "split", HIDDEN, SPLIT_QUANTILES)?,
            tick_mean: take(t, "tick_mean", &[TICK_FEATURES])?,
            tick_std: take(t, "tick_std", &[TICK_FEATURES])?,
            s1: Dense::take(t, "s1", TICK_FEATURES, HIDDEN)?,
            s2: Dense::take(t, "s2", HIDDEN, CHOICES)?,
            selector_margin: take(t, "selector_margin", &[1])?[0],
            // Weights saved before the scorer existed load with an untrained one, which
            // trusts nothing: a planner running the scorer on them falls back.
            scorer: if t.contains_key("m0.e1.weight") {
                Scorer::take(t)?
            } else {
                Scorer::untrained()
            },
        };
        match tensors.keys().next() {
            Some(extra) => Err(NetError::Format(format!("unknown tensor {extra}"))),
            None => Ok(net),
        }
    }

    /// The network's tensors, named as Torch names them.
    pub fn tensors(&self) -> Tensors {
        let mut t = Tensors::new();
        let mut vector = |name: &str, v: &[f32]| {
            t.insert(name.to_string(), (vec![v.len()], v.to_vec()));
        };
        vector("input_mean", &self.input_mean);
        vector("input_std", &self.input_std);
        vector("input_min", &self.input_min);
        vector("input_max", &self.input_max);
        vector("tick_mean", &self.tick_mean);
        vector("tick_std", &self.tick_std);
        vector("selector_margin", &[self.selector_margin]);
        self.l1.put(&mut t, "l1");
        self.l2.put(&mut t, "l2");
        self.action.put(&mut t, "action");
        self.split.put(&mut t, "split");
        self.s1.put(&mut t, "s1");
        self.s2.put(&mut t, "s2");
        self.scorer.put(&mut t);
        t
    }

    /// The network trained by `hanse planner train` and committed with the source
    /// (`planner/weights/planner.safetensors`), built into the binary.
    pub fn built_in() -> Result<PlannerNet, NetError> {
        PlannerNet::from_safetensors(BUILT_IN_WEIGHTS)
    }

    /// The network whose weights are saved at `path`.
    pub fn load(path: &Path) -> Result<PlannerNet, NetError> {
        let bytes = std::fs::read(path).map_err(|source| NetError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PlannerNet::from_safetensors(&bytes)
    }

    pub fn save(&self, path: &Path) -> Result<(), NetError> {
        std::fs::write(path, self.to_safetensors()).map_err(|source| NetError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn from_safetensors(bytes: &[u8]) -> Result<PlannerNet, NetError> {
        PlannerNet::from_tensors(safetensors::read(bytes)?)
    }

    pub fn to_safetensors(&self) -> Vec<u8> {
        safetensors::write(&self.tensors())
    }

    /// Whose actions to follow in a tick with these features: 0 the tuned heuristic's,
    /// `k` those of the oracle's proposer `k - 1`. A proposer is followed only where the
    /// network expects it to beat the heuristic by the selector's margin: a wrong
    /// departure costs more than a missed one.
    pub fn choose(&self, tick: &[f32; TICK_FEATURES]) -> usize {
        let x = standardise(tick, &self.tick_mean, &self.tick_std);
        let expected = self.s2.forward(&relu(self.s1.forward(&x)));
        let margin = self.selector_margin * ADVANTAGE_SCALE;
        let mut chosen = 0;
        for k in 1..expected.len() {
            if expected[k] < -margin && (chosen == 0 || expected[k] < expected[chosen]) {
                chosen = k;
            }
        }
        chosen
    }

    /// For each row of features: the action index, its probability, and the split
    /// quantile.
    pub fn decide(&self, rows: &[[f32; FEATURES]]) -> Vec<(usize, f64, usize)> {
        rows.iter()
            .map(|row| {
                let x = standardise(row, &self.input_mean, &self.input_std);
                let hidden = relu(self.l2.forward(&relu(self.l1.forward(&x))));
                let logits = self.action.forward(&hidden);
                let action = arg_max(&logits);
                let top = logits[action];
                let total: f32 = logits.iter().map(|l| (l - top).exp()).sum();
                let probability = 1.0 / total;
                let quantile = arg_max(&self.split.forward(&hidden));
                (action, f64::from(probability), quantile)
            })
            .collect()
    }

    /// The first (row, feature) of `rows` that is not finite or lies outside the training
    /// data's range (widened by [`RANGE_MARGIN`]), if any: where the answers are not
    /// trusted.
    pub fn out_of_range(&self, rows: &[[f32; FEATURES]]) -> Option<(usize, usize)> {
        rows.iter().enumerate().find_map(|(r, row)| {
            outside(row, &self.input_min, &self.input_max).map(|feature| (r, feature))
        })
    }

    /// A shard with these features as the scorer's members see it, for
    /// [`PlannerNet::score`].
    pub fn encode(&self, shard: &[f32; SHARD_FEATURES]) -> Encoded {
        let s = &self.scorer;
        let x = standardise(shard, &s.shard_mean, &s.shard_std);
        Encoded(
            s.members
                .iter()
                .map(|m| {
                    let hidden = relu(m.e2.forward(&relu(m.e1.forward(&x))));
                    (m.forecast.forward(&hidden)[0], hidden)
                })
                .collect(),
        )
    }

    /// What each of the scorer's members expects an action with `candidate`'s features to
    /// add to the run's summed cost against leaving the shard (`encoded`) to the size
    /// rule.
    pub fn member_scores(
        &self,
        encoded: &Encoded,
        candidate: &[f32; CANDIDATE_FEATURES],
    ) -> Vec<f32> {
        let s = &self.scorer;
        let standardised = standardise(candidate, &s.candidate_mean, &s.candidate_std);
        s.members
            .iter()
            .zip(&encoded.0)
            .map(|(m, (forecast, hidden))| {
                let mut x = Vec::with_capacity(SCORER_INPUTS);
                x.extend_from_slice(hidden);
                x.push(*forecast);
                x.extend_from_slice(&standardised);
                m.c2.forward(&relu(m.c1.forward(&x)))[0]
            })
            .collect()
    }

    /// The scorer's rating of an action: the most pessimistic of its members'.
    pub fn score(&self, encoded: &Encoded, candidate: &[f32; CANDIDATE_FEATURES]) -> f32 {
        self.member_scores(encoded, candidate)
            .into_iter()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    /// The first feature of a shard's (`Ok`) or a candidate's (`Err`) row that lies
    /// outside what the scorer was trained on, if any.
    pub fn scorer_out_of_range(
        &self,
        shard: &[f32; SHARD_FEATURES],
        candidate: Option<&[f32; CANDIDATE_FEATURES]>,
    ) -> Option<Result<usize, usize>> {
        let s = &self.scorer;
        if let Some(feature) = outside(shard, &s.shard_min, &s.shard_max) {
            return Some(Ok(feature));
        }
        candidate
            .and_then(|c| outside(c, &s.candidate_min, &s.candidate_max))
            .map(Err)
    }

    pub fn scorer_margin(&self) -> f32 {
        self.scorer.margin
    }

    pub fn set_scorer_margin(&mut self, margin: f32) {
        self.scorer.margin = margin;
    }

    pub fn selector_margin(&self) -> f32 {
        self.selector_margin
    }

    pub fn set_selector_margin(&mut self, margin: f32) {
        self.selector_margin = margin;
    }
}

/// The safetensors format, as far as the planner uses it: little-endian f32 tensors.
/// A file is an 8-byte little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range in the data that follows, then the data.
mod safetensors {
    use super::{NetError, Tensors};

    /// The header may not be larger than this: a weights file has a few dozen tensors.
    const HEADER_BYTES_MAX: usize = 1 << 20;

    pub(super) fn read(bytes: &[u8]) -> Result<Tensors, NetError> {
        let bad = |what: &str| NetError::Format(what.to_string());
        let length: [u8; 8] = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("shorter than its header length"))?;
        let length = usize::try_from(u64::from_le_bytes(length))
            .ok()
            .filter(|&n| n <= HEADER_BYTES_MAX)
            .ok_or_else(|| bad("its header is too large"))?;
        let header = bytes
            .get(8..8 + length)
            .ok_or_else(|| bad("shorter than its header"))?;
        let data = &bytes[8 + length..];
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(header).map_err(|e| bad(&format!("header: {e}")))?;
        let mut tensors = Tensors::new();
        for (name, entry) in header {
            if name == "__metadata__" {
                continue;
            }
            if entry["dtype"] != "F32" {
                return Err(bad(&format!("tensor {name} is not F32")));
            }
            let numbers = |field: &str| -> Result<Vec<usize>, NetError> {
                entry[field]
                    .as_array()
                    .ok_or_else(|| bad(&format!("tensor {name} has no {field}")))?
                    .iter()
                    .map(|n| {
                        n.as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| bad(&format!("tensor {name}: {field}")))
                    })
                    .collect()
            };
            let shape = numbers("shape")?;
            let range = numbers("data_offsets")?;
            let elements = shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| bad(&format!("tensor {name} is too large")))?;
            let raw = match range[..] {
                [start, end] if end >= start && end - start == elements * 4 => data.get(start..end),
                _ => None,
            }
            .ok_or_else(|| bad(&format!("tensor {name}'s data is out of place")))?;
            let values = raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tensors.insert(name, (shape, values));
        }
        Ok(tensors)
    }

    pub(super) fn write(tensors: &Tensors) -> Vec<u8> {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, (shape, values)) in tensors {
            let start = data.len();
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            header.insert(
                name.clone(),
                serde_json::json!({
                    "dtype": "F32",
                    "shape": shape,
                    "data_offsets": [start, data.len()],
                }),
            );
        }
        let mut header = serde_json::Value::Object(header).to_string().into_bytes();
        // The data starts 8-byte aligned, as the format asks.
        while !(8 + header.len()).is_multiple_of(8) {
            header.push(b' ');
        }
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header);
        out.extend(data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_weights_load_and_survive_a_save() {
        let net = PlannerNet::built_in().expect("the committed weights load");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("planner.safetensors");
        net.save(&path).unwrap();
        assert_eq!(PlannerNet::load(&path).unwrap(), net);
        assert!(net.selector_margin() > 0.0);
        assert!(matches!(
            PlannerNet::load(&dir.path().join("missing")),
            Err(NetError::Io { .. })
        ));
    }

    #[test]
    fn damaged_weights_are_refused_with_a_reason() {
        let bytes = PlannerNet::built_in().unwrap().to_safetensors();
        for cut in [0, 7, 100, bytes.len() - 1] {
            assert!(
                PlannerNet::from_safetensors(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut tensors = PlannerNet::untrained().tensors();
        tensors.remove("l2.bias");
        let missing = PlannerNet::from_tensors(tensors).unwrap_err();
        assert!(missing.to_string().contains("l2.bias"), "{missing}");
    }

    #[test]
    fn an_untrained_network_trusts_nothing_and_keeps_to_the_heuristic() {
        let net = PlannerNet::untrained();
        assert_eq!(net.out_of_range(&[[0.5; FEATURES]]), Some((0, 0)));
        assert_eq!(net.choose(&[0.0; TICK_FEATURES]), 0);
    }

    #[test]
    fn a_layer_multiplies_by_its_rows_and_adds_its_bias() {
        let layer = Dense {
            inputs: 2,
            outputs: 2,
            weight: vec![1.0, 2.0, -1.0, 0.5],
            bias: vec![0.5, 0.0],
        };
        assert_eq!(layer.forward(&[1.0, 2.0]), vec![5.5, 0.0]);
        assert_eq!(arg_max(&[1.0, 3.0, 3.0]), 1);
    }
}
