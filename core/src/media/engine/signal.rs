//! The signalling vocabulary between two members' media engines (CBOR inside MLS
//! application messages): offers, answers that name the offer they answer, ICE restarts,
//! second connections looking for a direct path beside a relayed one,
//! and the offerer's word to start checking the reflexive candidates (`transport::sdp`).

use serde::{Deserialize, Serialize};

/// One signalling message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Signal {
    /// A new connection.
    Offer(String),
    /// The answer to the offer (or restart offer) whose [`offer_digest`] is `offer`: an
    /// answer to an offer since replaced must not be applied to the new one.
    Answer {
        /// The answer SDP.
        sdp: String,
        /// The digest of the offer it answers.
        offer: u64,
        /// How long the answering side took from the offer's arrival to its answer
        /// (gathering, mostly), in milliseconds: the offerer subtracts it from the time
        /// between its offer and this answer to learn the signalling round trip.
        #[serde(default)]
        took_ms: u32,
    },
    /// An ICE restart of the existing connection (new ICE credentials and candidates).
    Restart(String),
    /// The offerer took the answer to the offer whose digest is `offer` and starts checking
    /// the answerer's reflexive candidates half a signalling round trip from now, when
    /// this arrives: the answerer starts checking the offerer's on receipt.
    Punch {
        /// The digest of the offer.
        offer: u64,
    },
    /// Whether the sender of this signal wants our video (its "no incoming video" mode
    /// for a weak link): while it does not, we send it none and leave its path out of
    /// the rate our encoders aim at.
    Video {
        /// It wants our video.
        receive: bool,
    },
    /// Which videos the sender of this signal sends: a camera turned off or a share
    /// stopped ends at once at the receiver (the avatar comes back), instead of after
    /// [`VIDEO_GONE_AFTER`](crate::media::video::VIDEO_GONE_AFTER) without a picture.
    Sending {
        /// Its camera is on.
        camera: bool,
        /// It shares a screen.
        screen: bool,
    },
    /// A second connection, without relayed candidates, beside the relayed one we have
    /// (`engine::upgrade`): it takes over once it has a direct path. Answered with
    /// [`Signal::Answer`] and punched with [`Signal::Punch`] like an offer.
    Upgrade(String),
}

impl Signal {
    /// The wire form.
    pub(crate) fn encode(&self) -> Vec<u8> {
        crate::proto::to_cbor(self)
    }

    /// Parses the wire form (`None` if malformed).
    pub(crate) fn decode(payload: &[u8]) -> Option<Self> {
        ciborium::from_reader(payload).ok()
    }
}

/// Names an offer in its answer: the first 8 bytes of the SHA-256 of its SDP.
pub(crate) fn offer_digest(sdp: &str) -> u64 {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(sdp.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}
