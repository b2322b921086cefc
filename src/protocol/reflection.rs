//! gRPC server reflection (v1 and v1alpha), built per snapshot from the schema's
//! descriptors, so reflection always describes exactly the live schema.
//!
//! tonic-reflection ends its response stream with status OK when a request
//! message does not decode; we check each request message ourselves on its way
//! in and, if one was malformed, answer INTERNAL in the trailers instead, as for
//! any other malformed request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes, BytesMut};
use http_body::Frame;
use prost::Message as _;
use tonic::body::Body;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::Error;
use crate::call::BoxFuture;

/// A type-erased service (tonic-reflection's service types cannot be named).
type Erased = Arc<dyn Fn(http::Request<CheckedBody>) -> BoxFuture<http::Response<Body>> + Send + Sync>;

fn erase<S>(svc: S) -> Erased
where
    S: tower_service::Service<http::Request<CheckedBody>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    Arc::new(move |req| {
        let fut = svc.clone().call(req);
        Box::pin(async move {
            match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        })
    })
}

/// Both reflection services for one schema.
#[derive(Clone)]
pub(crate) struct Reflection {
    v1: Erased,
    v1alpha: Erased,
}

impl std::fmt::Debug for Reflection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reflection")
    }
}

/// Path prefixes the reflection services answer.
pub(crate) const V1_PREFIX: &str = "/grpc.reflection.v1.ServerReflection/";
pub(crate) const V1ALPHA_PREFIX: &str = "/grpc.reflection.v1alpha.ServerReflection/";

/// Whether `path` is a reflection method's.
pub(crate) fn is_reflection(path: &str) -> bool {
    path.starts_with(V1_PREFIX) || path.starts_with(V1ALPHA_PREFIX)
}

impl Reflection {
    /// Describes `schema`, comments included (its source info is put back).
    pub(crate) fn new(schema: &crate::Schema) -> Result<Self, String> {
        let pool = schema.pool();
        let encoded = schema.encode_with_source_info();
        let with_health = pool.get_service_by_name("grpc.health.v1.Health").is_none();
        let builder = || {
            let mut b = tonic_reflection::server::Builder::configure().register_encoded_file_descriptor_set(&encoded);
            if with_health {
                b = b.register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            }
            b
        };
        Ok(Self {
            v1: erase(builder().build_v1().map_err(|e| e.to_string())?),
            v1alpha: erase(builder().build_v1alpha().map_err(|e| e.to_string())?),
        })
    }

    /// Answers a request whose path starts with one of the prefixes above
    /// (gRPC, or gRPC-Web once tonic-web has translated it).
    pub(crate) async fn call(&self, req: http::Request<Body>) -> http::Response<Body> {
        let malformed = Arc::new(AtomicBool::new(false));
        let v1 = req.uri().path().starts_with(V1_PREFIX);
        let req = req.map(|inner| CheckedBody { inner, frames: Frames::default(), malformed: malformed.clone() });
        let res = if v1 { (self.v1)(req).await } else { (self.v1alpha)(req).await };
        res.map(|inner| Body::new(FlaggedBody { inner, malformed }))
    }
}

/// Splits a gRPC request body into messages and checks each decodes as a
/// `ServerReflectionRequest` (v1 and v1alpha share the wire format).
#[derive(Debug, Default)]
struct Frames {
    buf: BytesMut,
}

impl Frames {
    /// Takes more body bytes; false once a complete message does not decode.
    fn feed(&mut self, data: &[u8]) -> bool {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= 5 {
            let compressed = self.buf[0] != 0;
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            if self.buf.len() < 5 + len {
                return true;
            }
            self.buf.advance(5);
            let msg = self.buf.split_to(len);
            // Compressed messages are left to tonic, which decompresses them.
            if !compressed && ServerReflectionRequest::decode(msg.freeze()).is_err() {
                return false;
            }
        }
        true
    }
}

/// The request body, checked message by message on its way to tonic-reflection.
pub(crate) struct CheckedBody {
    inner: Body,
    frames: Frames,
    malformed: Arc<AtomicBool>,
}

impl http_body::Body for CheckedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
            && !this.frames.feed(data)
        {
            this.malformed.store(true, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The response body: an OK status after a malformed request becomes INTERNAL.
struct FlaggedBody {
    inner: Body,
    malformed: Arc<AtomicBool>,
}

impl http_body::Body for FlaggedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        let Some(Ok(f)) = frame else { return Poll::Ready(frame) };
        let frame = match f.into_trailers() {
            Ok(mut trailers) => {
                let ok = trailers.get("grpc-status").is_none_or(|v| v == "0");
                if ok && this.malformed.load(Ordering::Acquire) {
                    let status = Error::malformed(
                        "grpc.reflection.ServerReflection/ServerReflectionInfo: \
                         request is not a valid ServerReflectionRequest message",
                    )
                    .into_status();
                    let (parts, _) = status.into_http::<Body>().into_parts();
                    for name in ["grpc-status", "grpc-message"] {
                        if let Some(v) = parts.headers.get(name) {
                            trailers.insert(name, v.clone());
                        }
                    }
                }
                Frame::trailers(trailers)
            }
            Err(f) => f,
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
