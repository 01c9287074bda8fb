//! A real node's HTTP port (in process, real TLS, asked by curl): the probes answer
//! anyone, liveness holds while the shard has no leader but readiness does not, and the
//! metrics are served in Prometheus' format to a node, `root` or a `monitor`, and to
//! no one else.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use hanse_client::proto::admin_client::AdminClient;
use hanse_client::proto::{self, auth_request::Change};
use hanse_client::{CertsDir, Client, ClientOptions, Identity};
use hanse_node::config::{NodeConfig, PeerConfig};

/// What curl got from `url`: the status code and the body. With `who`, curl trusts the
/// cluster's CA and shows `who`'s certificate; with the CA only when `who` is `None`.
async fn curl(url: &str, certs: &CertsDir, who: Option<&Identity>) -> (u16, String) {
    let mut command = std::process::Command::new("curl");
    command.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    let ca = certs.files(&Identity::user("root").unwrap()).ca;
    command.arg("--cacert").arg(ca);
    if let Some(who) = who {
        let files = certs.files(who);
        command
            .arg("--cert")
            .arg(files.cert)
            .arg("--key")
            .arg(files.key);
    }
    command.arg(url);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("curl runs (scripts/setup.sh installs it)");
    assert!(output.status.success(), "curl {url}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// What curl got from `url` once it answered 200, or its last answer after `within`.
async fn curl_until_ok(
    url: &str,
    certs: &CertsDir,
    who: Option<&Identity>,
    within: Duration,
) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = curl(url, certs, who).await;
        if code == 200 || Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node 1 alone on `ip`, as `common::single_node` makes it, with an HTTP port there.
fn with_http(dir: &std::path::Path, ip: [u8; 4], users: &[&str]) -> (NodeConfig, CertsDir) {
    let (config, certs) = common::single_node(dir, ip, users);
    let config = NodeConfig {
        http_addr: Some(free_addr(ip)),
        ..config
    };
    (config, certs)
}

fn free_addr(ip: [u8; 4]) -> SocketAddr {
    TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn probes_answer_anyone_and_metrics_only_whom_a_role_allows() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, certs) = with_http(dir.path(), [127, 0, 0, 70], &["alice", "mo"]);
        let http = config.http_addr.unwrap();
        let endpoint = config.listen_addr.to_string();
        let node = hanse_node::server::start(config).await.unwrap();
        assert_eq!(node.http_addr, Some(http));
        let url = |path: &str| format!("https://{http}{path}");

        // Without a certificate: the probes answer, the metrics do not.
        let (code, body) = curl(&url("/livez"), &certs, None).await;
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        let ready = curl_until_ok(
            &url("/readyz?verbose"),
            &certs,
            None,
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(ready.0, 200, "{}", ready.1);
        for check in ["storage", "replicas_open", "shard_leaders", "not_draining"] {
            assert!(ready.1.contains(&format!("[+]{check} ok")), "{}", ready.1);
        }
        let (code, body) = curl(&url("/metrics"), &certs, None).await;
        assert_eq!(code, 401, "{body}");

        // Some traffic, then the metrics as root see it.
        let root = Identity::user("root").unwrap();
        let root_tls = common::tls(&certs, root.clone());
        let client = Client::new(
            std::slice::from_ref(&endpoint),
            ClientOptions {
                tls: Some(root_tls.clone()),
                ..ClientOptions::default()
            },
        )
        .unwrap();
        for i in 0..20 {
            client.put(format!("k{i}").as_bytes(), b"v").await.unwrap();
        }
        assert_eq!(client.get(b"k3").await.unwrap().as_deref(), Some(&b"v"[..]));
        let (code, metrics) = curl(&url("/metrics"), &certs, Some(&root)).await;
        assert_eq!(code, 200, "{metrics}");
        let sample = |name: &str| -> f64 {
            metrics
                .lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .parse()
                .unwrap()
        };
        let labels = r#"node="1",region="eu-hamburg""#;
        assert!(
            sample(&format!(
                r#"hanse_kv_requests_total{{op="put",outcome="ok",{labels}}}"#
            )) >= 20.0
        );
        assert!(
            sample(&format!(
                r#"hanse_kv_requests_total{{op="get",outcome="ok",{labels}}}"#
            )) >= 1.0
        );
        assert!(sample("hanse_raft_proposals_total{outcome=\"applied\"") >= 20.0);
        assert!(sample("hanse_storage_fsync_duration_seconds_count") >= 1.0);
        assert!(sample("hanse_raft_append_duration_seconds_count") >= 1.0);
        assert!(sample("hanse_raft_entries_applied_total") >= 20.0);
        assert_eq!(
            sample(&format!(r#"hanse_node_replicas{{role="leader",{labels}}}"#)),
            2.0
        );
        // Every family is named in the project's scheme and typed.
        for line in metrics.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(name.starts_with("hanse_"), "{line}");
        }

        // A user without a role may not; once granted `monitor`, they may.
        let alice = Identity::user("alice").unwrap();
        let (code, body) = curl(&url("/metrics"), &certs, Some(&alice)).await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("monitor"), "{body}");
        let mut admin = AdminClient::new(hanse_client::connect(&endpoint, Some(root_tls)).unwrap());
        for change in [
            Change::AddUser("mo".into()),
            Change::GrantRole(proto::UserRole {
                user: "mo".into(),
                role: "monitor".into(),
            }),
        ] {
            let request = proto::AuthRequest {
                change: Some(change),
            };
            admin.auth(request).await.unwrap();
        }
        let mo = Identity::user("mo").unwrap();
        let granted =
            curl_until_ok(&url("/metrics"), &certs, Some(&mo), Duration::from_secs(10)).await;
        assert_eq!(granted.0, 200, "{}", granted.1);
        // The monitor role grants nothing else: not the Admin service, not a key.
        let as_mo = hanse_client::connect(&endpoint, Some(common::tls(&certs, mo))).unwrap();
        let refused = AdminClient::new(as_mo)
            .status(proto::StatusRequest {})
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        node.stop().await;
    });
}

#[test]
fn a_node_without_a_leader_is_live_but_not_ready() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, certs) = with_http(dir.path(), [127, 0, 0, 71], &[]);
        // Three founding members of which only this one ever runs: no quorum, no leader.
        let others = [(2, [127, 0, 0, 72]), (3, [127, 0, 0, 73])].map(|(id, ip)| PeerConfig {
            id,
            addr: free_addr(ip).to_string(),
            region: "eu-hamburg".into(),
        });
        let http = config.http_addr.unwrap();
        config.initial_peers.extend(others);
        let node = hanse_node::server::start(config).await.unwrap();
        let (code, _) = curl(&format!("https://{http}/livez"), &certs, None).await;
        assert_eq!(code, 200);
        let (code, body) = curl(&format!("https://{http}/readyz"), &certs, None).await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("[-]shard_leaders failed: no known leader for shards 0, 1"),
            "{body}"
        );
        assert!(body.contains("[+]storage ok"), "{body}");
        node.stop().await;
    });
}

#[test]
fn an_http_port_in_use_is_refused_before_the_data_directory_is_touched() {
    hanse_node::server::system(None).block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, _certs) = common::single_node(dir.path(), [127, 0, 0, 74], &[]);
        let taken = TcpListener::bind(SocketAddr::from(([127, 0, 0, 74], 0))).unwrap();
        let config = NodeConfig {
            http_addr: Some(taken.local_addr().unwrap()),
            ..config
        };
        let data_dir = config.data_dir.clone();
        let refused = match hanse_node::server::start(config).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a node started on an HTTP port in use"),
        };
        assert!(refused.contains("`http_addr`"), "{refused}");
        assert!(!data_dir.exists());
    });
}
