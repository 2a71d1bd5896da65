//! Accept loop: TLS (HTTP/2 and HTTP/1.1) or plain HTTP, with graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::routes::{AppState, Routes, handle};

/// A slow or silent client gets this long to finish its TLS handshake or request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound socket and how to speak on it.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Serves `main` (all routes) and, if given, `probes` (health probes only, plain HTTP)
/// until `shutdown` completes; then stops accepting and lets open requests finish.
pub async fn serve(
    main: Listener,
    probes: Option<TcpListener>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let mut accept_loops = tokio::task::JoinSet::new();
    accept_loops.spawn(accept_loop(
        main,
        Routes::All,
        state.clone(),
        graceful.clone(),
    ));
    if let Some(socket) = probes {
        let listener = Listener { socket, tls: None };
        accept_loops.spawn(accept_loop(
            listener,
            Routes::ProbesOnly,
            state.clone(),
            graceful.clone(),
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    state.readiness.set_draining();
    accept_loops.abort_all();
    while accept_loops.join_next().await.is_some() {}
    let graceful = Arc::into_inner(graceful).expect("the accept loops have ended");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some requests did not finish within {DRAIN_TIMEOUT:?}");
    }
}

async fn accept_loop(
    listener: Listener,
    routes: Routes,
    state: Arc<AppState>,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let (stream, peer) = match listener.socket.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, state, watcher) = (listener.tls.clone(), state.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, routes, state, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(tls_stream, routes, state, watcher).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<IO>(io: IO, routes: Routes, state: Arc<AppState>, watcher: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(state.clone(), routes, request));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(err) = watcher.watch(connection).await {
        tracing::debug!(error = %err, "connection closed with an error");
    }
}
