//! A cap on log lines per place in the code. When a node dies, thousands of Raft groups
//! fail the same call to it at once, and openraft logs every failure: tens of thousands of
//! identical lines a second, whose formatting and writing took CPU the surviving nodes
//! needed to elect new leaders. Each call site may log `per_second` lines a second; what
//! it held back is counted and said every [`HELD_BACK_REPORT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Metadata, subscriber::Interest};
use tracing_subscriber::layer::{Context, Filter};

/// How often the lines held back are reported.
pub const HELD_BACK_REPORT: Duration = Duration::from_secs(10);

const WINDOW: Duration = Duration::from_secs(1);

/// The filter: lets through at most `per_second` events of each call site a second.
#[derive(Clone)]
pub struct PerCallsite {
    per_second: u32,
    sites: Arc<Mutex<HashMap<Identifier, Site>>>,
}

struct Site {
    /// Where the call site is, for the report.
    place: String,
    window_start: Instant,
    passed: u32,
    held_back: u64,
}

impl PerCallsite {
    pub fn new(per_second: u32) -> Self {
        PerCallsite {
            per_second,
            sites: Arc::default(),
        }
    }

    fn admit(&self, meta: &Metadata<'_>, now: Instant) -> bool {
        let mut sites = self.sites.lock().expect("log limit lock");
        let site = sites.entry(meta.callsite()).or_insert_with(|| Site {
            place: format!("{}:{}", meta.target(), meta.line().unwrap_or(0)),
            window_start: now,
            passed: 0,
            held_back: 0,
        });
        if now.duration_since(site.window_start) >= WINDOW {
            site.window_start = now;
            site.passed = 0;
        }
        if site.passed < self.per_second {
            site.passed += 1;
            return true;
        }
        site.held_back += 1;
        false
    }

    /// The lines each call site held back since the last call, busiest first; clears them.
    pub fn take_held_back(&self) -> Vec<(String, u64)> {
        let mut sites = self.sites.lock().expect("log limit lock");
        let mut held: Vec<(String, u64)> = sites
            .values_mut()
            .filter(|site| site.held_back > 0)
            .map(|site| (site.place.clone(), std::mem::take(&mut site.held_back)))
            .collect();
        held.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        held
    }
}

impl<S> Filter<S> for PerCallsite {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        !meta.is_event() || self.admit(meta, Instant::now())
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        // Judged event by event: the answer changes with the count.
        Interest::sometimes()
    }
}

/// Reports, every [`HELD_BACK_REPORT`] for as long as the process runs, what `limit` held
/// back (from a thread of its own: an event logged from inside the filter is dropped).
pub fn report_held_back(limit: PerCallsite) {
    let reporter = move || {
        loop {
            std::thread::sleep(HELD_BACK_REPORT);
            let held = limit.take_held_back();
            if held.is_empty() {
                continue;
            }
            let total: u64 = held.iter().map(|(_, n)| n).sum();
            let busiest: Vec<String> = held
                .iter()
                .take(3)
                .map(|(place, n)| format!("{place} ({n})"))
                .collect();
            tracing::warn!(
                total,
                busiest = busiest.join(", "),
                "log lines held back in the last {HELD_BACK_REPORT:?} (repeats of the same line)"
            );
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("log-limit".into())
        .spawn(reporter)
    {
        tracing::warn!("no report of held-back log lines: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{Layer, Registry};

    /// Notes the metadata of every event that reached it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<&'static Metadata<'static>>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            self.0.lock().unwrap().push(event.metadata());
        }
    }

    #[test]
    fn each_call_site_passes_its_quota_a_second_and_counts_the_rest() {
        let limit = PerCallsite::new(2);
        let seen = Seen::default();
        let subscriber = Registry::default().with(seen.clone().with_filter(limit.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..5 {
                tracing::error!(i, "the same line again");
            }
            tracing::warn!("another line");
        });
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 3, "two of the first line, one of the other");
        let noisy = seen[0];
        assert_eq!(
            limit
                .take_held_back()
                .iter()
                .map(|h| h.1)
                .collect::<Vec<_>>(),
            [3]
        );
        assert!(limit.take_held_back().is_empty(), "taken once");
        let later = Instant::now() + WINDOW;
        assert!(limit.admit(noisy, later), "a new second, a new quota");
    }
}
