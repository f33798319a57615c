//! Conclave core: peer-to-peer, end-to-end encrypted meetings with no server in charge.
//!
//! Crate map:
//! - [`identity`]: the installation's ed25519 key (also the libp2p identity) and safety
//!   numbers.
//! - [`store`]: sled-backed durable state (identity, remembered peers, history), sealed at
//!   rest under a store key from a [`store::KeySource`].
//! - [`invite`]: the `conclave:` invite URI.
//! - [`backoff`]: exponential back-off with jitter, the one formula of every retry (sans-IO).
//! - [`admission`]: rendezvous key and the hello handshake that proves the meeting secret.
//! - [`proto`]: every wire message and its bounded encoding.
//! - [`meeting`]: the sans-IO meeting state machine (admission, roster, presence).
//! - [`net`]: the libp2p control plane (behaviour, the one swarm builder, sans-IO routing
//!   and TURN credential fetching).
//! - [`runtime`]: the async wiring: start-up, the driver task that feeds the meeting machine,
//!   the swarm and the media actor, persistence of history; the one place where tasks are
//!   spawned and channels are sized.
//! - [`client`]: the async handle the CLI and GUI use.
//!
//! Dependencies point one way: `client → runtime → {net, meeting, media, store, proto}`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), conclave_core::Error> {
//! use conclave_core::{Client, Config, Event};
//! use conclave_core::store::KeySource;
//! let config = Config::new("/tmp/alice")
//!     .with_store_key(KeySource::passphrase("correct horse battery staple"));
//! let (client, mut events) = Client::start(config).await?;
//! let invite = client.create_meeting(false).await?;
//! println!("send this to your guests: {}", invite.to_uri());
//! while let Some(Event::Meeting(event)) = events.next().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! Driving the meeting machine directly (sans-IO, caller supplies time):
//!
//! ```no_run
//! use std::time::Instant;
//! use conclave_core::admission::MeetingKeys;
//! use conclave_core::invite::Invite;
//! use conclave_core::meeting::{Config, Machine};
//! use rand::SeedableRng;
//! let invite = Invite::new_meeting(&mut rand::rngs::OsRng);
//! let keys = MeetingKeys::derive(invite.meeting_id, &invite.secret);
//! let identity = conclave_core::identity::Identity::generate();
//! let me = conclave_core::group::MlsIdentity::new(&identity);
//! let provider = conclave_core::group::Provider::default();
//! let mut machine = Machine::host(Config::default(), me, provider, "Ada".into(), keys,
//!     Instant::now(), rand::rngs::StdRng::seed_from_u64(1)).expect("a new group");
//! while let Some(output) = machine.poll_output() {
//!     println!("{output:?}");
//! }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admission;
pub mod backoff;
pub mod client;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod identity;
pub mod invite;
pub mod media;
pub mod meeting;
pub mod net;
pub mod proto;
pub mod runtime;
pub mod store;
#[cfg(test)]
pub(crate) mod test_clock;

#[cfg(test)]
mod debug_hygiene;

// The public API: everything the `conclave` app needs is named here, at the crate root.
pub use client::{Client, Event, Events};
pub use config::Config;
pub use error::Error;
pub use group::SecurityCode;
pub use identity::backup::MIN_PASSPHRASE_CHARS;
pub use identity::{Identity, SafetyNumber, public_key_of};
pub use invite::{Invite, MeetingId, parse_relay};
pub use libp2p::{Multiaddr, PeerId};
pub use media::video::VideoKind;
pub use media::video::monitor::VideoSendReport;
pub use media::video::screen::ScreenSpec;
pub use media::{MediaConfig, MediaEvent, ReceiveStats, VideoStats};
pub use meeting::{AlertKind, CommitViolation, LeaveReason, MeetingEvent};
pub use proto::turn::IceServer;
pub use store::{ChatRecord, INSECURE_KEY_FILE_ENV, KeySource, MeetingRecord, Store, StoreError};

/// The tone tools of `conclave demo`: the synthetic voices it speaks and how it checks who
/// was heard in a recording (a WAV reader, the frame size and sample rate, and the power of
/// one tone in a run of samples).
pub mod tones {
    pub use crate::media::audio::mixer::tone_power;
    pub use crate::media::audio::source::{AudioSource, WavSource};
    pub use crate::media::audio::{FRAME_SAMPLES, SAMPLE_RATE};
}
