//! The web console in a real browser: a local 3-node cluster split into three user
//! ranges, load on the middle one, and Debian's headless Chromium (through Selenium, in
//! the project's `.venv-ops`: `console_browser.py`) opening the console of a node that does not
//! lead the meta shard, as a user with the role `monitor` logged in by token. Screenshots
//! land in the test's output directory (`target/tmp/console/`).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{client_options, launch, ok};

#[test]
fn the_console_shows_nodes_shards_and_the_loaded_key_range_in_a_real_browser() {
    // The balancer stays still meanwhile, so the leaders the CLI saw are the browser's.
    let cluster = launch(&["--balance-cool-down", "3600"]);
    let endpoint = cluster.endpoints[0].clone();
    for key in ["m", "t"] {
        ok(&["admin", "split", key, "--endpoints", &endpoint]);
    }
    // A user who may only watch, logged in with a password: the browser holds a token.
    ok(&["user", "add", "viewer", "--endpoints", &endpoint]);
    ok(&[
        "user",
        "grant",
        "viewer",
        "monitor",
        "--endpoints",
        &endpoint,
    ]);
    let with_password = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hanse"))
            .args(args)
            .env("HANSE_CERTS_DIR", common::certs())
            .env("HANSE_PASSWORD", "a viewer's passphrase")
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    with_password(&["user", "passwd", "viewer", "--endpoints", &endpoint]);
    let login = with_password(&["user", "login", "viewer", "--endpoints", &endpoint]);
    let token = login
        .split_whitespace()
        .last()
        .expect("login prints the token")
        .to_string();

    // Writes and reads on the middle range only, until the browser is done.
    let stop = Arc::new(AtomicBool::new(false));
    let loading = {
        let (stop, endpoints) = (stop.clone(), cluster.endpoints.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let client = hanse_client::Client::new(&endpoints, client_options()).unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("m/{:04}", i % 1000);
                    client.put(key.as_bytes(), b"value").await.unwrap();
                    client.get(key.as_bytes()).await.unwrap();
                    i += 1;
                }
            });
        })
    };
    // The routing table once it settled: a shard just split off reports its own leader
    // a moment after the split.
    let table = || ok(&["admin", "shards", "--json", "--endpoints", &endpoint]);
    let placement = |json: &str| -> Vec<(serde_json::Value, serde_json::Value)> {
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let shards = value["shards"].as_array().unwrap();
        shards
            .iter()
            .map(|s| (s["id"].clone(), s["leader_node"].clone()))
            .collect()
    };
    let mut shards = table();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let again = table();
        let settled = placement(&again) == placement(&shards);
        shards = again;
        if settled {
            break;
        }
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&out).unwrap();
    let shards_file = out.join("shards.json");
    std::fs::write(&shards_file, &shards).unwrap();
    // Node 2's console: it leads no shard's meta replica at start, so it asks node 1.
    let url = format!("https://{}/#token={token}", cluster.http_addr(2));
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ops/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console_browser.py");
    let browser = Command::new(python)
        .arg(script)
        .args([
            "--url", &url, "--nodes", "3", "--loaded", "m", "--dark", "", "--dark", "t",
        ])
        .arg("--shards")
        .arg(&shards_file)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the venv's python runs (scripts/setup.sh makes it)");
    stop.store(true, Ordering::Relaxed);
    loading.join().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    println!("{report}");
    assert!(
        browser.status.success(),
        "{report}\n{}",
        cluster.log_tails(20)
    );
    for page in ["overview", "shards", "planner", "heatmap"] {
        assert!(
            out.join(format!("{page}.png")).exists(),
            "no screenshot of {page}"
        );
    }
}
