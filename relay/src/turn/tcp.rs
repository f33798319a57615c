//! TURN over TCP (RFC 6062 framing) and over TLS: accepting connections within the limits
//! (total, per address), the TLS handshake, reading frames with the handshake and idle
//! timeouts, and queueing the engine's answers back to each connection. All connections of
//! a listener feed one engine listener ([`TcpMux`](super::listener::TcpMux)).
//!
//! The TLS listener may share its port with libp2p ([`Opening::Tls`]): a connection whose
//! first byte is a TLS handshake record (0x16) is TURN over TLS; any other (libp2p opens
//! with multistream-select's header, whose first byte is its length, 0x13) is handed to
//! the libp2p node ([`conclave_core::net::handover`]) and leaves the TURN limits.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use conclave_core::net::handover::Handover;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::{Label, Metrics};

use super::gate::{Gate, Pending, TcpLimits};
use super::{ReadFrameError, TCP_QUEUE, TcpMux, decode_stun, read_tcp_frame};

/// Open TURN-over-TCP connections: the engine's answer queues by client address, and how
/// many come from each IP.
#[derive(Debug, Default)]
pub(super) struct TcpTable {
    pub(super) writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    pub(super) per_ip: HashMap<IpAddr, usize>,
}

pub(super) type Writers = Arc<Mutex<TcpTable>>;

/// How a listener's connections open: plain TURN over TCP, or TLS first (with libp2p
/// connections on the same port handed to the node).
#[derive(Clone)]
pub(super) enum Opening {
    /// TURN framing from the first byte.
    Plain,
    /// A TLS handshake, then TURN framing. A connection whose first byte is not a TLS
    /// handshake record goes to `libp2p` if set, else is closed (counted as malformed).
    Tls {
        acceptor: TlsAcceptor,
        libp2p: Option<Handover>,
    },
}

/// The first byte of a TLS connection: a handshake record (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// One connection's place in the [`TcpTable`]; dropping it gives the place back.
struct Admitted {
    writers: Writers,
    from: SocketAddr,
    label: Label,
    metrics: Arc<Metrics>,
}

impl Admitted {
    /// Takes a place for the connection from `from` under `limits`, with `tx` for the
    /// engine's answers; `None` (counted) when a limit is reached.
    fn take(
        accepting: &Accepting,
        from: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
        limits: TcpLimits,
    ) -> Option<Self> {
        let (writers, metrics) = (&accepting.writers, &accepting.gate.metrics);
        let mut table = writers.lock().ok()?;
        let from_ip = table.per_ip.get(&from.ip()).copied().unwrap_or(0);
        let refused = if table.writers.len() >= limits.max {
            Some("total")
        } else if from_ip >= limits.per_ip {
            Some("per_ip")
        } else {
            None
        };
        if let Some(reason) = refused {
            // Logged at debug: a flood would flood the log.
            debug!(%from, reason, "TURN-over-TCP connection refused by a limit");
            metrics
                .tcp_limited
                .get_or_create(&[("reason", reason)])
                .inc();
            return None;
        }
        table.writers.insert(from, tx);
        *table.per_ip.entry(from.ip()).or_default() += 1;
        metrics
            .tcp_connections
            .get_or_create(&accepting.label)
            .inc();
        Some(Self {
            writers: Arc::clone(writers),
            from,
            label: accepting.label,
            metrics: Arc::clone(metrics),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut table) = self.writers.lock() {
            table.writers.remove(&self.from);
            if let Some(count) = table.per_ip.get_mut(&self.from.ip()) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    table.per_ip.remove(&self.from.ip());
                }
            }
        }
        self.metrics
            .tcp_connections
            .get_or_create(&self.label)
            .dec();
    }
}

/// One accepted connection (`S`: the TCP stream, or the TLS stream over it) and what
/// serving it needs.
struct Connection<S = TcpStream> {
    stream: S,
    from: SocketAddr,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    answers: mpsc::Receiver<Vec<u8>>,
    limits: TcpLimits,
    label: Label,
}

impl<S> Connection<S> {
    /// This connection's stream, and the same connection over `stream` instead (the TLS
    /// session on the TCP stream).
    fn over<T>(self, stream: T) -> (S, Connection<T>) {
        let connection = Connection {
            stream,
            from: self.from,
            frames: self.frames,
            answers: self.answers,
            limits: self.limits,
            label: self.label,
        };
        (self.stream, connection)
    }
}

/// A TCP listener's engine side: where frames go, the connection table, the gate (limits,
/// counters), the listener's metrics label and how its connections open.
struct Accepting {
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    gate: Arc<Gate>,
    label: Label,
    opening: Opening,
}

async fn accept_tcp(listener: TcpListener, accepting: Accepting, cancel: CancellationToken) {
    let metrics = Arc::clone(&accepting.gate.metrics);
    loop {
        let (stream, from) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    debug!(error = %err, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let limits = accepting.gate.live().tcp;
        let (tx, answers) = mpsc::channel(TCP_QUEUE);
        // Refused: dropping the stream closes it.
        let Some(admitted) = Admitted::take(&accepting, from, tx, limits) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream,
            from,
            frames: accepting.frames.clone(),
            answers,
            limits,
            label: accepting.label,
        };
        let metrics = Arc::clone(&metrics);
        let (cancel, opening) = (cancel.clone(), accepting.opening.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = open(connection, opening, admitted, &metrics) => {}
            }
            debug!(%from, "TURN-over-TCP connection closed");
        });
    }
}

/// Starts accepting connections on `listener` (until `cancel`), opened as `opening` says;
/// returns the engine listener they are multiplexed into, which reports `local` as its
/// address and counts under `label`.
pub(super) fn serve_tcp_listener(
    (listener, local): (TcpListener, SocketAddr),
    (opening, label): (Opening, Label),
    gate: &Arc<Gate>,
    pending: &Pending,
    cancel: &CancellationToken,
) -> TcpMux {
    let (frames_tx, frames_rx) = mpsc::channel(TCP_QUEUE);
    let writers = Writers::default();
    let accepting = Accepting {
        frames: frames_tx,
        writers: Arc::clone(&writers),
        gate: Arc::clone(gate),
        label,
        opening,
    };
    tokio::spawn(accept_tcp(listener, accepting, cancel.clone()));
    TcpMux {
        local,
        label,
        frames: tokio::sync::Mutex::new(frames_rx),
        writers,
        gate: Arc::clone(gate),
        pending: Arc::clone(pending),
    }
}

/// Serves one connection as `opening` says; `admitted` is its place in the table, given
/// back when it ends (or at once when the connection is libp2p's).
async fn open(connection: Connection, opening: Opening, admitted: Admitted, metrics: &Metrics) {
    let Opening::Tls { acceptor, libp2p } = opening else {
        return serve_stream(connection, metrics).await;
    };
    let (from, limits, label) = (connection.from, connection.limits, connection.label);
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.handshake, connection.stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return,
        Err(_) => {
            debug!(%from, "connection to the TLS port sent nothing; closing");
            metrics
                .tcp_limited
                .get_or_create(&[("reason", "handshake_timeout")])
                .inc();
            return;
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        match libp2p {
            Some(libp2p) => {
                drop(admitted);
                metrics.shared_port_handovers.inc();
                let _ = libp2p.send((connection.stream, from)).await;
            }
            None => {
                debug!(%from, "connection to the TLS port does not open with TLS; closing");
                metrics.malformed.get_or_create(&label).inc();
            }
        }
        return;
    }
    let (tcp, connection) = connection.over(());
    match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_stream(connection.over(tls).1, metrics).await,
        Ok(Err(err)) => {
            debug!(%from, error = %err, "TLS handshake failed");
            metrics.tls_handshake_failures.inc();
        }
        Err(_) => {
            debug!(%from, "TLS handshake timed out");
            metrics.tls_handshake_failures.inc();
        }
    }
}

/// Reads one frame (STUN message or ChannelData) from a TURN-over-TCP stream; `None` when
/// the stream ends or breaks, or its framing is wrong (counted).
async fn read_frame(
    read: &mut (impl AsyncRead + Unpin),
    from: SocketAddr,
    label: &Label,
    metrics: &Metrics,
) -> Option<Vec<u8>> {
    match read_tcp_frame(read).await {
        Ok(frame) => Some(frame),
        Err(ReadFrameError::Closed(_)) => None,
        Err(err) => {
            debug!(%from, error = %err, "malformed TURN-over-TCP stream; closing");
            metrics.malformed.get_or_create(label).inc();
            None
        }
    }
}

/// Reads frames from `stream` into the engine's queue and writes its answers back, within
/// the handshake and idle timeouts.
async fn serve_stream<S: AsyncRead + AsyncWrite>(connection: Connection<S>, metrics: &Metrics) {
    let Connection {
        stream,
        from,
        frames,
        mut answers,
        limits,
        label,
    } = connection;
    let (mut read, mut write) = tokio::io::split(stream);
    let reader = async {
        let mut first = true;
        loop {
            let (limit, reason) = if first {
                (limits.handshake, "handshake_timeout")
            } else {
                (limits.idle, "idle_timeout")
            };
            let read = read_frame(&mut read, from, &label, metrics);
            let frame = match tokio::time::timeout(limit, read).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => {
                    debug!(%from, reason, "TURN-over-TCP connection timed out");
                    metrics
                        .tcp_limited
                        .get_or_create(&[("reason", reason)])
                        .inc();
                    return;
                }
            };
            // A connection opens with a STUN message that decodes (an Allocate, a Binding…).
            if first && decode_stun(&frame).is_none() {
                debug!(%from, "TURN-over-TCP stream does not open with STUN; closing");
                metrics.malformed.get_or_create(&label).inc();
                return;
            }
            first = false;
            if frames.send((frame, from)).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some(bytes) = answers.recv().await {
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}
