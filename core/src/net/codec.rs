//! Frames [`wire`](super::wire) messages on a request-response stream: a u32 big-endian
//! length, then the body. Lengths above [`MAX_FRAME_LEN`] are refused before any allocation.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::wire::{MAX_FRAME_LEN, Request, Response, WireError};

/// The control protocol's name.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/conclave/control/1");

/// The request-response codec of the control protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlCodec;

pub(super) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
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
    Ok(body)
}

pub(super) async fn write_frame<T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    body: &[u8],
) -> io::Result<()> {
    if body.len() > MAX_FRAME_LEN {
        return Err(invalid(WireError::FrameTooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        }));
    }
    let len = u32::try_from(body.len()).expect("bounded by MAX_FRAME_LEN");
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.close().await
}

pub(super) fn invalid(err: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl request_response::Codec for ControlCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Request::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        Response::decode(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.encode()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.encode()).await
    }
}
