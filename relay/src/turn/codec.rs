//! The TURN wire pieces that both ends of a connection need: how long a frame on a
//! TURN-over-TCP stream is (RFC 6062 framing: STUN messages and padded ChannelData back to
//! back), reading one such frame, and decoding a STUN message.
//!
//! The relay reads its TCP clients with these; the system tests' TURN client
//! (`tests/src/turn_client.rs`) reads the relay's answers with the very same code.

use stun::message::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Why a TCP frame header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Neither a STUN message nor ChannelData.
    #[error("not a STUN message or ChannelData frame")]
    Unknown,
    /// A STUN length that is not a multiple of four.
    #[error("STUN length {0} is not a multiple of 4")]
    Unaligned(usize),
}

/// Why no frame could be read from a TCP stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFrameError {
    /// The stream ended or broke.
    #[error("the TCP stream ended")]
    Closed(#[source] std::io::Error),
    /// The bytes on the stream are not TURN framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Total length on a TCP stream of the frame whose first four bytes are `header`: a STUN
/// message (20-byte header + length) or ChannelData (4-byte header + length padded to 4).
pub fn tcp_frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    match header[0] >> 6 {
        0b00 if len % 4 == 0 => Ok(20 + len),
        0b00 => Err(FrameError::Unaligned(len)),
        0b01 => Ok(4 + len.div_ceil(4) * 4),
        _ => Err(FrameError::Unknown),
    }
}

/// Reads one whole frame (STUN message or padded ChannelData) from a TURN-over-TCP stream.
/// Not cancel-safe: a frame half read is lost with the future.
pub async fn read_tcp_frame(
    read: &mut (impl AsyncRead + Unpin),
) -> Result<Vec<u8>, ReadFrameError> {
    let mut header = [0u8; 4];
    read.read_exact(&mut header)
        .await
        .map_err(ReadFrameError::Closed)?;
    let len = tcp_frame_len(header)?;
    let mut frame = vec![0u8; len];
    frame[..4].copy_from_slice(&header);
    read.read_exact(&mut frame[4..])
        .await
        .map_err(ReadFrameError::Closed)?;
    Ok(frame)
}

/// Decodes a STUN message, `None` if `buf` is not one.
pub fn decode_stun(buf: &[u8]) -> Option<Message> {
    if !stun::message::is_message(buf) {
        return None;
    }
    let mut msg = Message::new();
    msg.raw = buf.to_vec();
    msg.decode().ok()?;
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_frames_have_their_length() {
        // STUN binding request header with 8 bytes of attributes.
        assert_eq!(tcp_frame_len([0x00, 0x01, 0x00, 0x08]), Ok(28));
        assert_eq!(
            tcp_frame_len([0x00, 0x01, 0x00, 0x07]),
            Err(FrameError::Unaligned(7))
        );
        // ChannelData 0x4000 with 5 bytes: padded to 8.
        assert_eq!(tcp_frame_len([0x40, 0x00, 0x00, 0x05]), Ok(12));
        assert_eq!(tcp_frame_len([0x7f, 0xff, 0x00, 0x00]), Ok(4));
        assert_eq!(tcp_frame_len([0x80, 0, 0, 0]), Err(FrameError::Unknown));
        assert_eq!(tcp_frame_len([0x00, 0x01, 0xff, 0xfc]), Ok(20 + 0xfffc));
    }

    #[tokio::test]
    async fn frames_are_read_whole_one_after_another() {
        // ChannelData with 5 bytes (padded to 8), then a bare binding request header.
        let mut stream: &[u8] = &[
            0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, //
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(read_tcp_frame(&mut stream).await.unwrap().len(), 12);
        assert_eq!(read_tcp_frame(&mut stream).await.unwrap().len(), 20);
        assert!(matches!(
            read_tcp_frame(&mut stream).await,
            Err(ReadFrameError::Closed(_))
        ));
        let mut garbage: &[u8] = &[0x80, 0, 0, 0];
        assert!(matches!(
            read_tcp_frame(&mut garbage).await,
            Err(ReadFrameError::Frame(FrameError::Unknown))
        ));
    }
}
