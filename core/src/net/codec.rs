//! Frames [`wire`](super::wire) messages on a request-response stream: a u32 big-endian
//! length, then the body. Lengths above [`MAX_FRAME_LEN`] are refused before any allocation.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use super::wire::{MAX_FRAME_LEN, Request, Response, WireError};

/// The control protocol's name.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/conclave/control/1");

/// The request-response codec of the control protocol.
pub type ControlCodec = FramedCodec<Request, Response>;

/// A message that travels as the body of one frame.
pub trait Framed: Sized + Send + 'static {
    /// The frame body.
    fn to_frame(&self) -> Vec<u8>;
    /// Parses a frame body.
    fn from_frame(bytes: &[u8]) -> Result<Self, WireError>;
}

impl Framed for Request {
    fn to_frame(&self) -> Vec<u8> {
        self.encode()
    }
    fn from_frame(bytes: &[u8]) -> Result<Self, WireError> {
        Self::decode(bytes)
    }
}

impl Framed for Response {
    fn to_frame(&self) -> Vec<u8> {
        self.encode()
    }
    fn from_frame(bytes: &[u8]) -> Result<Self, WireError> {
        Self::decode(bytes)
    }
}

/// A request-response codec carrying one frame per request and one per response (the
/// control protocol, and the TURN credential protocol).
pub struct FramedCodec<Req, Resp>(PhantomData<fn() -> (Req, Resp)>);

impl<Req, Resp> Default for FramedCodec<Req, Resp> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<Req, Resp> Clone for FramedCodec<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for FramedCodec<Req, Resp> {}

impl<Req, Resp> std::fmt::Debug for FramedCodec<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FramedCodec")
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
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

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
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

fn invalid(err: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl<Req: Framed, Resp: Framed> request_response::Codec for FramedCodec<Req, Resp> {
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        Req::from_frame(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        Resp::from_frame(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req.to_frame()).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res.to_frame()).await
    }
}
