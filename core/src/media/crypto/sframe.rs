//! Sealing media frames with SFrame under our MLS-derived sender key.
//!
//! Each member seals each of its media streams under a key of its own: the KID's context
//! bits (RFC 9605 §5.2) name the [`Stream`], so audio and video never share a key, and
//! each key's counter is its stream's own — no (key, counter) pair is ever used twice.
//!
//! Invariant: the sealer seals only under the key of the last epoch installed. A failed
//! install (a leaf index beyond [`INDEX_BITS`], a derivation error) or a [`Sealer::reset`]
//! leaves it without a key, so it stops sealing ([`MediaError::NoKey`]) instead of going on
//! under the previous epoch's key.

use ::sframe::CipherSuite;
use ::sframe::frame::{MediaFrameView, MonotonicCounter};
use ::sframe::key::EncryptionKey;
use ::sframe::mls::{MlsKeyId, MlsKeyIdBitRange};

use super::MediaError;
use crate::group::media_keys::NH;

/// The SFrame cipher suite of Conclave media: AES-128-GCM, HKDF-SHA256.
pub const CIPHER_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
/// Low bits of the MLS epoch in the KID (receivers keep two epochs, so 16 is ample).
pub const EPOCH_BITS: u8 = 4;
/// Bits of the sender's leaf index in the KID (up to 64 members).
pub const INDEX_BITS: u8 = 6;
/// Largest audio payload sealed, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Bytes a sealed frame adds to its payload, at most: the header (config byte, KID and
/// counter of up to 8 bytes each) and the 16-byte tag.
const SEAL_OVERHEAD: usize = 1 + 8 + 8 + 16;
/// Largest video payload sealed (one encoded picture), in bytes.
pub const MAX_VIDEO_PAYLOAD: usize = 1 << 20;

/// A member's media stream, named by the KID's context bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Opus audio (context 0, the layout before video existed).
    Audio,
    /// VP8 video of the camera (context 1).
    Video,
    /// VP8 video of a shared screen (context 2).
    Screen,
}

impl Stream {
    /// The KID context value.
    pub fn context(self) -> u64 {
        match self {
            Stream::Audio => 0,
            Stream::Video => 1,
            Stream::Screen => 2,
        }
    }

    /// The stream a KID context names, if any.
    pub fn from_context(context: u64) -> Option<Self> {
        match context {
            0 => Some(Stream::Audio),
            1 => Some(Stream::Video),
            2 => Some(Stream::Screen),
            _ => None,
        }
    }

    /// Largest payload sealed on this stream.
    pub fn max_payload(self) -> usize {
        match self {
            Stream::Audio => MAX_PAYLOAD,
            Stream::Video | Stream::Screen => MAX_VIDEO_PAYLOAD,
        }
    }
}

/// The KID layout.
pub fn bit_range() -> MlsKeyIdBitRange {
    MlsKeyIdBitRange::new(EPOCH_BITS, INDEX_BITS)
}

/// The audio KID of `sender` (leaf index) in `epoch`.
pub fn key_id(epoch: u64, sender: u32) -> Result<u64, MediaError> {
    stream_key_id(Stream::Audio, epoch, sender)
}

/// The KID of `sender`'s `stream` in `epoch`.
pub fn stream_key_id(stream: Stream, epoch: u64, sender: u32) -> Result<u64, MediaError> {
    MlsKeyId::try_new(stream.context(), epoch, u64::from(sender), bit_range())
        .map(u64::from)
        .map_err(|e| MediaError::Sframe(e.to_string()))
}

/// Seals our outgoing frames. The counter never restarts, so no (key, counter) pair repeats
/// even if an epoch's key were derived twice.
pub struct Sealer {
    sender: u32,
    stream: Stream,
    counter: MonotonicCounter,
    key: Option<(u64, EncryptionKey)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("sender", &self.sender)
            .field("stream", &self.stream)
            .field("epoch", &self.key.as_ref().map(|(epoch, _)| *epoch))
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// An audio sealer for the member at leaf `sender`.
    pub fn new(sender: u32) -> Self {
        Self::for_stream(sender, Stream::Audio)
    }

    /// A sealer of `stream` for the member at leaf `sender`.
    pub fn for_stream(sender: u32, stream: Stream) -> Self {
        Self {
            sender,
            stream,
            counter: MonotonicCounter::default(),
            key: None,
        }
    }

    /// Switches to a new epoch (and possibly a new leaf, after a rejoin).
    pub fn install(
        &mut self,
        epoch: u64,
        sender: u32,
        sender_base_key: &[u8; NH],
    ) -> Result<(), MediaError> {
        // Whatever happens next, the previous epoch's key is no longer ours to use.
        self.key = None;
        let kid = stream_key_id(self.stream, epoch, sender)?;
        let key = EncryptionKey::derive_from(CIPHER_SUITE, kid, sender_base_key)
            .map_err(|e| MediaError::Sframe(e.to_string()))?;
        self.sender = sender;
        self.key = Some((epoch, key));
        Ok(())
    }

    /// Drops the key: nothing is sealed until the next [`Sealer::install`].
    pub fn reset(&mut self) {
        self.key = None;
    }

    /// The epoch frames are sealed for.
    pub fn epoch(&self) -> Option<u64> {
        self.key.as_ref().map(|(epoch, _)| *epoch)
    }

    /// Seals one encoded media frame.
    pub fn seal(&mut self, payload: &[u8]) -> Result<Vec<u8>, MediaError> {
        let max = self.stream.max_payload();
        if payload.len() > max {
            return Err(MediaError::Sframe(format!(
                "payload of {} bytes exceeds {max}",
                payload.len()
            )));
        }
        let (_, key) = self.key.as_ref().ok_or(MediaError::NoKey)?;
        let frame = MediaFrameView::try_new(&mut self.counter, &payload)
            .map_err(|e| MediaError::Sframe(e.to_string()))?;
        // Sealed straight into the buffer that leaves (no metadata: the buffer is the whole
        // frame, header first), instead of into one the crate allocates and copying it out.
        let mut sealed = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        frame
            .encrypt_into(key, &mut sealed)
            .map_err(|e| MediaError::Sframe(e.to_string()))?;
        Ok(sealed)
    }
}
