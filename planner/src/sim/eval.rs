//! Runs policies over workload families and seeds and summarises their costs; tunes a
//! load-split policy's thresholds by grid search on training families.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    /// Each seed's cost and the floor of its run, in the order of the seeds.
    pub costs: Vec<f64>,
    pub floors: Vec<f64>,
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
            let (mut costs, mut floors) = (Vec::new(), Vec::new());
            let mut imbalance: Vec<f64> = Vec::new();
            for &seed in seeds {
                let outcome = (contender.run)(Sim::new(scenario(*family, seed)));
                costs.push(outcome.cost());
                floors.push(outcome.floor_cost());
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
                costs,
                floors,
            });
        }
    }
    rows
}

/// How a policy fares on one family against the family's best heuristic.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub family: String,
    pub best_heuristic: String,
    /// The floor of the cost (the mean of the runs' floors).
    pub floor: f64,
    /// (best heuristic − floor) / best heuristic: how much there is to gain at all.
    pub headroom: f64,
    /// (policy − best heuristic) / best heuristic, negative where the policy is cheaper,
    /// with its paired-bootstrap 95 % interval.
    pub relative: f64,
    pub relative_ci: (f64, f64),
    /// The gap closed, G = (best heuristic − policy) / (best heuristic − floor), with its
    /// paired-bootstrap 95 % interval.
    pub gap_closed: f64,
    pub gap_closed_ci: (f64, f64),
}

/// Resamplings of the seeds for the bootstrap intervals.
const BOOTSTRAP_RESAMPLES: usize = 2_000;

/// `policy` on each family of `rows` against the family's best heuristic (the one with
/// the lowest mean cost of those `is_heuristic` names). The intervals resample the seeds,
/// each resampled seed counting for both policies (their runs on a seed share the
/// workload: a paired comparison).
pub fn judge(rows: &[Row], policy: &str, is_heuristic: &dyn Fn(&str) -> bool) -> Vec<Judgement> {
    let mut families: Vec<&str> = Vec::new();
    for row in rows {
        if !families.contains(&row.family.as_str()) {
            families.push(&row.family);
        }
    }
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    families
        .into_iter()
        .filter_map(|family| {
            let of_family = |r: &&Row| r.family == family;
            let ours = rows.iter().filter(of_family).find(|r| r.policy == policy)?;
            let best = rows
                .iter()
                .filter(of_family)
                .filter(|r| is_heuristic(&r.policy) && r.costs.len() == ours.costs.len())
                .min_by(|a, b| a.mean_cost.total_cmp(&b.mean_cost))?;
            let statistics = |picked: &[usize]| {
                let take = |xs: &[f64]| mean(&picked.iter().map(|&i| xs[i]).collect::<Vec<_>>());
                let (b, p, f) = (take(&best.costs), take(&ours.costs), take(&best.floors));
                ((p - b) / b, (b - p) / (b - f).max(1e-9))
            };
            let seeds: Vec<usize> = (0..ours.costs.len()).collect();
            let (relative, gap_closed) = statistics(&seeds);
            let mut rng = StdRng::seed_from_u64(1);
            let (mut relatives, mut gaps) = (Vec::new(), Vec::new());
            for _ in 0..BOOTSTRAP_RESAMPLES {
                let picked: Vec<usize> = seeds
                    .iter()
                    .map(|_| rng.random_range(0..seeds.len()))
                    .collect();
                let (r, g) = statistics(&picked);
                relatives.push(r);
                gaps.push(g);
            }
            let floor = mean(&best.floors);
            Some(Judgement {
                family: family.to_string(),
                best_heuristic: best.policy.clone(),
                floor,
                headroom: (best.mean_cost - floor) / best.mean_cost,
                relative,
                relative_ci: interval95(relatives),
                gap_closed,
                gap_closed_ci: interval95(gaps),
            })
        })
        .collect()
}

/// The 2.5th and 97.5th percentiles of `samples`.
fn interval95(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (at(0.025), at(0.975))
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
    fn judgement_measures_the_gap_closed_against_the_best_heuristic_with_paired_intervals() {
        let row = |policy: &str, costs: &[f64]| Row {
            family: "f".into(),
            policy: policy.into(),
            mean_cost: costs.iter().sum::<f64>() / costs.len() as f64,
            ci95: 0.0,
            seeds: costs.len(),
            imbalance: Vec::new(),
            costs: costs.to_vec(),
            floors: vec![5.0; costs.len()],
        };
        // Seeds differ a lot from each other, but the policy is 1 cheaper on every one.
        let rows = [
            row("worse", &[13.0, 15.0, 11.0, 14.0]),
            row("best", &[10.0, 12.0, 8.0, 11.0]),
            row("policy", &[9.0, 11.0, 7.0, 10.0]),
        ];
        let judged = judge(&rows, "policy", &|p| p != "policy");
        let [j] = &judged[..] else {
            panic!("{judged:?}")
        };
        assert_eq!(j.best_heuristic, "best");
        assert!((j.gap_closed - 1.0 / (10.25 - 5.0)).abs() < 1e-9, "{j:?}");
        assert!((j.relative + 1.0 / 10.25).abs() < 1e-9, "{j:?}");
        assert!((j.headroom - 5.25 / 10.25).abs() < 1e-9, "{j:?}");
        // Paired: the interval is narrow although the seeds' costs spread widely.
        let (lo, hi) = j.relative_ci;
        assert!(lo <= j.relative && j.relative <= hi && hi < 0.0, "{j:?}");
        let (lo, hi) = j.gap_closed_ci;
        assert!(
            lo <= j.gap_closed && j.gap_closed <= hi && lo > 0.0,
            "{j:?}"
        );
    }

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
