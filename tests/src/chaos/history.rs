//! The history of a chaos run: every operation as an invocation and a completion, one JSON
//! object per line, in the order they happened.
//!
//! ```text
//! {"at_us":1200,"client":3,"op":17,"type":"invoke","f":"cas","key":"k05","expected":"2-9","new":"3-17"}
//! {"at_us":9800,"client":3,"op":17,"type":"ok","swapped":true}
//! {"at_us":9900,"client":1,"op":40,"type":"invoke","f":"get","key":"k05"}
//! {"at_us":3009900,"client":1,"op":40,"type":"unknown","error":"no node answered within 3s"}
//! ```
//!
//! `type` is `invoke`, `ok`, `fail` (certainly not applied) or `unknown` (it may or may not
//! have been); a get's `ok` carries `value` (`null`: absent). An invocation without a
//! completion (the run ended first) is unknown.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::linearizability::{Call, Operation, Return};

/// One line of the history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at_us: u64,
    pub client: u64,
    pub op: u64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A put's value, or what a get read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swapped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {detail}")]
    Malformed {
        path: String,
        line: usize,
        detail: String,
    },
}

/// Writes a history file as operations happen; shared by every client.
pub struct Recorder {
    started: Instant,
    file: Mutex<BufWriter<File>>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Recorder> {
        Ok(Recorder {
            started: Instant::now(),
            file: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    /// Microseconds since the recorder was created.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn event(&self, client: u64, op: u64, kind: &str) -> Event {
        Event {
            at_us: self.now_us(),
            client,
            op,
            kind: kind.into(),
            f: None,
            key: None,
            value: None,
            expected: None,
            new: None,
            swapped: None,
            error: None,
        }
    }

    fn write(&self, event: &Event) {
        let line = serde_json::to_string(event).expect("events serialise");
        let mut file = self.file.lock().expect("history lock");
        // A history that cannot be written makes the run meaningless.
        writeln!(file, "{line}").expect("writing the history file");
    }

    /// Records that `client` invokes its operation `op`: `call` on `key`.
    pub fn invoke(&self, client: u64, op: u64, key: &[u8], call: &Call) {
        let mut event = self.event(client, op, "invoke");
        event.key = Some(text(key));
        match call {
            Call::Get => event.f = Some("get".into()),
            Call::Put(value) => {
                event.f = Some("put".into());
                event.value = Some(Some(text(value)));
            }
            Call::Cas { expected, new } => {
                event.f = Some("cas".into());
                event.expected = Some(expected.as_deref().map(text));
                event.new = Some(new.as_deref().map(text));
            }
        }
        self.write(&event);
    }

    /// Records how `client`'s operation `op` ended (`error` explains a fail or unknown).
    pub fn complete(&self, client: u64, op: u64, ret: &Return, error: Option<String>) {
        let kind = match ret {
            Return::Failed => "fail",
            Return::Unknown => "unknown",
            _ => "ok",
        };
        let mut event = self.event(client, op, kind);
        match ret {
            Return::Read(value) => event.value = Some(value.as_deref().map(text)),
            Return::Swapped(swapped) => event.swapped = Some(*swapped),
            _ => {}
        }
        event.error = error;
        self.write(&event);
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.file.lock().expect("history lock").flush()
    }
}

/// Why operations ended with an unknown outcome, by cause, from the errors the history
/// recorded with them. Unknown outcomes should be rare; this says which kinds are not.
pub fn unknown_causes(path: &Path) -> Result<BTreeMap<&'static str, u64>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut causes = BTreeMap::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        let Ok(event) = serde_json::from_str::<Event>(&line) else {
            continue;
        };
        if event.kind == "unknown" {
            *causes
                .entry(cause(event.error.as_deref().unwrap_or("")))
                .or_insert(0) += 1;
        }
    }
    Ok(causes)
}

/// The kind of an unknown outcome's error, in a few words.
fn cause(error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    let has = |word: &str| error.contains(word);
    if has("lost its leadership") {
        "leadership lost with the write in the log"
    } else if has("group stopped") {
        "the raft group stopped"
    } else if has("did not answer within") || has("timed out") || has("timeout") {
        "no answer in time"
    } else if has("transport error") || has("connection") || has("broken pipe") {
        "connection lost after sending"
    } else if has("forwarded") {
        "a forwarded batch's answer was lost"
    } else {
        "other"
    }
}

/// Reads a history file back as operations (times in microseconds).
pub fn read(path: &Path) -> Result<Vec<Operation>, HistoryError> {
    let name = path.display().to_string();
    let io = |source| HistoryError::Io {
        path: name.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut pending: HashMap<(u64, u64), (Vec<u8>, Call, u64)> = HashMap::new();
    let mut operations = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        let malformed = |detail: String| HistoryError::Malformed {
            path: name.clone(),
            line: index + 1,
            detail,
        };
        let event: Event = serde_json::from_str(&line).map_err(|e| malformed(e.to_string()))?;
        let id = (event.client, event.op);
        if event.kind == "invoke" {
            let key = event
                .key
                .clone()
                .ok_or_else(|| malformed("no key".into()))?;
            let bytes = |v: Option<String>| v.map(String::into_bytes);
            let call = match event.f.as_deref() {
                Some("get") => Call::Get,
                Some("put") => Call::Put(
                    bytes(event.value.clone().flatten())
                        .ok_or_else(|| malformed("a put without a value".into()))?,
                ),
                Some("cas") => Call::Cas {
                    expected: bytes(event.expected.clone().flatten()),
                    new: bytes(event.new.clone().flatten()),
                },
                other => return Err(malformed(format!("unknown operation {other:?}"))),
            };
            pending.insert(id, (key.into_bytes(), call, event.at_us));
            continue;
        }
        let (key, call, invoked) = pending
            .remove(&id)
            .ok_or_else(|| malformed(format!("completes {id:?}, which was never invoked")))?;
        let ret = match (event.kind.as_str(), &call) {
            ("fail", _) => Return::Failed,
            ("unknown", _) => Return::Unknown,
            ("ok", Call::Get) => Return::Read(event.value.flatten().map(String::into_bytes)),
            ("ok", Call::Put(_)) => Return::Written,
            ("ok", Call::Cas { .. }) => Return::Swapped(
                event
                    .swapped
                    .ok_or_else(|| malformed("a cas answer without `swapped`".into()))?,
            ),
            (other, _) => return Err(malformed(format!("unknown event type {other:?}"))),
        };
        operations.push(Operation {
            key,
            call,
            ret,
            invoked,
            completed: event.at_us,
        });
    }
    // Cut off by the end of the run.
    for (key, call, invoked) in pending.into_values() {
        operations.push(Operation {
            key,
            call,
            ret: Return::Unknown,
            invoked,
            completed: u64::MAX,
        });
    }
    Ok(operations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_outcomes_are_counted_by_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        let put = Call::Put(b"1-1".to_vec());
        let errors = [
            "shard 1: this node lost its leadership (to Some(2)) with the write in its log",
            "127.0.0.12:7401: transport error: connection reset",
            "127.0.0.12:7401 did not answer within 10s",
            "127.0.0.13:7401 did not answer within 10s",
        ];
        for (op, error) in (1..).zip(errors) {
            recorder.invoke(1, op, b"k", &put);
            recorder.complete(1, op, &Return::Unknown, Some(error.into()));
        }
        recorder.invoke(1, 9, b"k", &put);
        recorder.complete(1, 9, &Return::Written, None);
        recorder.flush().unwrap();
        let causes = unknown_causes(&path).unwrap();
        assert_eq!(causes["no answer in time"], 2);
        assert_eq!(causes["leadership lost with the write in the log"], 1);
        assert_eq!(causes["connection lost after sending"], 1);
        assert_eq!(causes.values().sum::<u64>(), 4);
    }

    #[test]
    fn a_recorded_history_reads_back_as_the_same_operations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(&path).unwrap();
        let put = Call::Put(b"1-1".to_vec());
        let cas = Call::Cas {
            expected: Some(b"1-1".to_vec()),
            new: Some(b"2-1".to_vec()),
        };
        recorder.invoke(1, 1, b"k", &put);
        recorder.invoke(2, 1, b"k", &cas);
        recorder.complete(1, 1, &Return::Written, None);
        recorder.complete(2, 1, &Return::Swapped(true), None);
        recorder.invoke(1, 2, b"k", &Call::Get);
        recorder.complete(1, 2, &Return::Read(None), None);
        recorder.invoke(2, 2, b"j", &Call::Get);
        recorder.complete(2, 2, &Return::Unknown, Some("timeout".into()));
        recorder.invoke(1, 3, b"j", &put);
        recorder.flush().unwrap();

        let mut operations = read(&path).unwrap();
        operations.sort_by_key(|o| o.invoked);
        let outcomes: Vec<(&[u8], &Call, &Return)> = operations
            .iter()
            .map(|o| (o.key.as_slice(), &o.call, &o.ret))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (&b"k"[..], &put, &Return::Written),
                (&b"k"[..], &cas, &Return::Swapped(true)),
                (&b"k"[..], &Call::Get, &Return::Read(None)),
                (&b"j"[..], &Call::Get, &Return::Unknown),
                (&b"j"[..], &put, &Return::Unknown),
            ]
        );
        assert!(operations.iter().all(|o| o.invoked <= o.completed));
    }

    #[test]
    fn a_damaged_history_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(
            &path,
            "{\"at_us\":1,\"client\":1,\"op\":1,\"type\":\"ok\"}\n",
        )
        .unwrap();
        let error = read(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 1") && error.contains("never invoked"),
            "{error}"
        );
        std::fs::write(&path, "not json\n").unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("line 1"));
    }
}
