//! The bridge between the iced runtime and the core [`Client`]: a long-running subscription
//! that owns the client and its event stream.
//!
//! ```text
//! update ──Request (bounded 64)──▶ bridge task ──Client API──▶ conclave-core
//!   ▲                                  │
//!   └──────── Event (bounded 100) ◀────┴── Events::next(), request outcomes
//! ```
//!
//! The first item the bridge emits is [`Event::Ready`] with a [`Handle`]; `update` keeps it
//! and sends [`Request`]s through it, so the UI never touches a socket or the disk. Every
//! request that can take time (create, join, leave, disk work) runs in its own task and
//! reports back as an [`Event`]. The core's events are forwarded by a task of their own
//! (one per running client): when the UI is slow to take them, only that task waits (and
//! the core reports `Lagged` if it falls too far behind), never the requests.

use std::path::PathBuf;
use std::time::Duration;

use conclave_core::{ChatRecord, Client, Config, Invite, MeetingId, PeerId};
use iced::futures::channel::mpsc;
use iced::futures::{SinkExt, Stream, StreamExt};
use tracing::{debug, info, warn};

/// Capacity of the request channel (UI → bridge).
const REQUEST_CAPACITY: usize = 64;
/// Capacity of the event channel (bridge → UI).
const EVENT_CAPACITY: usize = 100;
/// How long a restart waits for the previous client to release the data directory.
const RESTART_PATIENCE: Duration = Duration::from_secs(5);

/// What the UI asks of the core.
#[derive(Debug)]
pub(crate) enum Request {
    /// Start (or restart, e.g. after a name change) the client with this configuration.
    Start(Box<Config>),
    /// Create a meeting.
    Create { lobby: bool },
    /// Join the meeting of an invite.
    Join(Box<Invite>),
    /// Leave the meeting (also cancels a join in progress).
    Leave,
    /// Send a chat line.
    Chat(String),
    /// Send our failed chat line again.
    ResendChat(u64),
    /// Mute or unmute our audio.
    Mute(bool),
    /// Share our screen (the primary monitor), or stop sharing it.
    Share(bool),
    /// Turn our camera on or off.
    Camera(bool),
    /// Receive the others' video, or not.
    IncomingVideo(bool),
    /// Noise suppression of our microphone on or off.
    NoiseSuppression(bool),
    /// Remove a member (host).
    Kick(PeerId),
    /// Let a joiner in (host).
    Approve(PeerId),
    /// Mark a member verified, or clear the mark.
    SetVerified(PeerId, bool),
    /// Load the list of recent meetings.
    Recent,
    /// Load a meeting's chat history.
    History(MeetingId),
    /// Read the roster and the chat history again (we lagged behind the core's events).
    Resync(MeetingId),
    /// Write an encrypted identity backup to a file.
    Export { path: PathBuf, passphrase: String },
    /// Restore the identity from a backup file (the client restarts with it).
    Import { path: PathBuf, passphrase: String },
    /// Delete a meeting's chat history and invite for good (the client stops while the
    /// store is rewritten without them, then starts again).
    Forget(MeetingId),
}

/// A value that must never reach a log line (an invite holds the meeting secret): its
/// `Debug` prints `Redacted(..)`.
#[derive(Clone, PartialEq, Eq, Default)]
pub(crate) struct Redacted<T>(pub(crate) T);

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redacted(..)")
    }
}

/// A meeting remembered in the store, as the home screen lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recent {
    /// The meeting.
    pub(crate) meeting_id: MeetingId,
    /// Its invite (to rejoin).
    pub(crate) invite: Redacted<String>,
    /// When we were last in it (ms since the Unix epoch).
    pub(crate) last_seen_unix_ms: u64,
}

/// Who we are, once the client runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Me {
    pub(crate) peer_id: PeerId,
    pub(crate) safety_number: String,
    pub(crate) name: String,
}

/// What the bridge reports to `update`.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// The bridge runs; send requests through this handle.
    Ready(Handle),
    /// The client started.
    Started {
        me: Me,
        verified: Vec<PeerId>,
        recent: Vec<Recent>,
    },
    /// The client could not start (one sentence).
    StartFailed(String),
    /// Something the core reported.
    Core(conclave_core::Event),
    /// We created a meeting; this is its invite.
    Created(Redacted<String>),
    /// A request failed; `what` names it for the user.
    Failed { what: &'static str, message: String },
    /// The recent meetings.
    Recent(Vec<Recent>),
    /// A meeting's stored chat history.
    History(MeetingId, Vec<ChatRecord>),
    /// The roster and the whole stored chat of a meeting, read again after a lag.
    Resynced {
        meeting: MeetingId,
        members: Vec<(PeerId, String)>,
        chat: Vec<ChatRecord>,
    },
    /// The verified contacts changed.
    Verified(Vec<PeerId>),
    /// A leave finished: the members acknowledged our goodbye (or the core stopped
    /// waiting for them).
    LeaveDone,
    /// The identity backup was written.
    Exported(PathBuf),
    /// The identity was restored; the client restarts with it.
    Imported(PeerId),
    /// A meeting's history and invite were deleted; the client restarts.
    Forgotten(MeetingId),
    /// The core's event stream ended (the client stopped).
    Stopped,
}

/// The UI's end of the bridge: a bounded sender of [`Request`]s.
#[derive(Debug, Clone)]
pub(crate) struct Handle(mpsc::Sender<Request>);

impl Handle {
    /// Queues a request without waiting; returns `false` when the bridge is gone or full
    /// (the caller shows it).
    pub(crate) fn send(&mut self, request: Request) -> bool {
        match self.0.try_send(request) {
            Ok(()) => true,
            Err(err) => {
                warn!(full = err.is_full(), "request to the core not queued");
                false
            }
        }
    }
}

/// The subscription's stream: see the module docs.
pub(crate) fn connect() -> impl Stream<Item = Event> {
    iced::stream::channel(EVENT_CAPACITY, async |mut output| {
        let (tx, mut requests) = mpsc::channel(REQUEST_CAPACITY);
        if output.send(Event::Ready(Handle(tx))).await.is_err() {
            return;
        }
        let mut core = Core::default();
        // Requests only: the core's events reach the UI through the forwarder of the
        // running client, so a UI slow to take them never holds a request up.
        while let Some(request) = requests.next().await {
            match request {
                Request::Start(config) => {
                    core.stop();
                    core.last_config = Some((*config).clone());
                    core.start(*config, &mut output).await;
                }
                Request::Import { path, passphrase } => {
                    core.restore(&path, passphrase, &mut output).await;
                }
                Request::Forget(meeting) => core.forget(meeting, &mut output).await,
                other => match core.running() {
                    Some(running) => {
                        tokio::spawn(perform(running, other, output.clone()));
                    }
                    None => {
                        let _ = output.send(not_running(describe(&other))).await;
                    }
                },
            }
        }
        core.stop();
        debug!("bridge stopped");
    })
}

/// The client the bridge runs, the task forwarding its events, and the configuration it
/// was started with.
#[derive(Default)]
struct Core {
    client: Option<Client>,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    last_config: Option<Config>,
}

impl Core {
    /// Stops the client, if one runs, and the forwarding of its events: the forwarder
    /// first, so that it never reports the end of a client stopped on purpose.
    fn stop(&mut self) {
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
        }
        if let Some(old) = self.client.take() {
            old.shutdown();
        }
    }

    /// The running client, unless it stopped.
    fn running(&self) -> Option<Client> {
        self.client.clone().filter(|client| !client.is_closed())
    }

    /// Starts a client on `config`, tells the UI how that went, and forwards its events.
    async fn start(&mut self, config: Config, output: &mut mpsc::Sender<Event>) {
        let (client, events) = start_and_report(config, output).await;
        self.client = client;
        self.forwarder = events.map(|events| tokio::spawn(forward(events, output.clone())));
    }

    /// Restores the identity from the backup at `path` and restarts the client on it.
    async fn restore(
        &mut self,
        path: &std::path::Path,
        passphrase: String,
        output: &mut mpsc::Sender<Event>,
    ) {
        let Some(running) = self.running() else {
            let _ = output.send(not_running("restore")).await;
            return;
        };
        match import(&running, path, passphrase).await {
            Ok(peer) => {
                let _ = output.send(Event::Imported(peer)).await;
                // Restart on the restored key.
                drop(running);
                self.stop();
                if let Some(config) = self.last_config.clone() {
                    self.start(config, output).await;
                }
            }
            Err(message) => {
                let _ = output
                    .send(Event::Failed {
                        what: "restore",
                        message,
                    })
                    .await;
            }
        }
    }
}

impl Core {
    /// Deletes `meeting`'s history and invite: stops the client (the rewrite needs the
    /// store to itself), rewrites the store without them, and starts the client again.
    async fn forget(&mut self, meeting: MeetingId, output: &mut mpsc::Sender<Event>) {
        let Some(config) = self.last_config.clone() else {
            let _ = output.send(not_running("delete the history")).await;
            return;
        };
        self.stop();
        let event = match forget_when_released(&config, meeting).await {
            Ok(()) => Event::Forgotten(meeting),
            Err(message) => Event::Failed {
                what: "delete the history",
                message,
            },
        };
        let _ = output.send(event).await;
        self.start(config, output).await;
    }
}

/// Runs [`Store::forget_meeting`](conclave_core::Store::forget_meeting) once the stopped
/// client has let go of the store.
async fn forget_when_released(config: &Config, meeting: MeetingId) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + RESTART_PATIENCE;
    loop {
        let (data_dir, source) = (config.data_dir.clone(), config.store_key.clone());
        let result = tokio::task::spawn_blocking(move || {
            conclave_core::Store::forget_meeting(&data_dir, &source, meeting)
        })
        .await
        .map_err(|_| "the store task stopped".to_owned())?;
        match result {
            Ok(_) => return Ok(()),
            Err(conclave_core::StoreError::Locked { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err.to_string()),
        }
    }
}

/// Passes the core's events on to the UI, waiting for room as long as it takes; says
/// [`Event::Stopped`] when the client's events end.
async fn forward(mut events: conclave_core::Events, mut output: mpsc::Sender<Event>) {
    while let Some(event) = events.next().await {
        if output.send(Event::Core(event)).await.is_err() {
            return;
        }
    }
    let _ = output.send(Event::Stopped).await;
}

/// Reads a backup file and restores the identity in it.
async fn import(
    client: &Client,
    path: &std::path::Path,
    passphrase: String,
) -> Result<PeerId, String> {
    let owned = path.to_owned();
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
        .await
        .map_err(|_| "the file task stopped".to_owned())?
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    client
        .import_identity(bytes, passphrase)
        .await
        .map_err(|e| e.to_string())
}

fn not_running(what: &'static str) -> Event {
    Event::Failed {
        what,
        message: "Conclave is not running (see the banner above)".to_owned(),
    }
}

fn describe(request: &Request) -> &'static str {
    match request {
        Request::Start(_) => "start",
        Request::Create { .. } => "create the meeting",
        Request::Join(_) => "join",
        Request::Leave => "leave",
        Request::Chat(_) => "send the message",
        Request::ResendChat(_) => "send the message again",
        Request::Mute(_) => "mute",
        Request::Share(_) => "share the screen",
        Request::Camera(_) => "turn the camera on or off",
        Request::IncomingVideo(_) => "change incoming video",
        Request::NoiseSuppression(_) => "change noise suppression",
        Request::Kick(_) => "remove the member",
        Request::Approve(_) => "let the member in",
        Request::SetVerified(..) => "save the verification",
        Request::Recent => "load recent meetings",
        Request::History(_) => "load the chat history",
        Request::Resync(_) => "catch up with the meeting",
        Request::Export { .. } => "export the identity",
        Request::Import { .. } => "restore",
        Request::Forget(_) => "delete the history",
    }
}

/// Starts a client, waiting (bounded) for a previous one to release the data directory.
async fn start(config: Config) -> Result<(Client, conclave_core::Events), String> {
    let deadline = tokio::time::Instant::now() + RESTART_PATIENCE;
    loop {
        match Client::start(config.clone()).await {
            Ok(started) => {
                info!(peer_id = %started.0.peer_id(), "client started");
                return Ok(started);
            }
            Err(conclave_core::Error::Store(conclave_core::StoreError::Locked { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(format!("Conclave could not start: {err}")),
        }
    }
}

/// Starts the client and tells the UI how that went (`Started` or `StartFailed`);
/// returns the running client and its events, if it started.
async fn start_and_report(
    config: Config,
    output: &mut mpsc::Sender<Event>,
) -> (Option<Client>, Option<conclave_core::Events>) {
    match start(config).await {
        Ok((started, stream)) => {
            let report = started_event(&started).await;
            let _ = output.send(report).await;
            (Some(started), Some(stream))
        }
        Err(message) => {
            let _ = output.send(Event::StartFailed(message)).await;
            (None, None)
        }
    }
}

async fn started_event(client: &Client) -> Event {
    let verified = client.verified_peers().await.unwrap_or_default();
    let recent = recent(client).await.unwrap_or_default();
    Event::Started {
        me: Me {
            peer_id: client.peer_id(),
            safety_number: client.safety_number().to_string(),
            name: client.name().to_owned(),
        },
        verified,
        recent,
    }
}

async fn recent(client: &Client) -> Result<Vec<Recent>, conclave_core::Error> {
    Ok(client
        .recent_meetings()
        .await?
        .into_iter()
        .map(|(meeting_id, record)| Recent {
            meeting_id,
            invite: Redacted(record.invite.clone()),
            last_seen_unix_ms: record.last_seen_unix_ms,
        })
        .collect())
}

/// Runs one request against the client and reports its outcome.
async fn perform(client: Client, request: Request, mut output: mpsc::Sender<Event>) {
    let what = describe(&request);
    let outcome: Result<Option<Event>, conclave_core::Error> = match request {
        Request::Create { lobby } => client
            .create_meeting(lobby)
            .await
            .map(|invite| Some(Event::Created(Redacted(invite.to_uri())))),
        Request::Join(invite) => client.join(*invite).await.map(|()| None),
        Request::Leave => client.leave().await.map(|()| Some(Event::LeaveDone)),
        Request::Chat(text) => client.send_chat(text).await.map(|_| None),
        Request::ResendChat(seq) => client.resend_chat(seq).await.map(|()| None),
        Request::Mute(muted) => client.set_muted(muted).await.map(|()| None),
        Request::Share(share) => client
            .share_screen(share.then(conclave_core::ScreenSpec::default))
            .await
            .map(|()| None),
        Request::NoiseSuppression(on) => client.set_noise_suppression(on).await.map(|()| None),
        Request::Camera(on) => client.set_camera(on).await.map(|()| None),
        Request::IncomingVideo(on) => client.set_incoming_video(on).await.map(|()| None),
        Request::Kick(peer) => client.kick(peer).await.map(|()| None),
        Request::Approve(peer) => client.approve(peer).await.map(|()| None),
        Request::SetVerified(peer, verified) => match client.set_verified(peer, verified).await {
            Ok(()) => client
                .verified_peers()
                .await
                .map(|v| Some(Event::Verified(v))),
            Err(err) => Err(err),
        },
        Request::Recent => recent(&client).await.map(|r| Some(Event::Recent(r))),
        Request::History(meeting) => client
            .history(meeting)
            .await
            .map(|lines| Some(Event::History(meeting, lines))),
        Request::Resync(meeting) => match client.members().await {
            Ok(members) => client.history(meeting).await.map(|chat| {
                Some(Event::Resynced {
                    meeting,
                    members,
                    chat,
                })
            }),
            Err(err) => Err(err),
        },
        Request::Export { path, passphrase } => match client.export_identity(passphrase).await {
            Ok(bytes) => match write_private(&path, &bytes).await {
                Ok(()) => Ok(Some(Event::Exported(path))),
                Err(message) => {
                    let _ = output.send(Event::Failed { what, message }).await;
                    return;
                }
            },
            Err(err) => Err(err),
        },
        Request::Start(_) | Request::Import { .. } | Request::Forget(_) => Ok(None),
    };
    let event = match outcome {
        Ok(Some(event)) => event,
        Ok(None) => return,
        Err(err) => Event::Failed {
            what,
            message: err.to_string(),
        },
    };
    let _ = output.send(event).await;
}

/// Writes a file readable only by its owner (the backup is encrypted, but still a key).
async fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    let path = path.to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    })
    .await
    .map_err(|_| "the backup task stopped".to_owned())?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(stream: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
        tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the bridge answers within 20 s")
            .expect("the bridge runs")
    }

    /// The next event that is not one of the core's.
    async fn next_own(stream: &mut (impl Stream<Item = Event> + Unpin)) -> Event {
        loop {
            match next(stream).await {
                Event::Core(_) => continue,
                other => return other,
            }
        }
    }

    /// A bridge running a client on `dir`: its events, its handle, and who we are.
    async fn started(
        dir: &std::path::Path,
    ) -> (impl Stream<Item = Event> + Unpin + use<>, Handle, Me) {
        let mut stream = Box::pin(connect());
        let Event::Ready(mut handle) = next(&mut stream).await else {
            panic!("the bridge first hands out its handle");
        };
        assert!(handle.send(Request::Start(Box::new(config(dir)))));
        let Event::Started { me, .. } = next_own(&mut stream).await else {
            panic!("the client starts");
        };
        (stream, handle, me)
    }

    /// Creates a meeting through the bridge; returns its id.
    async fn create(
        stream: &mut (impl Stream<Item = Event> + Unpin),
        handle: &mut Handle,
    ) -> MeetingId {
        assert!(handle.send(Request::Create { lobby: false }));
        let Event::Created(invite) = next_own(stream).await else {
            panic!("the meeting is created");
        };
        invite
            .0
            .parse::<Invite>()
            .expect("a valid invite")
            .meeting_id
    }

    fn config(dir: &std::path::Path) -> Config {
        Config::new(dir)
            .with_store_key(conclave_core::KeySource::InsecureKeyFile)
            .with_mdns(false)
            .with_listen(vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
            ])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bridge_starts_the_client_and_backs_the_identity_up_and_restores_it() {
        let dir = crate::gui::private_tempdir();
        let mut stream = Box::pin(connect());
        let Event::Ready(mut handle) = next(&mut stream).await else {
            panic!("the bridge first hands out its handle");
        };
        assert!(handle.send(Request::Start(Box::new(config(&dir.path().join("a"))))));
        let Event::Started { me, recent, .. } = next_own(&mut stream).await else {
            panic!("the client starts");
        };
        assert!(recent.is_empty());

        // Export, then restore into another installation.
        let backup = dir.path().join("id.backup");
        assert!(handle.send(Request::Export {
            path: backup.clone(),
            passphrase: "correct horse battery".into(),
        }));
        assert!(matches!(next_own(&mut stream).await, Event::Exported(path) if path == backup));

        assert!(handle.send(Request::Start(Box::new(config(&dir.path().join("b"))))));
        let Event::Started { me: other, .. } = next_own(&mut stream).await else {
            panic!("the second installation starts");
        };
        assert_ne!(other.peer_id, me.peer_id);
        assert!(handle.send(Request::Import {
            path: backup.clone(),
            passphrase: "wrong horse battery".into(),
        }));
        match next_own(&mut stream).await {
            Event::Failed { what, message } => {
                assert_eq!(what, "restore");
                assert!(message.contains("wrong passphrase"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert!(handle.send(Request::Import {
            path: backup,
            passphrase: "correct horse battery".into(),
        }));
        assert!(matches!(next_own(&mut stream).await, Event::Imported(peer) if peer == me.peer_id));
        let Event::Started { me: restored, .. } = next_own(&mut stream).await else {
            panic!("the client restarts on the restored identity");
        };
        assert_eq!(restored.peer_id, me.peer_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_a_meetings_history_restarts_the_client_without_it() {
        let dir = crate::gui::private_tempdir();
        let (mut stream, mut handle, me) = started(dir.path()).await;
        let meeting = create(&mut stream, &mut handle).await;
        assert!(handle.send(Request::Leave));
        assert!(matches!(next_own(&mut stream).await, Event::LeaveDone));
        assert!(handle.send(Request::Recent));
        let Event::Recent(recent) = next_own(&mut stream).await else {
            panic!("the recent meetings");
        };
        assert!(recent.iter().any(|r| r.meeting_id == meeting), "{recent:?}");

        assert!(handle.send(Request::Forget(meeting)));
        assert!(matches!(next_own(&mut stream).await, Event::Forgotten(m) if m == meeting));
        let Event::Started {
            me: again, recent, ..
        } = next_own(&mut stream).await
        else {
            panic!("the client starts again");
        };
        assert_eq!(again.peer_id, me.peer_id, "the same identity");
        assert!(recent.iter().all(|r| r.meeting_id != meeting), "{recent:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verification_marks_round_trip_through_the_bridge() {
        let dir = crate::gui::private_tempdir();
        let (mut stream, mut handle, _) = started(dir.path()).await;
        let peer = PeerId::from_public_key(
            &conclave_core::Identity::generate()
                .libp2p_keypair()
                .public(),
        );
        assert!(handle.send(Request::SetVerified(peer, true)));
        assert!(matches!(next(&mut stream).await, Event::Verified(v) if v == vec![peer]));
        assert!(handle.send(Request::SetVerified(peer, false)));
        assert!(matches!(next(&mut stream).await, Event::Verified(v) if v.is_empty()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_go_on_while_the_ui_is_slow_to_take_the_cores_events() {
        let dir = crate::gui::private_tempdir();
        let (mut stream, mut handle, _) = started(dir.path()).await;
        let meeting = create(&mut stream, &mut handle).await;
        // A UI busy drawing: it takes one event every 20 ms (iced polls the bridge only
        // when it takes an event), and keeps the meeting's history when it comes.
        let (history_tx, history_rx) = tokio::sync::oneshot::channel();
        let ui = tokio::spawn(async move {
            let mut history_tx = Some(history_tx);
            while let Some(event) = stream.next().await {
                if let Event::History(_, lines) = event
                    && let Some(tx) = history_tx.take()
                {
                    let _ = tx.send(lines);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        // Each line is a core event (`ChatSent`): far more lines than the event channel
        // holds, faster than the UI takes them, as a person pasting a document would.
        const LINES: usize = 3 * EVENT_CAPACITY;
        for n in 0..LINES {
            assert!(
                handle.send(Request::Chat(format!("line {n}"))),
                "request {n} was refused: the bridge stopped taking requests"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Every line was said: the history has them all.
        assert!(handle.send(Request::History(meeting)));
        let lines = tokio::time::timeout(Duration::from_secs(60), history_rx)
            .await
            .expect("the history comes within 60 s")
            .expect("the UI task runs");
        let said = lines.iter().filter(|l| l.text.starts_with("line ")).count();
        assert_eq!(said, LINES);
        ui.abort();
    }
}
