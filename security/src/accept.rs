//! The serving end of a connection: a node's listener hands tonic connections that have
//! finished their TLS handshake, each carrying the [`Peer`] it came from, which tonic
//! puts into every request's extensions ([`Caller::of`](crate::Caller::of) reads it).
//!
//! Handshakes run beside the accept loop, each bounded in time and in number, so a
//! caller that connects and says nothing holds up no one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::connect::Io;
use crate::identity::Peer;
use crate::knobs::{
    ACCEPT_ERROR_PAUSE, ACCEPTED_QUEUE_MAX, HANDSHAKE_TIMEOUT, HANDSHAKES_IN_FLIGHT_MAX,
};
use crate::tls::Protocol;
use crate::{Caller, Identity, ServerTls};

/// A connection ready for HTTP/2.
pub struct Accepted {
    io: Box<dyn Io>,
    peer: Peer,
}

impl Connected for Accepted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Accepted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections `listener` accepts, as tonic's `serve_with_incoming` takes them:
/// after a TLS handshake offering `protocol`'s ALPN names, in which the caller showed a
/// certificate of the cluster's CA or none, when `tls` is given; as they come otherwise. A connection whose handshake fails is
/// dropped (and logged); the listener closes when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    protocol: Protocol,
) -> ReceiverStream<std::io::Result<Accepted>> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE_MAX);
    tokio::spawn(accept_loop(listener, tls, protocol, sender));
    ReceiverStream::new(receiver)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    protocol: Protocol,
    sender: mpsc::Sender<std::io::Result<Accepted>>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = sender.closed() => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sender = sender.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let peer =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, addr, tls, protocol))
                    .await;
            drop(permit);
            match peer {
                Ok(Ok(accepted)) => {
                    let _ = sender.send(Ok(accepted)).await;
                }
                Ok(Err(e)) => tracing::info!("refused a connection from {addr}: {e}"),
                Err(_) => tracing::info!(
                    "refused a connection from {addr}: no TLS handshake within {HANDSHAKE_TIMEOUT:?}"
                ),
            }
        });
    }
}

async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    tls: Option<Arc<ServerTls>>,
    protocol: Protocol,
) -> std::io::Result<Accepted> {
    let Some(tls) = tls else {
        return Ok(Accepted {
            io: Box::new(stream),
            peer: Peer {
                addr,
                caller: Caller::Unauthenticated,
            },
        });
    };
    let stream = tokio_rustls::TlsAcceptor::from(tls.config(protocol))
        .accept(stream)
        .await?;
    // The verifier checked that a certificate, if one was sent, is the CA's; what it
    // names decides who this is. A certificate of the CA that names nobody is refused
    // here. A caller without one may only log in or send a token.
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let caller = match certificate {
        Some(certificate) => {
            Caller::Verified(Identity::of_certificate(certificate).map_err(std::io::Error::other)?)
        }
        None => Caller::Anonymous,
    };
    Ok(Accepted {
        io: Box::new(stream),
        peer: Peer { addr, caller },
    })
}
