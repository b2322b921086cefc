//! HTTP/JSON: google.api.http transcoding and `POST /package.Service/Method`
//! with a JSON body for every method. Rules are compiled from the schema's
//! `google.api.http` options once per snapshot generation (on first use), so a
//! new annotation is live after the reload that brings it. Requests are built
//! as proto3 JSON (path variables, then the body, then query parameters for the
//! rest) and decoded with the method's input type; replies are proto3 JSON
//! (`response_body` selects one field); server streams are newline-delimited
//! `{"result": ...}` objects. Errors are a `google.rpc.Status` JSON body with
//! the HTTP status of [`http_status`], the table grpc-gateway and Envoy use.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use hyper::body::Incoming;
use prost::Message as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind as FieldKind, MessageDescriptor, MethodDescriptor, Value};
use serde_json::Value as Json;
use tonic::body::Body;
use tonic::{Code, Status};

use super::template::Template;
use super::web::{WebAdapter, maybe_off_worker, message_json, peer_of, reply_message};
use crate::Error;
use crate::call::{Kind, Output};
use crate::registry::{Route, Snapshot};

/// The HTTP/JSON adapter: the shared web state and the rules of the newest
/// generation asked about.
pub(crate) struct JsonAdapter {
    web: Arc<WebAdapter>,
    rules: arc_swap::ArcSwapOption<(u64, Rules)>,
}

impl JsonAdapter {
    pub(crate) fn new(web: Arc<WebAdapter>) -> Self {
        Self { web, rules: Default::default() }
    }

    /// Answers one request: a transcoding rule's, or a method's own path
    /// (POST); the request back when neither matches (the router answers that).
    #[allow(clippy::result_large_err)] // the request handed back, not an error
    pub(crate) async fn serve(
        &self,
        req: http::Request<Incoming>,
    ) -> Result<http::Response<Body>, http::Request<Incoming>> {
        let snap = self.web.registry.load();
        let rules = self.rules_for(&snap);
        let path = req.uri().path();
        let (binding, captured) = match rules.1.find(req.method(), path) {
            Some(found) => found,
            None if req.method() == http::Method::POST && snap.routes.contains_key(path) => {
                (&rules.1.direct, Vec::new())
            }
            None => return Err(req),
        };
        let route = match &binding.method {
            Some(m) => snap.routes.get(m.as_ref()).cloned(),
            None => snap.routes.get(path).cloned(),
        };
        let pool = snap.schema().pool().clone();
        let Some(route) = route else {
            return Ok(error_response(&pool, &crate::protocol::grpc::unknown_method(path).into_status()));
        };
        Ok(match self.call(snap, route, binding, captured, req).await {
            Ok(res) => res,
            Err(e) => error_response(&pool, &e.into_status()),
        })
    }

    async fn call(
        &self,
        snap: Arc<Snapshot>,
        route: Arc<Route>,
        binding: &Binding,
        captured: Vec<String>,
        req: http::Request<Incoming>,
    ) -> Result<http::Response<Body>, Error> {
        if route.kind.client_streaming() {
            return Err(Error::unimplemented(format!(
                "{} is {}: HTTP/JSON serves unary and server-streaming methods",
                route.path,
                route.kind.name()
            )));
        }
        let (parts, body) = req.into_parts();
        let body = self.web.read_body(body).await?;
        let input = route.method.input();
        let query = parts.uri.query().unwrap_or_default();
        let raw = if body.len() < crate::call::HEAVY_DECODE {
            build_request(&input, binding, &captured, query, &body)?
        } else {
            let (binding, query) = (binding.clone(), query.to_owned());
            crate::call::off_worker("parsing a JSON request", move || {
                build_request(&input, &binding, &captured, &query, &body)
            })
            .await?
        };
        let output = route.method.output();
        let streaming = route.kind == Kind::ServerStreaming;
        // As through Envoy's transcoder, `grpc-timeout` bounds the call.
        let deadline = super::grpc::grpc_timeout(&parts.headers).map(|d| tokio::time::Instant::now() + d);
        let answer =
            self.web.call(snap.clone(), route, parts.headers, peer_of(&parts.extensions), deadline, raw).await?;
        let options = self.web.serialize_options();
        let response_field = binding.response_body.as_deref().and_then(|f| output.get_field_by_name(f));
        // A reply as JSON text: the message, or its response_body field.
        let render = move |reply| -> Result<Vec<u8>, Error> {
            let msg = reply_message(reply, &output)?;
            match &response_field {
                Some(f) => Ok(field_json(&msg, f, &options).to_string().into_bytes()),
                None => message_json(&msg, &options),
            }
        };
        let metadata = answer.metadata.clone();
        let mut res = if streaming {
            let pool = snap.schema().pool().clone();
            let (_, replies, _) = answer.into_stream();
            let mut failed = false;
            let lines = replies.filter_map(move |item| {
                let line = match item.and_then(&render) {
                    _ if failed => None,
                    Ok(json) => Some([&b"{\"result\":"[..], &json, b"}\n"].concat()),
                    Err(e) => {
                        failed = true;
                        let error = serde_json::json!({ "error": status_json(&pool, &e.into_status()) });
                        Some([error.to_string().as_bytes(), b"\n"].concat())
                    }
                };
                std::future::ready(line.map(|l| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(l)))))
            });
            let mut res = http::Response::new(Body::new(http_body_util::StreamBody::new(lines)));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            res
        } else {
            let reply = match answer.body {
                Output::One(r) => r,
                Output::Many(mut s) => s.next().await.ok_or_else(|| Error::internal("no reply"))??,
            };
            let json = maybe_off_worker(reply.encoded_len(), "writing a JSON reply", move || render(reply)).await?;
            let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(json))));
            res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        };
        for (k, v) in metadata.into_headers() {
            if let Some(k) = k {
                res.headers_mut().append(k, v);
            }
        }
        Ok(res)
    }

    /// The rules of `snap`'s generation, compiled on first use.
    fn rules_for(&self, snap: &Snapshot) -> Arc<(u64, Rules)> {
        let generation = snap.generation();
        if let Some(cached) = self.rules.load_full().filter(|c| c.0 == generation) {
            return cached;
        }
        let built = Arc::new((generation, Rules::compile(snap)));
        self.rules.store(Some(built.clone()));
        built
    }
}

/// What a request body binds to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyTo {
    None,
    All,
    Field(String),
}

/// One HTTP binding of a method.
#[derive(Debug, Clone)]
struct Binding {
    /// The method path; `None` for the direct `POST /pkg.Service/Method` binding.
    method: Option<Arc<str>>,
    http_method: http::Method,
    template: Option<Template>,
    body: BodyTo,
    response_body: Option<String>,
}

/// Every binding of one schema generation.
#[derive(Debug)]
struct Rules {
    bindings: Vec<Binding>,
    direct: Binding,
}

impl Rules {
    fn compile(snap: &Snapshot) -> Rules {
        let pool = snap.schema().pool();
        let mut bindings = Vec::new();
        if let Some(ext) = pool.get_extension_by_name("google.api.http") {
            for service in pool.services() {
                for method in service.methods() {
                    let options = method.options();
                    if !options.has_extension(&ext) {
                        continue;
                    }
                    if let Value::Message(rule) = &*options.get_extension(&ext) {
                        add_rule(&method, rule, true, &mut bindings);
                    }
                }
            }
        }
        // More literal segments first: /v1/notes/special before /v1/notes/{id}.
        bindings.sort_by_key(|b| std::cmp::Reverse(b.template.as_ref().map_or(0, Template::literals)));
        let direct = Binding {
            method: None,
            http_method: http::Method::POST,
            template: None,
            body: BodyTo::All,
            response_body: None,
        };
        Rules { bindings, direct }
    }

    fn find(&self, method: &http::Method, path: &str) -> Option<(&Binding, Vec<String>)> {
        self.bindings.iter().filter(|b| b.http_method == method).find_map(|b| {
            let captured = b.template.as_ref()?.matches(path)?;
            Some((b, captured))
        })
    }
}

/// Adds the bindings of one `HttpRule` (and, at the top level, its additional
/// bindings); a rule that does not fit the method is logged and left out.
fn add_rule(method: &MethodDescriptor, rule: &DynamicMessage, top: bool, out: &mut Vec<Binding>) {
    let text =
        |name: &str| rule.get_field_by_name(name).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mut pattern = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        let t = text(verb);
        if !t.is_empty() {
            pattern = Some((http::Method::from_bytes(verb.to_uppercase().as_bytes()).ok(), t));
        }
    }
    if let Some(Value::Message(custom)) = rule.get_field_by_name("custom").as_deref()
        && rule.has_field_by_name("custom")
    {
        let kind = custom.get_field_by_name("kind").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let path = custom.get_field_by_name("path").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        pattern = Some((http::Method::from_bytes(kind.as_bytes()).ok(), path));
    }
    let full = method.full_name();
    if let Some((verb, path)) = pattern {
        match compile_binding(method, verb, &path, &text("body"), &text("response_body")) {
            Ok(b) => out.push(b),
            Err(e) => tracing::warn!(method = %full, "google.api.http rule left out: {e}"),
        }
    }
    if top && let Some(Value::List(more)) = rule.get_field_by_name("additional_bindings").as_deref() {
        for extra in more {
            if let Value::Message(extra) = extra {
                add_rule(method, extra, false, out);
            }
        }
    }
}

fn compile_binding(
    method: &MethodDescriptor,
    verb: Option<http::Method>,
    path: &str,
    body: &str,
    response_body: &str,
) -> Result<Binding, String> {
    let http_method = verb.ok_or_else(|| format!("bad HTTP method for {path:?}"))?;
    let template = Template::parse(path)?;
    let input = method.input();
    for var in &template.vars {
        let field = resolve(&input, &var.field_path)?;
        if field.is_list() || field.is_map() {
            return Err(format!("path variable {} is a repeated field", var.field_path.join(".")));
        }
    }
    let body = match body {
        "" => BodyTo::None,
        "*" => BodyTo::All,
        f => {
            input.get_field_by_name(f).ok_or_else(|| format!("body field {f:?} is not in {}", input.full_name()))?;
            BodyTo::Field(f.to_owned())
        }
    };
    let response_body = match response_body {
        "" => None,
        f => {
            let output = method.output();
            output
                .get_field_by_name(f)
                .ok_or_else(|| format!("response_body {f:?} is not in {}", output.full_name()))?;
            Some(f.to_owned())
        }
    };
    let method_path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    Ok(Binding { method: Some(method_path.into()), http_method, template: Some(template), body, response_body })
}

/// The field a dotted path names (every step but the last a singular message).
fn resolve(desc: &MessageDescriptor, path: &[String]) -> Result<FieldDescriptor, String> {
    let mut desc = desc.clone();
    let (last, init) = path.split_last().ok_or("empty field path")?;
    for step in init {
        let field = find_field(&desc, step).ok_or_else(|| format!("no field {step:?} in {}", desc.full_name()))?;
        desc = match field.kind() {
            FieldKind::Message(m) if !field.is_list() && !field.is_map() => m,
            _ => return Err(format!("{step:?} in {} is not a singular message field", desc.full_name())),
        };
    }
    find_field(&desc, last).ok_or_else(|| format!("no field {last:?} in {}", desc.full_name()))
}

fn find_field(desc: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    desc.get_field_by_name(name).or_else(|| desc.get_field_by_json_name(name))
}

/// Builds the request (protobuf bytes): query parameters, then the body, then
/// path variables, each later one overriding, decoded as proto3 JSON.
fn build_request(
    input: &MessageDescriptor,
    binding: &Binding,
    captured: &[String],
    query: &str,
    body: &[u8],
) -> Result<Bytes, Error> {
    let bad = |e: String| Error::invalid_argument(e);
    let mut root = serde_json::Map::new();
    if binding.body != BodyTo::All {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (form_decode(k)?, form_decode(v)?);
            let path: Vec<String> = k.split('.').map(str::to_owned).collect();
            let field = resolve(input, &path).map_err(|e| bad(format!("query parameter {k:?}: {e}")))?;
            if field.is_map() {
                return Err(bad(format!("query parameter {k:?} is a map field")));
            }
            let value = scalar_json(&field, &v).map_err(|e| bad(format!("query parameter {k:?}: {e}")))?;
            insert(&mut root, &path, value, field.is_list()).map_err(bad)?;
        }
    }
    let parse_body = || -> Result<Option<Json>, Error> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(body).map(Some).map_err(|e| bad(format!("the request body is not JSON: {e}")))
    };
    match &binding.body {
        BodyTo::None => {}
        BodyTo::All => match parse_body()? {
            Some(Json::Object(obj)) => root = obj,
            Some(_) => return Err(bad(format!("the request body must be a JSON object ({})", input.full_name()))),
            None => {}
        },
        BodyTo::Field(f) => {
            if let Some(v) = parse_body()? {
                root.insert(f.clone(), v);
            }
        }
    }
    if let Some(template) = &binding.template {
        for (var, value) in template.vars.iter().zip(captured) {
            let field = resolve(input, &var.field_path).map_err(bad)?;
            let json = scalar_json(&field, value)
                .map_err(|e| bad(format!("path variable {}: {e}", var.field_path.join("."))))?;
            insert(&mut root, &var.field_path, json, false).map_err(bad)?;
        }
    }
    let msg = DynamicMessage::deserialize(input.clone(), Json::Object(root))
        .map_err(|e| bad(format!("request is not a valid JSON {} message: {e}", input.full_name())))?;
    Ok(msg.encode_to_vec().into())
}

/// Percent-decodes a query component (`+` is a space).
fn form_decode(s: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| Error::invalid_argument(format!("query component {s:?} is not UTF-8 once decoded")))
}

/// A path or query string as the JSON value of `field` (the proto3 JSON mapping
/// takes numbers as strings; booleans are parsed).
fn scalar_json(field: &FieldDescriptor, text: &str) -> Result<Json, String> {
    match field.kind() {
        FieldKind::Bool => match text {
            "true" => Ok(Json::Bool(true)),
            "false" => Ok(Json::Bool(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
        FieldKind::Message(m) if !is_string_wkt(&m) => Err(format!("{} cannot be set from a string", m.full_name())),
        _ => Ok(Json::String(text.to_owned())),
    }
}

/// Well-known types whose JSON form is a string or number (settable from text).
fn is_string_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
    )
}

/// Sets `root[path] = value` (creating objects on the way; `append` for repeated fields).
fn insert(root: &mut serde_json::Map<String, Json>, path: &[String], value: Json, append: bool) -> Result<(), String> {
    let Some((last, init)) = path.split_last() else { return Ok(()) };
    let mut obj = root;
    for step in init {
        let entry = obj.entry(step.clone()).or_insert_with(|| Json::Object(Default::default()));
        obj = entry.as_object_mut().ok_or_else(|| format!("{step:?} is set twice in different ways"))?;
    }
    if append {
        match obj.entry(last.clone()).or_insert_with(|| Json::Array(Vec::new())) {
            Json::Array(list) => list.push(value),
            _ => return Err(format!("{last:?} is set twice in different ways")),
        }
    } else {
        obj.insert(last.clone(), value);
    }
    Ok(())
}

/// One field of a reply as JSON (`response_body`), its default when unset.
fn field_json(msg: &DynamicMessage, field: &FieldDescriptor, options: &prost_reflect::SerializeOptions) -> Json {
    let mut only = DynamicMessage::new(msg.descriptor());
    only.set_field(field, msg.get_field(field).into_owned());
    let options = options.clone().skip_default_fields(false);
    let json = only.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or(Json::Null);
    let key = if json.get(field.name()).is_some() { field.name() } else { field.json_name() };
    json.get(key).cloned().unwrap_or(Json::Null)
}

use prost_reflect::ReflectMessage as _;

/// 404 for a JSON request no rule or method matches.
pub(crate) fn not_found(what: String) -> http::Response<Body> {
    let status = Error::not_found(what).into_status();
    let body = serde_json::json!({"code": status.code() as i32, "message": status.message(), "details": []});
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body.to_string()))));
    *res.status_mut() = http_status(status.code());
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// An error as HTTP: the table's status and a `google.rpc.Status` JSON body.
pub(crate) fn error_response(pool: &prost_reflect::DescriptorPool, status: &Status) -> http::Response<Body> {
    let body = status_json(pool, status).to_string();
    let mut res = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *res.status_mut() = http_status(status.code());
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// `google.rpc.Status` as JSON: code number, message, details as `Any`s with `@type`.
fn status_json(pool: &prost_reflect::DescriptorPool, status: &Status) -> Json {
    let fallback = || serde_json::json!({"code": status.code() as i32, "message": status.message(), "details": []});
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else { return fallback() };
    let mut msg = DynamicMessage::decode(desc.clone(), status.details()).unwrap_or_else(|_| DynamicMessage::new(desc));
    msg.set_field_by_name("code", Value::I32(status.code() as i32));
    msg.set_field_by_name("message", Value::String(status.message().to_owned()));
    let options = prost_reflect::SerializeOptions::new().skip_default_fields(false);
    msg.serialize_with_options(serde_json::value::Serializer, &options).unwrap_or_else(|_| fallback())
}

/// The gRPC code -> HTTP status table of transcoding (grpc-gateway, Envoy).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
