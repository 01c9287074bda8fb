//! hanse-client: the gRPC SDK for Hanse. It depends on the protobuf contract and tonic
//! only: no RocksDB, no Torch.
//!
//! [`Client`] sends each request to the node it believes leads the key's shard and
//! follows the typed answers: `NotLeader` names the leader to retry at once, `ServerBusy`
//! says how long to wait, an unreachable node is skipped. Every retry loop is bounded by
//! [`ClientOptions::request_timeout`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

pub use hanse_proto::v1 as proto;
use hanse_proto::v1::kv_client::KvClient;
use hanse_proto::v1::request_error::Kind;
use tonic::transport::{Channel, Endpoint};

/// How a client connects and retries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one call may take, retries included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
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
    #[error("no node answered within {timeout:?}; last problem: {last}")]
    Timeout { timeout: Duration, last: String },
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    pub previous: Option<Vec<u8>>,
}

/// A connection to a Hanse cluster through any of its nodes.
pub struct Client {
    endpoints: Mutex<Vec<String>>,
    leader: Mutex<Option<String>>,
    /// One HTTP/2 channel per node, reused by every call (tonic multiplexes on it).
    channels: Mutex<HashMap<String, KvClient<Channel>>>,
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
    proto::CompareAndSwapResponse
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
            Endpoint::from_shared(format!("http://{endpoint}")).map_err(|e| {
                ClientError::BadEndpoint {
                    endpoint: endpoint.clone(),
                    detail: e.to_string(),
                }
            })?;
        }
        Ok(Client {
            endpoints: Mutex::new(endpoints.to_vec()),
            leader: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            options,
        })
    }

    fn channel(&self, endpoint: &str) -> Result<KvClient<Channel>, ClientError> {
        let mut channels = self.channels.lock().expect("channels lock");
        if let Some(client) = channels.get(endpoint) {
            return Ok(client.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| ClientError::BadEndpoint {
                endpoint: endpoint.to_string(),
                detail: e.to_string(),
            })?
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            .connect_lazy();
        let client = KvClient::new(channel)
            .max_decoding_message_size(32 * 1024 * 1024)
            .max_encoding_message_size(32 * 1024 * 1024);
        channels.insert(endpoint.to_string(), client.clone());
        Ok(client)
    }

    /// Sends `request` until a node serves it, following leader hints.
    async fn call<Req, Resp>(
        &self,
        request: Req,
        send: impl Fn(KvClient<Channel>, Req) -> Call<Resp>,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        Resp: Refusable,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        let mut next = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut last = String::from("no attempt");
        while tokio::time::Instant::now() < deadline {
            let hinted = self.leader.lock().expect("leader lock").clone();
            let endpoint = match hinted {
                Some(leader) => leader,
                None => {
                    let endpoints = self.endpoints.lock().expect("endpoints lock");
                    next += 1;
                    endpoints[next % endpoints.len()].clone()
                }
            };
            let outcome =
                tokio::time::timeout_at(deadline, send(self.channel(&endpoint)?, request.clone()))
                    .await;
            let response = match outcome {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    last = format!("{endpoint}: {}", status.message());
                    self.leader.lock().expect("leader lock").take();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    continue;
                }
                Err(_) => break,
            };
            match response.refusal().and_then(|r| r.kind.clone()) {
                None => {
                    *self.leader.lock().expect("leader lock") = Some(endpoint);
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
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                    *self.leader.lock().expect("leader lock") = leader;
                }
                Some(Kind::ServerBusy(busy)) => {
                    last = format!("{endpoint} is busy");
                    tokio::time::sleep(Duration::from_millis(busy.retry_after_ms.into())).await;
                }
                Some(Kind::InvalidArgument(e)) => {
                    return Err(ClientError::InvalidArgument(e.message));
                }
                Some(other) => {
                    last = format!("{endpoint}: {other:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
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
        let request = proto::GetRequest {
            route: None,
            key: key.to_vec(),
        };
        let response = self
            .call(request, |mut c, r| Box::pin(async move { c.get(r).await }))
            .await?;
        Ok(response.found.then_some(response.value))
    }

    /// Sets `key` to `value`; durable on a quorum when it returns.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let request = proto::PutRequest {
            route: None,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.call(request, |mut c, r| Box::pin(async move { c.put(r).await }))
            .await
            .map(|_| ())
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &[u8]) -> Result<(), ClientError> {
        let request = proto::DeleteRequest {
            route: None,
            key: key.to_vec(),
        };
        self.call(request, |mut c, r| {
            Box::pin(async move { c.delete(r).await })
        })
        .await
        .map(|_| ())
    }

    /// Up to `limit` pairs with keys in `[start, end)` (empty `end`: to the last key).
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ClientError> {
        let request = proto::ScanRequest {
            route: None,
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
            reverse,
        };
        let response = self
            .call(request, |mut c, r| Box::pin(async move { c.scan(r).await }))
            .await?;
        Ok(response
            .pairs
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect())
    }

    /// Sets `key` to `new` (`None` deletes) only if it is `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<CasOutcome, ClientError> {
        let request = proto::CompareAndSwapRequest {
            route: None,
            key: key.to_vec(),
            expected_value: expected.map(<[u8]>::to_vec),
            new_value: new.map(<[u8]>::to_vec),
        };
        let response = self
            .call(request, |mut c, r| {
                Box::pin(async move { c.compare_and_swap(r).await })
            })
            .await?;
        Ok(CasOutcome {
            swapped: response.swapped,
            previous: response.previous_value,
        })
    }
}
