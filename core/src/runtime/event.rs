//! What the runtime tells the application: [`Event`], re-exported next to
//! [`Client`](crate::Client) at the crate root.

use libp2p::{Multiaddr, PeerId};

use super::media_link::MediaEvent;
use crate::meeting::MeetingEvent;

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A meeting changed.
    Meeting(MeetingEvent),
    /// The media plane (connections, stats).
    Media(MediaEvent),
    /// Something degraded that the user should know about (the meeting goes on).
    Warning {
        /// One clear sentence.
        message: String,
    },
    /// The control-plane path to a peer changed: its first connection, a relayed
    /// connection upgraded to a direct one by hole punching (DCUtR), or the direct
    /// connection lost while a relayed one remains.
    ControlPath {
        /// The peer (a member or would-be member; relays are not reported).
        peer_id: PeerId,
        /// `direct`, or `relayed` through a relay's circuit.
        path: &'static str,
        /// The remote address of the connection that path uses.
        remote: Multiaddr,
    },
    /// The application fell behind reading events and `missed` of them were dropped (the
    /// core never waits for a slow reader). Re-read the state that matters: the roster
    /// ([`Client::members`](crate::Client::members)) and the chat history.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}
