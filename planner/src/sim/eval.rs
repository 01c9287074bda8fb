//! Runs policies over workload families and seeds and summarises their costs; tunes a
//! load-split policy's thresholds by grid search on training families.

use super::policy::LoadSplit;
use super::workload::Family;
use super::{Outcome, Scenario, Sim};
use crate::envelope::Envelope;
use crate::vocab::Policy;

/// One policy's cost on one family over several seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub family: String,
    pub policy: String,
    pub mean_cost: f64,
    /// Half-width of the 95 % confidence interval of the mean (normal approximation).
    pub ci95: f64,
    pub seeds: usize,
    /// Each tick's node-load imbalance (max/mean), averaged over the seeds.
    pub imbalance: Vec<f64>,
}

/// Mean and 95 % half-width of `costs`.
fn summarise(costs: &[f64]) -> (f64, f64) {
    let n = costs.len() as f64;
    let mean = costs.iter().sum::<f64>() / n.max(1.0);
    if costs.len() < 2 {
        return (mean, 0.0);
    }
    let variance = costs.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (variance / n).sqrt())
}

/// A way to run a scenario: a policy (each run a fresh one, every decision through the
/// envelope) or the look-ahead oracle.
pub struct Contender<'a> {
    pub name: String,
    run: Box<dyn Fn(Sim) -> Outcome + 'a>,
}

impl<'a> Contender<'a> {
    /// The policy `make` builds, inside the default envelope.
    pub fn policy(make: impl Fn() -> Box<dyn Policy> + 'a) -> Contender<'a> {
        Contender {
            name: make().name(),
            run: Box::new(move |sim| sim.run(&mut Envelope::default().guard(make()))),
        }
    }

    /// Any other way to run a scenario, such as the oracle.
    pub fn custom(name: &str, run: impl Fn(Sim) -> Outcome + 'a) -> Contender<'a> {
        Contender {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// Each contender on each family, over `seeds`, in the scenario `scenario` makes of a
/// family and a seed; `progress` hears (runs done, runs in all).
pub fn evaluate(
    families: &[Family],
    contenders: &[Contender],
    seeds: &[u64],
    scenario: &dyn Fn(Family, u64) -> Scenario,
    progress: &mut dyn FnMut(usize, usize),
) -> Vec<Row> {
    let total = families.len() * contenders.len() * seeds.len();
    let mut done = 0;
    let mut rows = Vec::new();
    for family in families {
        for contender in contenders {
            let mut costs = Vec::new();
            let mut imbalance: Vec<f64> = Vec::new();
            for &seed in seeds {
                let outcome = (contender.run)(Sim::new(scenario(*family, seed)));
                costs.push(outcome.cost());
                let per_tick = outcome.imbalance_per_tick();
                imbalance.resize(per_tick.len().max(imbalance.len()), 0.0);
                for (sum, x) in imbalance.iter_mut().zip(per_tick) {
                    *sum += x / seeds.len() as f64;
                }
                done += 1;
                progress(done, total);
            }
            let (mean_cost, ci95) = summarise(&costs);
            rows.push(Row {
                family: family.name(),
                policy: contender.name.clone(),
                mean_cost,
                ci95,
                seeds: seeds.len(),
                imbalance,
            });
        }
    }
    rows
}

/// The thresholds of `base` (requests per tick, hot ticks) from `grid` with the lowest
/// mean cost over `families` and `seeds`: the "tuned" baseline.
pub fn tune(
    base: &LoadSplit,
    grid: &[(f64, u32)],
    families: &[Family],
    seeds: &[u64],
    scenario: &dyn Fn(Family, u64) -> Scenario,
) -> LoadSplit {
    let mut best: Option<(f64, LoadSplit)> = None;
    for &(qps, detect) in grid {
        let candidate = base.with_thresholds(qps, detect);
        let contender = Contender::policy(|| Box::new(candidate.clone()));
        let rows = evaluate(families, &[contender], seeds, scenario, &mut |_, _| {});
        let cost = rows.iter().map(|r| r.mean_cost).sum::<f64>() / rows.len().max(1) as f64;
        if best.as_ref().is_none_or(|(b, _)| cost < *b) {
            best = Some((cost, candidate));
        }
    }
    best.map_or_else(|| base.clone(), |(_, tuned)| tuned)
}

#[cfg(test)]
mod tests {
    use super::super::policy::SizeOnly;
    use super::*;

    #[test]
    fn summaries_give_the_mean_and_a_shrinking_interval() {
        assert_eq!(summarise(&[2.0]), (2.0, 0.0));
        let (mean, few) = summarise(&[1.0, 3.0]);
        assert_eq!(mean, 2.0);
        let (_, many) = summarise(&[1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]);
        assert!(many < few, "{many} vs {few}");
    }

    #[test]
    fn evaluation_covers_every_family_and_policy_and_tuning_picks_from_the_grid() {
        let families = [Family::MovingHotspot { speed: 0.001 }, Family::Uniform];
        let floor = Contender::policy(|| Box::new(SizeOnly));
        let tikv = Contender::policy(|| Box::new(LoadSplit::tikv()));
        let short = |family, seed| Scenario {
            ticks: 40,
            ..Scenario::three_regions(family, seed)
        };
        let mut steps = 0;
        let rows = evaluate(
            &families,
            &[floor, tikv],
            &[1, 2],
            &short,
            &mut |done, total| {
                steps = done;
                assert_eq!(total, 8);
            },
        );
        assert_eq!(steps, 8);
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|r| r.mean_cost > 0.0 && r.seeds == 2));
        assert!(
            rows.iter()
                .all(|r| r.imbalance.len() == 40 && r.imbalance[0] >= 1.0)
        );
        assert_eq!(rows[1].policy, "tikv");

        let grid = [(600.0, 2), (5_000.0, 10)];
        let tuned = tune(&LoadSplit::tikv(), &grid, &families, &[1], &short);
        assert!(grid.contains(&(tuned.qps_threshold, tuned.detect_ticks)));
        assert_eq!(tuned.name, "tikv-tuned");
    }
}
