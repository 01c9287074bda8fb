//! The batching pump shared by the proposer and the transport: take everything queued (up
//! to a count and a weight in bytes) as one batch, start it in order, and let it finish
//! on its own task, with at most a fixed number of batches unfinished at once. While that
//! many are in flight, new items pile up and form the next, larger batch.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// How large one batch may grow.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    pub items_max: usize,
    /// The sum of the items' weights; an item heavier than this goes in a batch alone.
    pub weight_max: usize,
    /// Batches started and not yet finished.
    pub in_flight_max: usize,
}

/// Drains `queue` in batches within `limits`, each item weighing `weigh(item)`. `start`
/// is awaited in order for each batch and returns the future that finishes it (or `None`
/// to stop draining). Returns when the queue closes.
pub(crate) async fn drain_in_batches<T, S, Started, Finish>(
    mut queue: mpsc::Receiver<T>,
    limits: BatchLimits,
    weigh: impl Fn(&T) -> usize,
    mut start: S,
) where
    S: FnMut(Vec<T>) -> Started,
    Started: Future<Output = Option<Finish>>,
    Finish: Future<Output = ()> + Send + 'static,
{
    assert!(
        limits.items_max > 0 && limits.in_flight_max > 0,
        "{limits:?}"
    );
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
    // The item that did not fit the last batch: the first of the next.
    let mut carried = None;
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(item) => item,
            None => match queue.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let mut weight = weigh(&first);
        let mut batch = vec![first];
        while batch.len() < limits.items_max && weight < limits.weight_max {
            let Ok(next) = queue.try_recv() else { break };
            let next_weight = weigh(&next);
            if weight.saturating_add(next_weight) > limits.weight_max {
                carried = Some(next);
                break;
            }
            weight += next_weight;
            batch.push(next);
        }
        let Some(finish) = start(batch).await else {
            return;
        };
        tokio::spawn(async move {
            finish.await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn queued_items_form_batches_in_order_and_all_finish() {
        let (tx, rx) = mpsc::channel(100);
        for i in 0..10 {
            tx.send(i).await.unwrap();
        }
        drop(tx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::new(Mutex::new(0));
        let (s, f) = (seen.clone(), finished.clone());
        let limits = BatchLimits {
            items_max: 4,
            weight_max: usize::MAX,
            in_flight_max: 1,
        };
        drain_in_batches(
            rx,
            limits,
            |_| 1,
            move |batch: Vec<i32>| {
                s.lock().unwrap().push(batch.clone());
                let f = f.clone();
                async move {
                    Some(async move {
                        *f.lock().unwrap() += batch.len();
                    })
                }
            },
        )
        .await;
        // Everything was queued before draining began, so batches are full and ordered.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        tokio::task::yield_now().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while *finished.lock().unwrap() < 10 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every batch finished"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn batches_stop_at_their_weight_and_a_heavy_item_goes_alone() {
        let (tx, rx) = mpsc::channel(100);
        for weight in [3, 3, 3, 20, 1, 1] {
            tx.send(weight).await.unwrap();
        }
        drop(tx);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let limits = BatchLimits {
            items_max: 10,
            weight_max: 7,
            in_flight_max: 1,
        };
        drain_in_batches(
            rx,
            limits,
            |w: &usize| *w,
            move |batch: Vec<usize>| {
                s.lock().unwrap().push(batch);
                async move { Some(async {}) }
            },
        )
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![3, 3], vec![3], vec![20], vec![1, 1]]
        );
    }
}
