//! A client codec that encodes prost requests but does not decode responses: it only
//! counts them. Streaming load then measures the server, not the client's decoding.

use std::marker::PhantomData;

use bytes::Buf as _;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes `T` with prost; decodes each response message to its length in bytes.
#[derive(Debug)]
pub(crate) struct CountingCodec<T>(PhantomData<T>);

impl<T> Default for CountingCodec<T> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T: prost::Message + Send + 'static> Codec for CountingCodec<T> {
    type Encode = T;
    type Decode = usize;
    type Encoder = ProstEncoder<T>;
    type Decoder = LengthDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        LengthDecoder
    }
}

#[derive(Debug)]
pub(crate) struct ProstEncoder<T>(PhantomData<T>);

impl<T: prost::Message> Encoder for ProstEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding request: {e}")))
    }
}

#[derive(Debug)]
pub(crate) struct LengthDecoder;

impl Decoder for LengthDecoder {
    type Item = usize;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<usize>, Status> {
        let len = src.remaining();
        src.advance(len);
        Ok(Some(len))
    }
}
