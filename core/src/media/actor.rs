//! The media actor: performs what the [engine](super::engine) decides and feeds it what
//! happened. It owns the webrtc-rs connections ([`MediaPeer`]), the TURN-over-TCP bridges,
//! the signalling and event channels, and the tasks that do the awaiting work.
//!
//! ```text
//!    runtime ──MediaInput (lossless)──▶ actor ──(peer, signal) (lossless)──▶ runtime
//!                                        │  ▲       ──MediaReport (lossy)──▶ runtime
//!             Action: spawn the work ────┘  └── Internal (lossless): its result, a state
//!             (create, offer, answer, path)      change (from the connection's forwarder)
//! ```
//!
//! Everything that awaits webrtc-rs (creating a connection, offers and answers, path
//! measurements, TURN-over-TCP bridges) runs in a task spawned by [`Actor::spawn_task`],
//! which reports its result back into the actor's loop as an [`Internal`] message naming
//! the connection it is about. Each connection has two more tasks: a forwarder (its frames
//! into the [clock](super::clock)'s lossy receive queue, its state changes into the actor)
//! and a sender (the clock's frames for it into webrtc-rs). Every task lives in the actor's
//! `JoinSet`: none outlives it.
// The async edge of the media plane: it stamps the engine's inputs with the time.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::audio::AudioError;
use super::audio::spec::{sink_from_spec, source_from_spec};
use super::clock::{
    COMMAND_CAPACITY, Clock, ClockCommand, ClockQueues, ClockReport, INBOUND_CAPACITY,
    InboundFrame, OUTBOUND_CAPACITY, OutboundFrame, REPORT_CAPACITY,
};
use super::engine::{Action, ConnId, ConnectionState, Engine, MediaPath, Signal};
use super::transport::IceServer;
use super::transport::estimate::SendEstimate;
use super::transport::peer::{MediaPeer, PeerConfig, PeerEvent, TransportError};
use super::transport::turn_tcp::{BridgeTarget, TcpTurnBridge, UrlUse, url_uses};
use super::video::sender::VideoSender;
use super::video_loop::{
    OutboundVideo, VIDEO_COMMAND_CAPACITY, VIDEO_INBOUND_CAPACITY, VIDEO_OUTBOUND_CAPACITY,
    VideoCommand, VideoInbound, VideoLoop, VideoQueues,
};
use super::{
    HEARD_REPORT_INTERVAL, INBOX_CAPACITY, MediaCommand, MediaConfig, MediaEvent, MediaInput,
    MediaReport, STATS_INTERVAL,
};

/// How often the video loop hears each path's round trip and send estimate (its encoder
/// follows the estimate: a quarter second keeps that within a feedback round or two).
const VIDEO_PATH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Capacity of the actor's internal queue (task results and state changes). Lossless:
/// tasks wait for room.
const INTERNAL_CAPACITY: usize = INBOX_CAPACITY * 4;

/// What the actor's tasks report back.
enum Internal {
    /// A connection was created (or not).
    Created {
        peer: PeerId,
        conn: ConnId,
        result: Result<(Arc<MediaPeer>, mpsc::Receiver<PeerEvent>), TransportError>,
    },
    /// A negotiation step finished: a signal to send (an offer, restart offer or answer),
    /// nothing to send (an answer was taken), or an error.
    Negotiated {
        peer: PeerId,
        conn: ConnId,
        result: Result<Option<Signal>, TransportError>,
    },
    /// A connection changed state.
    State {
        peer: PeerId,
        conn: ConnId,
        state: ConnectionState,
    },
    /// ICE found a working path for a connection.
    IceConnected { peer: PeerId, conn: ConnId },
    /// A connection's path was measured.
    Path {
        peer: PeerId,
        conn: ConnId,
        measured: Option<(MediaPath, f64)>,
    },
    /// New ICE servers, with the TURN-over-TCP/TLS bridges started for them.
    IceServers {
        servers: Vec<IceServer>,
        bridges: Vec<(BridgeTarget, TcpTurnBridge)>,
    },
}

/// One live connection, as the actor holds it.
struct Link {
    /// The member it connects to.
    member: PeerId,
    peer: Arc<MediaPeer>,
    /// The clock's frames for this connection (to its sender task).
    frames: mpsc::Sender<OutboundFrame>,
    /// The video loop's frames for this connection (to its video sender task).
    video: mpsc::Sender<OutboundVideo>,
}

/// The video loop's queues, as the actor holds them.
struct VideoLink {
    commands: mpsc::Sender<VideoCommand>,
    /// Given to each connection's forwarder (packets, keyframe requests); the actor wakes
    /// the loop through it after each command.
    inbound: std::sync::mpsc::SyncSender<VideoInbound>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Actor {
    engine: Engine,
    config: MediaConfig,
    /// Every live connection (a member has two while a direct one takes over from a
    /// relayed one: `engine::upgrade`).
    links: HashMap<ConnId, Link>,
    /// The connections our media goes out on, per member, oldest first: audio on each,
    /// video on the newest.
    routes: HashMap<PeerId, Vec<ConnId>>,
    /// The connection our video goes out on, per member (the newest routed one).
    video_routes: HashMap<PeerId, ConnId>,
    /// ICE servers from the relays, TCP TURN already rewritten to go through a bridge.
    relay_ice_servers: Vec<IceServer>,
    /// TURN-over-TCP bridges by server address.
    tcp_bridges: HashMap<BridgeTarget, TcpTurnBridge>,
    internal: mpsc::Sender<Internal>,
    clock: mpsc::Sender<ClockCommand>,
    /// Given to each connection's forwarder.
    inbound: mpsc::Sender<InboundFrame>,
    video: VideoLink,
    signals: mpsc::Sender<(PeerId, Vec<u8>)>,
    events: mpsc::Sender<MediaReport>,
    /// When each member was last reported heard ([`MediaReport::Heard`]).
    heard_reported: HashMap<PeerId, Instant>,
    /// Reports dropped because the control plane did not take them (telemetry only).
    reports_dropped: u64,
    tasks: JoinSet<()>,
}

/// Starts the media plane: the audio clock and the actor. Signalling payloads to send come
/// out of `signals`; reports out of `events`. A missing or failing sound device is not
/// fatal (listen-only, or no playback: a warning is reported).
pub fn spawn(
    local: PeerId,
    config: MediaConfig,
    signals: mpsc::Sender<(PeerId, Vec<u8>)>,
    events: mpsc::Sender<MediaReport>,
    cancel: CancellationToken,
) -> Result<mpsc::Sender<MediaInput>, AudioError> {
    let (source, source_warning) = source_from_spec(&config.audio_in)?;
    let (sink, sink_warning) = sink_from_spec(config.audio_out.as_deref())?;
    for warning in source_warning.into_iter().chain(sink_warning) {
        warn!(%warning, "audio device");
        let _ = events.try_send(MediaReport::Event(Box::new(MediaEvent::Warning(warning))));
    }
    let clock = Clock::new(source, sink, config.noise_suppression)?;
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (reports_tx, reports_rx) = mpsc::channel(REPORT_CAPACITY);
    let video = spawn_video(&config, &events, reports_tx.clone(), cancel.child_token())?;
    let clock_task = clock.spawn(
        ClockQueues {
            commands: commands_rx,
            inbound: inbound_rx,
            reports: reports_tx,
        },
        cancel.child_token(),
    );
    let (input_tx, input_rx) = mpsc::channel(INBOX_CAPACITY);
    let (internal_tx, internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
    let actor = Actor {
        engine: Engine::new(local, config.relay_only),
        config,
        links: HashMap::new(),
        routes: HashMap::new(),
        video_routes: HashMap::new(),
        relay_ice_servers: Vec::new(),
        tcp_bridges: HashMap::new(),
        internal: internal_tx,
        clock: commands_tx,
        inbound: inbound_tx,
        video,
        signals,
        events,
        heard_reported: HashMap::new(),
        reports_dropped: 0,
        tasks: JoinSet::new(),
    };
    tokio::spawn(actor.run(input_rx, internal_rx, reports_rx, clock_task, cancel));
    Ok(input_tx)
}

/// Starts the video loop: our video from `--video-in` (a source that cannot start is
/// reported as a warning, and the meeting goes on without our video), everyone's video
/// received and measured.
fn spawn_video(
    config: &MediaConfig,
    events: &mpsc::Sender<MediaReport>,
    reports: mpsc::Sender<ClockReport>,
    cancel: CancellationToken,
) -> Result<VideoLink, AudioError> {
    let sender = config.video_in.as_ref().and_then(|spec| {
        match super::video::source::open(spec)
            .map_err(|err| err.to_string())
            .and_then(|source| VideoSender::new(source).map_err(|err| err.to_string()))
        {
            Ok(sender) => Some(sender),
            Err(warning) => {
                warn!(%warning, "video source");
                let warning = format!("no video sent: {warning}");
                let _ = events.try_send(MediaReport::Event(Box::new(MediaEvent::Warning(warning))));
                None
            }
        }
    });
    let (commands_tx, commands_rx) = mpsc::channel(VIDEO_COMMAND_CAPACITY);
    let (inbound_tx, inbound_rx) = std::sync::mpsc::sync_channel(VIDEO_INBOUND_CAPACITY);
    let thread = VideoLoop::new(sender, config.video_out.clone())
        .with_display(config.display.clone())
        .spawn(
            VideoQueues {
                commands: commands_rx,
                inbound: inbound_rx,
                reports,
            },
            cancel,
        )
        .map_err(|err| AudioError::Device(format!("cannot start the video thread: {err}")))?;
    if let Some(spec) = config.share_screen {
        // The queue is new and empty: this cannot find it full.
        let _ = commands_tx.try_send(VideoCommand::Share(Some(spec)));
    }
    Ok(VideoLink {
        commands: commands_tx,
        inbound: inbound_tx,
        thread: Some(thread),
    })
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<MediaInput>,
        mut internal: mpsc::Receiver<Internal>,
        mut reports: mpsc::Receiver<ClockReport>,
        clock_task: tokio::task::JoinHandle<()>,
        cancel: CancellationToken,
    ) {
        let mut timer = tokio::time::interval(STATS_INTERVAL);
        let mut paths = tokio::time::interval(VIDEO_PATH_INTERVAL);
        paths.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                input = inputs.recv() => match input {
                    Some(MediaInput::Command(MediaCommand::Stop)) | None => break,
                    Some(input) => self.on_input(input).await,
                },
                Some(message) = internal.recv() => self.on_internal(message).await,
                Some(report) = reports.recv() => self.on_report(report),
                _ = timer.tick() => self.engine.handle_timeout(now()),
                _ = paths.tick() => self.tell_video_paths().await,
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
            self.perform().await;
        }
        self.shutdown(clock_task).await;
    }

    async fn shutdown(mut self, clock_task: tokio::task::JoinHandle<()>) {
        // The clock finishes its sink (a WAV file is completed) once its queue closes; so
        // does the video loop (its `--video-out` files).
        drop(self.clock);
        if let Err(err) = clock_task.await {
            warn!(error = %err, "the audio clock ended abnormally");
        }
        let VideoLink {
            commands,
            inbound,
            thread,
            ..
        } = self.video;
        drop(commands);
        let _ = inbound.try_send(VideoInbound::Wake);
        if let Some(thread) = thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                _ => warn!("the video loop ended abnormally"),
            }
        }
        self.tasks.abort_all();
        for (_, link) in self.links.drain() {
            let _ = link.peer.close().await;
        }
        debug!(
            reports_dropped = self.reports_dropped,
            "media reports dropped"
        );
        info!("media stopped");
    }

    async fn on_input(&mut self, input: MediaInput) {
        let now = now();
        match input {
            MediaInput::Command(MediaCommand::Epoch {
                epoch,
                secret,
                own_leaf,
                members,
                replaced,
            }) => self
                .engine
                .handle_epoch(now, epoch, secret, own_leaf, members, &replaced),
            MediaInput::Command(MediaCommand::Signal { from, payload }) => {
                self.engine.handle_signal(now, from, payload)
            }
            MediaInput::Command(MediaCommand::Reset) => self.engine.handle_reset(),
            MediaInput::Command(MediaCommand::Stop) => {}
            MediaInput::Mute(muted) => self.tell_clock(ClockCommand::Mute(muted)).await,
            MediaInput::NoiseSuppression(on) => {
                self.tell_clock(ClockCommand::NoiseSuppression(on)).await
            }
            MediaInput::Camera(on) => {
                self.engine.handle_sending(Some(on), None);
                self.tell_video(VideoCommand::Camera(on)).await;
            }
            MediaInput::IncomingVideo(on) => self.engine.handle_incoming_video(on),
            MediaInput::Share(spec) => {
                self.engine.handle_sending(None, Some(spec.is_some()));
                self.tell_video(VideoCommand::Share(spec)).await;
            }
            MediaInput::IceServers(servers) => self.start_bridges(servers),
            MediaInput::RelayLost => self.engine.handle_relay_lost(now),
        }
    }

    async fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Created { peer, conn, result } => self.on_created(peer, conn, result),
            Internal::Negotiated { peer, conn, result } => match result {
                Ok(Some(signal)) => self.engine.handle_local_signal(now(), peer, conn, signal),
                Ok(None) => {}
                Err(err) => self
                    .engine
                    .handle_failed(now(), peer, conn, err.to_string()),
            },
            Internal::State { peer, conn, state } => {
                self.engine.handle_state(now(), peer, conn, state)
            }
            Internal::IceConnected { peer, conn } => {
                self.engine.handle_ice_connected(now(), peer, conn)
            }
            Internal::Path {
                peer,
                conn,
                measured,
            } => self.engine.handle_path(now(), peer, conn, measured),
            Internal::IceServers { servers, bridges } => {
                for (target, bridge) in bridges {
                    self.tcp_bridges.entry(target).or_insert(bridge);
                }
                self.set_ice_servers(servers);
                self.engine.handle_ice_servers(now());
            }
        }
    }

    fn on_report(&mut self, report: ClockReport) {
        match report {
            ClockReport::Heard { peer, at } => {
                self.engine.handle_heard(peer, at);
                let due = self.heard_reported.get(&peer).is_none_or(|last| {
                    at.saturating_duration_since(*last) >= HEARD_REPORT_INTERVAL
                });
                if due {
                    self.heard_reported.insert(peer, at);
                    self.send_report(MediaReport::Heard(peer));
                }
            }
            ClockReport::KeyframeWanted { peer, kind } => {
                // Asked on the newest connection: the one the member sends its video on.
                let Some(link) = self.newest_link(&peer) else {
                    debug!(peer = %peer, "no connection to ask for a keyframe on");
                    return;
                };
                debug!(peer = %peer, "asking for a keyframe");
                let link = Arc::clone(&link.peer);
                self.tasks.spawn(async move {
                    if let Err(err) = link.request_keyframe(kind).await {
                        debug!(error = %err, "keyframe request not sent");
                    }
                });
            }
            ClockReport::Event(mut event) => {
                if let MediaEvent::Stats(stats) = &mut event {
                    stats.rtt_ms = self.engine.rtt_ms(&stats.peer_id);
                    let estimate = self
                        .routed_link(&stats.peer_id)
                        .and_then(|link| link.peer.send_estimate());
                    stats.send_estimate_kbps = estimate.map(|e| (e.bps / 1000.0).round() as u32);
                    stats.send_loss = estimate.map(|e| e.loss);
                }
                self.report(event);
            }
        }
    }

    /// Performs the engine's actions until it has none left.
    async fn perform(&mut self) {
        while let Some(action) = self.engine.poll_action() {
            self.act(action).await;
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Connect {
                peer,
                conn,
                direct_only,
            } => self.connect(peer, conn, direct_only),
            Action::Close { peer, conn } => self.close(peer, conn).await,
            Action::CreateOffer { peer, conn } => self.negotiate(peer, conn, |link| async move {
                link.create_offer()
                    .await
                    .map(|sdp| Some(Signal::Offer(sdp)))
            }),
            Action::RestartIce { peer, conn } => {
                let config = self.peer_config();
                self.negotiate(peer, conn, |link| async move {
                    let sdp = link.create_restart_offer(&config).await?;
                    Ok(Some(Signal::Restart(sdp)))
                })
            }
            Action::AcceptOffer {
                peer,
                conn,
                sdp,
                digest,
                restart,
            } => self.accept_offer(peer, conn, sdp, digest, restart),
            Action::AcceptAnswer {
                peer,
                conn,
                sdp,
                hold_back,
            } => self.negotiate(peer, conn, |link| async move {
                link.accept_answer(sdp, hold_back).await.map(|()| None)
            }),
            Action::ReleaseCandidates { peer, conn } => {
                let Some(link) = self.live_link(&peer, conn) else {
                    return;
                };
                let link = Arc::clone(&link.peer);
                self.tasks.spawn(async move { link.release_held().await });
            }
            Action::Signal { to, payload } => {
                if self.signals.send((to, payload)).await.is_err() {
                    debug!("signalling channel closed");
                }
            }
            Action::MeasurePath { peer, conn } => self.measure_path(peer, conn),
            Action::SendAudio { peer, conn, on } => {
                if self.live_link(&peer, conn).is_none() {
                    return;
                }
                let routed = self.routes.entry(peer).or_default();
                routed.retain(|c| *c != conn);
                if on {
                    routed.push(conn);
                }
                self.tell_routes(peer).await;
            }
            Action::Keys {
                epoch,
                secret,
                own_leaf,
                members,
            } => {
                let video_keys = VideoCommand::Keys {
                    epoch,
                    secret: secret.clone(),
                    own_leaf,
                    members: members.clone(),
                };
                let keys = ClockCommand::Keys {
                    epoch,
                    secret,
                    own_leaf,
                    members,
                };
                self.tell_clock(keys).await;
                self.tell_video(video_keys).await;
            }
            Action::ForgetAudio { peer } => {
                self.tell_clock(ClockCommand::Forget(peer)).await;
                self.tell_video(VideoCommand::Forget(peer)).await;
            }
            Action::ResetAudio => {
                self.tell_clock(ClockCommand::Reset).await;
                self.tell_video(VideoCommand::Reset).await;
            }
            Action::Report(event) => self.report(event),
            Action::PeerSending {
                peer,
                camera,
                screen,
            } => {
                debug!(peer = %peer, camera, screen, "member's videos");
                self.tell_video(VideoCommand::PeerSending {
                    peer,
                    camera,
                    screen,
                })
                .await;
            }
            Action::VideoWanted { peer, wanted } => {
                info!(peer = %peer, wanted, "member's wish for our video");
                self.tell_video(VideoCommand::Wanted { peer, wanted }).await;
            }
        }
    }

    /// Tells the clock and the video loop which connections our media for `peer` goes out
    /// on now: audio on every routed one, video on the newest.
    async fn tell_routes(&mut self, peer: PeerId) {
        let routed: Vec<&Link> = self
            .routes
            .get(&peer)
            .into_iter()
            .flatten()
            .filter_map(|conn| self.links.get(conn))
            .collect();
        let frames: Vec<mpsc::Sender<OutboundFrame>> =
            routed.iter().map(|link| link.frames.clone()).collect();
        let video = routed.last().map(|link| link.video.clone());
        let video_conn = self
            .routes
            .get(&peer)
            .and_then(|routed| routed.last())
            .copied();
        if frames.is_empty() {
            self.routes.remove(&peer);
        }
        self.tell_clock(ClockCommand::Route { peer, frames }).await;
        // The video moves (and starts with a keyframe) only when its connection changes.
        if self.video_routes.get(&peer).copied() != video_conn {
            match video_conn {
                Some(conn) => self.video_routes.insert(peer, conn),
                None => self.video_routes.remove(&peer),
            };
            self.tell_video(VideoCommand::Route {
                peer,
                frames: video,
            })
            .await;
        }
    }

    /// The connection our video for `peer` goes out on (the newest routed one).
    fn routed_link(&self, peer: &PeerId) -> Option<&Link> {
        let conn = self.routes.get(peer)?.last()?;
        self.links.get(conn)
    }

    /// The newest connection to `peer`.
    fn newest_link(&self, peer: &PeerId) -> Option<&Link> {
        self.links
            .iter()
            .filter(|(_, link)| link.member == *peer)
            .max_by_key(|(conn, _)| **conn)
            .map(|(_, link)| link)
    }

    /// Tells the clock (lossless: waits at most one tick for room).
    async fn tell_clock(&mut self, command: ClockCommand) {
        if self.clock.send(command).await.is_err() {
            debug!("the audio clock has stopped");
        }
    }

    /// Tells the video loop the round-trip time to each connected member (how long its
    /// frames may wait for a retransmission) and how fast we may send to it (what our
    /// encoder aims at).
    async fn tell_video_paths(&mut self) {
        type Path = (PeerId, Option<f64>, Option<SendEstimate>);
        let paths: Vec<Path> = self
            .routes
            .keys()
            .filter_map(|peer| {
                let link = self.routed_link(peer)?;
                let rtt_ms = self
                    .engine
                    .rtt_ms(peer)
                    .filter(|ms| ms.is_finite() && *ms > 0.0);
                Some((*peer, rtt_ms, link.peer.send_estimate()))
            })
            .collect();
        for (peer, rtt_ms, send) in paths {
            let rtt = rtt_ms.map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0));
            if rtt.is_some() || send.is_some() {
                self.tell_video(VideoCommand::Path { peer, rtt, send })
                    .await;
            }
        }
    }

    /// Tells the video loop (lossless: waits for room), and wakes it.
    async fn tell_video(&mut self, command: VideoCommand) {
        if self.video.commands.send(command).await.is_err() {
            debug!("the video loop has stopped");
            return;
        }
        // A full inbox wakes the loop anyway.
        let _ = self.video.inbound.try_send(VideoInbound::Wake);
    }

    /// The one way awaiting work is done: spawned, its result reported back into the loop.
    fn spawn_task<F>(&mut self, work: F)
    where
        F: Future<Output = Internal> + Send + 'static,
    {
        let internal = self.internal.clone();
        self.tasks.spawn(async move {
            let message = work.await;
            let _ = internal.send(message).await;
        });
    }

    /// The link of `peer` if it is still connection `conn` (a step for a replaced or closed
    /// connection is dropped).
    fn live_link(&self, peer: &PeerId, conn: ConnId) -> Option<&Link> {
        self.links.get(&conn).filter(|link| link.member == *peer)
    }

    /// A negotiation step on the live connection `conn`, its result reported back.
    fn negotiate<F, Fut>(&mut self, peer: PeerId, conn: ConnId, step: F)
    where
        F: FnOnce(Arc<MediaPeer>) -> Fut,
        Fut: Future<Output = Result<Option<Signal>, TransportError>> + Send + 'static,
    {
        let Some(link) = self.live_link(&peer, conn) else {
            debug!(peer = %peer, %conn, "negotiation on a connection that is gone skipped");
            return;
        };
        let work = step(Arc::clone(&link.peer));
        self.spawn_task(async move {
            let result = work.await;
            Internal::Negotiated { peer, conn, result }
        });
    }

    /// Takes an offer (a first one, or an ICE restart on the existing connection, which
    /// takes the current ICE servers first) and reports the answer.
    fn accept_offer(
        &mut self,
        peer: PeerId,
        conn: ConnId,
        sdp: String,
        digest: u64,
        restart: bool,
    ) {
        let config = restart.then(|| self.peer_config());
        self.negotiate(peer, conn, |link| async move {
            if let Some(config) = config
                && let Err(err) = link.update_ice_servers(&config).await
            {
                debug!(peer = %peer, error = %err, "ICE servers not updated");
            }
            let answer = link.accept_offer(sdp).await?;
            Ok(Some(Signal::Answer {
                sdp: answer,
                offer: digest,
                took_ms: 0,
            }))
        });
    }

    fn measure_path(&mut self, peer: PeerId, conn: ConnId) {
        let Some(link) = self.live_link(&peer, conn) else {
            return;
        };
        let link = Arc::clone(&link.peer);
        self.spawn_task(async move {
            let measured = link.path(now()).await;
            Internal::Path {
                peer,
                conn,
                measured,
            }
        });
    }

    /// How new connections and ICE restarts are configured now.
    fn peer_config(&self) -> PeerConfig {
        let mut ice_servers = self.config.ice_servers.clone();
        ice_servers.extend(self.relay_ice_servers.iter().cloned());
        PeerConfig {
            udp_addrs: self.config.udp_addrs.clone(),
            ice_servers,
            relay_only: self.config.relay_only,
        }
    }

    /// Creates connection `conn` to `peer`; one looking for a direct path beside a
    /// relayed one (`direct_only`) gets the STUN servers only, so it gathers no relayed
    /// candidate.
    fn connect(&mut self, peer: PeerId, conn: ConnId, direct_only: bool) {
        let mut config = self.peer_config();
        if direct_only {
            config.ice_servers = stun_only(config.ice_servers);
        }
        self.spawn_task(async move {
            let result = MediaPeer::new(now(), &config)
                .await
                .map(|(link, events)| (Arc::new(link), events));
            Internal::Created { peer, conn, result }
        });
    }

    /// A connection exists: kept (with its forwarder and sender tasks) if the engine still
    /// wants it, closed otherwise.
    fn on_created(
        &mut self,
        peer: PeerId,
        conn: ConnId,
        result: Result<(Arc<MediaPeer>, mpsc::Receiver<PeerEvent>), TransportError>,
    ) {
        let (link, events) = match result {
            Ok(created) => created,
            Err(err) => {
                self.engine.handle_created(peer, conn, Err(err.to_string()));
                return;
            }
        };
        if !self.engine.handle_created(peer, conn, Ok(())) {
            self.tasks.spawn(async move {
                let _ = link.close().await;
            });
            return;
        }
        let (frames_tx, frames_rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let (video_tx, video_rx) = mpsc::channel(VIDEO_OUTBOUND_CAPACITY);
        self.tasks.spawn(forward(
            peer,
            conn,
            events,
            self.internal.clone(),
            Inbound {
                audio: self.inbound.clone(),
                video: self.video.inbound.clone(),
            },
        ));
        self.tasks.spawn(send_frames(Arc::clone(&link), frames_rx));
        self.tasks
            .spawn(send_video_frames(Arc::clone(&link), video_rx));
        self.links.insert(
            conn,
            Link {
                member: peer,
                peer: link,
                frames: frames_tx,
                video: video_tx,
            },
        );
    }

    async fn close(&mut self, peer: PeerId, conn: ConnId) {
        let Some(link) = self.live_link(&peer, conn) else {
            return;
        };
        let link = Arc::clone(&link.peer);
        self.links.remove(&conn);
        if !self.links.values().any(|other| other.member == peer) {
            self.heard_reported.remove(&peer);
        }
        let routed = self.routes.get_mut(&peer).is_some_and(|routed| {
            let before = routed.len();
            routed.retain(|c| *c != conn);
            routed.len() != before
        });
        if routed {
            self.tell_routes(peer).await;
        }
        self.tasks.spawn(async move {
            let _ = link.close().await;
        });
    }

    /// Takes fresh ICE servers from the relays. TURN over TCP and TLS goes through local
    /// bridges (webrtc-rs allocates over UDP only; see [`TcpTurnBridge`]): missing bridges
    /// are started in a task, and the servers are taken once they run.
    fn start_bridges(&mut self, servers: Vec<IceServer>) {
        let mut missing: Vec<BridgeTarget> = servers
            .iter()
            .flat_map(|server| url_uses(&server.urls, server.tls_pin))
            .filter_map(|url_use| match url_use {
                UrlUse::Bridge(target) => Some(target),
                UrlUse::AsIs | UrlUse::Skip(_) => None,
            })
            .filter(|target| !self.tcp_bridges.contains_key(target))
            .collect();
        missing.dedup();
        self.spawn_task(async move {
            let mut bridges: Vec<(BridgeTarget, TcpTurnBridge)> = Vec::new();
            for target in missing {
                if bridges.iter().any(|(t, _)| *t == target) {
                    continue;
                }
                match TcpTurnBridge::start(target.clone()).await {
                    Ok(bridge) => bridges.push((target, bridge)),
                    Err(err) => warn!(
                        server = %target.server,
                        tls = target.tls.is_some(),
                        error = %err,
                        "cannot start the TURN-over-TCP/TLS bridge"
                    ),
                }
            }
            Internal::IceServers { servers, bridges }
        });
    }

    /// Keeps the usable servers, TURN over TCP and TLS rewritten to their bridges.
    fn set_ice_servers(&mut self, servers: Vec<IceServer>) {
        let mut usable = Vec::new();
        for server in servers {
            let mut urls = Vec::new();
            for (url, url_use) in server
                .urls
                .iter()
                .zip(url_uses(&server.urls, server.tls_pin))
            {
                match url_use {
                    UrlUse::AsIs => urls.push(url.clone()),
                    UrlUse::Bridge(target) => match self.tcp_bridges.get(&target) {
                        Some(bridge) => {
                            urls.push(format!("turn:{}?transport=udp", bridge.local_addr()));
                        }
                        None => debug!(%url, "no TURN-over-TCP/TLS bridge; skipped"),
                    },
                    UrlUse::Skip(reason @ "TURN over TCP or TLS needs a host and a port") => {
                        warn!(%url, reason, "ICE server URL skipped");
                    }
                    UrlUse::Skip(reason) => debug!(%url, reason, "ICE server URL skipped"),
                }
            }
            if !urls.is_empty() {
                usable.push(IceServer { urls, ..server });
            }
        }
        debug!(servers = usable.len(), "ICE servers updated");
        self.relay_ice_servers = usable;
    }

    /// Reports to the control plane without ever waiting: the driver drains these at once
    /// into its own outbox, so a full channel means it is stuck; the report is then dropped
    /// and counted.
    fn report(&mut self, event: MediaEvent) {
        self.send_report(MediaReport::Event(Box::new(event)));
    }

    fn send_report(&mut self, report: MediaReport) {
        if let Err(err) = self.events.try_send(report) {
            self.reports_dropped += 1;
            debug!(dropped = self.reports_dropped, error = %err, "media report dropped");
        }
    }
}

/// `servers` without their TURN URLs (and without the servers left with none): a
/// connection configured with these gathers host and server-reflexive candidates only.
fn stun_only(servers: Vec<IceServer>) -> Vec<IceServer> {
    servers
        .into_iter()
        .filter_map(|mut server| {
            server.urls.retain(|url| url.starts_with("stun:"));
            (!server.urls.is_empty()).then_some(IceServer {
                username: String::new(),
                credential: String::new(),
                ..server
            })
        })
        .collect()
}

/// Where a connection's forwarder puts what arrives.
struct Inbound {
    /// The audio clock's queue.
    audio: mpsc::Sender<InboundFrame>,
    /// The video loop's inbox.
    video: std::sync::mpsc::SyncSender<VideoInbound>,
}

/// A connection's forwarder: audio frames and video packets (stamped with their arrival
/// time) into the clock's and the video loop's lossy queues, state changes into the actor
/// (lossless). Ends with the connection.
async fn forward(
    peer: PeerId,
    conn: ConnId,
    mut events: mpsc::Receiver<PeerEvent>,
    internal: mpsc::Sender<Internal>,
    inbound: Inbound,
) {
    let mut dropped = 0u64;
    let mut video_dropped = 0u64;
    while let Some(event) = events.recv().await {
        match event {
            PeerEvent::State(state) => {
                let message = Internal::State { peer, conn, state };
                if internal.send(message).await.is_err() {
                    break;
                }
            }
            PeerEvent::IceConnected => {
                let message = Internal::IceConnected { peer, conn };
                if internal.send(message).await.is_err() {
                    break;
                }
            }
            // The frame's place in its sender's stream is its SFrame counter (the jitter
            // buffer's), not the connection's RTP numbering.
            PeerEvent::Frame { payload, .. } => {
                let frame = InboundFrame {
                    peer,
                    at: now(),
                    payload,
                };
                if inbound.audio.try_send(frame).is_err() {
                    dropped += 1;
                    debug!(peer = %peer, dropped, "receive queue full; frame dropped");
                }
            }
            PeerEvent::VideoPacket {
                seq,
                timestamp,
                marker,
                payload,
                kind,
                ..
            } => {
                let packet = VideoInbound::Packet {
                    peer,
                    conn: conn.0,
                    kind,
                    at: now(),
                    seq,
                    timestamp,
                    marker,
                    payload,
                };
                if inbound.video.try_send(packet).is_err() {
                    video_dropped += 1;
                    debug!(peer = %peer, video_dropped, "video inbox full; packet dropped");
                }
            }
            PeerEvent::KeyframeRequested(kind) => {
                let _ = inbound
                    .video
                    .try_send(VideoInbound::KeyframeRequested(peer, kind));
            }
        }
    }
}

/// A connection's sender: the clock's frames for it into webrtc-rs. Ends when the clock
/// drops the route and the actor drops the link.
async fn send_frames(link: Arc<MediaPeer>, mut frames: mpsc::Receiver<OutboundFrame>) {
    while let Some(frame) = frames.recv().await {
        if let Err(err) = link.send(frame.at, frame.sealed).await {
            debug!(error = %err, "frame not sent");
        }
    }
}

/// A connection's video sender: the video loop's frames for it into webrtc-rs. Ends when
/// the loop drops the route and the actor drops the link.
async fn send_video_frames(link: Arc<MediaPeer>, mut frames: mpsc::Receiver<OutboundVideo>) {
    while let Some(frame) = frames.recv().await {
        if let Err(err) = link
            .send_video(
                frame.kind,
                frame.at,
                frame.sealed,
                frame.duration,
                frame.info,
            )
            .await
        {
            debug!(error = %err, "video frame not sent");
        }
    }
}
