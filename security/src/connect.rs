//! The calling end of a connection: TCP (without Nagle, from a chosen local address),
//! then TLS where the caller has certificates. tonic's channels take it as their
//! connector (`Endpoint::connect_with_connector_lazy`), so every channel to a node,
//! a client's or another node's, connects the same way.
//!
//! A connection that could not be made fails as [`ConnectFailed`], so a caller can tell a
//! request that never left ([`never_sent`]) from one that may have reached a node.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Uri;

use crate::ClientTls;

/// A byte stream of either kind.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// How a caller connects to nodes: with TLS when it has [`ClientTls`], in plaintext
/// (towards nodes that run `insecure`) when not.
#[derive(Clone, Debug)]
pub struct Connector {
    tls: Option<Arc<ClientTls>>,
    source_ip: Option<IpAddr>,
    timeout: Duration,
}

/// A connection (TCP and TLS) that was not made within its time or at all: nothing was
/// sent on it.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {target}: {source}")]
pub struct ConnectFailed {
    target: String,
    #[source]
    source: std::io::Error,
}

/// Whether a failed call certainly never reached the node: its connection was not made,
/// or hyper dropped the request before writing it (a connection found closed).
pub fn never_sent(status: &tonic::Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if error.is::<ConnectFailed>()
            || error
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

impl Connector {
    /// Connections within `timeout`, with TLS when `tls` is given.
    pub fn new(tls: Option<Arc<ClientTls>>, timeout: Duration) -> Connector {
        Connector {
            tls,
            source_ip: None,
            timeout,
        }
    }

    /// Connections start from `ip` (a node binds its own, so a proxy between nodes can
    /// tell who calls whom).
    pub fn from_ip(mut self, ip: Option<IpAddr>) -> Connector {
        self.source_ip = ip;
        self
    }

    pub fn tls(&self) -> Option<&Arc<ClientTls>> {
        self.tls.as_ref()
    }

    /// The URI tonic's endpoints take for `addr` (`HOST:PORT`). Always `http`: the
    /// connector does the TLS itself, and tonic would try to do it again for `https`.
    pub fn uri(addr: &str) -> String {
        format!("http://{addr}")
    }

    async fn connect(self, uri: Uri) -> Result<TokioIo<Box<dyn Io>>, ConnectFailed> {
        let target = uri.to_string();
        let timeout = self.timeout;
        let connected = tokio::time::timeout(timeout, self.handshake(uri)).await;
        let failed = |source| ConnectFailed { target, source };
        match connected {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(source)) => Err(failed(source)),
            Err(_) => Err(failed(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))),
        }
    }

    async fn handshake(self, uri: Uri) -> std::io::Result<TokioIo<Box<dyn Io>>> {
        let invalid = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{uri}: {what}"))
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
        let addr: SocketAddr = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| invalid("the host name resolves to no address"))?;
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = self.source_ip {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream: TcpStream = socket.connect(addr).await?;
        // No Nagle: small Raft and client messages must not wait for delayed ACKs.
        stream.set_nodelay(true)?;
        let Some(tls) = self.tls else {
            return Ok(TokioIo::new(Box::new(stream)));
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| invalid("the host is no DNS name or IP address"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.config())
            .connect(name, stream)
            .await?;
        Ok(TokioIo::new(Box::new(stream)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Box<dyn Io>>;
    type Error = ConnectFailed;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().connect(uri))
    }
}
