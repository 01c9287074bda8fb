//! Operating a real cluster: Debian's Prometheus scrapes a local 3-node cluster with the
//! scrape config and alert rules the project ships (`deploy/prometheus/`), as a user with
//! the role `monitor`, and computes rates and a latency quantile from what it scraped;
//! promtool accepts the rules and their unit tests pass.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{certs, client_options, free_port, launch, ok};

/// `deploy/prometheus/` in the source tree.
fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// What curl got from `url` (plain HTTP, Prometheus' API), as JSON.
fn get_json(url: &str) -> serde_json::Value {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("curl runs (scripts/setup.sh installs it)");
    assert!(output.status.success(), "curl {url}: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{url}: {e}: {output:?}"))
}

/// A Prometheus server, stopped when dropped.
struct Prometheus {
    child: Child,
    api: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// The value of an instant query's first sample, if it has one.
    fn query(&self, query: &str) -> Option<f64> {
        let url = format!("{}/api/v1/query?query={}", self.api, urlencode(query));
        let answer = get_json(&url);
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        let value = answer["data"]["result"].get(0)?["value"][1]
            .as_str()?
            .to_string();
        value.parse().ok()
    }

    /// Waits (up to a minute) for `query` to give a value `accept` takes.
    fn wait_for(&self, query: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.query(query) {
                Some(value) if accept(value) => return value,
                last => assert!(
                    Instant::now() < deadline,
                    "{query}: {last:?} after a minute"
                ),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `command` succeeded, and all it printed; `installed` says where it comes from.
fn run(command: &mut Command, installed: &str) -> (bool, String) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not run ({installed}): {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let mut promtool = Command::new("promtool");
    promtool.args(args).current_dir(dir);
    let (ok, text) = run(&mut promtool, "scripts/setup.sh installs prometheus");
    assert!(ok, "promtool {args:?}: {text}");
    text
}

#[test]
fn the_shipped_alert_rules_are_valid_and_their_unit_tests_pass() {
    let out = promtool(&["check", "rules", "alerts.yml"], &shipped());
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let out = promtool(&["test", "rules", "alerts_test.yml"], &shipped());
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn a_real_prometheus_scrapes_the_cluster_with_the_shipped_config() {
    let cluster = launch(&[]);
    let endpoint = cluster.endpoints[0].clone();
    // The user Prometheus scrapes as, with the role that may read metrics and nothing else.
    let certs = certs();
    if !certs.join("client-prometheus.crt").exists() {
        ok(&[
            "cert",
            "create-client",
            "--user",
            "prometheus",
            "--overwrite",
        ]);
    }
    ok(&["user", "add", "prometheus", "--endpoints", &endpoint]);
    ok(&[
        "user",
        "grant",
        "prometheus",
        "monitor",
        "--endpoints",
        &endpoint,
    ]);

    // The shipped config, unchanged, beside the files it names.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path();
    for file in ["prometheus.yml", "alerts.yml"] {
        std::fs::copy(shipped().join(file), conf.join(file)).unwrap();
    }
    std::fs::create_dir_all(conf.join("certs")).unwrap();
    for file in ["ca.crt", "client-prometheus.crt", "client-prometheus.key"] {
        std::fs::copy(certs.join(file), conf.join("certs").join(file)).unwrap();
    }
    let targets: Vec<String> = (1..=3).map(|id| cluster.http_addr(id)).collect();
    std::fs::create_dir_all(conf.join("targets")).unwrap();
    let sd = serde_json::json!([{ "targets": targets }]);
    std::fs::write(conf.join("targets/hanse.json"), sd.to_string()).unwrap();
    promtool(&["check", "config", "prometheus.yml"], conf);

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            conf.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            conf.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(std::fs::File::create(conf.join("prometheus.log")).unwrap())
        .stderr(std::fs::File::create(conf.join("prometheus.err")).unwrap())
        .spawn()
        .expect("prometheus runs (scripts/setup.sh installs it)");
    let prometheus = Prometheus {
        child,
        api: format!("http://{listen}"),
    };

    // Load while Prometheus scrapes: writes and reads through every node.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = hanse_client::Client::new(&cluster.endpoints, client_options()).unwrap();
    let loading = Instant::now();
    runtime.block_on(async {
        let mut i = 0u64;
        while loading.elapsed() < Duration::from_secs(20) {
            let key = format!("ops/{}", i % 500);
            client.put(key.as_bytes(), b"value").await.unwrap();
            client.get(key.as_bytes()).await.unwrap();
            i += 1;
        }
    });

    // Every node is scraped, as the user with the role `monitor`.
    let up = prometheus.wait_for(r#"sum(up{job="hanse"})"#, |v| v == 3.0);
    assert_eq!(up, 3.0);
    let puts = r#"sum(rate(hanse_kv_requests_total{op="put",outcome="ok"}[30s]))"#;
    assert!(prometheus.wait_for(puts, |v| v > 0.0) > 0.0);
    let fsyncs = "sum(rate(hanse_storage_fsync_duration_seconds_count[30s]))";
    assert!(prometheus.wait_for(fsyncs, |v| v > 0.0) > 0.0);
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(hanse_kv_request_duration_seconds_bucket{op="put"}[30s])))"#;
    let p99 = prometheus.wait_for(p99, f64::is_finite);
    assert!(p99 > 0.0 && p99 < 10.0, "put p99 {p99} s");
    let leaders = r#"sum(hanse_node_replicas{role="leader"})"#;
    assert_eq!(prometheus.wait_for(leaders, |v| v >= 2.0), 2.0);
    // The rules loaded, and with a healthy cluster none fires.
    let rules = get_json(&format!("{}/api/v1/rules", prometheus.api));
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"HanseShardWithoutLeader"), "{rules}");
    let firing = get_json(&format!("{}/api/v1/alerts", prometheus.api));
    assert_eq!(firing["data"]["alerts"], serde_json::json!([]), "{firing}");

    // Every query of the shipped Grafana dashboard is valid PromQL on these metrics, and
    // each panel but those of rare events (refusals, balancing) shows data.
    let dashboard = shipped().join("../grafana/hanse.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        let mut series = 0;
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "30s");
            let url = format!("{}/api/v1/query?query={}", prometheus.api, urlencode(&expr));
            let answer = get_json(&url);
            assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
            series += answer["data"]["result"].as_array().unwrap().len();
        }
        let rare = [
            "Request outcomes other than ok",
            "Planner and balancer actions",
        ];
        assert!(
            series > 0 || rare.contains(&title),
            "panel {title:?} shows nothing"
        );
    }
}

/// The JSON log lines of `log` (a node's log file also holds what it printed).
fn json_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// `hanse cluster up` of one node in `dir` on `port`, its logs in JSON with the node's
/// debug events.
fn up_logging_json(dir: &str, port: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_hanse"))
        .args([
            "cluster", "up", "--dir", dir, "--nodes", "1", "--port", port,
        ])
        .env("HANSE_CERTS_DIR", certs())
        .env("HANSE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,hanse=info,hanse_node=debug")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_node_logs_json_with_its_configuration_and_request_ids_and_redacts_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster").to_str().unwrap().to_string();
    let port = free_port();
    let endpoint = format!("127.0.0.11:{port}");
    let log = Path::new(&dir).join("node1.log");
    /// Brings the cluster down however the test ends.
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = common::hanse(&["cluster", "down", "--dir", self.0]);
        }
    }
    let _down = Down(&dir);
    up_logging_json(&dir, &port);
    ok(&["kv", "put", "visible-key", "v", "--endpoints", &endpoint]);
    let lines = json_lines(&log);
    let message = |line: &serde_json::Value| line["fields"]["message"].as_str().map(str::to_string);
    let config = lines
        .iter()
        .find(|l| message(l).as_deref() == Some("effective configuration"))
        .unwrap_or_else(|| panic!("no configuration logged: {lines:?}"));
    assert!(
        config["fields"]["config"]
            .as_str()
            .unwrap()
            .contains("node_id: 1"),
        "{config}"
    );
    assert!(
        config["fields"]["heartbeat_ms"].as_u64().is_some(),
        "{config}"
    );
    // One put, followed through the write path under its request id.
    let proposing = lines
        .iter()
        .find(|l| message(l).as_deref() == Some("proposing"))
        .unwrap_or_else(|| panic!("no write logged: {lines:?}"));
    assert_eq!(proposing["fields"]["key"], "visible-key", "{proposing}");
    let id = proposing["span"]["id"].as_str().unwrap().to_string();
    let answered = lines.iter().find(|l| {
        message(l).as_deref() == Some("answered") && l["span"]["id"].as_str() == Some(id.as_str())
    });
    let answered = answered.unwrap_or_else(|| panic!("request {id} never answered: {lines:?}"));
    assert_eq!(answered["fields"]["outcome"], "ok", "{answered}");
    assert_eq!(answered["span"]["op"], "put", "{answered}");

    // With `redact`, the same path logs no key.
    ok(&["cluster", "down", "--dir", &dir]);
    let config_path = Path::new(&dir).join("node1.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, format!("redact = true\n{config}")).unwrap();
    up_logging_json(&dir, &port);
    ok(&["kv", "put", "secret-key", "v", "--endpoints", &endpoint]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("secret-key"), "a redacted key was logged");
    let writes = json_lines(&log)
        .iter()
        .filter(|l| message(l).as_deref() == Some("proposing"))
        .count();
    assert_eq!(writes, 2, "both writes logged");
}

/// The leaders node `endpoint` has, as its own status says.
fn leaders_on(endpoint: &str) -> Vec<u64> {
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["admin", "status", "--json", "--endpoints", endpoint])).unwrap();
    status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["role"] == "leader")
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_drained_node_hands_its_leaderships_over_under_load_and_loses_nothing() {
    // The balancer spreads leaders from the first second: once node 1 leads nothing, it
    // would move some back there if the drain did not keep them away.
    let cluster = launch(&["--balance-cool-down", "1"]);
    let node1 = cluster.endpoints[0].clone();
    for key in ["b", "d", "f", "h"] {
        ok(&["admin", "split", key, "--endpoints", &node1]);
    }
    assert!(!leaders_on(&node1).is_empty(), "node 1 leads at start");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writing = {
        let (stop, written, endpoints) = (stop.clone(), written.clone(), cluster.endpoints.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let client = hanse_client::Client::new(&endpoints, client_options()).unwrap();
                let mut acknowledged = Vec::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("drain/{i:06}");
                    // A write that fails may or may not have happened; only the
                    // acknowledged ones are checked.
                    if client.put(key.as_bytes(), key.as_bytes()).await.is_ok() {
                        acknowledged.push(key);
                        written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    i += 1;
                }
                acknowledged
            })
        })
    };
    // Drained under writes: once some have been acknowledged.
    let started = Instant::now();
    while written.load(std::sync::atomic::Ordering::Relaxed) < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no writes acknowledged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // What the preStop hook runs.
    let drained: serde_json::Value =
        serde_json::from_str(&ok(&["admin", "drain", "--json", "--endpoints", &node1])).unwrap();
    assert_eq!(drained["kept"], serde_json::json!([]), "{drained}");
    assert!(
        !drained["moved"].as_array().unwrap().is_empty(),
        "{drained}"
    );
    // It stays without leadership while the balancer rounds go by (every 2 s), and tells
    // a load balancer it is not ready.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(6) {
        assert_eq!(leaders_on(&node1), Vec::<u64>::new());
        std::thread::sleep(Duration::from_millis(500));
    }
    let http = cluster.http_addr(1);
    let ca = certs().join("ca.crt");
    let output = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(&ca)
        .arg(format!("https://{http}/readyz?verbose"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.ends_with("503"), "{text}");
    assert!(text.contains("[-]not_draining failed"), "{text}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = writing.join().unwrap();
    assert!(acknowledged.len() > 10, "{} writes", acknowledged.len());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = hanse_client::Client::new(&cluster.endpoints, client_options()).unwrap();
        for key in &acknowledged {
            let value = client.get(key.as_bytes()).await.unwrap();
            assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key} lost");
        }
    });
}

/// `deploy/kubernetes/` in the source tree.
fn kubernetes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// kubernetes-validate (from the project's `.venv-ops`) on `files`, strictly: its
/// verdict and what it said.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-ops/bin/kubernetes-validate");
    let mut validate = Command::new(tool);
    validate
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(files);
    run(&mut validate, "scripts/setup.sh installs it in .venv-ops")
}

#[test]
fn every_kubernetes_manifest_validates_against_the_schemas() {
    let manifests: Vec<PathBuf> = std::fs::read_dir(kubernetes())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let (valid, said) = validate(&manifests);
    assert!(valid, "{said}");
    for kind in [
        "statefulset/hanse-eu-hamburg",
        "statefulset/hanse-ap-china",
        "statefulset/hanse-au-sydney",
        "service/hanse",
        "poddisruptionbudget/hanse",
        "configmap/hanse-start",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}")),
            "{kind}: {said}"
        );
    }
    // The validator does refuse a broken manifest.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(kubernetes().join("pdb.yaml")).unwrap();
    std::fs::write(
        &broken,
        text.replace("maxUnavailable: 1", "maxUnavailable: [1]"),
    )
    .unwrap();
    let (valid, said) = validate(&[broken]);
    assert!(!valid, "{said}");
}

/// The start script of `start-configmap.yaml`, as the pods run it.
fn start_script() -> String {
    let manifest = std::fs::read_to_string(kubernetes().join("start-configmap.yaml")).unwrap();
    let body = manifest.split_once("  start.sh: |\n").unwrap().1;
    body.lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_pods_start_script_writes_a_config_the_node_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, certs, data) = (
        dir.path().join("secret"),
        dir.path().join("certs"),
        dir.path().join("data"),
    );
    std::fs::create_dir_all(&secret).unwrap();
    for file in ["ca.crt", "client-operator.crt", "client-operator.key"] {
        std::fs::write(secret.join(file), "x").unwrap();
    }
    for (pod, id, base, founding) in [
        ("hanse-eu-hamburg-0", 1, 1, true),
        ("hanse-ap-china-2", 103, 101, false),
    ] {
        for file in [format!("node-{id}.crt"), format!("node-{id}.key")] {
            std::fs::write(secret.join(file), "x").unwrap();
        }
        let config = dir.path().join(format!("{pod}.toml"));
        // The pod's paths here, and the config shown instead of a node started.
        let script = start_script()
            .replace("/etc/hanse/secret", secret.to_str().unwrap())
            .replace("/run/hanse/certs", certs.to_str().unwrap())
            .replace("/var/lib/hanse/data", data.to_str().unwrap())
            .replace("/tmp/node.toml", config.to_str().unwrap())
            .replace("exec hanse server", "exit 0; hanse server");
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("POD_NAME", pod)
            .env("POD_NAMESPACE", "db")
            .env(
                "HANSE_REGION",
                pod.trim_start_matches("hanse-").rsplit_once('-').unwrap().0,
            )
            .env("HANSE_ID_BASE", base.to_string())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let loaded = hanse_node::config::NodeConfig::load(&config).unwrap_or_else(|e| {
            panic!("{pod}: {e}\n{}", std::fs::read_to_string(&config).unwrap())
        });
        assert_eq!(loaded.node_id, id);
        assert_eq!(loaded.bootstrap, id == 1);
        assert_eq!(loaded.initial_peers.len(), if founding { 3 } else { 0 });
        assert_eq!(
            loaded.advertised(),
            format!("{pod}.hanse.db.svc.cluster.local:7400")
        );
        assert!(loaded.http_addr.is_some());
        let key = certs.join(format!("node-{id}.key"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the node's key is private");
    }
}
