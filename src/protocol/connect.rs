//! The Connect protocol (connectrpc.com): unary calls over POST with
//! `application/proto` or `application/json`, GET for methods marked
//! `idempotency_level = NO_SIDE_EFFECTS`, and streams (server, client and
//! bidi; bidi needs HTTP/2) with `application/connect+proto` / `+json`
//! envelopes, answered with envelopes ending in an end-stream message.
//! `connect-timeout-ms` becomes the call's deadline. Errors are Connect's JSON
//! error body; for unary calls the HTTP status comes from
//! [`http_status`], the protocol's table (streams always answer 200 and carry
//! the error in the end-stream message).

use std::convert::Infallible;
use std::time::Duration;

use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use hyper::body::Incoming;
use prost::Message as _;
use tonic::body::Body;
use tonic::{Code, Status};

use super::web::{WebAdapter, json_request_off_worker, maybe_off_worker, peer_of, reply_bytes};
use crate::Error;
use crate::call::{Answer, Body as CallBody, Kind, Output};

/// How messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Proto,
    Json,
}

impl Codec {
    /// The codec of a unary content-type (`application/proto`, `application/json`,
    /// parameters such as `; charset=utf-8` allowed).
    pub(crate) fn of_unary(ct: &[u8]) -> Option<Codec> {
        let ct = ct.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        match ct {
            b"application/proto" => Some(Codec::Proto),
            b"application/json" => Some(Codec::Json),
            _ => None,
        }
    }

    /// The codec of a streaming content-type (`application/connect+proto|json`).
    fn of_stream(ct: &[u8]) -> Option<Codec> {
        match ct.strip_prefix(b"application/connect+")? {
            b"proto" => Some(Codec::Proto),
            b"json" => Some(Codec::Json),
            _ => None,
        }
    }

    fn unary_content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        })
    }

    fn stream_content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Codec::Proto => "application/connect+proto",
            Codec::Json => "application/connect+json",
        })
    }
}

/// Whether a request is Connect's: a streaming content-type, a unary one with
/// the `connect-protocol-version` header (or `application/proto`, which only
/// Connect uses), or a GET with `connect=v1` in its query.
pub(crate) fn is_connect(req: &http::Request<Incoming>, ct: &[u8]) -> bool {
    if ct.starts_with(b"application/connect+") {
        return true;
    }
    if req.method() == http::Method::GET {
        return req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "connect=v1"));
    }
    match Codec::of_unary(ct) {
        Some(Codec::Proto) => true,
        Some(Codec::Json) => req.headers().contains_key(CONNECT_PROTOCOL_VERSION),
        None => false,
    }
}

const CONNECT_PROTOCOL_VERSION: &str = "connect-protocol-version";
const CONNECT_TIMEOUT: &str = "connect-timeout-ms";

/// Answers one Connect request.
pub(crate) async fn serve(web: &WebAdapter, req: http::Request<Incoming>) -> http::Response<Body> {
    let ct = req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if let Some(codec) = Codec::of_stream(ct) {
        return stream(web, req, codec).await;
    }
    if ct.starts_with(b"application/connect+") {
        return unsupported_codec();
    }
    match unary(web, req).await {
        Ok(res) => res,
        Err(Failure { error, get_refused }) => {
            let mut res = error_response(&error.into_status());
            if get_refused {
                *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            res
        }
    }
}

/// Why a unary call failed: the error, and whether it was a GET of a method
/// that has side effects (answered 405 with `Allow: POST`).
struct Failure {
    error: Error,
    get_refused: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, get_refused: false }
    }
}

fn unsupported_codec() -> http::Response<Body> {
    let mut res = http::Response::new(Body::empty());
    *res.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    res.headers_mut().insert(
        http::HeaderName::from_static("accept-post"),
        HeaderValue::from_static("application/connect+proto, application/connect+json"),
    );
    res
}

/// A unary call (POST, or GET with the message in the query).
async fn unary(web: &WebAdapter, req: http::Request<Incoming>) -> Result<http::Response<Body>, Failure> {
    let (parts, body) = req.into_parts();
    let (snap, route) = web.route(parts.uri.path())?;
    if route.kind != Kind::Unary {
        return Err(Failure::from(Error::unimplemented(format!(
            "{} is {}: call it with content-type application/connect+proto or application/connect+json",
            route.path,
            route.kind.name()
        ))));
    }
    if let Some(v) = parts.headers.get(CONNECT_PROTOCOL_VERSION)
        && v != "1"
    {
        return Err(Failure::from(Error::invalid_argument(format!(
            "connect-protocol-version {:?} is not supported: 1",
            String::from_utf8_lossy(v.as_bytes())
        ))));
    }
    let deadline = timeout(&parts.headers)?.map(|d| tokio::time::Instant::now() + d);
    let (codec, message) = if parts.method == http::Method::GET {
        if !no_side_effects(&route.method) {
            let error = Error::unimplemented(format!(
                "GET is only for methods marked idempotency_level = NO_SIDE_EFFECTS; {} is not: use POST",
                route.path
            ));
            return Err(Failure { error, get_refused: true });
        }
        let q = GetQuery::parse(parts.uri.query().unwrap_or_default(), web.max_recv)?;
        (q.codec, q.message)
    } else if parts.method == http::Method::POST {
        let encoding = request_encoding(parts.headers.get(header::CONTENT_ENCODING))?;
        let ct = parts.headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
        let codec = Codec::of_unary(ct)
            .ok_or_else(|| Error::invalid_argument("Connect unary calls are application/proto or application/json"))?;
        (codec, encoding.decode(web.read_body(body).await?, web.max_recv).await?)
    } else {
        return Err(Failure::from(Error::unimplemented(format!(
            "Connect calls are POST (or GET), not {}",
            parts.method
        ))));
    };
    let raw = match codec {
        Codec::Proto => message,
        Codec::Json => json_request_off_worker(route.method.input(), message).await?,
    };
    let output = route.method.output();
    let gzip_reply = accepts_gzip(parts.headers.get(header::ACCEPT_ENCODING));
    let answer = web.call(snap, route, parts.headers, peer_of(&parts.extensions), deadline, raw).await?;
    let (metadata, reply) = one_reply(answer).await?;
    let mut body: Bytes = match codec {
        Codec::Proto => reply_bytes(reply),
        Codec::Json => web.reply_json_off_worker(reply, output).await?.into(),
    };
    let compress = gzip_reply && body.len() >= COMPRESS_MIN;
    if compress {
        body = maybe_off_worker(body.len(), "compressing a reply", move || Ok(gzip(&body))).await?;
    }
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(body)));
    *res.headers_mut() = metadata.into_headers();
    res.headers_mut().insert(header::CONTENT_TYPE, codec.unary_content_type());
    if compress {
        res.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(res)
}

/// The one reply of a unary answer.
async fn one_reply(answer: Answer) -> Result<(tonic::metadata::MetadataMap, crate::Reply), Error> {
    match answer.body {
        Output::One(r) => Ok((answer.metadata, r)),
        Output::Many(mut s) => match s.next().await {
            Some(r) => Ok((answer.metadata, r?)),
            None => Err(Error::internal("the unary call answered no reply")),
        },
    }
}

/// Whether a method may be called with GET.
fn no_side_effects(method: &prost_reflect::MethodDescriptor) -> bool {
    method.method_descriptor_proto().options.as_ref().is_some_and(|o| {
        o.idempotency_level() == prost_reflect::prost_types::method_options::IdempotencyLevel::NoSideEffects
    })
}

/// How request messages are compressed: `identity` or `gzip` (Connect answers
/// others UNIMPLEMENTED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// Decompresses a message (at most `max` bytes once inflated).
    async fn decode(self, data: Bytes, max: usize) -> Result<Bytes, Error> {
        match self {
            Encoding::Identity => Ok(data),
            Encoding::Gzip => maybe_off_worker(data.len(), "decompressing a request", move || gunzip(&data, max)).await,
        }
    }
}

fn request_encoding(encoding: Option<&HeaderValue>) -> Result<Encoding, Error> {
    match encoding.map(HeaderValue::as_bytes) {
        None | Some(b"identity") => Ok(Encoding::Identity),
        Some(b"gzip") => Ok(Encoding::Gzip),
        Some(other) => Err(Error::unimplemented(format!(
            "request compression {} is not supported: gzip or identity",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Whether an accept-encoding list names gzip.
fn accepts_gzip(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|list| {
        list.split(',').any(|e| e.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case("gzip"))
    })
}

/// Replies smaller than this are not worth compressing.
const COMPRESS_MIN: usize = 1024;

/// Inflates gzip data, refusing more than `max` bytes (RESOURCE_EXHAUSTED)
/// without inflating past it.
fn gunzip(data: &[u8], max: usize) -> Result<Bytes, Error> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid_argument(format!("the request is not valid gzip: {e}")))?;
    if out.len() > max {
        return Err(Error::too_large(format!(
            "the decompressed request is larger than the {max}-byte limit (see --max-message-size)"
        )));
    }
    Ok(out.into())
}

fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default().into()
}

/// `connect-timeout-ms`: 1 to 10 digits.
fn timeout(headers: &http::HeaderMap) -> Result<Option<Duration>, Error> {
    let Some(v) = headers.get(CONNECT_TIMEOUT) else { return Ok(None) };
    let v = v.as_bytes();
    if v.is_empty() || v.len() > 10 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::invalid_argument(format!(
            "connect-timeout-ms must be 1 to 10 digits, not {:?}",
            String::from_utf8_lossy(v)
        )));
    }
    let ms = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(Some(Duration::from_millis(ms)))
}

/// A GET request's query: `encoding`, `message` (percent-encoded, optionally
/// URL-safe base64 with `base64=1`), `compression`, `connect`.
#[derive(Debug)]
struct GetQuery {
    codec: Codec,
    message: Bytes,
}

impl GetQuery {
    fn parse(query: &str, max: usize) -> Result<GetQuery, Error> {
        let (mut codec, mut message, mut base64, mut gzipped) = (None, None, false, false);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "encoding" => {
                    codec = Some(match v {
                        "proto" => Codec::Proto,
                        "json" => Codec::Json,
                        _ => return Err(Error::invalid_argument(format!("unsupported encoding {v:?}: proto or json"))),
                    })
                }
                "message" => {
                    if v.len() > max.saturating_mul(3).saturating_add(4) {
                        return Err(Error::too_large(format!(
                            "the message is larger than the {max}-byte limit (see --max-message-size)"
                        )));
                    }
                    let plus_as_space = v.replace('+', " ");
                    message = Some(percent_encoding::percent_decode_str(&plus_as_space).collect::<Vec<u8>>());
                }
                "base64" => base64 = v == "1",
                "compression" if v.is_empty() || v == "identity" => {}
                "compression" if v == "gzip" => gzipped = true,
                "compression" => {
                    return Err(Error::unimplemented(format!("compression {v:?} is not supported: gzip or identity")));
                }
                "connect" if v == "v1" => {}
                "connect" => return Err(Error::invalid_argument(format!("unsupported Connect version {v:?}: v1"))),
                _ => {}
            }
        }
        let codec =
            codec.ok_or_else(|| Error::invalid_argument("a Connect GET needs encoding=proto or encoding=json"))?;
        let message = message.ok_or_else(|| Error::invalid_argument("a Connect GET needs the message parameter"))?;
        let message = if base64 {
            let trimmed: &[u8] = message.strip_suffix(b"==").or_else(|| message.strip_suffix(b"=")).unwrap_or(&message);
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .map_err(|e| Error::invalid_argument(format!("the message is not URL-safe base64: {e}")))?
        } else {
            message
        };
        let message = if gzipped { gunzip(&message, max)?.to_vec() } else { message };
        if message.len() > max {
            return Err(Error::too_large(format!(
                "the message is larger than the {max}-byte limit (see --max-message-size)"
            )));
        }
        Ok(GetQuery { codec, message: message.into() })
    }
}

/// A streaming call: enveloped requests in (exactly one for server streams,
/// read whole; client and bidi streams as they arrive), enveloped replies and
/// an end-stream message out.
async fn stream(web: &WebAdapter, req: http::Request<Incoming>, codec: Codec) -> http::Response<Body> {
    let mut res = match stream_answer(web, req, codec).await {
        Ok((metadata, body)) => {
            let mut res = http::Response::new(body);
            *res.headers_mut() = metadata.into_headers();
            res
        }
        Err(e) => http::Response::new(Body::new(http_body_util::Full::new(end_stream(Some(&e.into_status()))))),
    };
    res.headers_mut().insert(header::CONTENT_TYPE, codec.stream_content_type());
    res
}

async fn stream_answer(
    web: &WebAdapter,
    req: http::Request<Incoming>,
    codec: Codec,
) -> Result<(tonic::metadata::MetadataMap, Body), Error> {
    let (parts, body) = req.into_parts();
    let (snap, route) = web.route(parts.uri.path())?;
    if route.kind == Kind::Unary {
        return Err(Error::unimplemented(format!(
            "{} is unary: call it with content-type application/proto or application/json",
            route.path
        )));
    }
    if parts.method != http::Method::POST {
        return Err(Error::unimplemented(format!("Connect streams are POST, not {}", parts.method)));
    }
    let deadline = timeout(&parts.headers)?.map(|d| tokio::time::Instant::now() + d);
    let encoding = request_encoding(parts.headers.get("connect-content-encoding"))?;
    let gzip_replies = accepts_gzip(parts.headers.get("connect-accept-encoding"));
    let input = route.method.input();
    let max = web.max_recv;
    let call_body = if route.kind.client_streaming() {
        let envelopes = envelopes(body, max).then(move |m| async move {
            let (compressed, msg) = m?;
            inflate(encoding, compressed, msg, max).await
        });
        let frames: crate::call::Frames = match codec {
            Codec::Proto => Box::pin(envelopes),
            Codec::Json => Box::pin(envelopes.then(move |m| {
                let input = input.clone();
                async move { json_request_off_worker(input, m?).await }
            })),
        };
        CallBody::Frames(frames)
    } else {
        let body = super::web::read_limited(body, web.max_recv.saturating_add(5)).await?;
        let (compressed, message) = one_envelope(&body)?;
        let message = inflate(encoding, compressed, message, max).await?;
        CallBody::One(match codec {
            Codec::Proto => message,
            Codec::Json => json_request_off_worker(input, message).await?,
        })
    };
    let output = route.method.output();
    let answer = web.call_body(snap, route, parts.headers, peer_of(&parts.extensions), deadline, call_body).await?;
    let (metadata, replies, _trailers) = answer.into_stream(); // trailers: gRPC and gRPC-Web only (see Known limits)
    let web = web.clone();
    let mut failed = false;
    let frames = replies
        .map(Some)
        .chain(futures_util::stream::once(std::future::ready(None)))
        .scan((), move |(), item| {
            let frame = match item {
                _ if failed => None,
                Some(Ok(reply)) => {
                    let encoded = match codec {
                        Codec::Proto => Ok(reply_bytes(reply)),
                        Codec::Json => web.reply_json(reply, &output).map(Bytes::from),
                    };
                    Some(match encoded {
                        Ok(msg) if gzip_replies && msg.len() >= COMPRESS_MIN => envelope(0x01, &gzip(&msg)),
                        Ok(msg) => envelope(0, &msg),
                        Err(e) => {
                            failed = true;
                            end_stream(Some(&e.into_status()))
                        }
                    })
                }
                Some(Err(e)) => {
                    failed = true;
                    Some(end_stream(Some(&e.into_status())))
                }
                None => Some(end_stream(None)),
            };
            std::future::ready(frame)
        })
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut headers = metadata.into_headers();
    if gzip_replies {
        headers.insert("connect-content-encoding", HeaderValue::from_static("gzip"));
    }
    Ok((tonic::metadata::MetadataMap::from_headers(headers), Body::new(http_body_util::StreamBody::new(frames))))
}

/// Server reflection over Connect (`application/connect+proto`, the bidi
/// stream `buf curl` uses to find a schema): Connect's request envelopes are
/// gRPC's frames, so the request goes to the gRPC adapter as it is, and the
/// answer's frames come back as they are, its gRPC status becoming the
/// end-stream message.
pub(crate) async fn reflection(grpc: &super::grpc::GrpcAdapter, req: http::Request<Incoming>) -> http::Response<Body> {
    use http_body_util::BodyExt as _;
    let ct = req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes).unwrap_or_default();
    if Codec::of_stream(ct) != Some(Codec::Proto) {
        let e = Error::unimplemented("server reflection over Connect is application/connect+proto");
        let mut res = http::Response::new(Body::new(http_body_util::Full::new(end_stream(Some(&e.into_status())))));
        res.headers_mut().insert(header::CONTENT_TYPE, Codec::Json.stream_content_type());
        return res;
    }
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.remove(header::CONTENT_LENGTH);
    let peer = parts.extensions.get::<crate::call::Peer>().cloned().unwrap_or_default();
    let (head, body) = grpc.serve(http::Request::from_parts(parts, body), peer).await.into_parts();
    let trailers_only = Status::from_header_map(&head.headers);
    let frames = futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        let end = match body.frame().await {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => return Some((data, Some(body))),
                Err(frame) => Status::from_header_map(frame.trailers_ref()?),
            },
            Some(Err(status)) => Some(status),
            None => None,
        };
        Some((end_stream(end.as_ref().filter(|s| s.code() != Code::Ok)), None))
    });
    let body = match trailers_only {
        Some(status) => {
            Body::new(http_body_util::Full::new(end_stream(Some(&status).filter(|s| s.code() != Code::Ok))))
        }
        None => Body::new(http_body_util::StreamBody::new(frames.map(|b| Ok::<_, Infallible>(Frame::data(b))))),
    };
    let mut res = http::Response::new(body);
    res.headers_mut().insert(header::CONTENT_TYPE, Codec::Proto.stream_content_type());
    res
}

/// The messages of a streamed request body as they arrive: each envelope at
/// most `max` bytes (RESOURCE_EXHAUSTED past it, before it is buffered).
fn envelopes(
    body: Incoming,
    max: usize,
) -> impl futures_util::Stream<Item = Result<(bool, Bytes), Error>> + Send + 'static {
    use http_body_util::BodyExt as _;
    let state = Some((body, BytesMut::new()));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            if let Some(head) = buf.first_chunk::<5>() {
                let (flags, len) = (head[0], u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize);
                let refused = if flags & !0x01 != 0 {
                    Some(Error::invalid_argument(format!("unexpected envelope flags {flags:#04x} on a request")))
                } else if len > max {
                    Some(Error::too_large(format!(
                        "request message of {len} bytes is larger than the {max}-byte limit (see --max-message-size)"
                    )))
                } else {
                    None
                };
                if let Some(e) = refused {
                    return Some((Err(e), None));
                }
                if buf.len() >= 5 + len {
                    let _ = buf.split_to(5);
                    let msg = buf.split_to(len).freeze();
                    return Some((Ok((flags & 0x01 != 0, msg)), Some((body, buf))));
                }
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        buf.extend_from_slice(data);
                    }
                }
                Some(Err(e)) => {
                    return Some((Err(Error::invalid_argument(format!("cannot read the request: {e}"))), None));
                }
                None if buf.is_empty() => return None,
                None => {
                    let e = Error::invalid_argument("the Connect request ends inside an envelope");
                    return Some((Err(e), None));
                }
            }
        }
    })
}

/// A request message as sent: inflated when its envelope says it is compressed
/// (which needs `connect-content-encoding: gzip`).
async fn inflate(encoding: Encoding, compressed: bool, msg: Bytes, max: usize) -> Result<Bytes, Error> {
    match (compressed, encoding) {
        (false, _) => Ok(msg),
        (true, Encoding::Identity) => {
            Err(Error::invalid_argument("a compressed envelope, but connect-content-encoding names no compression"))
        }
        (true, encoding) => encoding.decode(msg, max).await,
    }
}

/// The one message of an enveloped request body, and whether it is compressed.
fn one_envelope(body: &[u8]) -> Result<(bool, Bytes), Error> {
    let Some((head, rest)) = body.split_first_chunk::<5>() else {
        return Err(Error::invalid_argument("the Connect request has no complete envelope"));
    };
    if head[0] & !0x01 != 0 {
        return Err(Error::invalid_argument(format!("unexpected envelope flags {:#04x} on a request", head[0])));
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if rest.len() != len {
        return Err(Error::invalid_argument(format!(
            "a server-streaming Connect request is one envelope: the envelope says {len} bytes, the body holds {}",
            rest.len()
        )));
    }
    Ok((head[0] & 0x01 != 0, Bytes::copy_from_slice(rest)))
}

fn envelope(flags: u8, msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.put_u8(flags);
    out.put_u32(u32::try_from(msg.len()).unwrap_or(u32::MAX));
    out.put_slice(msg);
    out.freeze()
}

/// The end-stream message: `{}` or `{"error": ...}`.
fn end_stream(status: Option<&Status>) -> Bytes {
    let json = match status {
        None => serde_json::json!({}),
        Some(s) => serde_json::json!({ "error": error_json(s) }),
    };
    envelope(0x02, json.to_string().as_bytes())
}

/// A unary error: the HTTP status from the table, Connect's JSON error body,
/// and the status's metadata as headers.
fn error_response(status: &Status) -> http::Response<Body> {
    let body = error_json(status).to_string();
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *res.headers_mut() = status.metadata().clone().into_headers();
    *res.status_mut() = http_status(status.code());
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Connect's error object: code name, message, and the `google.rpc.Status`
/// details as `{type, value}` (value: standard base64 without padding).
fn error_json(status: &Status) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("code".into(), code_name(status.code()).into());
    if !status.message().is_empty() {
        obj.insert("message".into(), status.message().into());
    }
    let details = crate::validate::RpcStatus::decode(status.details()).map(|s| s.details).unwrap_or_default();
    if !details.is_empty() {
        let list = details
            .iter()
            .map(|any| {
                let ty = any.type_url.rsplit('/').next().unwrap_or_default();
                serde_json::json!({
                    "type": ty,
                    "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                })
            })
            .collect();
        obj.insert("details".into(), serde_json::Value::Array(list));
    }
    serde_json::Value::Object(obj)
}

/// Connect's name of a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The Connect protocol's table: the HTTP status of a unary call's error.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_one_to_ten_digits() {
        let mut h = http::HeaderMap::new();
        assert_eq!(timeout(&h).unwrap(), None);
        h.insert(CONNECT_TIMEOUT, "1500".parse().unwrap());
        assert_eq!(timeout(&h).unwrap(), Some(Duration::from_millis(1500)));
        h.insert(CONNECT_TIMEOUT, "9999999999".parse().unwrap());
        assert_eq!(timeout(&h).unwrap(), Some(Duration::from_millis(9_999_999_999)));
        for bad in ["", "12345678901", "-1", "1.5", "10s"] {
            h.insert(CONNECT_TIMEOUT, bad.parse().unwrap());
            assert!(timeout(&h).unwrap_err().is_invalid_argument(), "{bad:?}");
        }
    }

    #[test]
    fn get_queries_parse_or_fail_clearly() {
        let q = GetQuery::parse("connect=v1&encoding=json&message=%7B%22a%22%3A1%7D", 100).unwrap();
        assert_eq!((q.codec, &q.message[..]), (Codec::Json, &b"{\"a\":1}"[..]));
        let q = GetQuery::parse("encoding=proto&base64=1&message=CgNhYmM", 100).unwrap();
        assert_eq!((q.codec, &q.message[..]), (Codec::Proto, &b"\n\x03abc"[..]));
        let q = GetQuery::parse("encoding=proto&base64=1&message=CgNhYmM%3D", 100).unwrap();
        assert_eq!(&q.message[..], b"\n\x03abc");
        assert!(GetQuery::parse("message=x", 100).unwrap_err().is_invalid_argument());
        assert!(GetQuery::parse("encoding=json", 100).unwrap_err().is_invalid_argument());
        assert!(GetQuery::parse("encoding=xml&message=x", 100).unwrap_err().is_invalid_argument());
        assert!(GetQuery::parse("encoding=proto&base64=1&message=*", 100).unwrap_err().is_invalid_argument());
        assert!(GetQuery::parse("encoding=json&message=0123456789", 5).unwrap_err().is_too_large());
    }

    #[test]
    fn arbitrary_queries_and_envelopes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(15);
        let alphabet = b"=&%+abcdeEF019_-connectv1encodingjsonprotomessagebase64compression";
        for _ in 0..5000 {
            let len = rng.usize(0..60);
            let q: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())] as char).collect();
            let _ = GetQuery::parse(&q, 64);
            let body: Vec<u8> = (0..rng.usize(0..12)).map(|_| rng.u8(..)).collect();
            let _ = one_envelope(&body);
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let e = envelope(0, b"abc");
        assert_eq!(one_envelope(&e).unwrap(), (false, Bytes::from_static(b"abc")));
        assert_eq!(one_envelope(&envelope(1, b"abc")).unwrap(), (true, Bytes::from_static(b"abc")));
        assert!(one_envelope(&envelope(4, b"abc")).unwrap_err().is_invalid_argument());
        assert!(one_envelope(&e[..6]).unwrap_err().is_invalid_argument());
    }

    #[test]
    fn gzip_round_trips_and_inflating_stops_at_the_limit() {
        let data = vec![b'a'; 10_000];
        assert_eq!(&gunzip(&gzip(&data), 10_000).unwrap()[..], &data[..]);
        assert!(gunzip(&gzip(&data), 9_999).unwrap_err().is_too_large());
        assert!(gunzip(b"not gzip", 100).unwrap_err().is_invalid_argument());
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..2000 {
            let mut z = gzip(b"some request bytes").to_vec();
            let i = rng.usize(..z.len());
            z[i] = rng.u8(..);
            z.truncate(rng.usize(..=z.len()));
            let _ = gunzip(&z, 64);
        }
        let accept = |s: &str| accepts_gzip(Some(&HeaderValue::from_str(s).unwrap()));
        assert!(accept("gzip") && accept("br, GZIP;q=0.5") && !accept("br") && !accept("gzipx"));
    }
}
