//! Real TLS handshakes over loopback between [`incoming`] and [`Connector`]: who gets
//! through, and what the serving end learns of them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hanse_security::issue::{self, Validity};
use hanse_security::{Caller, CertsDir, ClientTls, Connector, Identity, ServerTls, incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

const NODE: u64 = 1;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Cluster {
    _dir: tempfile::TempDir,
    certs: CertsDir,
}

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertsDir::new(dir.path().join("certs"));
        issue::create_ca(&certs, None).unwrap();
        let validity = issue::leaf_validity(None);
        let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
        issue::create_leaf(&certs, &Identity::Node(NODE), &hosts, validity, false).unwrap();
        Cluster { _dir: dir, certs }
    }

    fn client(&self, identity: Identity, validity: Validity) -> Arc<ClientTls> {
        issue::create_leaf(&self.certs, &identity, &[], validity, true).unwrap();
        ClientTls::load(self.certs.files(&identity), identity).unwrap()
    }
}

/// Serves one connection with `server`, connects to it with `connector`, and says who
/// the server saw (an error when the handshake failed on either side).
async fn handshake(server: Arc<ServerTls>, connector: Connector) -> Result<Caller, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut accepted = incoming(listener, Some(server), hanse_security::Protocol::Grpc);
    let serving = tokio::spawn(async move {
        let mut connection = accepted.next().await.unwrap().unwrap();
        let caller = connection.connect_info().caller;
        let mut byte = [0u8; 1];
        connection.read_exact(&mut byte).await.unwrap();
        connection.write_all(&byte).await.unwrap();
        caller
    });
    let uri: tonic::transport::Uri = Connector::uri(&addr.to_string()).parse().unwrap();
    let called = async {
        let mut service = connector;
        let io = tower_service::Service::call(&mut service, uri).await;
        let mut io = io.map_err(|e| e.to_string())?.into_inner();
        io.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let called = tokio::time::timeout(Duration::from_secs(10), called)
        .await
        .map_err(|_| "timed out".to_string())?;
    called?;
    // A plaintext caller may read back the bytes of the TLS alert it got: what counts is
    // whether the server took the connection.
    match tokio::time::timeout(Duration::from_secs(2), serving).await {
        Ok(caller) => Ok(caller.unwrap()),
        Err(_) => Err("the server took no connection".into()),
    }
}

fn server(cluster: &Cluster) -> Arc<ServerTls> {
    ServerTls::load(cluster.certs.files(&Identity::Node(NODE)), NODE).unwrap()
}

#[tokio::test]
async fn a_node_and_a_user_are_known_by_their_certificates() {
    let cluster = Cluster::new();
    let node = ClientTls::load(
        cluster.certs.files(&Identity::Node(NODE)),
        Identity::Node(NODE),
    )
    .unwrap();
    let caller = handshake(
        server(&cluster),
        Connector::new(Some(node), CONNECT_TIMEOUT),
    )
    .await;
    assert_eq!(caller, Ok(Caller::Verified(Identity::Node(NODE))));
    let alice = Identity::user("alice").unwrap();
    let client = cluster.client(alice.clone(), issue::leaf_validity(None));
    let caller = handshake(
        server(&cluster),
        Connector::new(Some(client), CONNECT_TIMEOUT),
    )
    .await;
    assert_eq!(caller, Ok(Caller::Verified(alice)));
}

#[tokio::test]
async fn a_caller_without_a_certificate_gets_through_as_anonymous() {
    // It may log in and send tokens; the node's request layer decides what else.
    let cluster = Cluster::new();
    let alice = Identity::user("alice").unwrap();
    let ca_only = ClientTls::without_certificate(cluster.certs.files(&alice)).unwrap();
    assert_eq!(ca_only.identity(), None);
    let caller = handshake(
        server(&cluster),
        Connector::new(Some(ca_only), CONNECT_TIMEOUT),
    )
    .await;
    assert_eq!(caller, Ok(Caller::Anonymous));
    // One that trusts another CA does not trust the node.
    let stranger = Cluster::new();
    let trusting_another = ClientTls::without_certificate(stranger.certs.files(&alice)).unwrap();
    assert!(
        handshake(
            server(&cluster),
            Connector::new(Some(trusting_another), CONNECT_TIMEOUT)
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn callers_without_a_good_certificate_are_refused() {
    let cluster = Cluster::new();
    // Plaintext to a TLS port.
    assert!(
        handshake(server(&cluster), Connector::new(None, CONNECT_TIMEOUT))
            .await
            .is_err()
    );

    // A certificate of another CA.
    let stranger = Cluster::new();
    let bob = Identity::user("bob").unwrap();
    let foreign = stranger.client(bob.clone(), issue::leaf_validity(None));
    assert!(
        handshake(
            server(&cluster),
            Connector::new(Some(foreign), CONNECT_TIMEOUT)
        )
        .await
        .is_err()
    );

    // An expired certificate of the right CA.
    let now = SystemTime::now();
    let expired = Validity {
        not_before: now - Duration::from_secs(3 * 86_400),
        not_after: now - Duration::from_secs(86_400),
    };
    let late = cluster.client(bob, expired);
    assert!(
        handshake(
            server(&cluster),
            Connector::new(Some(late), CONNECT_TIMEOUT)
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn a_node_must_hold_a_certificate_for_the_address_it_is_reached_at() {
    let cluster = Cluster::new();
    // Node 2's certificate names only 127.0.0.2: reached at 127.0.0.1, it is refused
    // by the caller, as an impostor would be.
    issue::create_leaf(
        &cluster.certs,
        &Identity::Node(2),
        &["127.0.0.2".to_string()],
        issue::leaf_validity(None),
        false,
    )
    .unwrap();
    let impostor = ServerTls::load(cluster.certs.files(&Identity::Node(2)), 2).unwrap();
    let client = cluster.client(Identity::user("root").unwrap(), issue::leaf_validity(None));
    let refused = handshake(impostor, Connector::new(Some(client), CONNECT_TIMEOUT))
        .await
        .unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
}

#[tokio::test]
async fn a_certificate_must_name_the_node_or_user_it_is_loaded_for() {
    let cluster = Cluster::new();
    let wrong = ServerTls::load(cluster.certs.files(&Identity::Node(NODE)), 7).unwrap_err();
    assert!(
        wrong.to_string().contains("names node 1, not node 7"),
        "{wrong}"
    );
    let missing = ServerTls::load(cluster.certs.files(&Identity::Node(9)), 9).unwrap_err();
    assert!(
        missing.to_string().contains("node-9.crt does not exist"),
        "{missing}"
    );
}

#[tokio::test]
async fn rotated_certificates_serve_new_connections_after_a_reload() {
    let cluster = Cluster::new();
    let server = server(&cluster);
    let root = Identity::user("root").unwrap();
    let client = cluster.client(root.clone(), issue::leaf_validity(None));
    // Both ends' files replaced by new ones of a new CA: after a reload the two still
    // agree, and the old settings no longer would.
    let (before, expired_before) = (
        server.config(hanse_security::Protocol::Grpc),
        server.expires(),
    );
    let (ca, files) = (cluster.certs.ca_key(), cluster.certs.ca_cert());
    std::fs::remove_file(&ca).unwrap();
    std::fs::remove_file(&files).unwrap();
    issue::create_ca(&cluster.certs, None).unwrap();
    let hosts = ["127.0.0.1".to_string()];
    let validity = issue::leaf_validity(None);
    let shorter = issue::leaf_validity(Some(30));
    issue::create_leaf(&cluster.certs, &Identity::Node(NODE), &hosts, shorter, true).unwrap();
    issue::create_leaf(&cluster.certs, &root, &[], validity, true).unwrap();
    server.reload().unwrap();
    client.reload().unwrap();
    assert!(!Arc::ptr_eq(
        &before,
        &server.config(hanse_security::Protocol::Grpc)
    ));
    assert!(
        server.expires() < expired_before,
        "the new certificate is served"
    );
    let caller = handshake(server, Connector::new(Some(client), CONNECT_TIMEOUT)).await;
    assert_eq!(caller, Ok(Caller::Verified(root)));
}
