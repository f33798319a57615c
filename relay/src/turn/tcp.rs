//! TURN over TCP (RFC 6062 framing) and over TLS: accepting connections within the limits
//! (total, per address), the TLS handshake, reading frames with the handshake and idle
//! timeouts, and queueing the engine's answers back to each connection. All connections of
//! a listener feed one engine listener ([`TcpMux`](super::listener::TcpMux)).
//!
//! The TLS listener may share its port with libp2p ([`Opening::Tls`]): a connection whose
//! first byte is a TLS handshake record (0x16) is TURN over TLS; any other (libp2p opens
//! with multistream-select's header, whose first byte is its length, 0x13) is handed to
//! the libp2p node ([`conclave_core::net::handover`]). Until its first byte a connection
//! holds a place among the *unopened* (the TCP limits, counted apart), and only a TLS one
//! then takes a place in the TURN table: TURN connections cannot lock libp2p out of the
//! port. A hand-over never waits: if the node's queue is full the connection is closed
//! (`turn_tcp_limited_total{reason="libp2p_busy"}`).

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

/// Which limit, if any, a new connection from `ip` reaches when `total` connections are
/// held, `per_ip` of them by address: the first of `reasons` for the total, the second for
/// the address.
fn limit_reached(
    (total, per_ip): (usize, &HashMap<IpAddr, usize>),
    ip: IpAddr,
    limits: TcpLimits,
    [total_reason, per_ip_reason]: [&'static str; 2],
) -> Option<&'static str> {
    if total >= limits.max {
        Some(total_reason)
    } else if per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip {
        Some(per_ip_reason)
    } else {
        None
    }
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
        let held = (table.writers.len(), &table.per_ip);
        if let Some(reason) = limit_reached(held, from.ip(), limits, ["total", "per_ip"]) {
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

/// Connections on the TLS port whose first byte has not come yet, counted apart from the
/// TURN table: TURN connections cannot lock libp2p out of a shared port, and silent ones
/// hold a place only until `tcp_handshake_timeout`.
#[derive(Debug, Default)]
struct Unopened {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection's place among the [`Unopened`]; dropping it gives the place back.
struct UnopenedPlace {
    table: Arc<Mutex<Unopened>>,
    ip: IpAddr,
}

impl UnopenedPlace {
    /// A place for a new connection from `ip` under `limits` (the TCP limits); `None`
    /// (counted) when full.
    fn take(
        table: &Arc<Mutex<Unopened>>,
        ip: IpAddr,
        limits: TcpLimits,
        metrics: &Metrics,
    ) -> Option<Self> {
        let mut unopened = table.lock().ok()?;
        let held = (unopened.total, &unopened.per_ip);
        let reasons = ["unopened_total", "unopened_per_ip"];
        if let Some(reason) = limit_reached(held, ip, limits, reasons) {
            debug!(%ip, reason, "connection to the TLS port refused by a limit");
            metrics
                .tcp_limited
                .get_or_create(&[("reason", reason)])
                .inc();
            return None;
        }
        unopened.total += 1;
        *unopened.per_ip.entry(ip).or_default() += 1;
        Some(Self {
            table: Arc::clone(table),
            ip,
        })
    }
}

impl Drop for UnopenedPlace {
    fn drop(&mut self) {
        if let Ok(mut unopened) = self.table.lock() {
            unopened.total = unopened.total.saturating_sub(1);
            if let Some(count) = unopened.per_ip.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    unopened.per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// A TCP listener's engine side: where frames go, the connection table, the gate (limits,
/// counters), the listener's metrics label, how its connections open and (for TLS) the
/// connections not yet opened.
struct Accepting {
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    gate: Arc<Gate>,
    label: Label,
    opening: Opening,
    unopened: Arc<Mutex<Unopened>>,
}

impl Accepting {
    /// `stream` as a TURN connection: its place in the table (`None`, counted, when a limit
    /// is reached) and what serving it needs.
    fn admit<S>(
        &self,
        stream: S,
        from: SocketAddr,
        limits: TcpLimits,
    ) -> Option<(Admitted, Connection<S>)> {
        let (tx, answers) = mpsc::channel(TCP_QUEUE);
        let admitted = Admitted::take(self, from, tx, limits)?;
        let connection = Connection {
            stream,
            from,
            frames: self.frames.clone(),
            answers,
            limits,
            label: self.label,
        };
        Some((admitted, connection))
    }
}

async fn accept_tcp(listener: TcpListener, accepting: Accepting, cancel: CancellationToken) {
    let accepting = Arc::new(accepting);
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
        let _ = stream.set_nodelay(true);
        // Refused: dropping the stream closes it.
        let work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
            match &accepting.opening {
                Opening::Plain => {
                    let Some((admitted, connection)) = accepting.admit(stream, from, limits) else {
                        continue;
                    };
                    let accepting = Arc::clone(&accepting);
                    Box::pin(async move {
                        serve_stream(connection, &accepting.gate.metrics).await;
                        drop(admitted);
                    })
                }
                Opening::Tls { .. } => {
                    let metrics = &accepting.gate.metrics;
                    let Some(place) =
                        UnopenedPlace::take(&accepting.unopened, from.ip(), limits, metrics)
                    else {
                        continue;
                    };
                    Box::pin(open_tls(stream, from, Arc::clone(&accepting), place))
                }
            };
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
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
        unopened: Arc::default(),
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

/// Opens a connection to the TLS port: waits for its first byte (holding `place` among the
/// unopened meanwhile), hands a libp2p connection to the node, and for TLS takes a place in
/// the TURN table, runs the handshake and serves TURN.
async fn open_tls(
    stream: TcpStream,
    from: SocketAddr,
    accepting: Arc<Accepting>,
    place: UnopenedPlace,
) {
    let Opening::Tls { acceptor, libp2p } = &accepting.opening else {
        return;
    };
    let metrics = &accepting.gate.metrics;
    let limits = accepting.gate.live().tcp;
    let mut first = [0u8; 1];
    match tokio::time::timeout(limits.handshake, stream.peek(&mut first)).await {
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
    drop(place);
    if first[0] != TLS_HANDSHAKE_RECORD {
        match libp2p {
            // Never waits: a node that does not take connections must not pile them up here.
            Some(libp2p) => match libp2p.try_send((stream, from)) {
                Ok(()) => {
                    metrics.shared_port_handovers.inc();
                }
                Err(_) => {
                    debug!(%from, "the libp2p node takes no more connections; closing");
                    metrics
                        .tcp_limited
                        .get_or_create(&[("reason", "libp2p_busy")])
                        .inc();
                }
            },
            None => {
                debug!(%from, "connection to the TLS port does not open with TLS; closing");
                metrics.malformed.get_or_create(&accepting.label).inc();
            }
        }
        return;
    }
    let Some((admitted, connection)) = accepting.admit((), from, limits) else {
        return;
    };
    match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
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
    drop(admitted);
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
