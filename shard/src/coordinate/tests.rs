//! The coordinators against a model of the shards: each shard's descriptor changes only
//! through [`apply::decide`], as in a real group, and a script says which coordinator's
//! command the model carries out next, which fails, which node dies. The scripts in
//! `shard/testdata/*.txt` (in the style of etcd-io/raft's `testdata`) hold the merge's
//! races; each block is a directive, `----`, and the output expected.
//! `REWRITE=1 cargo test -p hanse-shard` rewrites the expected outputs.
//!
//! Directives:
//! - `shard id=1 range=a..m replicas=1,2,3 leader=1`: a shard of the model (`..m`,
//!   `a..`, `..` for unbounded ends).
//! - `merge NAME node=N left=ID`: a merge coordinator on node N of shard ID with the
//!   shard that starts where it ends, as the model has them now; prints its first step.
//! - `split NAME node=N shard=ID at=KEY`: a split coordinator.
//! - `deliver NAME`: the model carries out NAME's command; prints the answer and the
//!   next step. `deliver NAME lost-answer`: carried out, but the answer is lost (the
//!   coordinator hears "outcome unknown").
//! - `fail NAME KIND`: NAME's command fails (`timeout`, `unavailable`) without effect.
//! - `lag shard=ID node=N` / `catch-up shard=ID node=N`: that replica does (not) apply.
//! - `lead shard=ID node=N`: leadership moves.
//! - `kill node=N`: N goes down, and the coordinators on it stop for good;
//!   `restart node=N`: N is back (its replicas as they were).
//! - `shards`: the model's shards; `reset`: an empty model for the next scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::apply;
use crate::command::ShardResponse;
use crate::descriptor::{ReplicaDescriptor, ReplicaRole, ShardDescriptor};

fn show(d: &ShardDescriptor) -> String {
    let bound = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let end = match d.end.is_empty() {
        true => String::new(),
        false => bound(&d.end),
    };
    let mut text = format!(
        "s{}[{},{}) v{}",
        d.id,
        bound(&d.start),
        end,
        d.epoch.version
    );
    if let Some(m) = d.merging {
        let _ = write!(text, " frozen into s{} at {}", m.into, m.index);
    }
    text
}

fn show_command(command: &Command) -> String {
    match command {
        Command::Propose { shard, request } => {
            let what = match request {
                ShardRequest::PrepareMerge { into, .. } => {
                    format!("PrepareMerge into s{}", into.id)
                }
                ShardRequest::CommitMerge { source, .. } => {
                    format!("CommitMerge of s{}", source.id)
                }
                ShardRequest::FenceMerge { source } => format!("FenceMerge of s{}", source.id),
                ShardRequest::RollbackMerge { into } => format!("RollbackMerge from s{into}"),
                ShardRequest::Split {
                    at, new_shard_id, ..
                } => format!(
                    "Split at {} into s{new_shard_id}",
                    String::from_utf8_lossy(at)
                ),
                other => format!("{other:?}"),
            };
            format!("propose to s{shard}: {what}")
        }
        Command::LeadHere { shard } => format!("lead s{shard} here"),
        Command::AwaitApplied { shard, node, index } => {
            format!("await s{shard} on n{node} applying {index}")
        }
        Command::AwaitLeader { shard } => format!("await a leader of s{shard}"),
        Command::AllocateShardId => "allocate a shard id".into(),
        Command::Report { descriptors } => format!(
            "report {}",
            descriptors.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn show_event(event: &Event) -> String {
    match event {
        Event::Proposed(Ok(ShardResponse::Merge(d))) => format!("merge step: {}", show(d)),
        Event::Proposed(Ok(ShardResponse::Split { left, right })) => {
            format!("split: {} and {}", show(left), show(right))
        }
        Event::Proposed(Ok(ShardResponse::Rejected(r))) => format!("rejected: {r}"),
        Event::Proposed(Ok(other)) => format!("{other:?}"),
        Event::Proposed(Err(f)) | Event::Failed(f) => {
            format!("failed ({:?}): {}", f.kind, f.detail)
        }
        Event::Done => "done".into(),
        Event::Allocated(id) => format!("allocated s{id}"),
    }
}

/// A coordinator of either kind, its outcome in words.
enum Running {
    Merge(MergeCoordinator),
    Split(SplitCoordinator),
}

fn words<T>(step: Step<T>, show_output: impl Fn(&T) -> String) -> Step<String> {
    match step {
        Step::Run(command) => Step::Run(command),
        Step::Finish(outcome) => Step::Finish(outcome.map(|out| show_output(&out))),
    }
}

impl Running {
    fn start(&mut self) -> Step<String> {
        match self {
            Running::Merge(c) => words(c.start(), show),
            Running::Split(c) => words(c.start(), |(l, r)| format!("{} and {}", show(l), show(r))),
        }
    }

    fn step(&mut self, event: Event) -> Step<String> {
        match self {
            Running::Merge(c) => words(c.step(event), show),
            Running::Split(c) => words(c.step(event), |(l, r)| {
                format!("{} and {}", show(l), show(r))
            }),
        }
    }
}

struct Coordinated {
    node: NodeId,
    coordinator: Running,
    pending: Option<Command>,
}

#[derive(Default)]
struct World {
    shards: BTreeMap<ShardId, ShardDescriptor>,
    index: BTreeMap<ShardId, u64>,
    leader: BTreeMap<ShardId, NodeId>,
    lagging: BTreeSet<(ShardId, NodeId)>,
    down: BTreeSet<NodeId>,
    next_id: ShardId,
    running: BTreeMap<String, Coordinated>,
}

fn arg<'a>(args: &'a [&str], name: &str) -> &'a str {
    args.iter()
        .find_map(|a| a.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("missing {name}= in {args:?}"))
}

fn number(args: &[&str], name: &str) -> u64 {
    arg(args, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is a number"))
}

impl World {
    /// Carries out `command` of the coordinator on `node`.
    fn execute(&mut self, node: NodeId, command: &Command) -> Event {
        let failed = |kind, detail: String| Event::Failed(Failure::new(kind, detail));
        match command {
            Command::Propose { shard, request } => {
                if self.leader.get(shard) != Some(&node) {
                    return Event::Proposed(Err(Failure::new(
                        ErrorKind::Unavailable,
                        format!("n{node} does not lead s{shard}"),
                    )));
                }
                let index = self.index.entry(*shard).or_default();
                *index += 1;
                let index = *index;
                let current = self.shards[shard].clone();
                let effect = apply::decide(&current, request.clone(), index, |_| {
                    Ok::<_, std::convert::Infallible>(None)
                })
                .expect("no read fails");
                if let Some(descriptor) = effect.descriptor {
                    self.shards.insert(*shard, descriptor);
                }
                if let Some(created) = effect.created {
                    self.leader.insert(created.id, node);
                    self.shards.insert(created.id, created);
                }
                if let Some(absorbed) = effect.absorbed {
                    self.shards.remove(&absorbed.id);
                    self.leader.remove(&absorbed.id);
                }
                Event::Proposed(Ok(effect.response))
            }
            Command::LeadHere { shard } => match self.leader.get(shard) {
                None => failed(ErrorKind::NotFound, format!("s{shard} is gone")),
                Some(leader) if self.down.contains(leader) => failed(
                    ErrorKind::Unavailable,
                    format!("s{shard}'s leader n{leader} is down"),
                ),
                Some(_) => {
                    self.leader.insert(*shard, node);
                    Event::Done
                }
            },
            Command::AwaitApplied { shard, node, .. } => {
                match self.lagging.contains(&(*shard, *node)) || self.down.contains(node) {
                    true => failed(ErrorKind::DeadlineExceeded, "timed out".into()),
                    false => Event::Done,
                }
            }
            Command::AwaitLeader { shard } => match self.leader.contains_key(shard) {
                true => Event::Done,
                false => failed(ErrorKind::DeadlineExceeded, "timed out".into()),
            },
            Command::AllocateShardId => {
                self.next_id += 1;
                Event::Allocated(self.next_id)
            }
            Command::Report { .. } => Event::Done,
        }
    }

    /// Feeds `event` to `name` and prints what it does next.
    fn feed(&mut self, name: &str, event: Event, out: &mut String) {
        let _ = writeln!(out, "{name}: {}", show_event(&event));
        let running = self
            .running
            .get_mut(name)
            .expect("a coordinator of that name");
        let step = running.coordinator.step(event);
        self.show_step(name, step, out);
    }

    fn show_step(&mut self, name: &str, step: Step<String>, out: &mut String) {
        let running = self.running.get_mut(name).expect("coordinator");
        match step {
            Step::Run(command) => {
                let _ = writeln!(out, "{name} -> {}", show_command(&command));
                running.pending = Some(command);
            }
            Step::Finish(outcome) => {
                running.pending = None;
                match outcome {
                    Ok(done) => {
                        let _ = writeln!(out, "{name} finished: {done}");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "{name} failed ({:?}): {}", e.kind, e.message);
                    }
                }
            }
        }
    }

    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (directive, args) = words.split_first().expect("a directive");
        let mut out = String::new();
        match *directive {
            "shard" => {
                let id = number(args, "id");
                let (start, end) = arg(args, "range").split_once("..").expect("START..END");
                let replicas = arg(args, "replicas")
                    .split(',')
                    .map(|n| ReplicaDescriptor {
                        node: n.parse().expect("node ids"),
                        region: "r".into(),
                        role: ReplicaRole::Voter,
                    })
                    .collect();
                let descriptor = ShardDescriptor {
                    start: start.as_bytes().to_vec(),
                    end: end.as_bytes().to_vec(),
                    ..ShardDescriptor::whole_keyspace(id, replicas)
                };
                self.leader.insert(id, number(args, "leader"));
                self.next_id = self.next_id.max(id);
                let _ = writeln!(out, "{}", show(&descriptor));
                self.shards.insert(id, descriptor);
            }
            "merge" | "split" => {
                let name = args[0].to_string();
                let node = number(args, "node");
                let coordinator = if *directive == "merge" {
                    let left = self.shards[&number(args, "left")].clone();
                    let right = self
                        .shards
                        .values()
                        .find(|d| d.start == left.end && !left.end.is_empty());
                    Running::Merge(MergeCoordinator::new(left, right.cloned()))
                } else {
                    let shard = self.shards[&number(args, "shard")].clone();
                    Running::Split(SplitCoordinator::new(
                        shard,
                        arg(args, "at").as_bytes().to_vec(),
                    ))
                };
                let mut coordinated = Coordinated {
                    node,
                    coordinator,
                    pending: None,
                };
                let step = coordinated.coordinator.start();
                self.running.insert(name.clone(), coordinated);
                self.show_step(&name, step, &mut out);
            }
            "deliver" => {
                let name = args[0];
                let running = &self.running[name];
                let Some(command) = running.pending.clone() else {
                    let _ = writeln!(out, "{name} has nothing under way");
                    return out;
                };
                let event = self.execute(running.node, &command);
                let event = match args.get(1) {
                    Some(&"lost-answer") => {
                        let _ = writeln!(out, "({} carried out: {})", name, show_event(&event));
                        Event::Proposed(Err(Failure::new(
                            ErrorKind::Unknown,
                            "the answer was lost",
                        )))
                    }
                    _ => event,
                };
                self.feed(name, event, &mut out);
            }
            "fail" => {
                let name = args[0];
                let kind = match args[1] {
                    "timeout" => ErrorKind::DeadlineExceeded,
                    "unavailable" => ErrorKind::Unavailable,
                    other => panic!("unknown failure {other}"),
                };
                let failure = Failure::new(kind, args[1]);
                let event = match self.running[name].pending {
                    Some(Command::Propose { .. }) => Event::Proposed(Err(failure)),
                    _ => Event::Failed(failure),
                };
                self.feed(name, event, &mut out);
            }
            "lag" | "catch-up" => {
                let replica = (number(args, "shard"), number(args, "node"));
                match *directive == "lag" {
                    true => self.lagging.insert(replica),
                    false => self.lagging.remove(&replica),
                };
                let _ = writeln!(out, "ok");
            }
            "lead" => {
                self.leader
                    .insert(number(args, "shard"), number(args, "node"));
                let _ = writeln!(out, "ok");
            }
            "kill" => {
                let node = number(args, "node");
                self.down.insert(node);
                let gone: Vec<String> = self
                    .running
                    .iter()
                    .filter(|(_, c)| c.node == node)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    self.running.remove(&name);
                    let _ = writeln!(out, "{name} stopped with its node");
                }
            }
            "reset" => {
                *self = World::default();
                let _ = writeln!(out, "ok");
            }
            "restart" => {
                self.down.remove(&number(args, "node"));
                let _ = writeln!(out, "ok");
            }
            "shards" => {
                for d in self.shards.values() {
                    let leader = self
                        .leader
                        .get(&d.id)
                        .map_or("none".into(), |n| format!("n{n}"));
                    let _ = writeln!(out, "{} led by {leader}", show(d));
                }
            }
            other => panic!("unknown directive {other}"),
        }
        out
    }
}

/// Runs one script; returns its text with the outputs as they came out.
fn run_script(text: &str) -> String {
    let mut world = World::default();
    let mut rewritten = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        let directive = line.to_string();
        // The expected output follows `----` up to a blank line.
        assert_eq!(lines.next(), Some("----"), "`----` after {directive:?}");
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        let output = world.run(&directive);
        let _ = write!(rewritten, "{directive}\n----\n{output}");
    }
    rewritten
}

#[test]
fn scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut scripts: Vec<_> = std::fs::read_dir(&dir)
        .expect("shard/testdata")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    scripts.sort();
    assert!(!scripts.is_empty());
    let mut differ = Vec::new();
    for path in scripts {
        let text = std::fs::read_to_string(&path).unwrap();
        let actual = run_script(&text);
        if actual != text {
            if rewrite {
                std::fs::write(&path, &actual).unwrap();
            } else {
                differ.push(format!(
                    "{} (REWRITE=1 to accept):\n{}",
                    path.display(),
                    diff(&text, &actual)
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

/// The lines where `actual` departs from `expected`.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = String::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (
            e.get(i).copied().unwrap_or(""),
            a.get(i).copied().unwrap_or(""),
        );
        if x != y {
            let _ = writeln!(
                out,
                "line {}: expected {x:?}\n         got      {y:?}",
                i + 1
            );
        }
    }
    out
}

/// A runtime over the model, for [`drive`].
struct ModelRuntime {
    world: std::sync::Mutex<World>,
    node: NodeId,
}

impl Runtime for ModelRuntime {
    fn execute(&self, command: Command) -> impl Future<Output = Event> + Send {
        let event = self.world.lock().unwrap().execute(self.node, &command);
        std::future::ready(event)
    }
}

/// Polls a future that never waits to its end.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the model never waits"),
    }
}

#[test]
fn a_driven_merge_and_split_reach_their_outcome() {
    let mut world = World::default();
    world.run("shard id=1 range=..m replicas=1,2,3 leader=1");
    world.run("shard id=2 range=m.. replicas=1,2,3 leader=2");
    let (left, right) = (world.shards[&1].clone(), world.shards[&2].clone());
    let runtime = ModelRuntime {
        world: std::sync::Mutex::new(world),
        node: 1,
    };
    let merged = now(drive(MergeCoordinator::new(left, Some(right)), &runtime)).unwrap();
    assert!(
        merged.start.is_empty() && merged.end.is_empty(),
        "{merged:?}"
    );
    let (l, r) = now(drive(
        SplitCoordinator::new(merged, b"g".to_vec()),
        &runtime,
    ))
    .unwrap();
    assert_eq!(
        (l.end.as_slice(), r.start.as_slice()),
        (&b"g"[..], &b"g"[..])
    );
    let world = runtime.world.lock().unwrap();
    assert_eq!(world.shards.len(), 2);
}

#[test]
fn a_split_at_the_first_key_is_refused_before_anything_happens() {
    let shard = ShardDescriptor {
        start: b"k".to_vec(),
        ..ShardDescriptor::whole_keyspace(3, vec![])
    };
    let mut split = SplitCoordinator::new(shard, b"k".to_vec());
    assert!(matches!(
        split.start(),
        Step::Finish(Err(CoordinatorError {
            kind: ErrorKind::Invalid,
            ..
        }))
    ));
}
