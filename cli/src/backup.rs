//! `hanse backup` and `hanse restore`.
//!
//! A backup is a directory: one shard snapshot file per data shard (`shard-ID.hsnap`, the
//! format replicas send each other: the descriptor and the shard's keys as SST files),
//! copied from the shard's replica in the recovery region where it has one (else from its
//! leader) once that replica holds every write acknowledged before it was asked, and a
//! `manifest.json` written last that lists each file with its size, SHA-256, range and the
//! index its replica had applied. Each shard is consistent in itself; shards are copied
//! one after another. A restore checks every file against the manifest before it creates
//! anything, then starts a new cluster and writes the keys into it.

use hanse_shard::range::SYSTEM_KEYSPACE_START;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use hanse_client::{Client, proto};
use hanse_node::progress::{bar, end_bar};
use hanse_storage::{Cf, ScanOrder, Store};
use hanse_storage_rocksdb::{Engine, EngineOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::connect::{ConnectArgs, Credentials, admin};
use crate::display;

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;
/// The meta shard: the old cluster's routing table, rebuilt by the new one.
const META_SHARD: u64 = 0;
/// Keys read from a shard's copy at a time while restoring.
const RESTORE_PAGE: usize = 1000;
/// Writes in flight while restoring.
const RESTORE_WRITERS: usize = 64;

#[derive(Args)]
pub struct BackupArgs {
    /// The directory to write the backup into (created; it must not hold one already).
    #[arg(long, value_name = "DIR")]
    to: PathBuf,
    /// Every node of the cluster, HOST:PORT, comma-separated (`hanse cluster status`
    /// lists them): each shard is copied from a node that holds it.
    #[arg(
        long,
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        required = true
    )]
    endpoints: Vec<String>,
    /// Copy each shard from its replica in this region where it has one (the recovery
    /// region), else from its leader.
    #[arg(long, value_name = "REGION", default_value = "au-sydney")]
    from_region: String,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// The backup directory.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// Where to create the new cluster (as `hanse cluster up --dir`).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Nodes of the new cluster.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// The port every node of the new cluster listens on, each on its own 127.0.0.x.
    #[arg(long, default_value_t = 7400)]
    port: u16,
    /// Where the new cluster's CA and certificates are, made when missing (default
    /// DIR/certs).
    #[arg(long, env = "HANSE_CERTS_DIR", value_name = "CERTS")]
    certs_dir: Option<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    taken_at_unix_ms: u64,
    shards: Vec<ShardCopy>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ShardCopy {
    id: u64,
    /// The range as hex (`end` empty: to the last key).
    start_hex: String,
    end_hex: String,
    /// The index the copied replica had applied when the copy began.
    applied_index: u64,
    /// The node it was copied from.
    node: u64,
    file: String,
    bytes: u64,
    sha256: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

pub fn backup(args: BackupArgs) -> Result<()> {
    ensure!(
        !args.to.join(MANIFEST).exists(),
        "{} already holds a backup; give a new directory",
        args.to.display()
    );
    fs::create_dir_all(&args.to).with_context(|| format!("creating {}", args.to.display()))?;
    let tls = args.connect.credentials()?;
    runtime()?.block_on(async {
        // Which node is where: each endpoint says who it is.
        let mut addrs = std::collections::HashMap::new();
        for endpoint in &args.endpoints {
            if let Ok(mut admin) = admin(endpoint, &tls)
                && let Ok(status) = admin.status(proto::StatusRequest {}).await
            {
                addrs.insert(status.get_ref().node_id, endpoint.clone());
            }
        }
        ensure!(
            !addrs.is_empty(),
            "no node of {:?} answered",
            args.endpoints
        );
        let any = addrs.values().next().expect("not empty").clone();
        let table = admin(&any, &tls)?
            .shards(proto::ShardsRequest {})
            .await
            .map_err(|e| anyhow::anyhow!("reading the routing table: {}", e.message()))?
            .into_inner()
            .shards;
        let shards: Vec<_> = table
            .into_iter()
            .filter_map(|s| s.descriptor.map(|d| (d, s.leader_node)))
            .filter(|(d, _)| d.id != META_SHARD)
            .collect();
        let mut copies = Vec::new();
        for (i, (descriptor, leader)) in shards.iter().enumerate() {
            bar(i as u64, shards.len() as u64);
            // The recovery region's replica (a learner there first), else the leader.
            let mut sources: Vec<u64> = descriptor
                .replicas
                .iter()
                .filter(|r| r.region == args.from_region)
                .map(|r| r.node)
                .collect();
            sources.push(*leader);
            let Some((node, addr)) = sources
                .iter()
                .find_map(|n| addrs.get(n).map(|addr| (*n, addr.clone())))
            else {
                bail!(
                    "shard {}: none of its nodes {sources:?} is among --endpoints",
                    descriptor.id
                );
            };
            copies.push(copy_shard(&args.to, &tls, descriptor.id, node, &addr).await?);
        }
        end_bar();
        let manifest = Manifest {
            format: FORMAT,
            taken_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            shards: copies,
        };
        let bytes: u64 = manifest.shards.iter().map(|c| c.bytes).sum();
        let tmp = args.to.join(format!("{MANIFEST}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(&manifest)?)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, args.to.join(MANIFEST))?;
        println!(
            "backed up {} shards ({}) to {}",
            manifest.shards.len(),
            display::bytes(bytes),
            args.to.display()
        );
        Ok(())
    })
}

/// The name of shard `id`'s file in a backup.
fn shard_file(id: u64) -> String {
    format!("shard-{id}.hsnap")
}

/// Streams shard `id`'s copy from the node at `addr` into `dir`, with its checksum.
async fn copy_shard(
    dir: &Path,
    tls: &Credentials,
    id: u64,
    node: u64,
    addr: &str,
) -> Result<ShardCopy> {
    let mut admin =
        admin(addr, tls).with_context(|| format!("connecting to node {node} at {addr}"))?;
    let mut stream = admin
        .backup(proto::BackupRequest { shard_id: id })
        .await
        .map_err(|e| anyhow::anyhow!("shard {id} from node {node}: {}", e.message()))?
        .into_inner();
    let file = shard_file(id);
    let tmp = dir.join(format!("{file}.tmp"));
    let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
    let mut hash = Sha256::new();
    let (mut bytes, mut first) = (0u64, None);
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|e| anyhow::anyhow!("shard {id} from node {node}: {}", e.message()))?
    {
        if first.is_none() {
            first = Some((chunk.descriptor.clone(), chunk.applied_index));
        }
        hash.update(&chunk.data);
        out.write_all(&chunk.data)?;
        bytes += chunk.data.len() as u64;
    }
    out.into_inner()
        .map_err(std::io::IntoInnerError::into_error)?
        .sync_all()?;
    let Some((Some(descriptor), applied_index)) = first else {
        bail!("shard {id} from node {node}: the copy came without its descriptor");
    };
    fs::rename(&tmp, dir.join(&file))?;
    Ok(ShardCopy {
        id,
        start_hex: hex(&descriptor.start),
        end_hex: hex(&descriptor.end),
        applied_index,
        node,
        file,
        bytes,
        sha256: hex(&hash.finalize()),
    })
}

/// Whether the copies' ranges cover the user key space exactly once, in order: a backup
/// whose manifest lost a shard (every checksum still valid) would restore a cluster with
/// a hole where that shard's keys were.
fn check_coverage<'a>(
    copies: impl Iterator<Item = &'a hanse_shard::ShardDescriptor>,
) -> std::result::Result<(), String> {
    let mut copies: Vec<_> = copies.collect();
    copies.sort_by(|a, b| a.start.cmp(&b.start));
    let shown = |key: &[u8]| format!("{:?}", String::from_utf8_lossy(key));
    let mut covered: &[u8] = b"";
    for copy in copies {
        if copy.start.as_slice() != covered {
            return Err(match copy.start.as_slice() > covered {
                true => format!(
                    "no shard's copy holds the keys from {} to {}",
                    shown(covered),
                    shown(&copy.start)
                ),
                false => format!("shard {}'s copy overlaps another", copy.id),
            });
        }
        covered = &copy.end;
    }
    match covered == SYSTEM_KEYSPACE_START {
        true => Ok(()),
        false => Err(format!(
            "no shard's copy holds the keys from {} on",
            shown(covered)
        )),
    }
}

pub fn restore(args: RestoreArgs) -> Result<()> {
    let manifest_path = args.from.join(MANIFEST);
    let manifest: Manifest = serde_json::from_slice(
        &fs::read(&manifest_path)
            .with_context(|| format!("{}: not a complete backup", manifest_path.display()))?,
    )
    .with_context(|| format!("{}: not a Hanse backup manifest", manifest_path.display()))?;
    ensure!(
        manifest.format == FORMAT,
        "{}: backup format {} (this hanse reads {FORMAT})",
        manifest_path.display(),
        manifest.format
    );
    // Everything is checked before anything is created.
    let staging = tempfile::tempdir().context("creating a staging directory")?;
    let mut unpacked = Vec::new();
    for copy in &manifest.shards {
        // The manifest names files in the backup directory, as the backup wrote them: a
        // name that is not `shard-ID.hsnap` (a path, `..`) is never followed.
        ensure!(
            copy.file == shard_file(copy.id),
            "the backup is damaged: the manifest names the file {:?} for shard {} (expected \
             {:?}); nothing was restored",
            copy.file,
            copy.id,
            shard_file(copy.id)
        );
        let path = args.from.join(&copy.file);
        let damaged = |what: String| {
            anyhow::anyhow!(
                "the backup is damaged: {}: {what}; nothing was restored",
                path.display()
            )
        };
        // Streamed: a shard's copy may be larger than this machine's memory.
        let bytes = fs::metadata(&path)
            .map_err(|e| damaged(e.to_string()))?
            .len();
        if bytes != copy.bytes {
            return Err(damaged(format!(
                "{bytes} bytes, the manifest says {}",
                copy.bytes
            )));
        }
        let mut hasher = Sha256::new();
        let mut file = fs::File::open(&path).map_err(|e| damaged(e.to_string()))?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| damaged(e.to_string()))?;
        let sha256 = hex(&hasher.finalize());
        if sha256 != copy.sha256 {
            return Err(damaged(format!(
                "checksum {sha256}, the manifest says {}",
                copy.sha256
            )));
        }
        let files = staging.path().join(format!("shard-{}", copy.id));
        fs::create_dir_all(&files)?;
        let (descriptor, ssts) = hanse_consensus::unpack_shard_file(&path, &files)
            .map_err(|e| damaged(e.to_string()))?;
        if hex(&descriptor.start) != copy.start_hex || hex(&descriptor.end) != copy.end_hex {
            return Err(damaged("its range differs from the manifest's".into()));
        }
        unpacked.push((descriptor, ssts));
    }
    check_coverage(unpacked.iter().map(|(descriptor, _)| descriptor))
        .map_err(|gap| anyhow::anyhow!("the backup is incomplete: {gap}; nothing was restored"))?;
    let engine = Engine::open(
        staging.path().join("engine"),
        EngineOptions {
            sync_log_writes: false,
        },
    )
    .context("opening the staging store")?;
    for (descriptor, ssts) in &unpacked {
        engine
            .ingest_range(&descriptor.start, &descriptor.end, ssts)
            .with_context(|| format!("reading shard {}'s copy", descriptor.id))?;
    }
    let pages = |descriptor: &hanse_shard::ShardDescriptor| {
        let mut from = descriptor.start.clone();
        let end = descriptor.end.clone();
        let engine = &engine;
        std::iter::from_fn(move || {
            let page = engine
                .scan(Cf::Data, &from, &end, RESTORE_PAGE, ScanOrder::Forward)
                .map(|page| page.into_iter().collect::<Vec<_>>());
            match page {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    from = page.last().expect("not empty").0.clone();
                    from.push(0);
                    Some(Ok(page))
                }
                Err(e) => {
                    from = end.clone();
                    Some(Err(e))
                }
            }
        })
    };
    let mut keys = 0u64;
    for (descriptor, _) in &unpacked {
        for page in pages(descriptor) {
            keys += page?.len() as u64;
        }
    }
    let regions: Vec<String> = (0..args.nodes as usize)
        .map(|i| {
            crate::cluster::DEFAULT_REGIONS[i % crate::cluster::DEFAULT_REGIONS.len()].to_string()
        })
        .collect();
    let endpoints = crate::cluster::up_new(
        &args.dir,
        &regions,
        args.port,
        "",
        &hanse_consensus::latency::LatencyMatrix::default(),
        args.certs_dir.clone(),
    )?;
    let options = crate::cluster::tls_of(&args.dir)?.options();
    let client = Arc::new(Client::new(&endpoints, options)?);
    let restored = runtime()?.block_on(async {
        let mut restored = 0u64;
        let mut writes = tokio::task::JoinSet::new();
        for (descriptor, _) in &unpacked {
            for page in pages(descriptor) {
                for (key, value) in page? {
                    while writes.len() >= RESTORE_WRITERS {
                        writes.join_next().await.expect("not empty")??;
                        restored += 1;
                        bar(restored, keys);
                    }
                    let client = client.clone();
                    writes.spawn(async move { client.put(&key, &value).await });
                }
            }
        }
        while let Some(done) = writes.join_next().await {
            done??;
            restored += 1;
            bar(restored, keys);
        }
        end_bar();
        anyhow::Ok(restored)
    })?;
    ensure!(
        restored == keys,
        "restored {restored} keys, but the backup's copies hold {keys}"
    );
    println!(
        "restored {restored} of the backup's {keys} keys, from {} shards, into the cluster in {}",
        unpacked.len(),
        args.dir.display()
    );
    println!("endpoints: {}", endpoints.join(","));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hanse_shard::ShardDescriptor;

    fn shard(id: u64, start: &[u8], end: &[u8]) -> ShardDescriptor {
        ShardDescriptor {
            start: start.to_vec(),
            end: end.to_vec(),
            ..ShardDescriptor::whole_keyspace(id, vec![])
        }
    }

    #[test]
    fn copies_must_cover_the_user_key_space_once() {
        let (a, b) = (shard(1, b"", b"m"), shard(2, b"m", SYSTEM_KEYSPACE_START));
        assert_eq!(check_coverage([&b, &a].into_iter()), Ok(()));
        let gap = check_coverage([&a].into_iter()).unwrap_err();
        assert!(gap.contains("from \"m\" on"), "{gap}");
        let hole = check_coverage([&b].into_iter()).unwrap_err();
        assert!(hole.contains("from \"\" to \"m\""), "{hole}");
        let wide = shard(3, b"k", SYSTEM_KEYSPACE_START);
        let overlap = check_coverage([&a, &wide].into_iter()).unwrap_err();
        assert!(overlap.contains("overlaps"), "{overlap}");
    }
}
