//! Kill -9 durability: a child process writes and reports each acknowledged write; it is
//! killed with SIGKILL at random points, the store is reopened, and every acknowledged
//! write must be there while no batch is half applied.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hanse::{Db, Options};
use hanse_tests::crash::{Ack, check};
use rand::{Rng, SeedableRng};

const CYCLES: u64 = 24;
/// Each cycle's writer starts its batch numbering here times the cycle number, so the
/// batches of different cycles never share keys.
const BATCHES_PER_CYCLE_MAX: u64 = 1_000_000;

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = std::env::var("HANSE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash test seed {seed} (set HANSE_CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<Ack> = Vec::new();
    let mut cycles_with_acks = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
            .arg(dir.path())
            .arg((cycle * BATCHES_PER_CYCLE_MAX).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start crash_writer");
        let stdout = child.stdout.take().unwrap();
        let (first_ack, writing) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                acks.push(
                    Ack::parse(&line).unwrap_or_else(|| panic!("bad line from writer: {line}")),
                );
                if acks.len() == 1 {
                    let _ = first_ack.send(());
                }
            }
            acks
        });
        // One cycle in four while the store may still be opening (the clock starts with
        // the process, whose start alone takes a few hundred milliseconds here); the
        // others in the middle of the load (the clock starts at the first acknowledged
        // write, so every such cycle checks some).
        let while_opening = rng.random_range(0..4) == 0;
        if !while_opening {
            let _ = writing.recv_timeout(Duration::from_secs(30));
        }
        let delay = Duration::from_millis(rng.random_range(20..800));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the writer must have been killed, not exited: {status}"
        );
        let this_cycle = reader.join().unwrap();
        if !this_cycle.is_empty() {
            cycles_with_acks += 1;
        }
        acked.extend(this_cycle);

        let db = Db::open(dir.path(), Options::default()).expect("reopen after SIGKILL");
        let rows = db.scan(.., usize::MAX).unwrap();
        let problems = check(&rows, &acked);
        assert!(
            problems.is_empty(),
            "cycle {cycle} (seed {seed}, killed after {delay:?}): {problems:#?}"
        );
        println!(
            "cycle {cycle}: killed after {delay:?}; {} acknowledged writes so far, all present; {} shards",
            acked.len(),
            db.shards().len()
        );
    }
    assert!(
        cycles_with_acks >= CYCLES / 2,
        "too few cycles got as far as writing ({cycles_with_acks} of {CYCLES}): the test checked too little"
    );
}
