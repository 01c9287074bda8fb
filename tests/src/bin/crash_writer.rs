//! Writes batches, compare-and-swaps and splits to an embedded store as fast as it can and
//! prints each acknowledgement (see `hanse_tests::crash`), until it is killed.

use std::io::Write;

use anyhow::{Context, Result, bail};
use hanse::{BatchOp, Db, Options};
use hanse_tests::crash::{Ack, COUNTER_KEY, batch_key, batch_prefix, batch_value};

/// A split every this many batches keeps shards being created while crashes happen.
const SPLIT_EVERY: u64 = 100;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(first)) = (args.next(), args.next()) else {
        bail!("usage: crash_writer DATA_DIR FIRST_BATCH_INDEX");
    };
    let first: u64 = first
        .parse()
        .context("FIRST_BATCH_INDEX must be a number")?;
    let db = Db::open(&dir, Options::default())?;
    let mut out = std::io::stdout().lock();
    let mut counter: Option<u64> = db
        .get(COUNTER_KEY)?
        .map(|v| String::from_utf8_lossy(&v).parse())
        .transpose()
        .context("counter value")?;
    for index in first.. {
        if index % SPLIT_EVERY == 0 && index > first {
            db.split_shard(&batch_prefix(index))?;
        }
        let keys = 1 + index % 5;
        let ops = (0..keys)
            .map(|j| BatchOp::Put {
                key: batch_key(index, j),
                value: batch_value(index, keys),
            })
            .collect();
        db.batch(ops)?;
        writeln!(out, "{}", Ack::Batch { index, keys }.line())?;
        out.flush()?;

        let next = counter.map_or(0, |c| c + 1);
        let expected = counter.map(|c| c.to_string().into_bytes());
        let outcome = db.compare_and_swap(
            COUNTER_KEY,
            expected.as_deref(),
            Some(next.to_string().as_bytes()),
        )?;
        if !outcome.swapped {
            bail!(
                "counter moved under the only writer: {:?}",
                outcome.previous
            );
        }
        counter = Some(next);
        writeln!(out, "{}", Ack::Counter { value: next }.line())?;
        out.flush()?;
    }
    Ok(())
}
