//! The request-response codec of Conclave's libp2p protocols: one [`Message`] per frame
//! ([`crate::proto::framing`]) for each request and each response.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;

use crate::proto::Message;
use crate::proto::control::{Request, Response};
use crate::proto::framing::{read_message, write_message};
use crate::proto::turn::{TurnRequest, TurnResponse};

/// The control protocol's name.
pub const CONTROL_PROTOCOL: StreamProtocol = StreamProtocol::new("/conclave/control/1");
/// The TURN credential protocol's name.
pub const TURN_PROTOCOL: StreamProtocol = StreamProtocol::new("/conclave/turn/1.0.0");

/// The request-response codec of the control protocol.
pub type ControlCodec = FramedCodec<Request, Response>;
/// The request-response codec of [`TURN_PROTOCOL`].
pub type TurnCodec = FramedCodec<TurnRequest, TurnResponse>;

/// A request-response codec carrying one frame per request and one per response.
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

impl<Req: Message, Resp: Message> request_response::Codec for FramedCodec<Req, Resp> {
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &req).await
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
        write_message(io, &res).await
    }
}
