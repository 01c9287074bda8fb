//! `hanse kv`: single-key reads and writes, scans and compare-and-swap.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hanse::{Db, Options};

#[derive(Args)]
pub struct KvArgs {
    /// The data directory of an embedded store (created when missing).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Acknowledge writes before they are synced to disk (they survive a crash of this
    /// process, not of the machine).
    #[arg(long, global = true)]
    no_sync: bool,
    #[command(subcommand)]
    op: KvOp,
}

#[derive(Subcommand)]
enum KvOp {
    /// Prints the value of KEY (exit 1 and "not found" when absent).
    Get { key: String },
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

pub fn run(args: KvArgs) -> Result<ExitCode> {
    let dir = args
        .data_dir
        .context("--data-dir is required (the cluster client arrives with --endpoints later)")?;
    let options = Options {
        sync: !args.no_sync,
        ..Options::default()
    };
    let db = Db::open(&dir, options).with_context(|| format!("opening {}", dir.display()))?;
    let mut out = std::io::stdout().lock();
    match args.op {
        KvOp::Get { key } => match db.get(key.as_bytes())? {
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
            let start = std::ops::Bound::Included(from.into_bytes());
            let end = match to {
                Some(to) => std::ops::Bound::Excluded(to.into_bytes()),
                None => std::ops::Bound::Unbounded,
            };
            let rows = if reverse {
                db.scan_reverse((start, end), limit)?
            } else {
                db.scan((start, end), limit)?
            };
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
            let outcome = db.compare_and_swap(
                key.as_bytes(),
                expected.as_deref().map(str::as_bytes),
                new_value.as_deref().map(str::as_bytes),
            )?;
            if !outcome.swapped {
                let current = match &outcome.previous {
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
