//! The planner's decision step: the network decides, a fallback stands in when there is
//! no network or its input lies outside what it was trained on (for the scorer, the size
//! rule alone; for the earlier designs, the tuned heuristic), and the envelope has the
//! last word. In shadow mode the heuristic acts and the network's choice is only
//! recorded beside it. [`Status`] says which policy acted, why it fell back, what the
//! envelope refused, and the last decisions with the features behind them.

use std::collections::VecDeque;

use crate::candidates::{Memory, chosen, proposals};
use crate::envelope::{Envelope, Refusal};
use crate::model::{features, model_actions, per_shard_actions};
use crate::net::{FEATURES, PlannerNet};
use crate::sim::policy::{LoadSplit, SizeOnly};
use crate::vocab::{Action, Policy, View};

/// Which policy acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The network acts; its fallback stands in where it cannot.
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

/// How the network decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// The size rule acts, and the scorer rates concrete actions for the busiest shards
    /// ([`crate::candidates`]).
    Scorer,
    /// The selector chooses whose actions to take for the tick: the tuned heuristic's or
    /// one of the oracle's proposers'.
    Selector,
    /// Per-shard heads answer an action kind for each shard (the first design).
    PerShard,
}

/// The planner: a network (if loaded), the tuned heuristic, and the envelope.
pub struct Planner {
    net: Option<PlannerNet>,
    design: Design,
    /// What the scorer remembers of the shards' recent load, kept current every tick.
    memory: Memory,
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
            design: Design::Scorer,
            memory: Memory::default(),
            heuristic,
            envelope,
        }
    }

    /// The planner in model mode with the network deciding by `design`.
    pub fn designed(net: PlannerNet, design: Design, envelope: Envelope) -> Planner {
        Planner {
            design,
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
            Mode::Model => match self.design {
                Design::Scorer => "model".into(),
                Design::Selector => "model-selector".into(),
                Design::PerShard => "model-per-shard".into(),
            },
            Mode::Shadow => "shadow".into(),
            Mode::Heuristic => self.heuristic.name.clone(),
        }
    }

    fn decide(&mut self, view: &View) -> Vec<Action> {
        // The heuristic sees every tick it may act or stand in on: its hot streaks and
        // load memory must be current. The scorer stands in with the size rule, so in
        // model mode it needs no heuristic.
        let model_scorer = self.status.mode == Mode::Model && self.design == Design::Scorer;
        let heuristic = if model_scorer {
            Vec::new()
        } else {
            self.heuristic.decide(view)
        };
        // The scorer's memory must be current wherever it may be asked.
        if self.design == Design::Scorer && self.status.mode != Mode::Heuristic {
            self.memory.observe(view);
        }
        // Where the scorer cannot rate, the size rule it is trained against acts alone.
        let (fallback_name, fallback) = match self.design {
            Design::Scorer => (SizeOnly.name(), SizeOnly.decide(view)),
            _ => (self.heuristic.name.clone(), heuristic.clone()),
        };
        let memory = &self.memory;
        let model = || match &self.net {
            None => Err("no model is loaded".to_string()),
            Some(net) => match self.design {
                Design::PerShard => per_shard_actions(net, view).map_err(|e| e.to_string()),
                Design::Selector => {
                    model_actions(net, view, heuristic.clone()).map_err(|e| e.to_string())
                }
                Design::Scorer => scorer_actions(net, memory, view).map_err(|e| e.to_string()),
            },
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
                    (fallback_name, fallback)
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

/// The size rule's actions, and those the scorer chooses for the busiest shards.
pub fn scorer_actions(
    net: &PlannerNet,
    memory: &Memory,
    view: &View,
) -> Result<Vec<Action>, crate::candidates::Untrusted> {
    let mut actions = SizeOnly.decide(view);
    let more = chosen(net, &proposals(view, memory, &actions))?;
    actions.extend(more);
    Ok(actions)
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
    fn without_a_network_the_fallback_acts_and_says_why() {
        // The selector stands in with the tuned heuristic; the scorer with the size rule
        // it was trained against.
        for (design, fallback) in [
            (Design::Selector, LoadSplit::tuned().name),
            (Design::Scorer, SizeOnly.name()),
        ] {
            let mut planner = Planner::new(None, Mode::Model, Envelope::default());
            planner.design = design;
            Sim::new(hotspot()).run(&mut planner);
            let status = planner.status();
            assert_eq!(status.acting, fallback);
            assert_eq!(status.fallback.as_deref(), Some("no model is loaded"));
            assert_eq!(status.fallback_ticks, 60);
        }
        let mut planner = Planner::new(None, Mode::Model, Envelope::default());
        planner.design = Design::Selector;
        let outcome = Sim::new(hotspot()).run(&mut planner);
        assert!(outcome.splits > 0, "the heuristic split the hotspot");
        let status = planner.status();
        assert!(!status.recent.is_empty());
        assert!(status.recent.iter().all(|d| d.policy == status.acting));
    }

    #[test]
    fn an_untrained_network_trusts_none_of_its_input_and_falls_back() {
        // Before training the trusted range is empty: every tick the selector falls back,
        // and the scorer on every tick it has something to rate.
        for (design, why) in [
            (Design::Selector, "outside the training data's range"),
            (Design::Scorer, "outside the scorer's training range"),
        ] {
            let mut planner =
                Planner::designed(PlannerNet::untrained(), design, Envelope::default());
            Sim::new(hotspot()).run(&mut planner);
            let status = planner.status();
            assert!(
                status.fallback_ticks >= 50,
                "{design:?}: {}",
                status.fallback_ticks
            );
            assert!(
                status.fallback.as_deref().is_some_and(|f| f.contains(why)),
                "{:?}",
                status.fallback
            );
        }
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
