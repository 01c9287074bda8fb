//! Embedded mode: the whole store in one process.
//!
//! Every write goes through the Raft group of the shard that owns its key (this process is
//! the group's only voter) and returns once the entry is synced and applied. Reads come
//! straight from the applied state: with a single voter, every acknowledged write has
//! already been applied before it was acknowledged, so such a read is linearizable
//! without a read-index round.

use hanse_storage::Store;
use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use hanse_consensus::{ReplicaNode, ShardGroup, SingleVoterNetwork};
use hanse_shard::apply;
use hanse_shard::range::{half_open, intersect};
use hanse_shard::{KeyValue, Mutation, RouteTable, Routed, ShardRequest, ShardResponse};
use hanse_shard::{ReplicaDescriptor, ReplicaRole, ShardDescriptor, ShardId};
use hanse_storage::{Batch, Cf, ScanOrder};
use hanse_storage_rocksdb::{Engine, EngineOptions, LogWriterStats};
use tokio::sync::RwLock;

use crate::error::printable;
use crate::{Error, Options, Result};

/// The first shard of a fresh store; shard 0 is reserved for the cluster's meta shard.
const FIRST_SHARD: ShardId = 1;
/// The embedded node's id in every group.
const EMBEDDED_NODE: u64 = 1;
/// Rounds of "start the groups, let them apply, reload descriptors" at open. A round only
/// repeats when re-applied splits created shards; each split adds at most one.
const OPEN_ROUNDS_MAX: usize = 64;
/// Keys and values in one ingest log entry.
const INGEST_ENTRY_BYTES: usize = 4 << 20;

/// The outcome of [`Db::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    /// Whether the new value was written.
    pub swapped: bool,
    /// The key's value just before the operation (`None`: absent).
    pub previous: Option<Vec<u8>>,
}

/// One write of a [`Db::batch`].
pub use hanse_shard::Mutation as BatchOp;

struct Route {
    descriptor: ShardDescriptor,
    group: ShardGroup,
}

impl Routed for Route {
    fn with_descriptor<R>(&self, f: impl FnOnce(&ShardDescriptor) -> R) -> R {
        f(&self.descriptor)
    }
}

type Routes = RouteTable<Route>;

fn route_of<'r>(routes: &'r Routes, key: &[u8]) -> Result<&'r Route> {
    routes.lookup(key).ok_or_else(|| Error::ShardUnavailable {
        key: printable(key),
    })
}

/// An embedded Hanse store. All methods block; call them from ordinary threads (from
/// async code, through `spawn_blocking`).
pub struct Db {
    engine: std::sync::Arc<Engine>,
    options: Options,
    // Writers hold the read lock while they propose; a split holds the write lock, so no
    // write is ever in flight with a route the split is changing.
    routes: RwLock<Routes>,
    next_shard_id: AtomicU64,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Db {
    /// Opens (or creates) the store in `path`.
    pub fn open(path: impl AsRef<Path>, options: Options) -> Result<Db> {
        let engine = std::sync::Arc::new(Engine::open(
            path,
            EngineOptions {
                sync_log_writes: options.sync,
            },
        )?);
        engine.claim_node(EMBEDDED_NODE)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hanse-db")
            .enable_all()
            .build()
            .map_err(|e| {
                Error::Storage(hanse_storage::Error::Io {
                    path: engine.path().to_path_buf(),
                    source: e,
                })
            })?;
        let routes = runtime.block_on(start_groups(&engine, &options))?;
        let next_shard_id = routes
            .iter()
            .map(|r| r.descriptor.id)
            .max()
            .unwrap_or(FIRST_SHARD)
            + 1;
        Ok(Db {
            engine,
            options,
            routes: RwLock::new(routes),
            next_shard_id: AtomicU64::new(next_shard_id),
            runtime: Some(runtime),
        })
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime lives until drop")
            .block_on(future)
    }

    /// The value of `key`, or `None` when it is absent.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.options.limits().check_key(key)?;
        Ok(self.engine.get(Cf::Data, key)?)
    }

    /// Sets `key` to `value`; durable when it returns.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch(vec![Mutation::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }])
    }

    /// Removes `key` (absent keys are fine); durable when it returns.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.batch(vec![Mutation::Delete { key: key.to_vec() }])
    }

    /// Applies `ops` in order. The ops of each shard are applied atomically (all or none);
    /// a batch whose keys span several shards commits shard by shard, in key order.
    pub fn batch(&self, ops: Vec<BatchOp>) -> Result<()> {
        for op in &ops {
            self.options.limits().check_mutation(op)?;
        }
        self.block_on(self.write(ops))
    }

    /// Puts `pairs`, whose keys must strictly ascend, through the bulk path: each shard's
    /// share becomes files of sorted keys ingested through its log (no memtable, no
    /// compactions). Each file is applied whole or not at all.
    pub fn ingest(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let limits = self.options.limits();
        for (key, value) in &pairs {
            limits.check_key(key)?;
            limits.check_value(value)?;
        }
        let pairs: Vec<KeyValue> = pairs
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect();
        if let Some(at) = apply::first_unordered(&pairs) {
            return Err(Error::IngestOrder { at });
        }
        self.block_on(self.ingest_sorted(pairs))
    }

    /// Sets `key` to `new` (`None` deletes it) only if its current value is `expected`
    /// (`None`: the key is absent), atomically.
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome> {
        self.options.limits().check_key(key)?;
        if let Some(value) = new {
            self.options.limits().check_value(value)?;
        }
        self.block_on(async {
            let routes = self.routes.read().await;
            let route = route_of(&routes, key)?;
            let request = ShardRequest::CompareAndSwap {
                epoch: route.descriptor.epoch,
                key: key.to_vec(),
                expected: expected.map(<[u8]>::to_vec),
                new: new.map(<[u8]>::to_vec),
            };
            match propose(route, request).await? {
                ShardResponse::CompareAndSwap { swapped, previous } => {
                    Ok(CasOutcome { swapped, previous })
                }
                other => Err(unexpected(route, &other)),
            }
        })
    }

    /// Up to `limit` key-value pairs with keys in `range`, in key order.
    pub fn scan<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_ordered(range, limit, ScanOrder::Forward)
    }

    /// Up to `limit` key-value pairs with keys in `range`, from the last key down.
    pub fn scan_reverse<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_ordered(range, limit, ScanOrder::Reverse)
    }

    fn scan_ordered<R: RangeBounds<Vec<u8>>>(
        &self,
        range: R,
        limit: usize,
        order: ScanOrder,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (start, end) = half_open(&range);
        if !end.is_empty() && start > end {
            return Err(Error::InvalidRange {
                start: printable(&start),
                end: printable(&end),
            });
        }
        // Each shard is read over its part of the range, so a scan never returns a key
        // from outside the shard that owns it.
        let mut parts: Vec<(Vec<u8>, Vec<u8>)> = self
            .routes
            .blocking_read()
            .overlapping(&start, &end)
            .map(|r| intersect(&r.descriptor, &start, &end))
            .collect();
        if order == ScanOrder::Reverse {
            parts.reverse();
        }
        let mut out = Vec::new();
        for (part_start, part_end) in parts {
            if out.len() >= limit {
                break;
            }
            let rows =
                self.engine
                    .scan(Cf::Data, &part_start, &part_end, limit - out.len(), order)?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Splits the shard that owns `key` at `key`, through the shard's Raft log (the same
    /// admin command a cluster uses). Returns the shrunk shard and the new one.
    pub fn split_shard(&self, key: &[u8]) -> Result<(ShardDescriptor, ShardDescriptor)> {
        self.options.limits().check_key(key)?;
        self.block_on(self.split(key))
    }

    /// The descriptors of all shards, in key order.
    pub fn shards(&self) -> Vec<ShardDescriptor> {
        self.routes
            .blocking_read()
            .iter()
            .map(|r| r.descriptor.clone())
            .collect()
    }

    /// How the node's log writer has grouped writes so far.
    pub fn log_writer_stats(&self) -> LogWriterStats {
        self.engine.log_writer_stats()
    }

    async fn write(&self, ops: Vec<Mutation>) -> Result<()> {
        let routes = self.routes.read().await;
        let mut by_shard: BTreeMap<&[u8], (&Route, Vec<Mutation>)> = BTreeMap::new();
        for op in ops {
            let route = route_of(&routes, op.key())?;
            by_shard
                .entry(route.descriptor.start.as_slice())
                .or_insert_with(|| (route, Vec::new()))
                .1
                .push(op);
        }
        for (route, mutations) in by_shard.into_values() {
            let request = ShardRequest::Write {
                epoch: route.descriptor.epoch,
                mutations,
            };
            match propose(route, request).await? {
                ShardResponse::Applied => {}
                other => return Err(unexpected(route, &other)),
            }
        }
        Ok(())
    }

    async fn ingest_sorted(&self, pairs: Vec<KeyValue>) -> Result<()> {
        let routes = self.routes.read().await;
        let mut rest = pairs.as_slice();
        while let Some(first) = rest.first() {
            let route = route_of(&routes, &first.key)?;
            // The keys ascend, so the shard's share comes first; a log entry holds at most
            // about INGEST_ENTRY_BYTES of it.
            let mut bytes = 0;
            let count = rest
                .iter()
                .take_while(|pair| {
                    bytes += pair.key.len() + pair.value.len();
                    route.descriptor.contains(&pair.key) && bytes <= INGEST_ENTRY_BYTES
                })
                .count()
                .max(1);
            let request = ShardRequest::Ingest {
                epoch: route.descriptor.epoch,
                pairs: rest[..count].to_vec(),
            };
            match propose(route, request).await? {
                ShardResponse::Applied => {}
                other => return Err(unexpected(route, &other)),
            }
            rest = &rest[count..];
        }
        Ok(())
    }

    async fn split(&self, at: &[u8]) -> Result<(ShardDescriptor, ShardDescriptor)> {
        let mut routes = self.routes.write().await;
        let route = route_of(&routes, at)?;
        if at == route.descriptor.start.as_slice() {
            return Err(Error::InvalidSplit {
                key: printable(at),
                reason: format!(
                    "it is already the first key of shard {}",
                    route.descriptor.id
                ),
            });
        }
        let request = ShardRequest::Split {
            at: at.to_vec(),
            new_shard_id: self.next_shard_id.fetch_add(1, Ordering::SeqCst),
            expected_epoch: route.descriptor.epoch,
        };
        let (left, right) = match propose(route, request).await? {
            ShardResponse::Split { left, right } => (left, right),
            other => return Err(unexpected(route, &other)),
        };
        routes
            .get_mut(left.id)
            .expect("the split shard is hosted")
            .descriptor = left.clone();
        let group = start_group(&self.engine, &self.options, &right).await?;
        let created = Route {
            descriptor: right.clone(),
            group,
        };
        if let Err(overlap) = routes.insert(created) {
            return Err(Error::Raft {
                shard: right.id,
                detail: overlap.to_string(),
            });
        }
        Ok((left, right))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        runtime.block_on(async {
            for route in self.routes.read().await.iter() {
                route.group.shutdown().await;
            }
        });
    }
}

async fn propose(route: &Route, request: ShardRequest) -> Result<ShardResponse> {
    let shard = route.descriptor.id;
    let response = route
        .group
        .propose(request)
        .await
        .map_err(|e| Error::Raft {
            shard,
            detail: e.to_string(),
        })?;
    match response {
        ShardResponse::Rejected(rejection) => Err(Error::Rejected {
            shard,
            rejection: Box::new(rejection),
        }),
        other => Ok(other),
    }
}

fn unexpected(route: &Route, response: &ShardResponse) -> Error {
    Error::Raft {
        shard: route.descriptor.id,
        detail: format!("unexpected response {response:?}"),
    }
}

/// Starts the group of `descriptor` on this node, as its only voter, and waits until it
/// leads and has applied its whole log.
async fn start_group(
    engine: &std::sync::Arc<Engine>,
    options: &Options,
    descriptor: &ShardDescriptor,
) -> Result<ShardGroup> {
    let group = ShardGroup::start(
        descriptor.id,
        engine.clone(),
        &options.raft,
        SingleVoterNetwork,
    )
    .await?;
    let me = ReplicaNode {
        addr: String::new(),
        region: options.region.clone(),
    };
    group
        .initialize(BTreeMap::from([(EMBEDDED_NODE, me)]))
        .await?;
    group.campaign_unless_leader().await?;
    group.wait_for_leader(options.leader_wait).await?;
    let last_log_index = group.raft.metrics().borrow().last_log_index;
    group
        .raft
        .wait(Some(options.leader_wait))
        .applied_index_at_least(last_log_index, "the whole log is applied")
        .await
        .map_err(|e| Error::Raft {
            shard: descriptor.id,
            detail: format!("catching up the log: {e}"),
        })?;
    Ok(group)
}

/// Starts every shard stored on this node. Applying the log at startup can re-run splits
/// whose effects had not reached the disk, so descriptors are reloaded until they settle.
async fn start_groups(engine: &std::sync::Arc<Engine>, options: &Options) -> Result<Routes> {
    if engine.load_descriptors()?.is_empty() {
        let replica = ReplicaDescriptor {
            node: EMBEDDED_NODE,
            region: options.region.clone(),
            role: ReplicaRole::Voter,
        };
        let mut batch = Batch::default();
        batch.put_descriptor(&ShardDescriptor::whole_keyspace(FIRST_SHARD, vec![replica]));
        engine.write(batch, true)?;
    }
    let mut groups: BTreeMap<ShardId, ShardGroup> = BTreeMap::new();
    for _ in 0..OPEN_ROUNDS_MAX {
        let descriptors = engine.load_descriptors()?;
        let missing: Vec<_> = descriptors
            .iter()
            .filter(|d| !groups.contains_key(&d.id))
            .collect();
        if missing.is_empty() {
            let mut routes = Routes::default();
            for descriptor in descriptors {
                let id = descriptor.id;
                let group = groups.remove(&id).expect("every shard was started");
                routes
                    .insert(Route { descriptor, group })
                    .map_err(|overlap| Error::Raft {
                        shard: id,
                        detail: overlap.to_string(),
                    })?;
            }
            return Ok(routes);
        }
        for descriptor in missing {
            groups.insert(
                descriptor.id,
                start_group(engine, options, descriptor).await?,
            );
        }
    }
    Err(Error::Raft {
        shard: FIRST_SHARD,
        detail: format!("shard descriptors did not settle after {OPEN_ROUNDS_MAX} rounds at open"),
    })
}
