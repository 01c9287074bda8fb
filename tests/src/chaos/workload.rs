//! The workload: clients that get, put unique values (some through the bulk path) and
//! compare-and-swap a small set of keys as fast as the cluster answers, recording every
//! operation in the history.
//!
//! The set of keys changes every [`KEY_LIFETIME`] (a new generation of keys), as in
//! Jepsen's independent-keys workloads: each key's history stays short enough for the
//! checker, however long the run, with only a few operations of unknown outcome each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hanse_client::{Client, ClientError, ClientOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::history::Recorder;
use crate::linearizability::{Call, Return};

/// How long one generation of keys is in use.
pub const KEY_LIFETIME: Duration = Duration::from_secs(10);

/// The `index`th key of generation `generation`.
pub fn key(generation: u64, index: u64) -> Vec<u8> {
    format!("chaos-{generation:05}-{index:03}").into_bytes()
}

/// The generation of keys in use `at_us` microseconds into the run.
pub fn generation(at_us: u64) -> u64 {
    at_us / KEY_LIFETIME.as_micros() as u64
}

/// Runs `call` on `key` as `client`'s operation `op`, recording it, and returns its
/// outcome.
pub async fn perform(
    client: &Client,
    recorder: &Recorder,
    (client_id, op): (u64, u64),
    key: &[u8],
    call: Call,
) -> Return {
    recorder.invoke(client_id, op, key, &call);
    let answer = match &call {
        Call::Get => client.get(key).await.map(Return::Read),
        // Every fourth operation's put takes the bulk path: an ingest of one pair is the
        // same put to the model, applied as an ingested file.
        Call::Put(value) if op % 4 == 0 => client
            .ingest(&[(key.to_vec(), value.clone())])
            .await
            .map(|()| Return::Written),
        Call::Put(value) => client.put(key, value).await.map(|()| Return::Written),
        Call::Cas { expected, new } => client
            .compare_and_swap(key, expected.as_deref(), new.as_deref())
            .await
            .map(|outcome| Return::Swapped(outcome.swapped)),
    };
    let (ret, error) = match answer {
        Ok(ret) => (ret, None),
        // Refused before it was proposed.
        Err(e @ ClientError::InvalidArgument(_)) => (Return::Failed, Some(e.to_string())),
        // No answer: it may have been applied.
        Err(e) => (Return::Unknown, Some(e.to_string())),
    };
    recorder.complete(client_id, op, &ret, error);
    ret
}

/// One client: until `stop` turns true, picks a key and an operation (45 % get, 35 % put,
/// 20 % compare-and-swap from the value it last saw) and records it. Values are
/// `client-op`, unique in the run.
pub async fn run_client(
    client_id: u64,
    endpoints: Vec<String>,
    options: ClientOptions,
    keys: u64,
    seed: u64,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ClientError> {
    let client = Client::new(&endpoints, options)?;
    let mut rng = StdRng::seed_from_u64(seed ^ client_id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
    for op in 1.. {
        if *stop.borrow_and_update() {
            break;
        }
        let key = key(generation(recorder.now_us()), rng.random_range(0..keys));
        let value = format!("{client_id}-{op}").into_bytes();
        let roll = rng.random_range(0..100);
        let call = if roll < 45 {
            Call::Get
        } else if roll < 80 {
            Call::Put(value.clone())
        } else {
            Call::Cas {
                expected: seen.get(&key).cloned().flatten(),
                new: Some(value.clone()),
            }
        };
        match perform(&client, &recorder, (client_id, op), &key, call).await {
            Return::Read(read) => {
                seen.insert(key, read);
            }
            Return::Written | Return::Swapped(true) => {
                seen.insert(key, Some(value));
            }
            Return::Swapped(false) | Return::Failed | Return::Unknown => {}
        }
    }
    Ok(())
}
