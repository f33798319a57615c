//! The public async handle to a running client, used alike by the CLI and the GUI.
//!
//! [`Client::start`] starts the [runtime] (store, identity, listeners,
//! media actor, driver task); the returned [`Events`] stream carries everything that
//! happens. The tasks stop when [`Client::shutdown`] is called or the last `Client` clone
//! is dropped. The commands and [`Event`] are the runtime's vocabulary; this
//! module only wraps them in async methods.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::identity::SafetyNumber;
use crate::identity::backup;
use crate::invite::{Invite, MeetingId};
use crate::media::MediaInput;
use crate::runtime::{self, Command};
use crate::store::{MeetingRecord, Store};
use crate::{Config, Error};

pub use crate::runtime::{COMMAND_CAPACITY, EVENT_CAPACITY, Event};

/// The stream of [`Event`]s of one client.
#[derive(Debug)]
pub struct Events(pub(crate) mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client has stopped.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }
}

#[derive(Debug)]
struct TaskGuard {
    cancel: CancellationToken,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Cheap, cloneable handle to a running client.
#[derive(Debug, Clone)]
pub struct Client {
    inbox: mpsc::Sender<Command>,
    peer_id: PeerId,
    safety_number: SafetyNumber,
    name: String,
    listen_addrs: Vec<Multiaddr>,
    store: Store,
    guard: Arc<TaskGuard>,
}

impl Client {
    /// Starts a client: store, identity, listeners, media actor, driver task.
    pub async fn start(config: Config) -> Result<(Client, Events), Error> {
        let started = runtime::start(config).await?;
        Ok((
            Client {
                inbox: started.commands,
                peer_id: started.peer_id,
                safety_number: started.safety_number,
                name: started.name,
                listen_addrs: started.listen_addrs,
                store: started.store,
                guard: Arc::new(TaskGuard {
                    cancel: started.cancel,
                }),
            },
            Events(started.events),
        ))
    }

    /// Our peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Our safety number.
    pub fn safety_number(&self) -> SafetyNumber {
        self.safety_number
    }

    /// Our display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses we listen on (with `/p2p/<our id>`).
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// Creates a meeting and returns its invite (with our peer id and the configured relays
    /// as hints). We stay in it until [`Client::leave`]. With `lobby`, every joiner waits
    /// until we [approve](Client::approve) it.
    pub async fn create_meeting(&self, lobby: bool) -> Result<Invite, Error> {
        self.request(|reply| Command::Create { lobby, reply })
            .await?
    }

    /// Stops (or resumes) sending our audio, and tells the other members (an MLS
    /// application message; they see [`MeetingEvent::MemberMuted`](crate::MeetingEvent::MemberMuted)). Without audio, the
    /// members are still told.
    pub async fn set_muted(&self, muted: bool) -> Result<(), Error> {
        self.request(|reply| Command::Mute { muted, reply }).await?
    }

    /// Turns noise suppression of our microphone on or off.
    pub async fn set_noise_suppression(&self, on: bool) -> Result<(), Error> {
        self.media(MediaInput::NoiseSuppression(on)).await
    }

    /// Turns our camera (the `--video-in` source) off or back on. Without video, nothing
    /// happens.
    pub async fn set_camera(&self, on: bool) -> Result<(), Error> {
        self.media(MediaInput::Camera(on)).await
    }

    /// Receives the members' video, or (`false`) asks each of them to send us none: the
    /// "no incoming video" mode for a weak link. Audio and chat are untouched.
    pub async fn set_incoming_video(&self, on: bool) -> Result<(), Error> {
        self.media(MediaInput::IncomingVideo(on)).await
    }

    /// Shares a screen (monitor `spec`; one shared before is replaced) or, with `None`,
    /// stops sharing. The outcome comes as [`MediaEvent::ScreenShared`] or
    /// [`MediaEvent::ScreenShareStopped`] (with the reason when the screen cannot be read).
    ///
    /// [`MediaEvent::ScreenShared`]: crate::media::MediaEvent::ScreenShared
    /// [`MediaEvent::ScreenShareStopped`]: crate::media::MediaEvent::ScreenShareStopped
    pub async fn share_screen(
        &self,
        spec: Option<crate::media::video::screen::ScreenSpec>,
    ) -> Result<(), Error> {
        self.media(MediaInput::Share(spec)).await
    }

    async fn media(&self, input: MediaInput) -> Result<(), Error> {
        self.request(|reply| Command::Media { input, reply })
            .await?
    }

    /// Lets a joiner waiting in the lobby in (host only).
    pub async fn approve(&self, peer: PeerId) -> Result<(), Error> {
        self.request(|reply| Command::Approve { peer, reply })
            .await?
    }

    /// Starts joining the meeting of `invite`. The outcome arrives as an event:
    /// [`MeetingEvent::Joined`](crate::MeetingEvent::Joined), [`MeetingEvent::JoinRefused`](crate::MeetingEvent::JoinRefused) or
    /// [`MeetingEvent::JoinTimedOut`](crate::MeetingEvent::JoinTimedOut).
    pub async fn join(&self, invite: Invite) -> Result<(), Error> {
        self.request(|reply| Command::Join { invite, reply })
            .await?
    }

    /// Leaves the current meeting, telling the other members (waits at most about a second
    /// for them to acknowledge).
    pub async fn leave(&self) -> Result<(), Error> {
        self.request(|reply| Command::Leave { reply }).await
    }

    /// Sends a chat line to every member (end-to-end encrypted in the MLS group) and
    /// returns its number: [`MeetingEvent::ChatSent`](crate::meeting::MeetingEvent::ChatSent)
    /// reports it at once, then `ChatDelivered` or `ChatFailed`. A line over 4,096 bytes is
    /// refused whole ([`crate::group::GroupError::ChatTooLong`]).
    pub async fn send_chat(&self, text: impl Into<String>) -> Result<u64, Error> {
        let text = text.into();
        self.request(|reply| Command::Chat { text, reply }).await?
    }

    /// Sends our line `seq` again to the members it failed for (after `ChatFailed`).
    pub async fn resend_chat(&self, seq: u64) -> Result<(), Error> {
        self.request(|reply| Command::ResendChat { seq, reply })
            .await?
    }

    /// The members of the current meeting other than us, with their names (empty outside
    /// a meeting). After [`Event::Lagged`] this is how the roster is read again.
    pub async fn members(&self) -> Result<Vec<(PeerId, String)>, Error> {
        self.request(|reply| Command::Members { reply }).await
    }

    /// Removes `peer` from the meeting (honoured for the host; see `docs/protocol.md`).
    pub async fn kick(&self, peer: PeerId) -> Result<(), Error> {
        self.request(|reply| Command::Kick { peer, reply }).await?
    }

    /// The stored chat history of a meeting, oldest first.
    pub async fn history(
        &self,
        meeting: crate::invite::MeetingId,
    ) -> Result<Vec<crate::store::ChatRecord>, Error> {
        self.request(|reply| Command::History { meeting, reply })
            .await?
    }

    /// STUN/TURN servers for the WebRTC ICE configuration: one [`IceServer`] per
    /// configured relay that runs TURN (URLs `stun:HOST:PORT`,
    /// `turn:HOST:PORT?transport=udp|tcp`, a short-lived REST-API username and credential,
    /// and their expiry). Served from cache while every credential has more than two
    /// minutes left, otherwise fetched again from every relay over libp2p
    /// (`/conclave/turn/1.0.0`). Relays that cannot be reached are skipped (logged); if
    /// every relay that answered refused, the error is [`Error::TurnRefused`]. An empty list
    /// means no relay offers TURN.
    ///
    /// [`IceServer`]: crate::proto::turn::IceServer
    pub async fn ice_servers(&self) -> Result<Vec<crate::proto::turn::IceServer>, Error> {
        self.request(|reply| Command::IceServers { reply }).await?
    }

    /// Meetings this installation was in, most recent first (for rejoining).
    pub async fn recent_meetings(&self) -> Result<Vec<(MeetingId, MeetingRecord)>, Error> {
        let store = self.store.clone();
        blocking(move || store.meetings().map_err(Error::from)).await
    }

    /// Peers whose safety number the user confirmed.
    pub async fn verified_peers(&self) -> Result<Vec<PeerId>, Error> {
        let store = self.store.clone();
        blocking(move || store.verified_peers().map_err(Error::from)).await
    }

    /// Marks `peer` verified (its safety number compared out of band), or clears the mark.
    pub async fn set_verified(&self, peer: PeerId, verified: bool) -> Result<(), Error> {
        let store = self.store.clone();
        blocking(move || {
            let number =
                crate::identity::public_key_of(&peer).map(|key| SafetyNumber::of(&key).to_string());
            let number = match (verified, number) {
                (false, _) => None,
                (true, Some(number)) => Some(number),
                (true, None) => return Err(Error::Usage("this peer id carries no ed25519 key")),
            };
            store
                .set_verified(peer, number.as_deref())
                .map_err(Error::from)
        })
        .await
    }

    /// Seals this installation's identity under `passphrase` (see
    /// [`identity::backup`](crate::identity::backup)); the bytes are for a backup file.
    pub async fn export_identity(&self, passphrase: String) -> Result<Vec<u8>, Error> {
        let store = self.store.clone();
        blocking(move || {
            let identity = store.load_or_create_identity()?;
            Ok(backup::export(
                &identity,
                &passphrase,
                &mut rand::rngs::OsRng,
            )?)
        })
        .await
    }

    /// Replaces this installation's identity with the one in a backup. The new identity is
    /// used from the next [`Client::start`]; returns its peer id.
    pub async fn import_identity(
        &self,
        backup_bytes: Vec<u8>,
        passphrase: String,
    ) -> Result<PeerId, Error> {
        let store = self.store.clone();
        blocking(move || {
            let identity = backup::import(&backup_bytes, &passphrase)?;
            store.replace_identity(&identity)?;
            Ok(identity.peer_id())
        })
        .await
    }

    /// Stops the client's task.
    pub fn shutdown(&self) {
        self.guard.cancel.cancel();
    }

    /// Whether the client's task has stopped (after [`Client::shutdown`] or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.inbox.is_closed()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, response) = oneshot::channel();
        self.inbox
            .send(make(reply))
            .await
            .map_err(|_| Error::Shutdown)?;
        response.await.map_err(|_| Error::Shutdown)
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Error::Shutdown)?
}
