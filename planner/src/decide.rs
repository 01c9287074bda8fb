//! The planner's decision step: the network decides, the tuned heuristic stands in when
//! there is no network or its input lies outside what it was trained on, and the envelope
//! has the last word. In shadow mode the heuristic acts and the network's choice is only
//! recorded beside it. [`Status`] says which policy acted, why it fell back, what the
//! envelope refused, and the last decisions with the features behind them.

use std::collections::VecDeque;

use crate::envelope::{Envelope, Refusal};
use crate::model::{features, model_actions, per_shard_actions};
use crate::net::{FEATURES, PlannerNet};
use crate::sim::policy::LoadSplit;
use crate::vocab::{Action, Policy, View};

/// Which policy acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The network acts; the tuned heuristic stands in where it cannot.
    Model,
    /// The tuned heuristic acts; what the network would have done is recorded.
    Shadow,
    /// The tuned heuristic acts alone.
    Heuristic,
}

/// One action the planner took.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub tick: u64,
    pub action: Action,
    /// The policy that chose it.
    pub policy: String,
    /// The features of its shard that tick.
    pub features: [f32; FEATURES],
}

/// Decisions [`Status`] keeps.
const RECENT_MAX: usize = 32;

/// What the planner did lately, for `hanse admin status`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub mode: Mode,
    /// The policy that decided the last tick.
    pub acting: String,
    /// Why the heuristic decided the last tick in model mode, if it did.
    pub fallback: Option<String>,
    /// Ticks the heuristic stood in for the network.
    pub fallback_ticks: u64,
    /// The last decisions, oldest first.
    pub recent: VecDeque<Decision>,
    /// In shadow mode: what the network would have done in the last tick.
    pub shadow: Vec<Action>,
    /// What the envelope refused in the last tick, and why.
    pub refused: Vec<(Action, Refusal)>,
}

/// The planner: a network (if loaded), the tuned heuristic, and the envelope.
pub struct Planner {
    net: Option<PlannerNet>,
    /// How the network decides: by choosing a proposer for the tick (the default), or
    /// shard by shard (the first design, kept for comparison).
    per_shard: bool,
    heuristic: LoadSplit,
    envelope: Envelope,
    status: Status,
}

impl Planner {
    pub fn new(net: Option<PlannerNet>, mode: Mode, envelope: Envelope) -> Planner {
        let heuristic = LoadSplit::tuned();
        Planner {
            status: Status {
                mode,
                acting: heuristic.name.clone(),
                fallback: None,
                fallback_ticks: 0,
                recent: VecDeque::new(),
                shadow: Vec::new(),
                refused: Vec::new(),
            },
            net,
            per_shard: false,
            heuristic,
            envelope,
        }
    }

    /// The planner in model mode with the network deciding shard by shard.
    pub fn per_shard(net: PlannerNet, envelope: Envelope) -> Planner {
        Planner {
            per_shard: true,
            ..Planner::new(Some(net), Mode::Model, envelope)
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }
}

impl Policy for Planner {
    fn name(&self) -> String {
        match self.status.mode {
            Mode::Model if self.per_shard => "model-per-shard".into(),
            Mode::Model => "model".into(),
            Mode::Shadow => "shadow".into(),
            Mode::Heuristic => self.heuristic.name.clone(),
        }
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        // The heuristic sees every tick, acting or not: its hot streaks and load memory
        // must be current when it has to stand in.
        let heuristic = self.heuristic.decide(view);
        let model = || match &self.net {
            None => Err("no model is loaded".to_string()),
            Some(net) if self.per_shard => per_shard_actions(net, view).map_err(|e| e.to_string()),
            Some(net) => model_actions(net, view, heuristic.clone()).map_err(|e| e.to_string()),
        };
        let status = &mut self.status;
        status.fallback = None;
        status.shadow.clear();
        let (acting, proposed) = match status.mode {
            Mode::Model => match model() {
                Ok(actions) => ("model".to_string(), actions),
                Err(reason) => {
                    status.fallback = Some(reason);
                    status.fallback_ticks += 1;
                    (self.heuristic.name.clone(), heuristic)
                }
            },
            Mode::Shadow => {
                let would = model().unwrap_or_default();
                status.shadow = self.envelope.admit(view, would).0;
                (self.heuristic.name.clone(), heuristic)
            }
            Mode::Heuristic => (self.heuristic.name.clone(), heuristic),
        };
        let (admitted, refused) = self.envelope.admit(view, proposed);
        for action in &admitted {
            let shard = action.shard();
            if status.recent.len() == RECENT_MAX {
                status.recent.pop_front();
            }
            status.recent.push_back(Decision {
                tick: view.tick,
                action: action.clone(),
                policy: acting.clone(),
                features: features(view, shard),
            });
        }
        status.acting = acting;
        status.refused = refused;
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::workload::Family;
    use crate::sim::{Scenario, Sim};
    use crate::vocab::FnPolicy;

    fn hotspot() -> Scenario {
        Scenario {
            ticks: 60,
            requests_per_tick: 400,
            request_weight: 25.0,
            ..Scenario::three_regions(Family::MovingHotspot { speed: 0.001 }, 4)
        }
    }

    #[test]
    fn without_a_network_the_tuned_heuristic_acts_and_says_why() {
        let mut planner = Planner::new(None, Mode::Model, Envelope::default());
        let outcome = Sim::new(hotspot()).run(&mut planner);
        let status = planner.status();
        assert_eq!(status.acting, LoadSplit::tuned().name);
        assert_eq!(status.fallback.as_deref(), Some("no model is loaded"));
        assert_eq!(status.fallback_ticks, 60);
        assert!(outcome.splits > 0, "the heuristic split the hotspot");
        assert!(!status.recent.is_empty());
        assert!(status.recent.iter().all(|d| d.policy == status.acting));
    }

    #[test]
    fn an_untrained_network_trusts_none_of_its_input_and_falls_back() {
        // Before training the trusted range is empty: every tick falls back.
        let mut planner = Planner::new(
            Some(PlannerNet::untrained()),
            Mode::Model,
            Envelope::default(),
        );
        Sim::new(hotspot()).run(&mut planner);
        let status = planner.status();
        assert_eq!(status.fallback_ticks, 60);
        assert!(
            status
                .fallback
                .as_deref()
                .is_some_and(|why| why.contains("outside the training data's range")),
            "{:?}",
            status.fallback
        );
    }

    #[test]
    fn shadow_mode_acts_like_the_heuristic_and_records_the_network() {
        let net = PlannerNet::built_in().unwrap();
        let mut shadow = Planner::new(Some(net), Mode::Shadow, Envelope::default());
        let mut ticks_with_shadow = 0;
        // One 256 MiB shard: whatever the network chooses splits it by size at once.
        let one_shard = || Scenario {
            initial_shards: 1,
            ..hotspot()
        };
        let shadowed = Sim::new(one_shard()).run(&mut FnPolicy(&mut |view: &View| {
            let actions = shadow.decide(view);
            assert_eq!(shadow.status().acting, LoadSplit::tuned().name);
            ticks_with_shadow += usize::from(!shadow.status().shadow.is_empty());
            actions
        }));
        let alone = Sim::new(one_shard()).run(&mut Planner::new(
            None,
            Mode::Heuristic,
            Envelope::default(),
        ));
        assert_eq!(shadowed, alone, "the network only watches");
        assert!(ticks_with_shadow > 0, "the network's choices are recorded");
    }
}
