//! One message per frame on a byte stream: a u32 big-endian length, then the body. Lengths
//! above [`MAX_FRAME_LEN`] are refused before any allocation, in both directions.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{MAX_FRAME_LEN, Message, WireError};

/// Reads one frame and decodes the message in it.
pub async fn read_message<M: Message, T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<M> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(invalid(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        }));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    M::decode(&body).map_err(invalid)
}

/// Encodes a message into one frame, writes it and closes the writing side.
pub async fn write_message<M: Message, T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    message: &M,
) -> io::Result<()> {
    let body = message.encode();
    if body.len() > MAX_FRAME_LEN {
        return Err(invalid(WireError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        }));
    }
    let len = u32::try_from(body.len()).expect("bounded by MAX_FRAME_LEN");
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    io.close().await
}

fn invalid(err: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invite::MeetingId;
    use crate::proto::control::{Request, Response};

    #[test]
    fn a_message_survives_a_frame_and_an_oversized_length_is_refused_unread() {
        futures::executor::block_on(async {
            let request = Request::Bye {
                meeting_id: MeetingId([3; 16]),
                leave: None,
            };
            let mut buf = futures::io::Cursor::new(Vec::new());
            write_message(&mut buf, &request).await.unwrap();
            let bytes = buf.into_inner();
            assert_eq!(bytes.len(), 4 + request.encode().len());
            let read: Request = read_message(&mut futures::io::Cursor::new(bytes))
                .await
                .unwrap();
            assert_eq!(read, request);

            let mut huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
            huge.extend_from_slice(&[0; 16]);
            let err = read_message::<Response, _>(&mut futures::io::Cursor::new(huge))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        });
    }
}
