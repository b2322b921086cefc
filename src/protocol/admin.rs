//! `--admin-addr`: the stub admin API over plain HTTP/1.1 and JSON, on a
//! listener of its own (never the RPC port). The operations are
//! `crate::admin::Admin`'s; this module only maps HTTP to them and their
//! results to statuses and JSON bodies. `GET /openapi.json` describes it.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::admin::{Admin, AdminError};

use crate::admin::MAX_BODY;

/// Every route: (method, path as the OpenAPI document writes it).
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("GET", "/stubs"),
    ("POST", "/stubs"),
    ("GET", "/stubs/unused"),
    ("PUT", "/stubs/{id}"),
    ("DELETE", "/stubs/{id}"),
    ("POST", "/reset"),
    ("GET", "/journal"),
    ("DELETE", "/journal"),
    ("POST", "/verify"),
];

/// Serves the admin API on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, admin: Admin) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "admin API: accept failed");
                // Typically EMFILE: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(answer(req, &admin).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin API: connection ended with an error");
            }
        });
    }
}

/// An admin answer: status and JSON body.
type Reply = (StatusCode, Value);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, json!({ "error": message.into() }))
}

fn admin_error(e: &AdminError) -> Reply {
    let status = match e {
        AdminError::BadRequest(..) => StatusCode::BAD_REQUEST,
        AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::Conflict(_) => StatusCode::CONFLICT,
        AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, e.to_json())
}

async fn answer(req: http::Request<Incoming>, admin: &Admin) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let (status, body) = route(&parts.method, parts.uri.path(), parts.uri.query(), body, admin).await;
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut res = http::Response::new(Full::new(Bytes::from(text)));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    res
}

async fn route(method: &Method, path: &str, query: Option<&str>, body: Incoming, admin: &Admin) -> Reply {
    let ok = |v: Value| (StatusCode::OK, v);
    let known = |m: &Method| -> Reply {
        let allowed: Vec<&str> = ROUTES.iter().filter(|(_, p)| template_matches(p, path)).map(|(m, _)| *m).collect();
        if allowed.is_empty() {
            error(StatusCode::NOT_FOUND, format!("no admin route {path}; see GET /openapi.json"))
        } else {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("{m} is not allowed on {path}; use {}", allowed.join(", ")))
        }
    };
    match (method, path) {
        (&Method::GET, "/openapi.json") => ok(openapi()),
        (&Method::GET, "/stubs") => ok(admin.stubs()),
        (&Method::GET, "/stubs/unused") => ok(admin.unused()),
        (&Method::POST, "/stubs") => match read_text(body).await {
            Ok(text) => match admin.add(text).await {
                Ok(v) => (StatusCode::CREATED, v),
                Err(e) => admin_error(&e),
            },
            Err(r) => r,
        },
        (&Method::PUT | &Method::DELETE, p) if p.starts_with("/stubs/") && p.len() > "/stubs/".len() => {
            let id = match decode(&p["/stubs/".len()..]) {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("the stub id in the path: {e}")),
            };
            let result = if method == Method::PUT {
                match read_text(body).await {
                    Ok(text) => admin.replace(id, text).await,
                    Err(r) => return r,
                }
            } else {
                admin.delete(id).await
            };
            match result {
                Ok(v) => ok(v),
                Err(e) => admin_error(&e),
            }
        }
        (&Method::POST, "/reset") => match admin.reset().await {
            Ok(v) => ok(v),
            Err(e) => admin_error(&e),
        },
        (&Method::GET, "/journal") => {
            let (method, limit) = match parse_query(query.unwrap_or("")) {
                Ok(q) => q,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match admin.journal(method.as_deref(), limit) {
                Ok(v) => ok(v),
                Err(e) => admin_error(&e),
            }
        }
        (&Method::DELETE, "/journal") => {
            admin.clear_journal();
            ok(json!({ "cleared": true }))
        }
        (&Method::POST, "/verify") => match read_text(body).await {
            Ok(text) => match admin.verify(&text) {
                Ok(v) => ok(v),
                Err(e) => admin_error(&e),
            },
            Err(r) => r,
        },
        (m, _) => known(m),
    }
}

/// Whether `path` is an instance of the OpenAPI path `template`.
fn template_matches(template: &str, path: &str) -> bool {
    match template.strip_suffix("{id}") {
        Some(prefix) => path.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty()),
        None => template == path,
    }
}

/// The body as UTF-8 text, at most [`MAX_BODY`] bytes.
async fn read_text(body: Incoming) -> Result<String, Reply> {
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} MiB", MAX_BODY >> 20),
            ));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"))),
    };
    body_text(&bytes).map_err(|e| error(StatusCode::BAD_REQUEST, e))
}

/// A request body as text: UTF-8 (a leading BOM dropped), not empty.
pub(crate) fn body_text(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the body is not UTF-8".to_owned())?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err("the body is empty: send YAML or JSON".into());
    }
    Ok(text.to_owned())
}

/// Percent-decodes a path segment or query value (UTF-8).
fn decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "not UTF-8 once percent-decoded".to_owned())
}

/// `GET /journal`'s query: `method=pkg.Svc/Method` and `limit=N`, both optional.
pub(crate) fn parse_query(query: &str) -> Result<(Option<String>, Option<usize>), String> {
    let (mut method, mut limit) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v).map_err(|e| format!("query parameter `{k}`: {e}"))?;
        match k {
            "method" if !v.is_empty() => method = Some(v),
            "limit" => {
                limit = Some(v.parse::<usize>().map_err(|_| format!("`limit` is a number of calls, not `{v}`"))?)
            }
            "method" => return Err("`method` is empty: write method=package.Service/Method".into()),
            other => {
                let other: String = other.chars().take(64).collect();
                return Err(format!("unknown query parameter `{other}` (known: method, limit)"));
            }
        }
    }
    Ok((method, limit))
}

/// The OpenAPI 3.1 document describing this API.
pub(crate) fn openapi() -> Value {
    let error = json!({"description": "the problem", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let stub_body = json!({
        "required": true,
        "description": "YAML or JSON in the stub file format (docs/stubs.md): one stub or a list",
        "content": {
            "application/yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}}
        }
    });
    let json_ok = |description: &str, schema: Value| json!({"description": description, "content": {"application/json": {"schema": schema}}});
    let stubs = json!({"type": "object", "properties": {
        "generation": {"type": "integer"},
        "stubs": {"type": "array", "items": {"$ref": "#/components/schemas/Stub"}},
        "problems": {"type": "array", "description": "GET /stubs only: stubs left out for their problems", "items": {"$ref": "#/components/schemas/Problem"}}
    }});
    let edited = json!({"type": "object", "properties": {
        "ids": {"type": "array", "items": {"type": "string"}},
        "generation": {"type": "integer", "description": "the generation serving the edit (live when the answer comes)"}
    }});
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"},
        "description": "the stub id, percent-encoded (`/` as %2F, `#` as %23)"});
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "protoserve stub admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Runtime stubs, the request journal and verify. Off unless protoserve serve --admin-addr is given."
        },
        "paths": {
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": json_ok("the OpenAPI document", json!({"type": "object"}))}}},
            "/stubs": {
                "get": {"summary": "Every stub serving now, with its state", "responses": {"200": json_ok("the stubs", stubs.clone())}},
                "post": {
                    "summary": "Add stubs (checked against the live schema like a stub file)",
                    "requestBody": stub_body,
                    "responses": {"201": json_ok("added and live", edited.clone()), "400": error,
                        "409": {"description": "a stub with one of the ids exists already", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        "413": error}
                }
            },
            "/stubs/unused": {"get": {"summary": "Stubs that answered no call since they went live or since the last reset", "responses": {"200": json_ok("the unused stubs", stubs)}}},
            "/stubs/{id}": {
                "parameters": [id_param],
                "put": {
                    "summary": "Replace one stub (a file stub stays replaced until a reset)",
                    "requestBody": stub_body,
                    "responses": {"200": json_ok("replaced and live", edited), "400": error, "404": error, "413": error}
                },
                "delete": {
                    "summary": "Delete one stub (a file stub stays deleted until a reset)",
                    "responses": {"200": json_ok("deleted", json!({"type": "object", "properties": {"deleted": {"type": "string"}, "generation": {"type": "integer"}}})), "404": error}
                }
            },
            "/reset": {"post": {"summary": "Back to the stub files: runtime stubs, replacements and deletions dropped, counters and sequences restarted, journal cleared",
                "responses": {"200": json_ok("reset and live", json!({"type": "object", "properties": {"generation": {"type": "integer"}}}))}}},
            "/journal": {
                "get": {
                    "summary": "The request journal, oldest call first",
                    "parameters": [
                        {"name": "method", "in": "query", "required": false, "schema": {"type": "string"}, "description": "only calls of this method (package.Service/Method)"},
                        {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}, "description": "only the last N of them"}
                    ],
                    "responses": {"200": json_ok("the calls", json!({"type": "object", "properties": {
                        "size": {"type": "integer", "description": "calls kept (--journal-size)"},
                        "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}}
                    }})), "400": error}
                },
                "delete": {"summary": "Clear the journal", "responses": {"200": json_ok("cleared", json!({"type": "object"}))}}
            },
            "/verify": {"post": {
                "summary": "Count the journaled calls of a method whose headers and requests match (counts what the journal holds)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["method"], "properties": {
                    "method": {"type": "string", "description": "package.Service/Method"},
                    "match": {"type": "object", "description": "as a stub's `match`: request, headers (messages, at for client streams)"}
                }}}}},
                "responses": {"200": json_ok("the count", json!({"type": "object", "properties": {"count": {"type": "integer"}, "method": {"type": "string"}}})), "400": error}
            }}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"},
                "problems": {"type": "array", "items": {"$ref": "#/components/schemas/Problem"}}
            }},
            "Problem": {"type": "object", "properties": {
                "message": {"type": "string"}, "source": {"type": ["string", "null"]},
                "line": {"type": ["integer", "null"]}, "column": {"type": ["integer", "null"]},
                "help": {"type": ["string", "null"]}, "text": {"type": "string", "description": "the rendered diagnostic"}
            }},
            "Stub": {"type": "object", "properties": {
                "id": {"type": "string"}, "method": {"type": "string"},
                "source": {"enum": ["file", "admin"]}, "at": {"type": "string", "description": "file:line:col (admin/N for runtime stubs)"},
                "priority": {"type": "integer"}, "times": {"type": ["integer", "null"]},
                "answered": {"type": "integer", "description": "calls answered since it went live (kept across reloads while its definition is unchanged)"},
                "exhausted": {"type": "boolean"}, "timesLeft": {"type": "integer"},
                "sequence": {"type": "object", "properties": {"next": {"type": "integer"}, "of": {"type": "integer"}, "then": {"enum": ["repeat", "stop"]}}}
            }},
            "Call": {"type": "object", "properties": {
                "time": {"type": "string", "format": "date-time"}, "method": {"type": "string"},
                "kind": {"enum": ["unary", "server-streaming", "client-streaming", "bidi-streaming"]},
                "generation": {"type": "integer"}, "peer": {"type": ["string", "null"]},
                "headers": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                "frames": {"type": "array", "items": {"type": "object", "properties": {
                    "direction": {"enum": ["request", "reply"]}, "message": {"type": "object", "description": "proto3 JSON"}
                }}},
                "requests": {"type": "integer"}, "replies": {"type": "integer"},
                "framesDropped": {"type": "object", "properties": {"requests": {"type": "integer"}, "replies": {"type": "integer"}}},
                "status": {"type": ["object", "null"], "properties": {"code": {"type": "string"}, "number": {"type": "integer"}, "message": {"type": "string"}}},
                "answeredBy": {"type": "string", "description": "the stub id, or store, handler, none"},
                "stubs": {"type": "array", "items": {"type": "string"}}
            }}
        }}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let doc = openapi();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "parameters")
                    .map(move |m| (m.to_uppercase(), p.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> =
            ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }

    #[test]
    fn random_queries_and_bodies_never_panic() {
        let mut rng = fastrand::Rng::with_seed(13);
        let alphabet: Vec<char> = "method=limit&%2F%zz0123456789/.+=&\u{e9}\u{0}x".chars().collect();
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let q: String = (0..len).map(|_| alphabet[rng.usize(0..alphabet.len())]).collect();
            let _ = parse_query(&q);
            let _ = decode(&q);
            let bytes: Vec<u8> = (0..rng.usize(0..16)).map(|_| rng.u8(..)).collect();
            let _ = body_text(&bytes);
        }
        assert_eq!(parse_query("method=a.B%2FC&limit=2"), Ok((Some("a.B/C".into()), Some(2))));
        assert!(parse_query("limit=x").is_err());
        assert!(parse_query("what=1").is_err());
        assert!(parse_query("method=%FF").is_err());
        assert!(body_text(b"  ").is_err());
        assert!(body_text(&[0xff]).is_err());
    }
}
