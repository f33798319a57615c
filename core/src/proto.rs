//! The wire: every message Conclave peers and relays exchange, and how each is encoded.
//!
//! - [`control`]: the control protocol between members (admission, liveness, commits,
//!   welcomes, chat carriers).
//! - [`turn`]: TURN credentials, asked of a relay.
//! - [`framing`]: one length-prefixed frame per message on a byte stream.
//!
//! Every message is a [`Message`]: a frame body is one version byte ([`WIRE_VERSION`]) and a
//! CBOR body, at most [`MAX_FRAME_LEN`] bytes, validated after decoding (every list and
//! string bounded). A failure is a [`WireError`], never a panic.
//!
//! ```text
//! u32 big-endian length N (N <= MAX_FRAME_LEN) | N bytes: version byte (= WIRE_VERSION) | CBOR body
//! ```
//!
//! This module depends only on leaf types (peer ids, addresses, the meeting id, MAC and
//! nonce lengths); the meeting machine, the control plane and the relay all use it, and it
//! uses none of them.

pub mod control;
pub mod framing;
pub mod turn;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version byte of the current encoding.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame accepted or sent, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Why bytes were not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Empty frame.
    #[error("empty frame")]
    Empty,
    /// Frame larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Length announced or found.
        len: usize,
        /// Largest allowed.
        max: usize,
    },
    /// Unknown encoding version.
    #[error("unsupported wire version {found} (expected {expected})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Version this build speaks.
        expected: u8,
    },
    /// The CBOR body does not decode into a known message.
    #[error("malformed message body")]
    Malformed,
    /// A list or string is longer than its bound.
    #[error("{what} has {len} entries, at most {max} are allowed")]
    TooMany {
        /// What overflowed.
        what: &'static str,
        /// Found.
        len: usize,
        /// Allowed.
        max: usize,
    },
    /// A field holds an invalid value (bad peer id, bad address, bad length).
    #[error("invalid {field}")]
    InvalidField {
        /// Which field.
        field: &'static str,
    },
}

/// A message that travels as the body of one frame.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + Sized + 'static {
    /// Checks the bounds serde cannot express (list lengths, names, payload sizes).
    fn validate(&self) -> Result<(), WireError>;

    /// Encodes into a frame body (version byte + CBOR).
    fn encode(&self) -> Vec<u8> {
        encode_body(self)
    }

    /// Decodes and validates a frame body.
    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let message: Self = decode_body(bytes)?;
        message.validate()?;
        Ok(message)
    }
}

/// Appends the CBOR encoding of `value` to `out` (the one CBOR writer of the crate: wire
/// bodies, MLS application messages, signalling payloads, stored records).
pub fn write_cbor<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    // Serialising our own types into memory has no failure mode: no I/O, no map keys that
    // CBOR cannot express.
    ciborium::into_writer(value, out).expect("writing CBOR to a Vec cannot fail");
}

/// The CBOR encoding of `value`.
pub fn to_cbor<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    write_cbor(value, &mut out);
    out
}

pub(crate) fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    write_cbor(value, &mut out);
    out
}

fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(WireError::FrameTooLarge {
            len: bytes.len(),
            max: MAX_FRAME_LEN,
        });
    }
    if version != WIRE_VERSION {
        return Err(WireError::UnsupportedVersion {
            found: version,
            expected: WIRE_VERSION,
        });
    }
    // ciborium bounds recursion depth itself; the frame bound caps allocation.
    ciborium::from_reader(body).map_err(|_| WireError::Malformed)
}
