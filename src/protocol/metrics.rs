//! `--metrics-addr`: a plain HTTP/1.1 endpoint answering `GET /metrics` with
//! the Prometheus text format, on a listener of its own (scrapers never share
//! the gRPC port's connection limits or auth).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::middleware::Metrics;
use crate::middleware::metrics::CONTENT_TYPE;

/// Serves `/metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics endpoint: accept failed");
                // Typically EMFILE: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let res = answer(&req, &metrics);
                std::future::ready(Ok::<_, std::convert::Infallible>(res))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
            }
        });
    }
}

fn answer(req: &http::Request<Incoming>, metrics: &Metrics) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&http::Method::GET | &http::Method::HEAD, "/metrics") => {
            (http::StatusCode::OK, CONTENT_TYPE, Bytes::from(metrics.render()))
        }
        (_, "/metrics") => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"use GET /metrics\n"),
        ),
        _ => {
            (http::StatusCode::NOT_FOUND, "text/plain; charset=utf-8", Bytes::from_static(b"metrics are at /metrics\n"))
        }
    };
    let mut res = http::Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    res
}
