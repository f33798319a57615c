//! The link between the driver and the media actor: spawning it, passing it inputs in order
//! without ever waiting (lossless), and taking its reports and signalling payloads.
//!
//! Epoch keys, signalling and commands are state: an input that finds the actor's queue
//! full waits in [`MediaLink::outbox`], which the loop drains as room appears; nothing is
//! dropped. The actor's events go to the application through the event outbox; its
//! signalling payloads go to the members inside the MLS group.

use std::collections::VecDeque;

use libp2p::PeerId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::media::{INBOX_CAPACITY, spawn};
pub(super) use crate::media::{MediaConfig, MediaEvent, MediaInput, MediaReport};
use crate::proto::turn::IceServer;
use crate::{Error, media};

use super::{Driver, clock};

/// The driver's side of the media actor (all `None` when media is off or stopped).
#[derive(Debug, Default)]
pub(super) struct MediaLink {
    /// The actor's inbox (bounded, `INBOX_CAPACITY`; lossless: what does not fit waits in
    /// the outbox).
    pub(super) input: Option<mpsc::Sender<MediaInput>>,
    /// Inputs not yet taken (its queue was full): passed on in order, never dropped.
    pub(super) outbox: VecDeque<MediaInput>,
    /// The actor's reports, passed on to the application (bounded, `INBOX_CAPACITY`; lossy:
    /// the actor never waits for room).
    pub(super) events: Option<mpsc::Receiver<MediaReport>>,
    /// Signalling payloads the actor wants sent inside the MLS group (bounded,
    /// `INBOX_CAPACITY`; lossless: the actor waits for room).
    pub(super) signals: Option<mpsc::Receiver<(PeerId, Vec<u8>)>>,
}

impl MediaLink {
    /// Spawns the media actor for `me` with `config`, or links nothing without a config.
    pub(super) fn spawn(
        me: PeerId,
        config: Option<MediaConfig>,
        cancel: &CancellationToken,
    ) -> Result<Self, Error> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        let (signals_tx, signals_rx) = mpsc::channel(INBOX_CAPACITY);
        let (events_tx, events_rx) = mpsc::channel(INBOX_CAPACITY);
        let input = spawn(me, config, signals_tx, events_tx, cancel.clone())
            .map_err(|e| Error::Media(e.to_string()))?;
        Ok(Self {
            input: Some(input),
            outbox: VecDeque::new(),
            events: Some(events_rx),
            signals: Some(signals_rx),
        })
    }

    /// Whether there is a media actor.
    pub(super) fn is_on(&self) -> bool {
        self.input.is_some()
    }

    /// Passes `input` to the media actor, in order, without waiting: straight into its
    /// queue when there is room, else into the outbox. Returns whether there is an actor.
    pub(super) fn pass(&mut self, input: MediaInput) -> bool {
        let Some(media) = &self.input else {
            return false;
        };
        if self.outbox.is_empty() {
            match media.try_send(input) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(input)) => self.outbox.push_back(input),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    warn!("the media plane stopped");
                    self.input = None;
                    return false;
                }
            }
        } else {
            self.outbox.push_back(input);
        }
        if self.outbox.len().is_multiple_of(1024) {
            warn!(
                queued = self.outbox.len(),
                "the media plane is falling behind"
            );
        }
        true
    }

    /// Hands the oldest waiting input to the room reserved in the actor's queue, or forgets
    /// the actor if it stopped.
    pub(super) fn send_next(
        &mut self,
        permit: Result<mpsc::Permit<'_, MediaInput>, mpsc::error::SendError<()>>,
    ) {
        match permit {
            Ok(permit) => {
                if let Some(input) = self.outbox.pop_front() {
                    permit.send(input);
                }
            }
            Err(_) => {
                warn!("the media plane stopped");
                self.outbox.clear();
                self.input = None;
            }
        }
    }

    /// Passes TURN credentials on, in the media plane's shape.
    pub(super) fn pass_ice_servers(&mut self, servers: &[IceServer]) {
        if !self.is_on() {
            return;
        }
        let servers = servers
            .iter()
            .map(|s| media::transport::IceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
                tls_pin: s.tls_pin,
            })
            .collect();
        self.pass(MediaInput::IceServers(servers));
    }
}

/// The next report of the media actor; pending forever when media is off.
pub(super) async fn recv_event(
    events: &mut Option<mpsc::Receiver<MediaReport>>,
) -> Option<MediaReport> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Room in the media actor's queue (never, without a media actor).
pub(super) async fn room(
    media: &Option<mpsc::Sender<MediaInput>>,
) -> Result<mpsc::Permit<'_, MediaInput>, mpsc::error::SendError<()>> {
    match media {
        Some(media) => media.reserve().await,
        None => std::future::pending().await,
    }
}

/// The next signalling payload of the media actor; pending forever when media is off.
pub(super) async fn recv_signal(
    signals: &mut Option<mpsc::Receiver<(PeerId, Vec<u8>)>>,
) -> Option<(PeerId, Vec<u8>)> {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Sends the media actor's signalling payload to its peer inside the MLS group.
    pub(super) fn on_signal(&mut self, signal: Option<(PeerId, Vec<u8>)>) {
        let Some((to, payload)) = signal else {
            self.media.signals = None;
            return;
        };
        if let Some(session) = self.session.as_mut()
            && let Err(err) = session.machine.send_signal(to, payload)
        {
            debug!(peer = %to, error = %err, "signalling message not sent");
        }
    }

    /// Takes a report of the media actor: events go to the application; a member heard
    /// over its media connection is alive for the meeting machine.
    pub(super) fn on_media_event(&mut self, report: Option<MediaReport>) {
        match report {
            Some(MediaReport::Event(event)) => {
                // Media went direct: the NATs let a direct path through, so the control
                // connection should not stay on a circuit either.
                if let crate::media::MediaEvent::Connection {
                    peer_id,
                    path: "direct",
                    ..
                } = event.as_ref()
                    && event_is_connected(&event)
                {
                    self.routing.handle_media_direct(clock::now(), *peer_id);
                }
                self.outbox.push(super::Event::Media(*event));
            }
            Some(MediaReport::Heard(peer)) => {
                if let Some(session) = self.session.as_mut() {
                    session.machine.heard_over_media(clock::now(), peer);
                }
            }
            None => self.media.events = None,
        }
    }
}

/// Whether `event` says a media connection is connected.
fn event_is_connected(event: &crate::media::MediaEvent) -> bool {
    matches!(event, crate::media::MediaEvent::Connection { state, .. } if state == "connected")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room_in(
        tx: &mpsc::Sender<MediaInput>,
    ) -> Result<mpsc::Permit<'_, MediaInput>, mpsc::error::SendError<()>> {
        tx.try_reserve().map_err(|_| mpsc::error::SendError(()))
    }

    #[test]
    fn inputs_that_do_not_fit_wait_in_order_and_none_is_lost() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut link = MediaLink {
            input: Some(tx.clone()),
            ..MediaLink::default()
        };
        assert!(link.pass(MediaInput::Mute(true)));
        assert!(link.pass(MediaInput::Mute(false)));
        assert!(link.pass(MediaInput::NoiseSuppression(true)));
        assert_eq!(link.outbox.len(), 2, "the queue holds one");
        assert!(matches!(rx.try_recv(), Ok(MediaInput::Mute(true))));
        link.send_next(room_in(&tx));
        assert!(matches!(rx.try_recv(), Ok(MediaInput::Mute(false))));
        // While some wait, a new one queues behind them even if there is room.
        assert!(link.pass(MediaInput::Mute(true)));
        link.send_next(room_in(&tx));
        assert!(matches!(
            rx.try_recv(),
            Ok(MediaInput::NoiseSuppression(true))
        ));
        link.send_next(room_in(&tx));
        assert!(matches!(rx.try_recv(), Ok(MediaInput::Mute(true))));
        assert!(link.outbox.is_empty());
    }

    #[test]
    fn a_stopped_media_plane_is_forgotten() {
        let (tx, rx) = mpsc::channel(1);
        let mut link = MediaLink {
            input: Some(tx),
            ..MediaLink::default()
        };
        drop(rx);
        assert!(!link.pass(MediaInput::Mute(true)));
        assert!(!link.is_on());
        assert!(!MediaLink::default().pass(MediaInput::RelayLost));
    }
}
