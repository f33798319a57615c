//! TURN over TCP (RFC 6062 framing): accepting connections within the limits (total, per
//! address), reading frames with the handshake and idle timeouts, and queueing the engine's
//! answers back to each connection. All connections feed one engine listener
//! ([`TcpMux`](super::listener::TcpMux)).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::metrics::Metrics;

use super::gate::{Gate, Pending, TcpLimits};
use super::{ReadFrameError, TCP, TCP_QUEUE, TcpMux, decode_stun, read_tcp_frame};

/// Open TURN-over-TCP connections: the engine's answer queues by client address, and how
/// many come from each IP.
#[derive(Debug, Default)]
pub(super) struct TcpTable {
    pub(super) writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    pub(super) per_ip: HashMap<IpAddr, usize>,
}

pub(super) type Writers = Arc<Mutex<TcpTable>>;

pub(super) async fn accept_tcp(
    listener: TcpListener,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    writers: Writers,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let metrics = Arc::clone(&gate.metrics);
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
        let limits = gate.live().tcp;
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        {
            let Ok(mut table) = writers.lock() else { break };
            let from_ip = table.per_ip.get(&from.ip()).copied().unwrap_or(0);
            let refused = if table.writers.len() >= limits.max {
                Some("total")
            } else if from_ip >= limits.per_ip {
                Some("per_ip")
            } else {
                None
            };
            if let Some(reason) = refused {
                // Dropping the stream closes it. Logged at debug: a flood would flood the log.
                debug!(%from, reason, "TURN-over-TCP connection refused by a limit");
                metrics
                    .tcp_limited
                    .get_or_create(&[("reason", reason)])
                    .inc();
                continue;
            }
            table.writers.insert(from, tx);
            *table.per_ip.entry(from.ip()).or_default() += 1;
        }
        metrics.tcp_connections.inc();
        let _ = stream.set_nodelay(true);
        let (frames, writers, metrics, cancel) = (
            frames.clone(),
            Arc::clone(&writers),
            Arc::clone(&metrics),
            cancel.clone(),
        );
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve_tcp(stream, from, frames, rx, limits, &metrics) => {}
            }
            if let Ok(mut table) = writers.lock() {
                table.writers.remove(&from);
                if let Some(count) = table.per_ip.get_mut(&from.ip()) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        table.per_ip.remove(&from.ip());
                    }
                }
            }
            metrics.tcp_connections.dec();
            debug!(%from, "TURN-over-TCP connection closed");
        });
    }
}

/// Starts accepting TURN-over-TCP connections on `listener` (until `cancel`); returns the
/// engine listener they are multiplexed into, which reports `local` as its address.
pub(super) fn serve_tcp_listener(
    listener: TcpListener,
    local: SocketAddr,
    gate: &Arc<Gate>,
    pending: &Pending,
    cancel: &CancellationToken,
) -> TcpMux {
    let (frames_tx, frames_rx) = mpsc::channel(TCP_QUEUE);
    let writers = Writers::default();
    tokio::spawn(accept_tcp(
        listener,
        frames_tx,
        Arc::clone(&writers),
        Arc::clone(gate),
        cancel.clone(),
    ));
    TcpMux {
        local,
        frames: tokio::sync::Mutex::new(frames_rx),
        writers,
        gate: Arc::clone(gate),
        pending: Arc::clone(pending),
    }
}

/// Reads one frame (STUN message or ChannelData) from a TURN-over-TCP stream; `None` when
/// the stream ends or breaks, or its framing is wrong (counted).
pub(super) async fn read_frame(
    read: &mut tokio::net::tcp::OwnedReadHalf,
    from: SocketAddr,
    metrics: &Metrics,
) -> Option<Vec<u8>> {
    match read_tcp_frame(read).await {
        Ok(frame) => Some(frame),
        Err(ReadFrameError::Closed(_)) => None,
        Err(err) => {
            debug!(%from, error = %err, "malformed TURN-over-TCP stream; closing");
            metrics.malformed.get_or_create(&TCP).inc();
            None
        }
    }
}

pub(super) async fn serve_tcp(
    stream: TcpStream,
    from: SocketAddr,
    frames: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    mut answers: mpsc::Receiver<Vec<u8>>,
    limits: TcpLimits,
    metrics: &Metrics,
) {
    let (mut read, mut write) = stream.into_split();
    let reader = async {
        let mut first = true;
        loop {
            let (limit, reason) = if first {
                (limits.handshake, "handshake_timeout")
            } else {
                (limits.idle, "idle_timeout")
            };
            let frame =
                match tokio::time::timeout(limit, read_frame(&mut read, from, metrics)).await {
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
                metrics.malformed.get_or_create(&TCP).inc();
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
