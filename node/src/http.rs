//! The node's HTTP port (`http_addr`), served with the same TLS as its gRPC port (HTTP/1.1
//! or HTTP/2):
//!
//! - `/livez`: the process serves. It never fails for a problem elsewhere in the
//!   cluster (etcd's semantics), so a liveness probe restarts only a stuck process.
//! - `/readyz`: the node should get traffic: its storage takes writes, every replica it
//!   stores is open, each shard it hosts has a leader it knows of, and it is not
//!   stopping. 503 when a check fails; `?verbose` lists every check and its result.
//! - `/metrics`: Prometheus' text format ([`crate::metrics`]), for a node, a user with
//!   the role `monitor` (or `admin`, `root`), or anyone where the node runs insecure. A
//!   caller without a certificate sends a token (`Authorization: Bearer`).
//! - `/`: the web console ([`crate::console`]); its data (`/api/...`) is guarded as
//!   `/metrics` is.
//!
//! The probes are open to anyone: they say only whether the node is well, as etcd's
//! `/health` does, and a Kubernetes probe sends no certificate.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use hanse_security::{Accepted, Caller, Identity, Peer, Protocol};
use hanse_storage::Store;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::console;
use crate::metrics;
use crate::state::NodeState;

/// The connections of the HTTP port, after their TLS handshake.
struct HttpListener {
    accepted: ReceiverStream<std::io::Result<Accepted>>,
    local: SocketAddr,
}

impl Listener for HttpListener {
    type Io = Accepted;
    type Addr = Peer;

    async fn accept(&mut self) -> (Accepted, Peer) {
        loop {
            match self.accepted.next().await {
                Some(Ok(accepted)) => {
                    let peer = tonic::transport::server::Connected::connect_info(&accepted);
                    return (accepted, peer);
                }
                Some(Err(e)) => tracing::warn!("the HTTP port could not accept: {e}"),
                // The accept loop ended: nothing more will come.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            caller: Caller::Unauthenticated,
        })
    }
}

/// Who is on the other end of an HTTP connection, as its TLS handshake proved.
#[derive(Clone)]
struct ConnectionCaller(Caller);

impl Connected<IncomingStream<'_, HttpListener>> for ConnectionCaller {
    fn connect_info(stream: IncomingStream<'_, HttpListener>) -> Self {
        ConnectionCaller(stream.remote_addr().caller.clone())
    }
}

/// Serves the HTTP port on `listener` until `stop` resolves.
pub(crate) fn serve(
    listener: TcpListener,
    state: Arc<NodeState>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let local = listener.local_addr()?;
    let accepted = hanse_security::incoming(listener, state.tls.clone(), Protocol::Http);
    let listener = HttpListener { accepted, local };
    metrics::register_all();
    let watched = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/api/cluster", get(console::cluster))
        .route("/api/heatmap", get(console::heatmap))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_monitor,
        ));
    let router = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/", get(console::index))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .merge(watched)
        .with_state(state)
        .into_make_service_with_connect_info::<ConnectionCaller>();
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!("the HTTP port stopped: {e}");
        }
    }))
}

async fn livez() -> &'static str {
    "ok\n"
}

/// One readiness check: its name and why it failed, if it did.
type Check = (&'static str, Result<(), String>);

fn readiness(state: &NodeState) -> Vec<Check> {
    let storage = match state.engine.poisoned() {
        Some(why) => Err(format!("the storage refuses writes: {why}")),
        None => Ok(()),
    };
    let replicas = match state.engine.load_descriptors() {
        Err(e) => Err(format!("the stored shards could not be read: {e}")),
        Ok(stored) => {
            let closed: Vec<String> = stored
                .iter()
                .filter(|d| state.routes.get(d.id).is_none())
                .map(|d| d.id.to_string())
                .collect();
            match closed.is_empty() {
                true => Ok(()),
                false => Err(format!("shards not open: {}", closed.join(", "))),
            }
        }
    };
    let mut leaderless: Vec<_> = state
        .routes
        .all()
        .iter()
        .filter(|replica| replica.leader().is_none())
        .map(|replica| replica.shard)
        .collect();
    leaderless.sort_unstable();
    let leaderless: Vec<String> = leaderless.iter().map(u64::to_string).collect();
    let leaders = match leaderless.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "no known leader for shards {}",
            leaderless.join(", ")
        )),
    };
    let draining = match state.draining.load(Ordering::SeqCst) {
        true => Err("the node is stopping".to_string()),
        false => Ok(()),
    };
    vec![
        ("storage", storage),
        ("replicas_open", replicas),
        ("shard_leaders", leaders),
        ("not_draining", draining),
    ]
}

#[derive(serde::Deserialize)]
struct ReadyQuery {
    verbose: Option<String>,
}

async fn readyz(State(state): State<Arc<NodeState>>, Query(query): Query<ReadyQuery>) -> Response {
    let checks = readiness(&state);
    let ready = checks.iter().all(|(_, result)| result.is_ok());
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut body = String::new();
    if query.verbose.is_some() || !ready {
        for (name, result) in &checks {
            let _ = match result {
                Ok(()) => writeln!(body, "[+]{name} ok"),
                Err(why) => writeln!(body, "[-]{name} failed: {why}"),
            };
        }
    }
    body.push_str(match ready {
        true => "ok\n",
        false => "not ready\n",
    });
    (status, body).into_response()
}

/// The caller of an HTTP request: by its certificate, else by the token it sends.
async fn caller_of(state: &NodeState, caller: Caller, headers: &HeaderMap) -> Option<Caller> {
    if caller != Caller::Anonymous {
        return Some(caller);
    }
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(hanse_proto::BEARER)?;
    let user = state.grants.token_user(token).await?;
    Some(Caller::Verified(Identity::User(user)))
}

/// Lets through only callers who may watch the cluster (see the module's doc).
async fn require_monitor(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(ConnectionCaller(caller)): ConnectInfo<ConnectionCaller>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(caller) = caller_of(&state, caller, &headers).await else {
        let why = "no client certificate and no valid token: connect with a certificate \
                   of the cluster's CA, or send a token of a user with the role `monitor`\n";
        return (StatusCode::UNAUTHORIZED, why).into_response();
    };
    let what = format!("read {}", request.uri().path());
    if let Err(denied) = state.grants.get().check_monitor(&caller, &what) {
        return (StatusCode::FORBIDDEN, format!("{denied}\n")).into_response();
    }
    next.run(request).await
}

async fn metrics_text(State(state): State<Arc<NodeState>>) -> Response {
    state.publish_replica_counts();
    let text = metrics::exposition(state.node_id, &state.region);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
