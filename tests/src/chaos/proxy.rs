//! A fault-injecting TCP proxy between the nodes of a local cluster.
//!
//! Every node is advertised at a proxy address; the proxy forwards to the node's real
//! listen address. Nodes open their connections from their own 127.0.0.(10+id) address,
//! so the proxy knows which node sends each byte; anything else (the workload's clients,
//! the command line) is a client and is never faulted.
//!
//! A blocked link (`from` → `to`) stalls the bytes `from` sends to `to`, on connections
//! either of them opened, like packets dropped and retransmitted until the partition heals:
//! nothing is lost or reordered, calls across it time out. A link's latency delays each
//! chunk by that much, in order.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub type NodeId = u64;

/// The sender of traffic that does not come from a node.
const CLIENT: NodeId = 0;

/// Node `id`'s IP address in a local cluster.
pub fn node_ip(id: NodeId) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + id as u8)
}

fn node_of(ip: IpAddr) -> NodeId {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            (v4.octets()[3] - 10).into()
        }
        _ => CLIENT,
    }
}

/// What is wrong with the network between nodes right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Links (from, to) whose bytes stall.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Extra one-way delay per link.
    pub latency: BTreeMap<(NodeId, NodeId), Duration>,
}

impl Faults {
    /// Blocks both directions between every node of `a` and every node of `b`.
    pub fn cut(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }
}

/// A running proxy; dropping it stops every listener (open connections end with them).
pub struct Proxy {
    faults: watch::Sender<Faults>,
    listeners: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Listens at each `(node, listen_at, forward_to)` and forwards to the node.
    pub async fn start(routes: &[(NodeId, SocketAddr, SocketAddr)]) -> std::io::Result<Proxy> {
        let (faults, _) = watch::channel(Faults::default());
        let mut listeners = Vec::new();
        for &(node, listen_at, forward_to) in routes {
            let listener = TcpListener::bind(listen_at).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("proxy for node {node} at {listen_at}: {e}"),
                )
            })?;
            let faults = faults.clone();
            listeners.push(tokio::spawn(async move {
                while let Ok((inbound, peer)) = listener.accept().await {
                    let from = node_of(peer.ip());
                    tokio::spawn(forward(inbound, from, node, forward_to, faults.clone()));
                }
            }));
        }
        Ok(Proxy { faults, listeners })
    }

    /// Replaces the network's faults.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// The network's faults now.
    pub fn faults(&self) -> Faults {
        self.faults.borrow().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Carries one connection from `from` to node `to` both ways until either side closes.
async fn forward(
    inbound: TcpStream,
    from: NodeId,
    to: NodeId,
    target: SocketAddr,
    faults: watch::Sender<Faults>,
) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return; // The node is down: the caller sees its connection close.
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let there = tokio::spawn(pipe(in_read, out_write, (from, to), faults.clone()));
    let back = pipe(out_read, in_write, (to, from), faults);
    back.await;
    there.abort();
}

/// Copies bytes on link `link` with its faults applied, until EOF or an error.
async fn pipe(
    mut source: OwnedReadHalf,
    mut sink: OwnedWriteHalf,
    link: (NodeId, NodeId),
    faults: watch::Sender<Faults>,
) {
    let faulted = link.0 != CLIENT && link.1 != CLIENT;
    let (chunks, mut delivered) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut open = faults.subscribe();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = delivered.recv().await {
            tokio::time::sleep_until(due).await;
            if faulted && wait_open(&mut open, link).await.is_err() {
                return;
            }
            if sink.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = sink.shutdown().await;
    });
    let mut readable = faults.subscribe();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if faulted && wait_open(&mut readable, link).await.is_err() {
            break;
        }
        let n = match source.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = if faulted {
            faults
                .borrow()
                .latency
                .get(&link)
                .copied()
                .unwrap_or_default()
        } else {
            Duration::ZERO
        };
        if chunks
            .send((Instant::now() + delay, buffer[..n].to_vec()))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(chunks);
    let _ = writer.await;
}

/// Returns once `link` is not blocked (an error when the proxy is gone).
async fn wait_open(
    faults: &mut watch::Receiver<Faults>,
    link: (NodeId, NodeId),
) -> Result<(), watch::error::RecvError> {
    loop {
        if !faults.borrow_and_update().blocked.contains(&link) {
            return Ok(());
        }
        faults.changed().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server(addr: SocketAddr) -> JoinHandle<()> {
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    /// Connects from node `from`'s address to the proxy and echoes one message.
    async fn round_trip(from: NodeId, proxy: SocketAddr, wait: Duration) -> Option<Duration> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(node_ip(from).into(), 0))
            .unwrap();
        let mut stream = socket.connect(proxy).await.unwrap();
        let started = Instant::now();
        stream.write_all(b"ping").await.unwrap();
        let mut answer = [0u8; 4];
        let read = tokio::time::timeout(wait, stream.read_exact(&mut answer)).await;
        read.ok().map(|r| {
            r.unwrap();
            assert_eq!(&answer, b"ping");
            started.elapsed()
        })
    }

    #[tokio::test]
    async fn blocked_links_stall_until_healed_and_latency_delays() {
        let node_at = SocketAddr::new(node_ip(2).into(), 7291);
        let proxy_at = SocketAddr::new(node_ip(2).into(), 7292);
        let _echo = echo_server(node_at).await;
        let proxy = Proxy::start(&[(2, proxy_at, node_at)]).await.unwrap();
        let short = Duration::from_millis(300);
        assert!(round_trip(1, proxy_at, short).await.is_some());

        // One way is enough to stall a request and its answer.
        let mut faults = Faults::default();
        faults.blocked.insert((2, 1));
        proxy.set(faults);
        assert!(round_trip(1, proxy_at, short).await.is_none());
        assert!(
            round_trip(3, proxy_at, short).await.is_some(),
            "node 3 is not cut"
        );

        // A stalled message arrives once the link heals.
        let stalled = tokio::spawn(round_trip(1, proxy_at, Duration::from_secs(5)));
        tokio::time::sleep(short).await;
        proxy.set(Faults::default());
        assert!(stalled.await.unwrap().is_some());

        let mut faults = Faults::default();
        faults.latency.insert((1, 2), Duration::from_millis(200));
        proxy.set(faults);
        let took = round_trip(1, proxy_at, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(took >= Duration::from_millis(200), "{took:?}");
    }
}
