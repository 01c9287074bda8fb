//! `hanse demo --embedded`: a short tour of the embedded store. It splits the keyspace into shards by
//! hand, writes keys from several threads, runs a cross-shard batch, compare-and-swap and
//! scans over shard boundaries, then reopens the store and checks every key is still there.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Args;
use hanse::{BatchOp, Db, Options, ShardDescriptor};

use crate::display;

#[derive(Args)]
pub struct TourArgs {
    /// Where to keep the store (default: a temporary directory removed at the end).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keys to write (with --embedded).
    #[arg(long, default_value_t = 4_000)]
    keys: u64,
    /// Concurrent writer threads (with --embedded).
    #[arg(long, default_value_t = 16)]
    writers: u64,
}

fn key(i: u64) -> Vec<u8> {
    format!("user:{i:06}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("{{\"id\":{i},\"city\":\"Hamburg\",\"visits\":{}}}", i % 97).into_bytes()
}

pub fn run(args: TourArgs) -> Result<()> {
    ensure!(
        args.keys >= 4 && args.writers >= 1,
        "--keys must be at least 4 and --writers at least 1"
    );
    let temp;
    let dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    println!("Hanse demo: embedded store in {}", dir.display());
    println!("Each write goes through its shard's Raft log and is fsynced before it returns.\n");

    let db = Db::open(&dir, Options::default()).context("opening the store")?;
    println!(
        "1. Splitting the empty keyspace into four shards by hand (a Raft admin command in each shard's log)"
    );
    for at in [args.keys / 4, args.keys / 2, 3 * args.keys / 4] {
        let (left, right) = db.split_shard(&key(at))?;
        println!(
            "   split shard {} at {:<12} -> shard {} {} and shard {} {}",
            left.id,
            String::from_utf8_lossy(&key(at)),
            left.id,
            range(&left),
            right.id,
            range(&right)
        );
    }
    print_shards(&db.shards());
    let before = db.log_writer_stats();
    write_phase(&db, &args)?;
    let loaded = db.log_writer_stats();

    println!("\n3. Operations across shards");
    let edge = args.keys / 2;
    let batch = vec![
        BatchOp::Put {
            key: key(edge - 1),
            value: b"batch-left".to_vec(),
        },
        BatchOp::Put {
            key: key(edge),
            value: b"batch-right".to_vec(),
        },
    ];
    db.batch(batch)?;
    println!(
        "   batch over the boundary at {}: both halves applied (atomic within each shard)",
        String::from_utf8_lossy(&key(edge))
    );
    let swapped = db.compare_and_swap(&key(1), Some(&value(1)), Some(b"swapped"))?;
    let refused = db.compare_and_swap(&key(1), Some(&value(1)), Some(b"again"))?;
    println!(
        "   compare-and-swap on {}: first {}, second {} (value had changed)",
        String::from_utf8_lossy(&key(1)),
        if swapped.swapped {
            "swapped"
        } else {
            "refused"
        },
        if refused.swapped {
            "swapped"
        } else {
            "refused"
        }
    );
    ensure!(
        swapped.swapped && !refused.swapped,
        "compare-and-swap misbehaved"
    );
    let around = db.scan(key(edge - 2)..key(edge + 2), 10)?;
    let reversed = db.scan_reverse(key(edge - 2)..key(edge + 2), 10)?;
    println!("   scan across the boundary: {}", names(&around));
    println!("   reverse scan:             {}", names(&reversed));
    ensure!(
        around.len() == 4 && reversed.len() == 4,
        "scan across shards lost keys"
    );

    drop(db);
    println!("\n4. Reopening the store and reading every key back");
    let started = Instant::now();
    let db = Db::open(&dir, Options::default()).context("reopening the store")?;
    let opened_in = started.elapsed();
    let mut present = 0;
    for i in 0..args.keys {
        if db.get(&key(i))?.is_some() {
            present += 1;
        }
    }
    ensure!(
        present == args.keys,
        "only {present} of {} keys came back",
        args.keys
    );
    println!(
        "   reopened in {opened_in:.1?} with {} shards; all {present} keys are there",
        db.shards().len()
    );

    let requests = loaded.requests - before.requests;
    let syncs = loaded.syncs - before.syncs;
    println!(
        "\nGroup commit: during the load the shards' Raft logs made {requests} log writes, made durable by {syncs} fsyncs ({:.1} log writes per fsync).",
        requests as f64 / syncs.max(1) as f64
    );
    Ok(())
}

fn write_phase(db: &Db, args: &TourArgs) -> Result<()> {
    println!(
        "\n2. Writing {} keys from {} threads, spread over the shards",
        args.keys, args.writers
    );
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let latencies: Vec<Duration> = std::thread::scope(|scope| -> Result<Vec<Duration>> {
        let workers: Vec<_> = (0..args.writers)
            .map(|_| {
                scope.spawn(|| -> Result<Vec<Duration>> {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.keys {
                            return Ok(mine);
                        }
                        let t = Instant::now();
                        db.put(&key(i), &value(i))?;
                        mine.push(t.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let progress = Progress::new(args.keys);
        while workers.iter().any(|w| !w.is_finished()) {
            progress.show(done.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        progress.finish(args.keys);
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.join().expect("writer thread panicked")?);
        }
        Ok(all)
    })?;
    let elapsed = started.elapsed();
    let mut sorted = latencies;
    sorted.sort();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    println!(
        "   {} durable writes in {elapsed:.2?}: {:.0} writes/s, latency p50 {:.2?}, p99 {:.2?}",
        args.keys,
        args.keys as f64 / elapsed.as_secs_f64(),
        at(0.5),
        at(0.99)
    );
    Ok(())
}

fn range(shard: &ShardDescriptor) -> String {
    display::range(&shard.start, &shard.end)
}

fn print_shards(shards: &[ShardDescriptor]) {
    println!("   {:<6} {:<32} {:<8}", "shard", "range", "version");
    for shard in shards {
        println!(
            "   {:<6} {:<32} {:<8}",
            shard.id,
            range(shard),
            shard.epoch.version
        );
    }
}

fn names(rows: &[(Vec<u8>, Vec<u8>)]) -> String {
    rows.iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    total: u64,
    tty: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, done: u64) {
        if !self.tty {
            return;
        }
        const WIDTH: u64 = 40;
        let filled = (done * WIDTH / self.total.max(1)) as usize;
        eprint!(
            "\r   [{}{}] {done}/{}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled),
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self, done: u64) {
        self.show(done);
        if self.tty {
            eprintln!();
        }
    }
}
