//! `hanse kv`: single-key reads and writes, scans and compare-and-swap, on an embedded
//! store (`--data-dir`) or a running cluster (`--endpoints`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::ops::Bound;

use hanse::{Db, Options};
use hanse_client::{Client, ClientOptions};
use hanse_node::units::parse_duration;

use crate::connect::ConnectArgs;

#[derive(Args)]
pub struct KvArgs {
    /// The data directory of an embedded store (created when missing).
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "endpoints")]
    data_dir: Option<PathBuf>,
    /// Nodes of a running cluster, HOST:PORT, comma-separated (any of them will do).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// The region this client is in, sent with every request to a cluster: it counts
    /// toward where the shard's requests come from, and the latency matrix applies.
    #[arg(long, global = true, value_name = "REGION", requires = "endpoints")]
    region: Option<String>,
    /// Acknowledge writes before they are synced to disk (they survive a crash of this
    /// process, not of the machine).
    #[arg(long, global = true)]
    no_sync: bool,
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum KvOp {
    /// Prints the value of KEY (exit 1 and "not found" when absent).
    Get {
        key: String,
        /// Let any replica serve the read if it misses no write acknowledged longer than
        /// this ago (e.g. 500ms; a follower read, cluster only); says on standard error
        /// which node served it and the bound it kept.
        #[arg(long, value_name = "TIME", value_parser = parse_duration)]
        max_staleness: Option<Duration>,
    },
    /// Sets KEY to VALUE.
    Put { key: String, value: String },
    /// Removes KEY.
    Delete { key: String },
    /// Prints KEY<TAB>VALUE lines for keys in [--from, --to).
    Scan {
        /// First key (inclusive); the beginning when omitted.
        #[arg(long, default_value = "")]
        from: String,
        /// Last key (exclusive); the end when omitted.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// From the last key down.
        #[arg(long)]
        reverse: bool,
    },
    /// Sets KEY to --new (or deletes it with --delete) only if it is --expected (or absent
    /// with --absent). Exit 0 if swapped, 1 (with the current value on stderr) if not.
    Cas {
        key: String,
        #[arg(long, conflicts_with = "absent", required_unless_present = "absent")]
        expected: Option<String>,
        #[arg(long)]
        absent: bool,
        #[arg(
            long = "new",
            conflicts_with = "delete",
            required_unless_present = "delete"
        )]
        new_value: Option<String>,
        #[arg(long)]
        delete: bool,
    },
}

/// What `hanse kv` talks to: an embedded store or a cluster.
enum Store {
    Embedded(Db),
    Cluster(tokio::runtime::Runtime, Client),
}

impl Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(match self {
            Store::Embedded(db) => db.get(key)?,
            Store::Cluster(rt, client) => rt.block_on(client.get(key))?,
        })
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        match self {
            Store::Embedded(db) => db.put(key, value)?,
            Store::Cluster(rt, client) => rt.block_on(client.put(key, value))?,
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        match self {
            Store::Embedded(db) => db.delete(key)?,
            Store::Cluster(rt, client) => rt.block_on(client.delete(key))?,
        }
        Ok(())
    }

    fn scan(
        &self,
        from: Vec<u8>,
        to: Option<Vec<u8>>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(match self {
            Store::Embedded(db) => {
                let start = Bound::Included(from);
                let end = to.map_or(Bound::Unbounded, Bound::Excluded);
                if reverse {
                    db.scan_reverse((start, end), limit)?
                } else {
                    db.scan((start, end), limit)?
                }
            }
            Store::Cluster(rt, client) => {
                let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                rt.block_on(client.scan(&from, &to.unwrap_or_default(), limit, reverse))?
            }
        })
    }

    fn cas(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        Ok(match self {
            Store::Embedded(db) => {
                let outcome = db.compare_and_swap(key, expected, new)?;
                (outcome.swapped, outcome.previous)
            }
            Store::Cluster(rt, client) => {
                let outcome = rt.block_on(client.compare_and_swap(key, expected, new))?;
                (outcome.swapped, outcome.previous)
            }
        })
    }
}

fn open_store(args: &KvArgs) -> Result<Store> {
    if !args.endpoints.is_empty() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let options = ClientOptions {
            region: args.region.clone(),
            ..args.connect.credentials()?.options()
        };
        let client = Client::new(&args.endpoints, options)?;
        return Ok(Store::Cluster(runtime, client));
    }
    let dir = args
        .data_dir
        .as_ref()
        .context("give --data-dir DIR (embedded store) or --endpoints HOST:PORT,... (cluster)")?;
    let options = Options {
        sync: !args.no_sync,
        ..Options::default()
    };
    let db = Db::open(dir, options).with_context(|| format!("opening {}", dir.display()))?;
    Ok(Store::Embedded(db))
}

pub fn run(args: KvArgs) -> Result<ExitCode> {
    let db = open_store(&args)?;
    let mut out = std::io::stdout().lock();
    match args.op {
        KvOp::Get {
            key,
            max_staleness: Some(bound),
        } => {
            let Store::Cluster(rt, client) = &db else {
                anyhow::bail!("--max-staleness reads from a cluster (--endpoints)");
            };
            let read = rt.block_on(client.get_stale(key.as_bytes(), bound))?;
            eprintln!(
                "served by node {}, at most {} ms stale",
                read.served_by,
                read.staleness_bound.as_millis()
            );
            let Some(value) = read.value else {
                eprintln!("not found");
                return Ok(ExitCode::from(1));
            };
            out.write_all(&value)?;
            out.write_all(b"\n")?;
        }
        KvOp::Get { key, .. } => match db.get(key.as_bytes())? {
            Some(value) => {
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            None => {
                eprintln!("not found");
                return Ok(ExitCode::from(1));
            }
        },
        KvOp::Put { key, value } => db.put(key.as_bytes(), value.as_bytes())?,
        KvOp::Delete { key } => db.delete(key.as_bytes())?,
        KvOp::Scan {
            from,
            to,
            limit,
            reverse,
        } => {
            let rows = db.scan(
                from.into_bytes(),
                to.map(String::into_bytes),
                limit,
                reverse,
            )?;
            for (key, value) in rows {
                out.write_all(&key)?;
                out.write_all(b"\t")?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
        }
        KvOp::Cas {
            key,
            expected,
            new_value,
            ..
        } => {
            let (swapped, previous) = db.cas(
                key.as_bytes(),
                expected.as_deref().map(str::as_bytes),
                new_value.as_deref().map(str::as_bytes),
            )?;
            if !swapped {
                let current = match &previous {
                    Some(v) => format!("\"{}\"", v.escape_ascii()),
                    None => "absent".to_string(),
                };
                eprintln!("not swapped: current value is {current}");
                return Ok(ExitCode::from(1));
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
