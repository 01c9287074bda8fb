//! openraft's `RaftStateMachine` for one shard: applies commands to the node's `data`
//! column family and keeps snapshots as files.
//!
//! The effects of a whole `apply` call, its last applied log id, its membership and the
//! shard descriptor go into ONE RocksDB write batch, so a crash leaves either all of them
//! or none: a command is never applied twice. That batch is not synced on its own: the
//! log entries it came from were synced first, and a restart re-applies from the log.

use crate::knobs::{MERGE_SOURCE_WAIT_MAX, MERGE_WAIT_WARNING};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hanse_shard::apply::{self, Precondition};
use hanse_shard::meta::{self, NodeRecord, RoutingTable, ShardRecord};
use hanse_shard::{Mutation, Rejection, ShardRequest, ShardResponse};
use hanse_shard::{ShardDescriptor, ShardId};
use hanse_storage::codec::{self, StateKey};
use hanse_storage::{Batch, Cf, ScanOrder, Store};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncSeekExt;
use tokio::sync::watch;

use crate::applied::AppliedIndexes;
use crate::log_store::put_entries;
use crate::metrics::METRICS;
use crate::snapshot::{self, SnapshotFile};
use crate::types::{ReplicaNode, replicas_of};
use crate::{StorageError, TypeConfig};

type Membership = StoredMembership<u64, ReplicaNode>;

type Meta = SnapshotMeta<u64, ReplicaNode>;

/// The current snapshot's metadata and the file that holds it, kept in `raft_state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: Meta,
    file_name: String,
}

/// The state machine of one shard.
pub struct StateMachine {
    shard: ShardId,
    store: Arc<dyn Store>,
    descriptor: ShardDescriptor,
    applied: Option<LogId<u64>>,
    membership: Membership,
    /// Publishes the descriptor after every change, for routing on this node.
    published: watch::Sender<ShardDescriptor>,
    /// The applied indexes of the node's replicas, this one's included.
    applied_indexes: AppliedIndexes,
    /// Bytes ingested since the last snapshot was built (see [`ShardRequest::Ingest`]).
    ingested: watch::Sender<u64>,
    /// The meta shard's routing table as of `applied`, loaded at the first report and
    /// kept, so that a report costs its own records and not a read of every shard's.
    routes: Option<RoutingTable>,
}

/// An invariant of the replicated state that an applied entry would break: the replica
/// stops (openraft treats it as a storage failure) rather than serve wrong data.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard}: invariant violated at log index {index}: {what}; the replica stops")]
pub struct InvariantViolated {
    pub shard: ShardId,
    pub index: u64,
    pub what: String,
}

fn sm_read_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snapshot_error(meta: Option<&Meta>, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::new(&e)).into()
}

impl StateMachine {
    /// Loads the state machine of `shard`, whose descriptor must already be stored.
    pub fn open(shard: ShardId, store: Arc<dyn Store>) -> Result<Self, StorageError> {
        let descriptor = store
            .descriptor(shard)
            .map_err(sm_read_error)?
            .ok_or_else(|| {
                sm_read_error(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no descriptor stored for shard {shard}"),
                ))
            })?;
        let applied = read_state(store.as_ref(), shard, StateKey::Applied)?.flatten();
        let membership =
            read_state(store.as_ref(), shard, StateKey::Membership)?.unwrap_or_default();
        let pending: Option<StoredSnapshot> =
            read_state(store.as_ref(), shard, StateKey::InstallingSnapshot)?;
        let (published, _) = watch::channel(descriptor.clone());
        let mut state_machine = StateMachine {
            shard,
            store,
            descriptor,
            applied,
            membership,
            published,
            applied_indexes: AppliedIndexes::default(),
            ingested: watch::Sender::new(0),
            routes: None,
        };
        if let Some(pending) = pending {
            tracing::warn!(shard, snapshot = %pending.meta.snapshot_id, "finishing a snapshot installation a crash interrupted");
            state_machine.finish_install(&pending)?;
        }
        Ok(state_machine)
    }

    /// Shares `indexes` with the node's other replicas (a fresh state machine has its own).
    pub fn with_applied_indexes(mut self, indexes: AppliedIndexes) -> Self {
        self.applied_indexes = indexes;
        self.publish_applied();
        self
    }

    fn publish_applied(&self) {
        if let Some(applied) = self.applied {
            self.applied_indexes.publish(self.shard, applied.index);
        }
    }

    /// The shard's descriptor as of the last applied command.
    pub fn descriptor(&self) -> &ShardDescriptor {
        &self.descriptor
    }

    /// Follows the descriptor as commands are applied.
    pub fn watch_descriptor(&self) -> watch::Receiver<ShardDescriptor> {
        self.published.subscribe()
    }

    /// The bytes ingested since the last snapshot, as they grow; closed when the state
    /// machine is dropped.
    pub fn watch_ingested(&self) -> watch::Receiver<u64> {
        self.ingested.subscribe()
    }

    /// Tells the watchers the descriptor, if it changed. Called only once the batch that
    /// changed it is written: a watcher that reads storage then finds what the change
    /// created (a split's new shard).
    /// Fails with [`InvariantViolated`] unless `holds`.
    fn check(
        &self,
        holds: bool,
        index: u64,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        if holds {
            return Ok(());
        }
        let violated = InvariantViolated {
            shard: self.shard,
            index,
            what: what(),
        };
        tracing::error!("{violated}");
        Err(StorageIOError::write_state_machine(AnyError::new(&violated)).into())
    }

    /// The descriptor an applied entry leaves: of this shard, and its epoch never falls.
    fn set_descriptor(&mut self, next: ShardDescriptor, index: u64) -> Result<(), StorageError> {
        let (was, now) = (self.descriptor.epoch, next.epoch);
        self.check(
            next.id == self.shard && now.version >= was.version && now.conf_ver >= was.conf_ver,
            index,
            || {
                format!(
                    "the descriptor would go from {} {was:?} to {} {now:?}",
                    self.shard, next.id
                )
            },
        )?;
        self.descriptor = next;
        Ok(())
    }

    fn publish_descriptor(&self) {
        self.published.send_if_modified(|published| {
            let changed = *published != self.descriptor;
            if changed {
                *published = self.descriptor.clone();
            }
            changed
        });
    }

    fn snapshot_dir(&self) -> PathBuf {
        snapshot_dir(self.store.as_ref(), self.shard)
    }

    /// Adds the state-machine pointers (applied, membership, and the descriptor when
    /// `with_descriptor`) to `batch`. The descriptor is written only when it changed: a
    /// shard absorbed by a merge must not write its descriptor back after the merge
    /// deleted it.
    fn put_pointers(&self, batch: &mut Batch, with_descriptor: bool) {
        batch.put(
            Cf::RaftState,
            codec::state_key(self.shard, StateKey::Applied),
            codec::encode(&self.applied),
        );
        batch.put(
            Cf::RaftState,
            codec::state_key(self.shard, StateKey::Membership),
            codec::encode(&self.membership),
        );
        if with_descriptor {
            batch.put_descriptor(&self.descriptor);
        }
    }

    /// Writes `batch` with the pointers as they stand (the descriptor if it changed since
    /// `descriptor_before`, which then moves on), leaving `batch` empty.
    fn write_applied(
        &self,
        batch: &mut Batch,
        descriptor_before: &mut ShardDescriptor,
    ) -> Result<(), StorageError> {
        self.put_pointers(batch, self.descriptor != *descriptor_before);
        self.store
            .write(std::mem::take(batch), false)
            .map_err(sm_write_error)?;
        *descriptor_before = self.descriptor.clone();
        Ok(())
    }

    /// Creates the new shard of a split in `batch`: its descriptor, and a first log entry
    /// holding this group's membership, as `Raft::initialize` would write it. Every replica
    /// writes the same entry, so the new group starts with identical logs everywhere.
    ///
    /// A replica of the new shard already here is kept: this replica is replaying the
    /// split long after it happened (it caught up from an older snapshot, or lost its
    /// unsynced applies), and the new shard's own replica is newer than the split.
    fn create_split_child(
        &self,
        batch: &mut Batch,
        right: &ShardDescriptor,
    ) -> Result<(), StorageError> {
        if self
            .store
            .descriptor(right.id)
            .map_err(sm_read_error)?
            .is_some()
        {
            tracing::info!(
                shard = self.shard,
                child = right.id,
                "the split's new shard is here already"
            );
            return Ok(());
        }
        batch.put_descriptor(right);
        let first = Entry::<TypeConfig> {
            log_id: LogId::default(),
            payload: EntryPayload::Membership(self.membership.membership().clone()),
        };
        put_entries(batch, right.id, [first]);
        Ok(())
    }

    /// Waits until `precondition` holds (see [`Precondition`]), woken by the replica it
    /// waits for; stops this replica with an error if that replica is not here, or the
    /// precondition does not hold within [`MERGE_SOURCE_WAIT_MAX`].
    async fn satisfy(&self, precondition: Precondition, index: u64) -> Result<(), StorageError> {
        let Precondition::Applied {
            shard: source,
            index: through,
        } = precondition;
        // Subscribed before looking, so an application in between still wakes us.
        let mut applied_here = self.applied_indexes.watch(source);
        let started = tokio::time::Instant::now();
        loop {
            // A merge needs the same replicas on both shards, and a replica cannot be
            // added to the target between the merge's commit and the snapshot it starts
            // from (see the group): a node applying the commit holds the source.
            let held = self
                .store
                .descriptor(source)
                .map_err(sm_read_error)?
                .is_some();
            self.check(held, index, || {
                format!(
                    "the merge takes over shard {source}'s range, but this node holds no \
                     replica of it, so not its data"
                )
            })?;
            let applied: Option<LogId<u64>> =
                read_state(self.store.as_ref(), source, StateKey::Applied)?.flatten();
            if applied.is_some_and(|id| id.index >= through) {
                return Ok(());
            }
            let waited = started.elapsed();
            self.check(waited < MERGE_SOURCE_WAIT_MAX, index, || {
                format!(
                    "the merge waited {waited:?} for this node's replica of shard {source} to \
                     apply through index {through}; restore that shard's quorum and restart"
                )
            })?;
            if tokio::time::timeout(MERGE_WAIT_WARNING, applied_here.changed())
                .await
                .is_err()
            {
                tracing::warn!(
                    shard = self.shard,
                    source,
                    waited = ?started.elapsed(),
                    "the merge waits for this node's replica of the source to catch up"
                );
            }
        }
    }

    /// Records a report in the meta shard's routing table and node directory. `table` is
    /// the routing table as of the earlier commands (loaded on first use), since the
    /// writes of this apply call are not in RocksDB yet.
    fn apply_report(
        &self,
        shards: Vec<ShardRecord>,
        nodes: Vec<NodeRecord>,
        batch: &mut Batch,
        table: &mut Option<RoutingTable>,
    ) -> Result<ShardResponse, StorageError> {
        // A report of nodes alone (an idle cluster's) needs no routing table.
        if !shards.is_empty() && table.is_none() {
            *table = Some(self.load_routing_table()?);
        }
        for incoming in shards {
            let table = table.as_mut().expect("loaded for the shards");
            let Some(replaced) = meta::record(table, &incoming) else {
                continue;
            };
            for id in replaced {
                table.remove(id);
                batch.delete(Cf::Data, meta::route_key(id));
            }
            batch.put(
                Cf::Data,
                meta::route_key(incoming.descriptor.id),
                codec::encode(&incoming),
            );
            table.insert(incoming);
        }
        for node in nodes {
            batch.put(Cf::Data, meta::node_key(node.node), codec::encode(&node));
        }
        Ok(ShardResponse::Applied)
    }

    fn load_routing_table(&self) -> Result<RoutingTable, StorageError> {
        let (start, end) = meta::route_range();
        self.store
            .scan(Cf::Data, &start, &end, usize::MAX, ScanOrder::Forward)
            .map_err(sm_read_error)?
            .into_iter()
            .map(|(_, bytes)| {
                codec::decode::<ShardRecord>("routing record", &bytes).map_err(sm_read_error)
            })
            .collect()
    }

    fn apply_request(
        &mut self,
        request: ShardRequest,
        index: u64,
        batch: &mut Batch,
        pending: &mut Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
        table: &mut Option<RoutingTable>,
    ) -> Result<ShardResponse, StorageError> {
        if let ShardRequest::Report { shards, nodes } = request {
            if self.shard != meta::META_SHARD {
                return Ok(ShardResponse::Rejected(Rejection::NotMetaShard {
                    shard: self.shard,
                }));
            }
            return self.apply_report(shards, nodes, batch, table);
        }
        let store = &self.store;
        let effect = apply::decide(&self.descriptor, request, index, |key| {
            match pending.as_ref().and_then(|p| p.get(key)) {
                Some(value) => Ok(value.clone()),
                None => store.get(Cf::Data, codec::data_key(key)),
            }
        })
        .map_err(sm_read_error)?;
        for mutation in effect.mutations {
            match mutation {
                Mutation::Put { key, value } => {
                    if let Some(pending) = pending.as_mut() {
                        pending.insert(key.clone(), Some(value.clone()));
                    }
                    batch.put(Cf::Data, key, value);
                }
                Mutation::Delete { key } => {
                    if let Some(pending) = pending.as_mut() {
                        pending.insert(key.clone(), None);
                    }
                    batch.delete(Cf::Data, key);
                }
            }
        }
        if !effect.ingested.is_empty() {
            // The proposer puts an ingest in an entry of its own, so nothing is batched
            // before it but this entry's own earlier requests, were there any.
            self.store
                .write(std::mem::take(batch), false)
                .map_err(sm_write_error)?;
            self.store
                .ingest_sorted(&effect.ingested)
                .map_err(sm_write_error)?;
            let bytes: usize = effect
                .ingested
                .iter()
                .map(|pair| pair.key.len() + pair.value.len())
                .sum();
            self.ingested.send_modify(|since| *since += bytes as u64);
            // Everything written before is in the store now, the ingest after it.
            if let Some(pending) = pending.as_mut() {
                pending.clear();
            }
        }
        if let Some(right) = &effect.created {
            let parent = &self.descriptor;
            self.check(
                right.start >= parent.start
                    && !right.start.is_empty()
                    && (parent.end.is_empty()
                        || (!right.end.is_empty() && right.end <= parent.end)),
                index,
                || {
                    format!(
                        "the split's new shard {} lies outside its parent {}",
                        right.id, parent.id
                    )
                },
            )?;
            self.create_split_child(batch, right)?;
        }
        if let Some(source) = &effect.absorbed {
            // Its range is ours now; this node's replica of it retires (see the node).
            batch.delete(Cf::Meta, codec::descriptor_key(source.id));
        }
        if let Some(descriptor) = effect.descriptor {
            self.set_descriptor(descriptor, index)?;
        }
        Ok(effect.response)
    }

    /// The metadata a snapshot of the current state carries.
    fn current_meta(&self) -> Meta {
        SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_name(self.shard, self.applied),
        }
    }

    /// Unpacks the snapshot `pending` names into `staging` and checks that it may replace
    /// this replica: it is of this shard, and no shard here at its version or newer
    /// overlaps its range. Answers its descriptor, its data files, and the shards here it
    /// absorbed (merged into it in the part of the log it replaces). Changes nothing.
    fn check_install(
        &self,
        pending: &StoredSnapshot,
        staging: &Path,
    ) -> Result<(ShardDescriptor, Vec<PathBuf>, Vec<ShardId>), StorageError> {
        let meta = &pending.meta;
        let err = |e: io::Error| snapshot_error(Some(meta), e);
        let path = self.snapshot_dir().join(&pending.file_name);
        let (descriptor, files) = snapshot::unpack(&path, staging).map_err(err)?;
        if descriptor.id != self.shard {
            return Err(err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot of shard {} offered to shard {}",
                    descriptor.id, self.shard
                ),
            )));
        }
        // Other shards on this node that the snapshot's range overlaps were merged into
        // this one in the part of the log the snapshot replaces: their replicas here never
        // applied the commit, so they are retired with the install, not left to serve a
        // range that is no longer theirs.
        let mut absorbed = Vec::new();
        for local in self.store.load_descriptors().map_err(sm_read_error)? {
            if local.id == self.shard || !local.overlaps(&descriptor.start, &descriptor.end) {
                continue;
            }
            if local.epoch.version >= descriptor.epoch.version {
                return Err(err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the snapshot of shard {} at version {} overlaps shard {} at version {} \
                         on this node",
                        self.shard, descriptor.epoch.version, local.id, local.epoch.version
                    ),
                )));
            }
            absorbed.push(local.id);
        }
        Ok((descriptor, files, absorbed))
    }

    /// Replaces the shard's data and pointers with the snapshot `pending` names (checked
    /// by [`Self::check_install`] before it was recorded). Safe to run again after a
    /// crash: it clears the range before it ingests.
    fn finish_install(&mut self, pending: &StoredSnapshot) -> Result<(), StorageError> {
        let meta = &pending.meta;
        let err = |e: io::Error| snapshot_error(Some(meta), e);
        let staging = tempfile::tempdir_in(self.snapshot_dir()).map_err(err)?;
        let (descriptor, files, absorbed) = self.check_install(pending, staging.path())?;
        // Clear what this replica held of the old range, then load the snapshot's range.
        if (descriptor.start.as_slice(), descriptor.end.as_slice())
            != (
                self.descriptor.start.as_slice(),
                self.descriptor.end.as_slice(),
            )
        {
            self.store
                .ingest_range(&self.descriptor.start, &self.descriptor.end, &[])
                .map_err(|e| snapshot_error(Some(meta), e))?;
        }
        self.store
            .ingest_range(&descriptor.start, &descriptor.end, &files)
            .map_err(|e| snapshot_error(Some(meta), e))?;

        self.descriptor = descriptor;
        self.applied = meta.last_log_id;
        self.routes = None;
        self.membership = meta.last_membership.clone();
        let mut batch = Batch::default();
        self.put_pointers(&mut batch, true);
        for shard in absorbed {
            tracing::info!(
                shard = self.shard,
                absorbed = shard,
                "a snapshot retires a shard merged into it"
            );
            batch.delete(Cf::Meta, codec::descriptor_key(shard));
        }
        batch.put(
            Cf::RaftState,
            codec::state_key(self.shard, StateKey::SnapshotMeta),
            codec::encode(pending),
        );
        batch.delete(
            Cf::RaftState,
            codec::state_key(self.shard, StateKey::InstallingSnapshot),
        );
        self.store
            .write(batch, true)
            .map_err(|e| snapshot_error(Some(meta), e))?;
        self.publish_descriptor();
        self.publish_applied();
        self.remove_snapshots_except(&pending.file_name);
        Ok(())
    }

    fn remove_snapshots_except(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(self.snapshot_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name() != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn snapshot_dir(store: &dyn Store, shard: ShardId) -> PathBuf {
    store
        .path()
        .join("snapshots")
        .join(format!("shard-{shard}"))
}

/// Deletes the log, Raft state, descriptor and snapshot files of a shard a merge absorbed
/// on this node; its data stays, under the shard that absorbed it. The shard's group must
/// be stopped ([`crate::ShardGroup::shutdown`]).
pub async fn retire_merged(store: &dyn Store, shard: ShardId) -> Result<(), hanse_storage::Error> {
    store.retire_merged(shard).await?;
    remove_snapshot_dir(store, shard)
}

fn remove_snapshot_dir(store: &dyn Store, shard: ShardId) -> Result<(), hanse_storage::Error> {
    let dir = snapshot_dir(store, shard);
    match std::fs::remove_dir_all(&dir) {
        Err(source) if source.kind() != io::ErrorKind::NotFound => {
            Err(hanse_storage::Error::Io { path: dir, source })
        }
        _ => Ok(()),
    }
}

/// Deletes everything this node holds of a shard it no longer replicates: data range,
/// log, Raft state, descriptor and snapshot files. The shard's group must be stopped
/// ([`crate::ShardGroup::shutdown`]).
pub async fn destroy_replica(
    store: &dyn Store,
    descriptor: &ShardDescriptor,
) -> Result<(), hanse_storage::Error> {
    store.destroy_replica(descriptor).await?;
    remove_snapshot_dir(store, descriptor.id)
}

/// A snapshot's name (and, with `.snap`, its file's) from the shard and the last entry it
/// covers: made of numbers only, whoever sent it.
fn snapshot_name(shard: ShardId, last: Option<LogId<u64>>) -> String {
    match last {
        Some(id) => format!(
            "s{shard}-t{}-n{}-i{}",
            id.leader_id.term, id.leader_id.node_id, id.index
        ),
        None => format!("s{shard}-empty"),
    }
}

fn read_state<T: serde::de::DeserializeOwned>(
    store: &dyn Store,
    shard: ShardId,
    kind: StateKey,
) -> Result<Option<T>, StorageError> {
    match store
        .get(Cf::RaftState, &codec::state_key(shard, kind))
        .map_err(sm_read_error)?
    {
        Some(bytes) => codec::decode("state machine pointer", &bytes)
            .map(Some)
            .map_err(sm_read_error),
        None => Ok(None),
    }
}

/// Whether `entry` carries an ingest (see [`ShardRequest::Ingest`]).
fn ingests(entry: &Entry<TypeConfig>) -> bool {
    match &entry.payload {
        EntryPayload::Normal(proposal) => proposal
            .requests
            .iter()
            .any(|r| matches!(r, ShardRequest::Ingest { .. })),
        _ => false,
    }
}

/// A snapshot taken when openraft asked for a builder; handed over by `build_snapshot`.
pub struct SnapshotBuilder {
    built: Result<(Meta, PathBuf), StorageError>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, path) = self.built.clone()?;
        let file = SnapshotFile::open(&path).map_err(|e| snapshot_error(Some(&meta), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<u64>>, Membership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<ShardResponse>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let applied_before = self.applied;
        let entries: Vec<_> = entries.into_iter().collect();
        let count = entries.len() as u64;
        // Compare-and-swap must see the writes of earlier entries in this same call, which
        // are not in RocksDB yet; track them only when a CAS is present.
        let has_cas = entries.iter().any(|e| match &e.payload {
            EntryPayload::Normal(proposal) => proposal
                .requests
                .iter()
                .any(|r| matches!(r, ShardRequest::CompareAndSwap { .. })),
            _ => false,
        });
        let mut pending = has_cas.then(BTreeMap::new);
        let mut batch = Batch::default();
        let mut responses = Vec::with_capacity(entries.len());
        let mut descriptor_before = self.descriptor.clone();
        // Taken for the call and kept only once its writes are durable: a failed apply
        // leaves no table ahead of the store.
        let mut table = self.routes.take();
        for entry in entries {
            if ingests(&entry) && self.applied != applied_before {
                // An ingested file lands outside the batch: what came before it is
                // written first, with the position it reached, so a crash after the
                // ingest replays only the ingest (the same file again).
                self.write_applied(&mut batch, &mut descriptor_before)?;
            }
            self.check(
                Some(entry.log_id) > self.applied,
                entry.log_id.index,
                || format!("entry {} applied after {:?}", entry.log_id, self.applied),
            )?;
            self.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Membership(membership) => {
                    // The replica set in the descriptor follows the group's membership at
                    // the same log index on every replica (see `with_replicas` for conf_ver).
                    let replicas = replicas_of(&membership);
                    let changed = self.descriptor.with_replicas(replicas, entry.log_id.index);
                    self.set_descriptor(changed, entry.log_id.index)?;
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
                EntryPayload::Normal(proposal) => {
                    let index = entry.log_id.index;
                    let mut answers = Vec::with_capacity(proposal.requests.len());
                    for request in proposal.requests {
                        if let Some(needed) = apply::precondition(&self.descriptor, &request) {
                            self.satisfy(needed, index).await?;
                        }
                        answers.push(self.apply_request(
                            request,
                            index,
                            &mut batch,
                            &mut pending,
                            &mut table,
                        )?);
                    }
                    answers
                }
            };
            responses.push(response);
        }
        self.write_applied(&mut batch, &mut descriptor_before)?;
        self.routes = table;
        self.publish_descriptor();
        self.publish_applied();
        METRICS.entries_applied.inc_by(count);
        METRICS
            .apply_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.ingested.send_replace(0);
        // Exported here, between two applies, so the files match `applied` exactly.
        let meta = self.current_meta();
        let file_name = format!("{}.snap", snapshot_name(self.shard, meta.last_log_id));
        let path = self.snapshot_dir().join(&file_name);
        let built = snapshot::write(self.store.as_ref(), &self.descriptor, &path)
            .map_err(|e| snapshot_error(Some(&meta), e))
            .and_then(|()| {
                let mut batch = Batch::default();
                let stored = StoredSnapshot {
                    meta: meta.clone(),
                    file_name: file_name.clone(),
                };
                batch.put(
                    Cf::RaftState,
                    codec::state_key(self.shard, StateKey::SnapshotMeta),
                    codec::encode(&stored),
                );
                self.store
                    .write(batch, true)
                    .map_err(|e| snapshot_error(Some(&meta), e))
            })
            .map(|()| {
                self.remove_snapshots_except(&file_name);
                (meta, path)
            });
        SnapshotBuilder { built }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let dir = self.snapshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| snapshot_error(None, e))?;
        // Unlinked at once: nothing is left behind if the transfer is abandoned.
        let file = tempfile::tempfile_in(&dir).map_err(|e| snapshot_error(None, e))?;
        Ok(Box::new(SnapshotFile::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        mut data: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let err = |e: io::Error| snapshot_error(Some(meta), e);
        let dir = self.snapshot_dir();
        std::fs::create_dir_all(&dir).map_err(err)?;
        // Named here, never after the sender's snapshot id, which is any string it chose
        // (an absolute path or "../" would put the file outside the data directory).
        let file_name = format!("{}.snap", snapshot_name(self.shard, meta.last_log_id));
        let path = dir.join(&file_name);
        let tmp = path.with_extension("recv");
        data.seek(io::SeekFrom::Start(0)).await.map_err(err)?;
        let mut copy = SnapshotFile::create(&tmp).map_err(err)?;
        tokio::io::copy(&mut data, &mut copy).await.map_err(err)?;
        copy.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;

        let pending = StoredSnapshot {
            meta: meta.clone(),
            file_name,
        };
        // Checked before it is recorded: a snapshot that may not replace this replica is
        // refused here and changes nothing, rather than fail at every restart.
        {
            let staging = tempfile::tempdir_in(&dir).map_err(err)?;
            self.check_install(&pending, staging.path())?;
        }
        // Recorded (synced) before any data changes: a crash from here on is finished by
        // the next open, never left as new data under the old applied pointer.
        let mut batch = Batch::default();
        batch.put(
            Cf::RaftState,
            codec::state_key(self.shard, StateKey::InstallingSnapshot),
            codec::encode(&pending),
        );
        self.store
            .write(batch, true)
            .map_err(|e| snapshot_error(Some(meta), e))?;
        self.finish_install(&pending)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(stored) =
            read_state::<StoredSnapshot>(self.store.as_ref(), self.shard, StateKey::SnapshotMeta)?
        else {
            return Ok(None);
        };
        let path = self.snapshot_dir().join(&stored.file_name);
        let file = SnapshotFile::open(&path).map_err(|e| {
            StorageIOError::read_snapshot(Some(stored.meta.signature()), AnyError::new(&e))
        })?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(file),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_storage::MemStore;
    use openraft::CommittedLeaderId;

    const SHARD: ShardId = 1;

    fn store_holding(dir: &std::path::Path, descriptor: &ShardDescriptor) -> Arc<dyn Store> {
        let store = Arc::new(MemStore::new(dir));
        let mut batch = Batch::default();
        batch.put_descriptor(descriptor);
        store.write(batch, true).unwrap();
        store
    }

    fn engine_with_shard(dir: &std::path::Path) -> Arc<dyn Store> {
        store_holding(dir, &ShardDescriptor::whole_keyspace(SHARD, vec![]))
    }

    /// A snapshot of `machine` as it stands.
    async fn snapshot_of(machine: &mut StateMachine) -> Snapshot<TypeConfig> {
        machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap()
    }

    fn put(store: &dyn Store, key: &str, value: &str) {
        let mut batch = Batch::default();
        batch.put(Cf::Data, key, value);
        store.write(batch, true).unwrap();
    }

    /// A store that notes, at each ingest, the applied position already stored.
    struct IngestWitness {
        inner: Arc<dyn Store>,
        applied_at_ingest: std::sync::Mutex<Vec<Option<LogId<u64>>>>,
    }

    impl Store for IngestWitness {
        fn path(&self) -> &Path {
            self.inner.path()
        }
        fn get(&self, cf: Cf, key: &[u8]) -> hanse_storage::Result<Option<Vec<u8>>> {
            self.inner.get(cf, key)
        }
        fn scan_page(
            &self,
            cf: Cf,
            start: &[u8],
            end: &[u8],
            limit: usize,
            bytes_max: usize,
            order: ScanOrder,
        ) -> hanse_storage::Result<hanse_storage::Page> {
            self.inner
                .scan_page(cf, start, end, limit, bytes_max, order)
        }
        fn write(&self, batch: Batch, sync: bool) -> hanse_storage::Result<()> {
            self.inner.write(batch, sync)
        }
        fn append_log(
            &self,
            batch: Batch,
            on_durable: Option<hanse_storage::OnDurable>,
        ) -> hanse_storage::StoreFuture<'_> {
            self.inner.append_log(batch, on_durable)
        }
        fn export_range(
            &self,
            start: &[u8],
            end: &[u8],
            dir: &Path,
            file_bytes_max: u64,
        ) -> hanse_storage::Result<hanse_storage::RangeExport> {
            self.inner.export_range(start, end, dir, file_bytes_max)
        }
        fn ingest_range(
            &self,
            start: &[u8],
            end: &[u8],
            files: &[PathBuf],
        ) -> hanse_storage::Result<()> {
            self.inner.ingest_range(start, end, files)
        }
        fn ingest_sorted(&self, pairs: &[hanse_shard::KeyValue]) -> hanse_storage::Result<()> {
            let applied = read_state(self.inner.as_ref(), SHARD, StateKey::Applied)
                .unwrap()
                .flatten();
            self.applied_at_ingest.lock().unwrap().push(applied);
            self.inner.ingest_sorted(pairs)
        }
    }

    #[tokio::test]
    async fn an_ingest_lands_after_everything_before_it_and_its_position_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let witness = Arc::new(IngestWitness {
            inner: engine_with_shard(dir.path()),
            applied_at_ingest: Default::default(),
        });
        let mut machine = StateMachine::open(SHARD, witness.clone()).unwrap();
        let epoch = machine.descriptor.epoch;
        let bytes = |s: &str| s.as_bytes().to_vec();
        let cas = |expected: Option<&str>, new: &str| ShardRequest::CompareAndSwap {
            epoch,
            key: bytes("b"),
            expected: expected.map(bytes),
            new: Some(bytes(new)),
        };
        let ingest = ShardRequest::Ingest {
            epoch,
            pairs: ["a", "b"]
                .iter()
                .map(|key| hanse_shard::KeyValue {
                    key: bytes(key),
                    value: bytes("ingested"),
                })
                .collect(),
        };
        let requests = [cas(None, "first"), ingest, cas(Some("ingested"), "last")];
        let entries: Vec<Entry<TypeConfig>> = requests
            .into_iter()
            .zip(1..)
            .map(|(request, index)| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Normal(hanse_shard::Proposal {
                    requests: vec![request],
                }),
            })
            .collect();
        let first = entries[0].log_id;
        let answers = machine.apply(entries).await.unwrap();
        let swapped = |answer: &Vec<ShardResponse>| {
            matches!(
                answer[..],
                [ShardResponse::CompareAndSwap { swapped: true, .. }]
            )
        };
        assert!(swapped(&answers[0]), "{answers:?}");
        assert_eq!(answers[1], vec![ShardResponse::Applied]);
        // The CAS after the ingest saw the ingested value, not the earlier write.
        assert!(swapped(&answers[2]), "{answers:?}");
        assert_eq!(
            witness.get(Cf::Data, b"a").unwrap(),
            Some(bytes("ingested"))
        );
        assert_eq!(witness.get(Cf::Data, b"b").unwrap(), Some(bytes("last")));
        // The entry before the ingest was stored with its position first: a crash after
        // the file landed replays only the ingest.
        assert_eq!(*witness.applied_at_ingest.lock().unwrap(), [Some(first)]);
    }

    #[tokio::test]
    async fn an_entry_that_breaks_an_invariant_stops_the_replica_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = engine_with_shard(dir.path());
        let mut machine = StateMachine::open(SHARD, store.clone()).unwrap();
        let entry = |index| Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Blank,
        };
        machine.apply(vec![entry(5)]).await.unwrap();
        // The applied index only grows: an entry at or before it is refused.
        let refused = machine.apply(vec![entry(5)]).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("invariant violated at log index 5"),
            "{refused}"
        );
        assert_eq!(
            machine.applied_state().await.unwrap().0,
            Some(entry(5).log_id)
        );
        // An epoch never falls.
        let mut older = machine.descriptor.clone();
        older.epoch.version = 0;
        let mut newer = machine.descriptor.clone();
        newer.epoch.version += 1;
        let refused = machine.set_descriptor(older, 6).unwrap_err();
        assert!(
            refused.to_string().contains("descriptor would go"),
            "{refused}"
        );
        machine.set_descriptor(newer.clone(), 6).unwrap();
        assert_eq!(machine.descriptor, newer);
    }

    #[tokio::test]
    async fn a_received_snapshot_is_stored_under_a_name_of_its_own() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = engine_with_shard(source_dir.path());
        put(source.as_ref(), "a", "1");
        let mut leader = StateMachine::open(SHARD, source.clone()).unwrap();
        let blank = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 7),
            payload: EntryPayload::Blank,
        };
        leader.apply(vec![blank]).await.unwrap();
        let mut snapshot = snapshot_of(&mut leader).await;
        // A sender chooses the id: here one that would climb out of the data directory.
        let outside = tempfile::tempdir().unwrap();
        snapshot.meta.snapshot_id = outside.path().join("escaped").display().to_string();

        let target_dir = tempfile::tempdir().unwrap();
        let target = engine_with_shard(target_dir.path());
        let mut follower = StateMachine::open(SHARD, target.clone()).unwrap();
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(target.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let stored: Vec<_> = std::fs::read_dir(follower.snapshot_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(stored, ["s1-t3-n1-i7.snap"]);
    }

    /// A meta shard replica with an empty routing table.
    fn meta_store(dir: &std::path::Path) -> Arc<dyn Store> {
        store_holding(dir, &meta::meta_descriptor(vec![]))
    }

    fn report_entry(index: u64, version: u64, end: &str) -> Entry<TypeConfig> {
        let mut descriptor = ShardDescriptor::whole_keyspace(5, vec![]);
        descriptor.end = end.as_bytes().to_vec();
        descriptor.epoch.version = version;
        let record = ShardRecord {
            descriptor,
            leader: Some(1),
            stats: Default::default(),
            reported_at_ms: 0,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(hanse_shard::Proposal {
                requests: vec![ShardRequest::Report {
                    shards: vec![record],
                    nodes: vec![],
                }],
            }),
        }
    }

    fn stored_route(store: &dyn Store) -> ShardDescriptor {
        let bytes = store.get(Cf::Data, &meta::route_key(5)).unwrap().unwrap();
        codec::decode::<ShardRecord>("route", &bytes)
            .unwrap()
            .descriptor
    }

    #[tokio::test]
    async fn the_kept_routing_table_follows_an_installed_snapshot() {
        // The source's table knows shard 5 at version 2, over [.., m).
        let source_dir = tempfile::tempdir().unwrap();
        let source = meta_store(source_dir.path());
        let mut leader = StateMachine::open(meta::META_SHARD, source.clone()).unwrap();
        leader.apply(vec![report_entry(1, 2, "m")]).await.unwrap();
        let snapshot = snapshot_of(&mut leader).await;

        // The target kept a table from an older report (version 1, whole keyspace) ...
        let target_dir = tempfile::tempdir().unwrap();
        let target = meta_store(target_dir.path());
        let mut follower = StateMachine::open(meta::META_SHARD, target.clone()).unwrap();
        follower.apply(vec![report_entry(1, 1, "")]).await.unwrap();
        assert_eq!(stored_route(target.as_ref()).epoch.version, 1);
        // ... then installs the snapshot: the same old report again is stale now, judged
        // by the installed table, not the one kept from before.
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        follower.apply(vec![report_entry(2, 1, "")]).await.unwrap();
        let route = stored_route(target.as_ref());
        assert_eq!((route.epoch.version, route.end), (2, b"m".to_vec()));
        // A newer report in a later apply is judged by the table kept since.
        follower.apply(vec![report_entry(3, 3, "k")]).await.unwrap();
        let route = stored_route(target.as_ref());
        assert_eq!((route.epoch.version, route.end), (3, b"k".to_vec()));
    }

    #[tokio::test]
    async fn an_interrupted_snapshot_install_is_finished_at_open() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = engine_with_shard(source_dir.path());
        put(source.as_ref(), "a", "1");
        put(source.as_ref(), "b", "2");
        let mut leader = StateMachine::open(SHARD, source.clone()).unwrap();
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
        let blank = Entry::<TypeConfig> {
            log_id,
            payload: EntryPayload::Blank,
        };
        leader.apply(vec![blank]).await.unwrap();
        let snapshot = snapshot_of(&mut leader).await;
        let file_name = format!("{}.snap", snapshot_name(SHARD, snapshot.meta.last_log_id));

        // The follower crashed after recording the install, before touching its data.
        let target_dir = tempfile::tempdir().unwrap();
        let target = engine_with_shard(target_dir.path());
        put(target.as_ref(), "z", "stale");
        let target_snapshots = target
            .path()
            .join("snapshots")
            .join(format!("shard-{SHARD}"));
        std::fs::create_dir_all(&target_snapshots).unwrap();
        let source_file = source
            .path()
            .join("snapshots")
            .join(format!("shard-{SHARD}"))
            .join(&file_name);
        std::fs::copy(&source_file, target_snapshots.join(&file_name)).unwrap();
        let pending = StoredSnapshot {
            meta: snapshot.meta.clone(),
            file_name,
        };
        let mut batch = Batch::default();
        batch.put(
            Cf::RaftState,
            codec::state_key(SHARD, StateKey::InstallingSnapshot),
            codec::encode(&pending),
        );
        target.write(batch, true).unwrap();

        let mut follower = StateMachine::open(SHARD, target.clone()).unwrap();
        assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id));
        assert_eq!(target.get(Cf::Data, b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(target.get(Cf::Data, b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(
            target.get(Cf::Data, b"z").unwrap(),
            None,
            "the snapshot replaced the range"
        );
        let record = codec::state_key(SHARD, StateKey::InstallingSnapshot);
        assert_eq!(
            target.get(Cf::RaftState, &record).unwrap(),
            None,
            "the install is done"
        );
        let current = follower
            .get_current_snapshot()
            .await
            .unwrap()
            .expect("current snapshot");
        assert_eq!(current.meta, snapshot.meta);
    }
}
