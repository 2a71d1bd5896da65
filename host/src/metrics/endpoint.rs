//! `GET /metrics` on its own plain-HTTP port, apart from the admission port: a scraper
//! never queues behind admission requests, and the Service that fronts the webhook need
//! not expose it. It listens on `--addr` like the rest: whoever reaches the pod reaches
//! it (a NetworkPolicy can narrow that). Eight connections at most: a client holding
//! them idle delays scrapes by up to the 10 s header timeout, no more.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics;

/// Scrapers open a connection or two; more wait for one to close.
const MAX_CONNECTIONS: usize = 8;
/// A connection that sends no request head within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Nor is one kept open longer than this, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the metrics on `socket` until the task is dropped.
pub async fn serve(socket: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, usually: wait instead of spinning.
                tracing::debug!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 << 10)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(|request| async move {
                        Ok::<_, std::convert::Infallible>(answer(&request))
                    }),
                );
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, metrics().encode()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "the metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
