//! Opening media frames: KID → (sender, epoch) → key, with replay protection and the
//! previous epoch's keys kept for a grace window. Sans-IO: time is an argument.
//!
//! Derived keys are cached by (KID, epoch), never by KID alone: the KID carries only the
//! epoch's low [`EPOCH_BITS`], so after a rejoin whose epoch equals an old one modulo 16 a
//! KID-only cache would open frames with a key whose grace window is long over. Installing
//! an epoch drops every cached key of that epoch number (its secret may be new); an epoch
//! lower than the current one is a new group (we rejoined) and clears everything, like
//! [`Opener::reset`] (`MediaCommand::Reset`).

use std::collections::HashMap;
use std::time::Instant;

use ::sframe::frame::EncryptedFrameView;
use ::sframe::frame::validation::{ReplayAttackProtectionStore, Tolerance};
use ::sframe::key::DecryptionKey;
use ::sframe::mls::MlsKeyId;

use super::MediaError;
use super::sframe::{CIPHER_SUITE, EPOCH_BITS, Stream, bit_range};
use crate::group::MediaKeys;
use crate::group::media_keys::NH;

/// How far back (in counter values) a late frame is still accepted once newer ones arrived.
pub const REPLAY_TOLERANCE: usize = 256;
/// Most cached decryption keys (senders × live epochs).
pub const MAX_CACHED_KEYS: usize = 256;

/// Counters of everything the opener saw, for the `media` stats events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenStats {
    /// Frames opened.
    pub opened: u64,
    /// Frames that were not SFrame.
    pub malformed: u64,
    /// Frames under a KID we have no key for.
    pub unknown_key: u64,
    /// Frames seen before.
    pub replayed: u64,
    /// Frames that did not authenticate.
    pub forged: u64,
}

/// A frame that opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Sender's leaf index.
    pub sender: u32,
    /// Which of its streams.
    pub stream: Stream,
    /// Epoch it was sealed in.
    pub epoch: u64,
    /// Its SFrame counter: the sender's stream raises it by one per frame, never restarting
    /// (whichever connection carries the frame).
    pub counter: u64,
    /// The encoded media.
    pub payload: Vec<u8>,
}

/// Opens frames from every sender of the meeting.
pub struct Opener {
    epochs: MediaKeys,
    /// (KID, epoch) → derived key.
    keys: HashMap<(u64, u64), DecryptionKey>,
    replay: ReplayAttackProtectionStore,
    stats: OpenStats,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("epochs", &self.epochs)
            .field("cached_keys", &self.keys.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for Opener {
    fn default() -> Self {
        Self {
            epochs: MediaKeys::default(),
            keys: HashMap::new(),
            replay: ReplayAttackProtectionStore::new(Tolerance::new(REPLAY_TOLERANCE)),
            stats: OpenStats::default(),
        }
    }
}

impl Opener {
    /// Installs a new epoch's `sframe_epoch_secret`; the previous epoch stays usable for
    /// [`MediaKeys::GRACE`].
    pub fn install(&mut self, now: Instant, epoch: u64, epoch_secret: [u8; NH]) {
        if self
            .epochs
            .current_epoch()
            .is_some_and(|current| epoch < current)
        {
            // Epochs only grow within a group: a lower one is a new group after a rejoin.
            self.reset();
        }
        self.epochs.install(now, epoch, epoch_secret);
        let epochs = &self.epochs;
        self.keys.retain(|(_, key_epoch), _| {
            *key_epoch != epoch && epochs.sender_base_key(now, *key_epoch, 0).is_some()
        });
        let live: Vec<u64> = self.keys.keys().map(|(kid, _)| *kid).collect();
        self.replay.retain(|kid| live.contains(&kid));
    }

    /// Forgets every epoch secret, cached key and replay window (we left the group and are
    /// joining again); the counters stay.
    pub fn reset(&mut self) {
        let stats = self.stats;
        *self = Self {
            stats,
            ..Self::default()
        };
    }

    /// What was opened and dropped so far.
    pub fn stats(&self) -> OpenStats {
        self.stats
    }

    /// Opens one sealed frame received at `now`. Failures are counted and returned; the
    /// frame is to be dropped.
    pub fn open(&mut self, now: Instant, frame: &[u8]) -> Result<Opened, MediaError> {
        self.open_checked(now, frame, None)
    }

    /// Like [`Opener::open`], for a frame that arrived on the connection of the member at
    /// leaf `sender`: a frame under any other sender's KID is refused as forged before it
    /// can touch that sender's replay window.
    pub fn open_from(
        &mut self,
        now: Instant,
        frame: &[u8],
        sender: u32,
    ) -> Result<Opened, MediaError> {
        self.open_checked(now, frame, Some(sender))
    }

    fn open_checked(
        &mut self,
        now: Instant,
        frame: &[u8],
        sender: Option<u32>,
    ) -> Result<Opened, MediaError> {
        let result = self.try_open(now, frame, sender);
        match &result {
            Ok(_) => self.stats.opened += 1,
            Err(MediaError::Malformed) => self.stats.malformed += 1,
            Err(MediaError::UnknownKey { .. }) => self.stats.unknown_key += 1,
            Err(MediaError::Replayed { .. }) => self.stats.replayed += 1,
            Err(_) => self.stats.forged += 1,
        }
        result
    }

    fn try_open(
        &mut self,
        now: Instant,
        frame: &[u8],
        expected: Option<u32>,
    ) -> Result<Opened, MediaError> {
        let view = EncryptedFrameView::try_new(&frame).map_err(|_| MediaError::Malformed)?;
        let kid = view.header().key_id();
        let counter = view.header().counter();
        let mls_kid = MlsKeyId::from_key_id(kid, bit_range());
        let stream =
            Stream::from_context(mls_kid.context_id()).ok_or(MediaError::UnknownKey { kid })?;
        let sender =
            u32::try_from(mls_kid.member_index()).map_err(|_| MediaError::UnknownKey { kid })?;
        if expected.is_some_and(|expected| expected != sender) {
            return Err(MediaError::Forged);
        }
        let epoch = self
            .epoch_of(now, mls_kid.epoch_lsb(), sender)
            .ok_or(MediaError::UnknownKey { kid })?;
        if !self.keys.contains_key(&(kid, epoch)) {
            if self.keys.len() >= MAX_CACHED_KEYS {
                self.keys.clear();
            }
            let base = self
                .epochs
                .sender_base_key(now, epoch, sender)
                .ok_or(MediaError::UnknownKey { kid })?;
            let key = DecryptionKey::derive_from(CIPHER_SUITE, kid, base.as_ref())
                .map_err(|e| MediaError::Sframe(e.to_string()))?;
            self.keys.insert((kid, epoch), key);
        }
        let key = self
            .keys
            .get(&(kid, epoch))
            .ok_or(MediaError::UnknownKey { kid })?;
        // Opened straight into the buffer that leaves: without metadata, the crate leaves
        // exactly the payload in it.
        let mut payload = Vec::with_capacity(frame.len());
        view.validated_decrypt_into(key, &mut payload, &mut self.replay)
            .map_err(|err| match err {
                ::sframe::error::SframeError::FrameValidationFailed(_) => {
                    MediaError::Replayed { kid, counter }
                }
                _ => MediaError::Forged,
            })?;
        Ok(Opened {
            sender,
            stream,
            epoch,
            counter,
            payload,
        })
    }

    /// The live epoch whose low bits are `lsb`.
    fn epoch_of(&self, now: Instant, lsb: u64, sender: u32) -> Option<u64> {
        let current = self.epochs.current_epoch()?;
        let mask = (1u64 << EPOCH_BITS) - 1;
        [Some(current), current.checked_sub(1)]
            .into_iter()
            .flatten()
            .find(|epoch| {
                epoch & mask == lsb && self.epochs.sender_base_key(now, *epoch, sender).is_some()
            })
    }
}

#[cfg(test)]
mod tests;
