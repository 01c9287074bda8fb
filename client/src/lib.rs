//! hanse-client: the gRPC SDK for Hanse. It depends on the protobuf contract and tonic
//! only: no RocksDB, no Torch.
//!
//! [`Client`] keeps a routing cache (shard ranges, epochs, leaders), sends each request to
//! the node it believes leads the key's shard with the epoch it routed by, and follows the
//! typed answers: `NotLeader` names the leader and the shard, `EpochMismatch` carries the
//! current descriptors (one retry suffices after a split), `ServerBusy` says how long to
//! wait, an unreachable node is skipped. Retries back off with jitter, and every retry
//! loop is bounded by [`ClientOptions::request_timeout`]. Scans cross shard boundaries.
//!
//! Reads are retried after any failure. A write is retried only while no attempt can
//! have reached a node's log (typed refusals, refused connections): once one may have,
//! sending it again could apply it twice (a put undoing a later put, a compare-and-swap
//! answering `false` after it swapped), so the call ends with
//! [`ClientError::OutcomeUnknown`] instead and the caller decides.
//!
//! Nodes serve TLS and want a client certificate of the cluster's CA
//! ([`ClientOptions::tls`], from `hanse cert create-client`), or a token from a login
//! ([`ClientOptions::token`], over TLS with the CA only: [`ClientTls::without_certificate`]);
//! plaintext reaches only nodes that run `insecure`.

pub mod routes;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use hanse_security::{CertsDir, ClientTls, Connector, Identity, never_sent};

pub use hanse_proto::v1 as proto;
use hanse_proto::v1::kv_client::KvClient;
use hanse_proto::v1::request_error::Kind;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
/// The connection [`connect`] opens, for the generated clients of [`proto`].
pub use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::routes::RouteCache;

/// Which shard a request is for.
#[derive(Clone, Copy)]
enum Locate<'a> {
    /// The shard holding this key.
    Key(&'a [u8]),
    /// The shard holding the keys just before this end (a reverse scan).
    Before(&'a [u8]),
}

/// A scan visits at most this many shards.
const SCAN_SHARDS_MAX: usize = 100_000;
/// Keys and values in one ingest request: a log entry that reaches the followers in one
/// message, well within the message size the nodes accept.
const INGEST_REQUEST_BYTES: usize = 4 << 20;
/// The longest wait between two attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// The longest wait between two attempts while a shard elects a leader: an election
/// ends within one election timeout, asking a follower who leads is cheap, and every
/// millisecond waited past the election is a millisecond of failover.
const ELECTION_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// `base` scaled by a random factor in [0.5, 1.5), so clients that failed together do
/// not retry together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.5..1.5))
}

/// How a client connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one call may take, retries included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// The region this client runs in (for example `eu-hamburg`), sent with every request
    /// so that shard leaders can tell where their load comes from.
    pub region: Option<String>,
    /// The client's certificate and the cluster CA (see [`ClientTls::load`]); `None`
    /// talks plaintext, which only nodes that run `insecure` answer.
    pub tls: Option<Arc<ClientTls>>,
    /// A token from a login (`hanse user login`, `Admin.Login`), sent with every request
    /// by a client that has no certificate of its own.
    pub token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            region: None,
            tls: None,
            token: None,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("bad endpoint {endpoint}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The node refused the caller (its certificate's user lacks a grant, say): nothing
    /// was done, and asking again will not help.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The node does not know who is calling: no certificate, and a token that is
    /// missing, expired or revoked. Log in again.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
    #[error("no node answered within {timeout:?}; last problem: {last}")]
    Timeout { timeout: Duration, last: String },
    /// A write may or may not have been applied (its node failed or fell silent after it
    /// was sent); it was not sent again.
    #[error("the write may or may not have been applied: {detail}")]
    OutcomeUnknown { detail: String },
}

/// Whether a request may be sent again after an attempt whose fate is unknown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Reads: as often as needed.
    Always,
    /// Writes: only after attempts that certainly did not reach a log.
    WhileUnsent,
}

/// A status's message followed by its causes (a transport error's say what happened).
fn with_causes(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        let part = error.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cause = error.source();
    }
    text
}

/// One write of a [`Client::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchWrite {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl BatchWrite {
    pub fn key(&self) -> &[u8] {
        match self {
            BatchWrite::Put { key, .. } | BatchWrite::Delete { key } => key,
        }
    }
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    pub previous: Option<Vec<u8>>,
}

/// A read a follower may have served (see [`Client::get_stale`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    pub value: Option<Vec<u8>>,
    /// The node whose replica served it.
    pub served_by: u64,
    /// Every write acknowledged this long or longer before the read was served is in it
    /// (zero: the read was linearizable).
    pub staleness_bound: Duration,
}

/// The endpoint of the node at `endpoint` (`HOST:PORT`).
fn endpoint_of(endpoint: &str) -> Result<Endpoint, ClientError> {
    Endpoint::from_shared(Connector::uri(endpoint)).map_err(|e| ClientError::BadEndpoint {
        endpoint: endpoint.to_string(),
        detail: e.to_string(),
    })
}

/// A channel to the node at `endpoint` (`HOST:PORT`), with TLS when `tls` is given,
/// connected on first use: for the other services of a node (`Admin`), which the
/// [`Client`] does not wrap.
pub fn connect(endpoint: &str, tls: Option<Arc<ClientTls>>) -> Result<Channel, ClientError> {
    let timeout = ClientOptions::default().connect_timeout;
    Ok(endpoint_of(endpoint)?.connect_with_connector_lazy(Connector::new(tls, timeout)))
}

/// The TLS settings of `user` from the certificates directory `dir` (the cluster's
/// `ca.crt` and the user's `client-USER.crt` and `.key`, as `hanse cert` makes them).
pub fn user_tls(
    dir: &std::path::Path,
    user: &str,
) -> Result<Arc<ClientTls>, hanse_security::SecurityError> {
    let identity = Identity::user(user)?;
    ClientTls::load(CertsDir::new(dir).files(&identity), identity)
}

/// Sends a token from a login with every request (nothing when there is none): for the
/// services the [`Client`] does not wrap, as a tonic interceptor.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Bearer, ClientError> {
        let value = token
            .map(|token| format!("{}{token}", hanse_proto::BEARER).parse())
            .transpose()
            .map_err(|_| {
                ClientError::InvalidArgument(
                    "a token is visible ASCII, as `hanse user login` prints it".into(),
                )
            })?;
        Ok(Bearer(value))
    }

    fn add<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert(hanse_proto::AUTHORIZATION_HEADER, value.clone());
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.add(&mut request);
        Ok(request)
    }
}

/// The Admin service of the node at `endpoint` (connected on first use), sending
/// `token` with every call where one is given.
pub fn admin(
    endpoint: &str,
    tls: Option<Arc<ClientTls>>,
    token: Option<&str>,
) -> Result<proto::admin_client::AdminClient<InterceptedService<Channel, Bearer>>, ClientError> {
    let channel = connect(endpoint, tls)?;
    Ok(proto::admin_client::AdminClient::with_interceptor(
        channel,
        Bearer::new(token)?,
    ))
}

/// A connection to a Hanse cluster through any of its nodes.
pub struct Client {
    endpoints: Mutex<Vec<String>>,
    routes: Mutex<RouteCache>,
    /// The node that last served a request whose shard the cache did not know.
    fallback: Mutex<Option<String>>,
    /// One HTTP/2 channel per node, reused by every call (tonic multiplexes on it).
    channels: Mutex<HashMap<String, KvClient<Channel>>>,
    /// `options.region` as request metadata.
    region_header: Option<MetadataValue<Ascii>>,
    /// `options.token` as request metadata.
    bearer: Bearer,
    options: ClientOptions,
}

/// A response that may carry a typed refusal.
trait Refusable {
    fn refusal(&self) -> Option<&proto::RequestError>;
}

macro_rules! refusable {
    ($($t:ty),*) => {$(
        impl Refusable for $t {
            fn refusal(&self) -> Option<&proto::RequestError> {
                self.error.as_ref()
            }
        }
    )*};
}
refusable!(
    proto::GetResponse,
    proto::PutResponse,
    proto::DeleteResponse,
    proto::ScanResponse,
    proto::BatchResponse,
    proto::CompareAndSwapResponse,
    proto::IngestResponse
);

type Call<R> = Pin<Box<dyn Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send>>;

impl Client {
    /// A client for the cluster reachable through `endpoints` (`HOST:PORT`, any nodes).
    /// Connections are made on first use.
    pub fn new(endpoints: &[String], options: ClientOptions) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for endpoint in endpoints {
            endpoint_of(endpoint)?;
        }
        let region_header = match &options.region {
            Some(region) => Some(MetadataValue::try_from(region.as_str()).map_err(|_| {
                ClientError::InvalidArgument(format!(
                    "region {region:?}: only visible ASCII characters may name a region"
                ))
            })?),
            None => None,
        };
        Ok(Client {
            endpoints: Mutex::new(endpoints.to_vec()),
            routes: Mutex::new(RouteCache::default()),
            fallback: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            region_header,
            bearer: Bearer::new(options.token.as_deref())?,
            options,
        })
    }

    fn channel(&self, endpoint: &str) -> Result<KvClient<Channel>, ClientError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(client) = channels.get(endpoint) {
            return Ok(client.clone());
        }
        let connector = Connector::new(self.options.tls.clone(), self.options.connect_timeout);
        let channel = endpoint_of(endpoint)?
            .timeout(self.options.request_timeout)
            .connect_with_connector_lazy(connector);
        let client = KvClient::new(channel)
            .max_decoding_message_size(32 * 1024 * 1024)
            .max_encoding_message_size(32 * 1024 * 1024);
        channels.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    fn route_of(&self, locate: Locate<'_>) -> Option<routes::CachedShard> {
        let routes = self.routes.lock().expect("routes lock");
        match locate {
            Locate::Key(key) => routes.lookup(key).cloned(),
            Locate::Before(end) => routes.lookup_before(end).cloned(),
        }
    }

    fn forget(&self, locate: Locate<'_>) {
        let mut routes = self.routes.lock().expect("routes lock");
        let key = match locate {
            Locate::Key(key) => Some(key.to_vec()),
            Locate::Before(end) => routes
                .lookup_before(end)
                .map(|s| s.descriptor.start.clone()),
        };
        if let Some(key) = key {
            routes.forget(&key);
        }
    }

    /// The node to try next: the cached leader, else the last node that served, else the
    /// next endpoint in turn.
    fn pick(&self, cached: Option<&routes::CachedShard>, turn: &mut usize) -> String {
        if let Some(leader) = cached.and_then(|c| c.leader.clone()) {
            return leader;
        }
        if let Some(fallback) = self.fallback.lock().expect("fallback lock").clone() {
            return fallback;
        }
        let endpoints = self.endpoints.lock().expect("endpoints lock");
        *turn += 1;
        endpoints[*turn % endpoints.len()].clone()
    }

    /// `message` as a request, with this client's region.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(region) = &self.region_header {
            request
                .metadata_mut()
                .insert(hanse_proto::REGION_HEADER, region.clone());
        }
        self.bearer.add(&mut request);
        request
    }

    /// Sends the request `make` builds (with the route it was sent by) until a node serves
    /// it, following the typed answers.
    async fn call<Req, Resp>(
        &self,
        resend: Resend,
        locate: Locate<'_>,
        make: impl Fn(Option<proto::RouteContext>) -> Req,
        send: impl Fn(KvClient<Channel>, tonic::Request<Req>) -> Call<Resp>,
    ) -> Result<Resp, ClientError>
    where
        Resp: Refusable,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        let mut turn = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last = String::from("no attempt");
        let mut wait = Duration::ZERO;
        loop {
            if !wait.is_zero() {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + wait)).await;
                wait = Duration::ZERO;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let cached = self.route_of(locate);
            let endpoint = self.pick(cached.as_ref(), &mut turn);
            let route = cached.as_ref().map(|c| proto::RouteContext {
                shard_id: c.descriptor.id,
                epoch: c.descriptor.epoch,
            });
            let request = self.request(make(route));
            let outcome =
                tokio::time::timeout_at(deadline, send(self.channel(&endpoint)?, request)).await;
            let response = match outcome {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) if status.code() == tonic::Code::PermissionDenied => {
                    return Err(ClientError::PermissionDenied(status.message().to_string()));
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
                    return Err(ClientError::Unauthenticated(status.message().to_string()));
                }
                Ok(Err(status)) => {
                    last = format!("{endpoint}: {}", with_causes(&status));
                    self.routes
                        .lock()
                        .expect("routes lock")
                        .forget_leader_at(&endpoint);
                    self.fallback.lock().expect("fallback lock").take();
                    if resend == Resend::WhileUnsent && !never_sent(&status) {
                        return Err(ClientError::OutcomeUnknown { detail: last });
                    }
                    wait = jittered(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(_) if resend == Resend::WhileUnsent => {
                    return Err(ClientError::OutcomeUnknown {
                        detail: format!(
                            "{endpoint} did not answer within {:?}",
                            self.options.request_timeout
                        ),
                    });
                }
                Err(_) => break,
            };
            match response.refusal().and_then(|r| r.kind.clone()) {
                None => {
                    match cached {
                        Some(c) if c.leader.is_none() => self
                            .routes
                            .lock()
                            .expect("routes lock")
                            .set_leader(c.descriptor.id, Some(endpoint)),
                        Some(_) => {}
                        None => *self.fallback.lock().expect("fallback lock") = Some(endpoint),
                    }
                    return Ok(response);
                }
                Some(Kind::NotLeader(hint)) => {
                    last = format!("{endpoint} does not lead shard {}", hint.shard_id);
                    let leader = (!hint.leader_addr.is_empty()).then_some(hint.leader_addr);
                    if let Some(addr) = &leader {
                        let mut endpoints = self.endpoints.lock().expect("endpoints lock");
                        if !endpoints.contains(addr) {
                            endpoints.push(addr.clone());
                        }
                    } else {
                        // An election is under way: give it a moment.
                        backoff = backoff.min(ELECTION_BACKOFF_MAX);
                        wait = jittered(backoff);
                        backoff = (backoff * 2).min(ELECTION_BACKOFF_MAX);
                    }
                    let mut routes = self.routes.lock().expect("routes lock");
                    if let Some(descriptor) = hint.descriptor {
                        routes.learn(*descriptor);
                    }
                    routes.set_leader(hint.shard_id, leader.clone());
                    if routes.lookup_id(hint.shard_id).is_none() {
                        // Not cacheable: at least go where the hint points next time.
                        *self.fallback.lock().expect("fallback lock") = leader;
                    }
                }
                Some(Kind::EpochMismatch(mismatch)) => {
                    last = format!("{endpoint}: the route is stale");
                    let mut routes = self.routes.lock().expect("routes lock");
                    if mismatch.current.is_empty() {
                        drop(routes);
                        self.forget(locate);
                    } else {
                        for descriptor in mismatch.current {
                            routes.learn(descriptor);
                        }
                    }
                }
                Some(Kind::KeyNotInShard(_)) | Some(Kind::ShardNotFound(_)) => {
                    // This node does not (or no longer) hold the shard: ask another.
                    last = format!("{endpoint} holds no shard for the request");
                    self.forget(locate);
                    self.fallback.lock().expect("fallback lock").take();
                    if let Some(c) = &cached {
                        self.routes
                            .lock()
                            .expect("routes lock")
                            .set_leader(c.descriptor.id, None);
                    }
                    wait = jittered(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Some(Kind::ServerBusy(busy)) => {
                    last = format!("{endpoint} is busy");
                    wait = jittered(Duration::from_millis(busy.retry_after_ms.into()));
                }
                Some(Kind::InvalidArgument(e)) => {
                    return Err(ClientError::InvalidArgument(e.message));
                }
                Some(Kind::OutcomeUnknown(e)) => {
                    return Err(ClientError::OutcomeUnknown {
                        detail: format!("{endpoint}: {}", e.message),
                    });
                }
            }
        }
        Err(ClientError::Timeout {
            timeout: self.options.request_timeout,
            last,
        })
    }

    /// The value of `key`, or `None` when it is absent (a linearizable read).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.get_stale(key, Duration::ZERO).await?.value)
    }

    /// The value of `key` as a replica holds it that misses no write acknowledged more
    /// than `max_staleness` before the read (a follower read; zero asks for a linearizable
    /// one). The first endpoint this client was given is asked first, so list the nearest
    /// node first; where it cannot keep to the bound (it holds no replica of the key, or
    /// its leader is out of reach), the shard's leader serves the read.
    pub async fn get_stale(
        &self,
        key: &[u8],
        max_staleness: Duration,
    ) -> Result<StaleRead, ClientError> {
        let max_staleness_ms = u32::try_from(max_staleness.as_millis()).unwrap_or(u32::MAX);
        let make = |route| proto::GetRequest {
            route,
            key: key.to_vec(),
            max_staleness_ms,
        };
        let answer = |response: proto::GetResponse| StaleRead {
            value: response.found.then_some(response.value),
            served_by: response.served_by_node,
            staleness_bound: Duration::from_millis(response.staleness_bound_ms.into()),
        };
        if max_staleness_ms > 0 {
            let nearest = self.endpoints.lock().expect("endpoints lock")[0].clone();
            let request = self.request(make(None));
            let mut kv = self.channel(&nearest)?;
            let attempt = tokio::time::timeout(self.options.request_timeout, kv.get(request));
            if let Ok(Ok(response)) = attempt.await
                && response.get_ref().error.is_none()
            {
                return Ok(answer(response.into_inner()));
            }
        }
        let response = self
            .call(Resend::Always, Locate::Key(key), make, |mut c, r| {
                Box::pin(async move { c.get(r).await })
            })
            .await?;
        Ok(answer(response))
    }

    /// Sets `key` to `value`; durable on a quorum when it returns.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let make = |route| proto::PutRequest {
            route,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.call(Resend::WhileUnsent, Locate::Key(key), make, |mut c, r| {
            Box::pin(async move { c.put(r).await })
        })
        .await
        .map(|_| ())
    }

    /// Applies `writes` atomically: all of them or none. Their keys must lie in one shard
    /// (the one holding the first key); a batch across shards is refused with
    /// [`ClientError::InvalidArgument`].
    pub async fn batch(&self, writes: &[BatchWrite]) -> Result<(), ClientError> {
        let Some(first) = writes.first() else {
            return Ok(());
        };
        let mutations: Vec<proto::Mutation> = writes
            .iter()
            .map(|write| proto::Mutation {
                op: Some(match write {
                    BatchWrite::Put { key, value } => proto::mutation::Op::Put(proto::KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                    }),
                    BatchWrite::Delete { key } => proto::mutation::Op::Delete(key.clone()),
                }),
            })
            .collect();
        let make = |route| proto::BatchRequest {
            route,
            mutations: mutations.clone(),
        };
        self.call(
            Resend::WhileUnsent,
            Locate::Key(first.key()),
            make,
            |mut c, r| Box::pin(async move { c.batch(r).await }),
        )
        .await
        .map(|_| ())
    }

    /// Puts `pairs` through the bulk path (see `Kv.Ingest`): their keys must strictly
    /// ascend. They are sent in requests of a few MiB, each taken by the shard holding its
    /// first key as one ingested file; a shard that reached its split size holds the next
    /// request until it was split. An ingest is applied whole or not at all, so after
    /// [`ClientError::OutcomeUnknown`] sending the same pairs again is safe where no other
    /// writer changes them meanwhile.
    pub async fn ingest(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), ClientError> {
        if let Some(at) = pairs.windows(2).position(|two| two[0].0 >= two[1].0) {
            return Err(ClientError::InvalidArgument(format!(
                "ingested keys must strictly ascend; pair {} does not",
                at + 1
            )));
        }
        let mut from = 0;
        while from < pairs.len() {
            let mut bytes = 0;
            let count = pairs[from..]
                .iter()
                .take_while(|(key, value)| {
                    bytes += key.len() + value.len();
                    bytes <= INGEST_REQUEST_BYTES
                })
                .count()
                .max(1);
            let request: Vec<proto::KeyValue> = pairs[from..from + count]
                .iter()
                .map(|(key, value)| proto::KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect();
            let make = |route| proto::IngestRequest {
                route,
                pairs: request.clone(),
            };
            let first = &pairs[from].0;
            let response = self
                .call(Resend::WhileUnsent, Locate::Key(first), make, |mut c, r| {
                    Box::pin(async move { c.ingest(r).await })
                })
                .await?;
            if let Some(shard) = response.shard {
                self.routes.lock().expect("routes lock").learn(shard);
            }
            match response.taken as usize {
                0 => {
                    return Err(ClientError::InvalidArgument(
                        "the node took none of the pairs it was sent".into(),
                    ));
                }
                taken => from += taken.min(count),
            }
        }
        Ok(())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        let make = |route| proto::DeleteRequest {
            route,
            key: key.to_vec(),
        };
        self.call(Resend::WhileUnsent, Locate::Key(key), make, |mut c, r| {
            Box::pin(async move { c.delete(r).await })
        })
        .await
        .map(|_| ())
    }

    /// Up to `limit` pairs with keys in `[start, end)` (empty `end`: to the last key), in
    /// key order or, with `reverse`, from the last key down. Crosses shard boundaries:
    /// each shard's part comes from that shard's leader.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let (mut lo, mut hi) = (start.to_vec(), end.to_vec());
        let mut pairs = Vec::new();
        // One call per shard; bounded even if answers were to stop making progress.
        for _ in 0..SCAN_SHARDS_MAX {
            let wanted = limit.saturating_sub(pairs.len() as u32);
            if wanted == 0 || (!hi.is_empty() && lo >= hi) {
                break;
            }
            let locate = if reverse {
                Locate::Before(&hi)
            } else {
                Locate::Key(&lo)
            };
            let make = |route| proto::ScanRequest {
                route,
                start: lo.clone(),
                end: hi.clone(),
                limit: wanted,
                reverse,
            };
            let response = self
                .call(Resend::Always, locate, make, |mut c, r| {
                    Box::pin(async move { c.scan(r).await })
                })
                .await?;
            pairs.extend(response.pairs.into_iter().map(|p| (p.key, p.value)));
            let Some(scanned) = response.scanned else {
                break;
            };
            self.routes
                .lock()
                .expect("routes lock")
                .learn(scanned.clone());
            // A page cut at its byte bound: the same shard goes on from where it stopped.
            if !response.resume_key.is_empty() {
                match reverse {
                    true => hi = response.resume_key,
                    false => lo = response.resume_key,
                }
                continue;
            }
            if reverse {
                if scanned.start.is_empty() || scanned.start <= lo {
                    break;
                }
                hi = scanned.start;
            } else {
                if scanned.end.is_empty() || (!hi.is_empty() && scanned.end >= hi) {
                    break;
                }
                lo = scanned.end;
            }
        }
        pairs.truncate(limit as usize);
        Ok(pairs)
    }

    /// Sets `key` to `new` (`None` deletes) only if it is `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome, ClientError> {
        let make = |route| proto::CompareAndSwapRequest {
            route,
            key: key.to_vec(),
            expected_value: expected.map(<[u8]>::to_vec),
            new_value: new.map(<[u8]>::to_vec),
        };
        let response = self
            .call(Resend::WhileUnsent, Locate::Key(key), make, |mut c, r| {
                Box::pin(async move { c.compare_and_swap(r).await })
            })
            .await?;
        Ok(CasOutcome {
            swapped: response.swapped,
            previous: response.previous_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_that_cannot_be_sent_is_refused_up_front() {
        let options = ClientOptions {
            region: Some("eu-hamburg\n".into()),
            ..Default::default()
        };
        let error = Client::new(&["127.0.0.1:1".to_string()], options)
            .err()
            .expect("refused");
        assert!(
            matches!(&error, ClientError::InvalidArgument(m) if m.contains("region")),
            "{error}"
        );
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    fn client(endpoint: String) -> Client {
        let options = ClientOptions {
            request_timeout: Duration::from_millis(400),
            ..ClientOptions::default()
        };
        Client::new(&[endpoint], options).unwrap()
    }

    #[tokio::test]
    async fn a_write_to_a_refused_connection_is_retried_as_never_sent() {
        let error = client(closed_port()).put(b"k", b"v").await.unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_write_to_a_connection_closed_before_it_was_sent_is_retried() {
        // Accepts connections and closes them at once: no request is ever read.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        let error = client(endpoint).put(b"k", b"v").await.unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    }

    #[tokio::test]
    async fn a_write_whose_node_falls_silent_is_not_sent_again() {
        // Accepts connections and reads requests but never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = client(endpoint);
        let error = client.put(b"k", b"v").await.unwrap_err();
        assert!(
            matches!(error, ClientError::OutcomeUnknown { .. }),
            "{error}"
        );
        // A read of the same node is retried until its deadline.
        let error = client.get(b"k").await.unwrap_err();
        assert!(matches!(error, ClientError::Timeout { .. }), "{error}");
    }
}
