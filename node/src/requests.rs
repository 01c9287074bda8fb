//! The layers requests pass before their handlers: what is true of a request whatever it
//! asks is settled here once, not in each of the services' methods.
//!
//! - [`Guard`], around every service: a caller without a certificate is known by the
//!   token it sends (or may only log in); the calls nodes make of each other (the whole
//!   `hanse.v1.Raft` service, forwarded writes and read indexes, reports, replica set-up)
//!   are refused to anyone but a node, by the identity its TLS certificate proved; the
//!   Admin service wants the role `admin`, and changing users and roles `root`. (What a
//!   Kv request may touch depends on its keys: its handler checks that.)
//! - [`KvRequests`], around the Kv service: where its client is.

use crate::knobs::REGION_NAME_BYTES_MAX;
use std::sync::Arc;
use std::time::Duration;

use hanse_proto::v1::{admin_server, kv_server, raft_server};
use hanse_security::{Caller, Identity, Peer};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{Context, Future, Pin, Poll, Service};
use tonic::server::NamedService;

use crate::grants::GrantsCache;
use crate::state::NodeState;

/// The region a request's client named in its metadata ("" for none), as the layer
/// found it; handlers read it from the request's extensions with [`origin`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin(pub String);

impl Origin {
    fn of(headers: &HeaderMap) -> Origin {
        let named = headers
            .get(hanse_proto::REGION_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|name| name.len() <= REGION_NAME_BYTES_MAX);
        Origin(named.unwrap_or_default().to_string())
    }
}

/// The origin region the layer recorded on `request`.
pub(crate) fn origin<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Origin>()
        .map(|origin| origin.0.clone())
        .unwrap_or_default()
}

/// Wraps the Kv service: records each request's [`Origin`] and, where the node emulates
/// a wide-area network (its latency matrix, as in the demo), first waits out the round
/// trip from that region to this node's.
#[derive(Clone)]
pub(crate) struct KvRequests<S> {
    inner: S,
    state: Arc<NodeState>,
}

impl<S> KvRequests<S> {
    pub(crate) fn new(inner: S, state: Arc<NodeState>) -> Self {
        KvRequests { inner, state }
    }

    fn round_trip(&self, origin: &Origin) -> Duration {
        match origin.0.is_empty() {
            true => Duration::ZERO,
            false => self.state.latency.round_trip(&origin.0, &self.state.region),
        }
    }
}

impl<S, B> Service<Request<B>> for KvRequests<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let origin = Origin::of(request.headers());
        let trip = self.round_trip(&origin);
        request.extensions_mut().insert(origin);
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if !trip.is_zero() {
                tokio::time::sleep(trip).await;
            }
            ready.call(request).await
        })
    }
}

impl<S: NamedService> NamedService for KvRequests<S> {
    const NAME: &'static str = S::NAME;
}

/// The calls only nodes make, as (service, method); an empty method: all of them.
const NODE_ONLY: [(&str, &str); 7] = [
    (raft_server::SERVICE_NAME, ""),
    (kv_server::SERVICE_NAME, "ProposeBatch"),
    (kv_server::SERVICE_NAME, "ReadIndex"),
    (admin_server::SERVICE_NAME, "Report"),
    (admin_server::SERVICE_NAME, "OpenReplica"),
    (admin_server::SERVICE_NAME, "DestroyReplica"),
    (admin_server::SERVICE_NAME, "WaitApplied"),
];

/// Whether the gRPC method at `path` (`/package.Service/Method`) is one only nodes call.
fn node_only(path: &str) -> bool {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return false;
    };
    NODE_ONLY
        .iter()
        .any(|(s, m)| *s == service && (m.is_empty() || *m == method))
}

/// Wraps every service of a node: refuses calls between nodes to callers that are not
/// nodes, and Admin calls to users without the role they need, with
/// `PERMISSION_DENIED` and before anything is decoded.
#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    grants: Arc<GrantsCache>,
}

/// Why `caller` may not call the gRPC method at `path`, if it may not.
fn refusal(path: &str, caller: &Caller, grants: &GrantsCache) -> Option<String> {
    if node_only(path) {
        return (!caller.is_node())
            .then(|| format!("{path} is a call between nodes; {caller} may not make it"));
    }
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service != admin_server::SERVICE_NAME {
        return None;
    }
    let grants = grants.get();
    let checked = match method {
        "Auth" => grants.check_root(caller),
        // Anyone may log in: a password decides.
        "Login" => Ok(()),
        _ => grants.check_admin(caller, &format!("call Admin.{method}")),
    };
    checked.err().map(|denied| denied.to_string())
}

impl<S, B, R> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let caller = Caller::from_extensions(request.extensions());
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        if caller != Caller::Anonymous {
            // Known by its certificate (or nobody is): decided here, at once.
            if let Some(refused) = refusal(request.uri().path(), &caller, &self.grants) {
                let refused = tonic::Status::permission_denied(refused);
                return Box::pin(std::future::ready(Ok(refused.into_http())));
            }
            let answer = ready.call(request);
            return Box::pin(async move {
                let mut response = answer.await?;
                undecodable_is_invalid(&mut response);
                Ok(response)
            });
        }
        // A caller without a certificate: known by its token, which may take a moment to
        // look up, or only logging in.
        let token = bearer_token(request.headers());
        let grants = self.grants.clone();
        Box::pin(async move {
            let caller = match token {
                Some(token) => match grants.token_user(&token).await {
                    Some(user) => Caller::Verified(Identity::User(user)),
                    None => return Ok(unauthenticated(UNKNOWN_TOKEN)),
                },
                None if request.uri().path() == LOGIN_PATH => Caller::Anonymous,
                None => return Ok(unauthenticated(NO_CREDENTIALS)),
            };
            if let Some(peer) = request.extensions_mut().get_mut::<Peer>() {
                peer.caller = caller.clone();
            }
            if let Some(refused) = refusal(request.uri().path(), &caller, &grants) {
                return Ok(tonic::Status::permission_denied(refused).into_http());
            }
            let mut response = ready.call(request).await?;
            undecodable_is_invalid(&mut response);
            Ok(response)
        })
    }
}

/// The one call a caller with neither certificate nor token may make.
const LOGIN_PATH: &str = "/hanse.v1.Admin/Login";

const NO_CREDENTIALS: &str = "no client certificate and no token: connect with a certificate \
     of the cluster's CA (`hanse cert create-client`), or log in (`hanse user login`) and send \
     the token";

const UNKNOWN_TOKEN: &str =
    "the token is unknown, expired or revoked: log in again (`hanse user login`)";

fn unauthenticated<R: Default>(why: &str) -> Response<R> {
    tonic::Status::unauthenticated(why).into_http()
}

/// The token a request carries in its `authorization` header, if any.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get(hanse_proto::AUTHORIZATION_HEADER)?
        .to_str()
        .ok()?;
    value.strip_prefix(hanse_proto::BEARER).map(str::to_string)
}

/// tonic answers a request body that is no protobuf of the method's type with INTERNAL;
/// it is the caller's mistake, INVALID_ARGUMENT, and says so.
fn undecodable_is_invalid<R>(response: &mut Response<R>) {
    let headers = response.headers_mut();
    let internal = headers
        .get(tonic::Status::GRPC_STATUS)
        .is_some_and(|code| code.as_bytes() == b"13");
    let undecodable = headers
        .get(tonic::Status::GRPC_MESSAGE)
        .is_some_and(|message| {
            let message = message.as_bytes();
            message.starts_with(b"failed%20to%20decode") || message.starts_with(b"failed to decode")
        });
    if internal && undecodable {
        let invalid = tonic::codegen::http::HeaderValue::from_static("3");
        headers.insert(tonic::Status::GRPC_STATUS, invalid);
    }
}

/// [`Guard`] as a layer for tonic's server builder.
#[derive(Clone)]
pub(crate) struct GuardLayer {
    grants: Arc<GrantsCache>,
}

impl GuardLayer {
    pub(crate) fn new(grants: Arc<GrantsCache>) -> Self {
        GuardLayer { grants }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            grants: self.grants.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_between_nodes_are_named_by_service_and_method() {
        assert!(node_only("/hanse.v1.Raft/Send"));
        assert!(node_only("/hanse.v1.Kv/ProposeBatch"));
        assert!(node_only("/hanse.v1.Admin/Report"));
        assert!(node_only("/hanse.v1.Admin/DestroyReplica"));
        assert!(!node_only("/hanse.v1.Kv/Put"));
        assert!(!node_only("/hanse.v1.Admin/Shards"));
        assert!(!node_only("/hanse.v1.Kv/ProposeBatchX"));
        assert!(!node_only("garbage"));
    }

    #[test]
    fn the_origin_is_the_named_region_unless_its_name_is_too_long() {
        let mut headers = HeaderMap::new();
        assert_eq!(Origin::of(&headers).0, "");
        headers.insert(hanse_proto::REGION_HEADER, "china".parse().unwrap());
        assert_eq!(Origin::of(&headers).0, "china");
        let long = "x".repeat(REGION_NAME_BYTES_MAX + 1);
        headers.insert(hanse_proto::REGION_HEADER, long.parse().unwrap());
        assert_eq!(Origin::of(&headers).0, "");
    }
}
