//! The one layer every Kv request passes before its handler: what is true of a request
//! whatever it asks (where its client is, and later who it is and what it may touch)
//! is settled here once, not in each of the service's methods.

use crate::knobs::REGION_NAME_BYTES_MAX;
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::http::{HeaderMap, Request};
use tonic::codegen::{Context, Future, Pin, Poll, Service};
use tonic::server::NamedService;

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

#[cfg(test)]
mod tests {
    use super::*;

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
