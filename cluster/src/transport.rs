//! Replication links (docs/protocol.md, "Replication frames"): Keel's
//! 64-byte frame header, kind `Replication`, over TCP, with a body of an
//! 8-byte route (who sends, to whom) and a [`keel_replication::wire`]
//! message. One outgoing connection per peer, reconnected on failure; a
//! message that cannot be sent is dropped (the protocol resends on its
//! heartbeat), never queued without bound.
//!
//! With [`PeerTls`] every link is mutual TLS 1.3: a connection whose peer
//! presents no certificate from the cluster's peer CA is closed before a
//! byte of it is read as a frame. A frame for another shard closes the link.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_protocol::{
    decode_frame_limited, encode_frame_limited, FrameError, Header, Kind,
    REPLICATION_BODY_BYTES_MAX,
};
use keel_replication::wire::{self, WireError};
use keel_replication::{Message, NodeId, Peer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bytes of the route before the message in a `Replication` body.
pub const ROUTE_BYTES: usize = 8;
/// Frames queued for one peer before new ones are dropped.
const QUEUE_FRAMES: usize = 1024;
/// A lost connection is retried this often.
const RECONNECT: Duration = Duration::from_millis(100);
/// A TLS handshake not done by then is abandoned.
const HANDSHAKE: Duration = Duration::from_secs(5);

/// Mutual TLS on the replication links ([`keel_server::peer_tls`]).
#[derive(Clone)]
pub struct PeerTls {
    /// Accepts peers whose certificate chains to the peer CA.
    pub acceptor: TlsAcceptor,
    /// Connects presenting this replica's certificate.
    pub connector: TlsConnector,
    /// The name peers' certificates must carry.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

const PEER_REPLICA: u8 = 0;
const PEER_CONTROLLER: u8 = 1;

/// Why a replication body did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Fewer bytes than the route.
    #[error("replication body of {0} bytes is shorter than its 8-byte route")]
    Short(usize),
    /// A peer kind byte that is neither replica (0) nor controller (1).
    #[error("unknown peer kind {0} in a replication route")]
    PeerKind(u8),
    /// Reserved route bytes are not zero.
    #[error("reserved bytes of a replication route are not zero")]
    Reserved,
    /// The message after the route.
    #[error(transparent)]
    Wire(#[from] WireError),
}

fn peer_bytes(peer: Peer) -> (u8, u16) {
    match peer {
        Peer::Replica(id) => (PEER_REPLICA, id),
        Peer::Controller(id) => (PEER_CONTROLLER, id),
    }
}

fn peer_from(kind: u8, id: u16) -> Result<Peer, RouteError> {
    match kind {
        PEER_REPLICA => Ok(Peer::Replica(id)),
        PEER_CONTROLLER => Ok(Peer::Controller(id)),
        other => Err(RouteError::PeerKind(other)),
    }
}

/// Appends one `Replication` frame carrying `message` from `from` to `to`.
pub fn encode(shard: u32, from: Peer, to: Peer, message: &Message, out: &mut Vec<u8>) {
    let (from_kind, from_id) = peer_bytes(from);
    let (to_kind, to_id) = peer_bytes(to);
    let mut body = Vec::with_capacity(64);
    body.push(from_kind);
    body.push(to_kind);
    body.extend_from_slice(&from_id.to_le_bytes());
    body.extend_from_slice(&to_id.to_le_bytes());
    body.extend_from_slice(&[0, 0]);
    wire::encode(message, &mut body);
    let mut header = Header::new(Kind::Replication);
    header.shard = shard;
    header.epoch = epoch_of(message);
    encode_frame_limited(&header, &body, REPLICATION_BODY_BYTES_MAX, out);
}

/// A `Replication` frame's body: (from, to, message).
pub fn decode_body(body: &[u8]) -> Result<(Peer, Peer, Message), RouteError> {
    if body.len() < ROUTE_BYTES {
        return Err(RouteError::Short(body.len()));
    }
    if body[6] != 0 || body[7] != 0 {
        return Err(RouteError::Reserved);
    }
    let from = peer_from(body[0], u16::from_le_bytes([body[2], body[3]]))?;
    let to = peer_from(body[1], u16::from_le_bytes([body[4], body[5]]))?;
    Ok((from, to, wire::decode(&body[ROUTE_BYTES..])?))
}

fn epoch_of(message: &Message) -> u32 {
    match message {
        Message::Append { epoch, .. }
        | Message::Ack { epoch, .. }
        | Message::Mismatch { epoch, .. }
        | Message::Fenced { epoch }
        | Message::Seal { epoch }
        | Message::Sealed { epoch, .. } => *epoch,
    }
}

/// Where a received message goes: (from, to, message).
pub type Inbox = Arc<dyn Fn(Peer, Peer, Message) + Send + Sync>;

/// Counters of one transport.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Frames written to a peer.
    pub sent: AtomicU64,
    /// Frames dropped (queue full or peer unreachable).
    pub dropped: AtomicU64,
    /// Frames received and delivered.
    pub received: AtomicU64,
    /// Connections closed for a bad frame.
    pub bad_frames: AtomicU64,
    /// Connections refused for a failed TLS handshake (no certificate, or
    /// one the peer CA did not sign).
    pub refused: AtomicU64,
}

/// This node's replication links.
#[derive(Clone)]
pub struct Transport {
    shard: u32,
    peers: Arc<BTreeMap<NodeId, mpsc::Sender<Vec<u8>>>>,
    stats: Arc<TransportStats>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("shard", &self.shard)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Starts accepting on `listener` (delivering to `inbox`) and one
    /// sender task per peer, on the current tokio runtime.
    pub fn start(
        shard: u32,
        listener: TcpListener,
        peers: &BTreeMap<NodeId, SocketAddr>,
        inbox: Inbox,
        tls: Option<PeerTls>,
    ) -> Transport {
        let stats = Arc::new(TransportStats::default());
        let mut senders = BTreeMap::new();
        for (&id, &addr) in peers {
            let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
            senders.insert(id, tx);
            tokio::spawn(send_loop(addr, rx, Arc::clone(&stats), tls.clone()));
        }
        let accept = Accept {
            shard,
            inbox,
            stats: Arc::clone(&stats),
            tls,
        };
        tokio::spawn(accept_loop(listener, accept));
        Transport {
            shard,
            peers: Arc::new(senders),
            stats,
        }
    }

    /// Sends `message` from `from` to `to` on node `node` (callable from
    /// any thread); dropped when the peer is unknown or its queue is full.
    pub fn send(&self, node: NodeId, from: Peer, to: Peer, message: &Message) {
        let Some(tx) = self.peers.get(&node) else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut frame = Vec::new();
        encode(self.shard, from, to, message, &mut frame);
        if tx.try_send(frame).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }
}

/// A connection to `addr`, through TLS when configured.
async fn connect(addr: SocketAddr, tls: Option<&PeerTls>) -> std::io::Result<Writer> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => Ok(Box::new(stream)),
        Some(tls) => {
            let handshake = tls.connector.connect(tls.name.clone(), stream);
            match tokio::time::timeout(HANDSHAKE, handshake).await {
                Ok(stream) => Ok(Box::new(stream?)),
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
    }
}

async fn send_loop(
    addr: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    stats: Arc<TransportStats>,
    tls: Option<PeerTls>,
) {
    loop {
        let mut stream = match connect(addr, tls.as_ref()).await {
            Ok(stream) => stream,
            Err(_) => {
                // Queued frames are stale by the time the peer is back:
                // the protocol resends what matters.
                while let Ok(_frame) = rx.try_recv() {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        while let Some(frame) = rx.recv().await {
            if stream.write_all(&frame).await.is_err() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        if rx.is_closed() {
            return;
        }
    }
}

/// What the accepting side needs for each connection.
#[derive(Clone)]
struct Accept {
    shard: u32,
    inbox: Inbox,
    stats: Arc<TransportStats>,
    tls: Option<PeerTls>,
}

async fn accept_loop(listener: TcpListener, accept: Accept) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(RECONNECT).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let accept = accept.clone();
        tokio::spawn(async move {
            let reader: Reader = match &accept.tls {
                None => Box::new(stream),
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => return refuse(&accept.stats, peer, &e.to_string()),
                        Err(_) => return refuse(&accept.stats, peer, "handshake timed out"),
                    }
                }
            };
            read_loop(reader, peer, accept).await;
        });
    }
}

fn refuse(stats: &TransportStats, peer: SocketAddr, why: &str) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    eprintln!("keel-cluster: replication connection from {peer} refused: {why}");
}

/// Why a replication connection was closed by its reader.
#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{0:?} frame on a replication link")]
    Kind(Kind),
    #[error("bad replication body: {0}")]
    Route(#[from] RouteError),
    #[error("a frame for shard {found} on shard {expected}'s link")]
    Shard { expected: u32, found: u32 },
}

async fn read_loop(mut stream: Reader, peer: SocketAddr, accept: Accept) {
    let Accept {
        shard,
        inbox,
        stats,
        ..
    } = accept;
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let end = loop {
        match read_frames(&mut buf, shard, &inbox, &stats) {
            Ok(()) => {}
            Err(e) => break Some(e),
        }
        // Into spare capacity: nothing is zeroed first.
        buf.reserve(64 << 10);
        match stream.read_buf(&mut buf).await {
            Ok(0) => break None,
            Ok(_) => {}
            Err(e) => break Some(e.into()),
        }
    };
    if let Some(e) = end {
        if !matches!(e, ReadEnd::Io(_)) {
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
            eprintln!("keel-cluster: replication link from {peer} closed: {e}");
        }
    }
}

fn read_frames(
    buf: &mut Vec<u8>,
    shard: u32,
    inbox: &Inbox,
    stats: &TransportStats,
) -> Result<(), ReadEnd> {
    let mut used = 0;
    while let Some((frame, len)) = decode_frame_limited(&buf[used..], REPLICATION_BODY_BYTES_MAX)? {
        if frame.header.kind != Kind::Replication {
            return Err(ReadEnd::Kind(frame.header.kind));
        }
        if frame.header.shard != shard {
            return Err(ReadEnd::Shard {
                expected: shard,
                found: frame.header.shard,
            });
        }
        let (from, to, message) = decode_body(frame.body)?;
        stats.received.fetch_add(1, Ordering::Relaxed);
        inbox(from, to, message);
        used += len;
    }
    buf.drain(..used);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_and_a_bad_route_is_typed() {
        let message = Message::Sealed {
            epoch: 7,
            incarnation: 3,
            last_seq: 99,
            last_epoch: 6,
        };
        let mut out = Vec::new();
        encode(2, Peer::Replica(3), Peer::Controller(1), &message, &mut out);
        let (frame, len) = decode_frame_limited(&out, REPLICATION_BODY_BYTES_MAX)
            .unwrap()
            .unwrap();
        assert_eq!(len, out.len());
        assert_eq!(frame.header.kind, Kind::Replication);
        assert_eq!((frame.header.shard, frame.header.epoch), (2, 7));
        assert_eq!(
            decode_body(frame.body).unwrap(),
            (Peer::Replica(3), Peer::Controller(1), message)
        );
        assert_eq!(decode_body(&[0; 3]), Err(RouteError::Short(3)));
        assert_eq!(
            decode_body(&[2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0]),
            Err(RouteError::PeerKind(2))
        );
        assert_eq!(
            decode_body(&[0, 0, 0, 0, 0, 0, 1, 0]),
            Err(RouteError::Reserved)
        );
        assert!(matches!(
            decode_body(&[0, 0, 0, 0, 0, 0, 0, 0, 99]),
            Err(RouteError::Wire(WireError::UnknownTag(99)))
        ));
    }
}
