//! The batching pump shared by the proposer and the transport: take everything queued (up
//! to a limit) as one batch, start it in order, and let it finish on its own task, with at
//! most a fixed number of batches unfinished at once. While that many are in flight, new
//! items pile up and form the next, larger batch.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

/// Drains `queue` in batches of at most `batch_max` items. `start` is awaited in order
/// for each batch and returns the future that finishes it (or `None` to stop draining);
/// at most `in_flight_max` of those run at once. Returns when the queue closes.
pub(crate) async fn drain_in_batches<T, S, Started, Finish>(
    mut queue: mpsc::Receiver<T>,
    batch_max: usize,
    in_flight_max: usize,
    mut start: S,
) where
    S: FnMut(Vec<T>) -> Started,
    Started: Future<Output = Option<Finish>>,
    Finish: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let mut batch = Vec::new();
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut batch, batch_max).await == 0 {
            return;
        }
        let Some(finish) = start(std::mem::take(&mut batch)).await else {
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
        drain_in_batches(rx, 4, 1, move |batch: Vec<i32>| {
            s.lock().unwrap().push(batch.clone());
            let f = f.clone();
            async move {
                Some(async move {
                    *f.lock().unwrap() += batch.len();
                })
            }
        })
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
}
