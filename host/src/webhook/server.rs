//! Accept loop: TLS (HTTP/2 and HTTP/1.1) or plain HTTP, a cap on open connections, and
//! a shutdown that loses no request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::connection::serve_connection;
use super::limits::TRIM_CHECK_INTERVAL;
use super::routes::{AppState, Routes};
use crate::throttle::LogThrottle;

/// Connections the probe port may have open: the kubelet uses a few.
const PROBE_CONNECTIONS: usize = 16;

/// A bound socket and how to speak on it.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// How the server stops on SIGTERM.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownTiming {
    /// Readiness turns 503 at once, but connections are still accepted and served this
    /// long, while Kubernetes takes the pod out of the Service's endpoints.
    pub drain_delay: Duration,
    /// Everything, drain delay included, is over within this: requests still running
    /// then are dropped. Below Kubernetes' default grace period of 30 s.
    pub grace_period: Duration,
}

impl Default for ShutdownTiming {
    fn default() -> Self {
        Self {
            drain_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(25),
        }
    }
}

/// Serves `main` (all routes) and, if given, `probes` (health probes only, plain HTTP)
/// until `shutdown` completes; then drains as [`ShutdownTiming`] says.
pub async fn serve(
    main: Listener,
    probes: Option<TcpListener>,
    state: Arc<AppState>,
    timing: ShutdownTiming,
    shutdown: impl Future<Output = ()>,
) {
    let (closing, connections_closed) = watch::channel(false);
    let (stop_accepting, accepting) = watch::channel(false);
    let open_connections = Arc::new(Semaphore::new(state.limits.max_connections));
    let mut accept_loops = tokio::task::JoinSet::new();
    let mut listeners = vec![(main, Routes::All)];
    if let Some(socket) = probes {
        listeners.push((Listener { socket, tls: None }, Routes::ProbesOnly));
    }
    for (listener, routes) in listeners {
        // The probe port has slots of its own: clients filling the webhook's cannot get
        // the kubelet's probes refused and the pod restarted.
        let slots = match routes {
            Routes::All => open_connections.clone(),
            Routes::ProbesOnly => Arc::new(Semaphore::new(PROBE_CONNECTIONS)),
        };
        accept_loops.spawn(accept_loop(
            listener,
            routes,
            state.clone(),
            slots,
            connections_closed.clone(),
            accepting.clone(),
        ));
    }
    drop(connections_closed);
    let trimmer = tokio::spawn({
        let state = state.clone();
        async move {
            let mut ticks = tokio::time::interval(TRIM_CHECK_INTERVAL);
            loop {
                ticks.tick().await;
                let state = state.clone();
                let _ = tokio::task::spawn_blocking(move || state.body_budget.trim_if_due()).await;
            }
        }
    });
    shutdown.await;
    trimmer.abort();
    let stopping = Instant::now();
    tracing::info!(
        drain_delay = ?timing.drain_delay,
        "shutting down: not ready, still serving while endpoints update"
    );
    // From now on every HTTP/1 answer says `Connection: close`, so clients move to
    // another replica instead of reusing a connection that is about to close.
    state.readiness.set_draining();
    tokio::time::sleep(timing.drain_delay).await;
    tracing::info!("no new connections; finishing requests in flight");
    let _ = stop_accepting.send(true);
    while accept_loops.join_next().await.is_some() {}
    let _ = closing.send(true);
    let left = timing.grace_period.saturating_sub(stopping.elapsed());
    if tokio::time::timeout(left, closing.closed()).await.is_err() {
        tracing::warn!(
            grace_period = ?timing.grace_period,
            "some connections were still open at the end of the grace period"
        );
    }
}

async fn accept_loop(
    listener: Listener,
    routes: Routes,
    state: Arc<AppState>,
    open_connections: Arc<Semaphore>,
    closing: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let admit = Admission {
        tls: listener.tls.clone(),
        routes,
        state,
        open_connections,
        closing,
        refusals: LogThrottle::default(),
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.socket.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((stream, peer)) => admit.connection(stream, peer),
            Err(err) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Connections the kernel completed before the listener closes are served, not reset:
    // their clients have sent, or are sending, a request. Asked of the socket itself:
    // tokio's accept would not see those the reactor has not been told of yet.
    let Ok(socket) = listener.socket.into_std() else {
        return;
    };
    while let Ok((stream, peer)) = socket.accept() {
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            admit.connection(stream, peer);
        }
    }
}

/// Takes an accepted connection in, if there is room for it.
struct Admission {
    tls: Option<TlsAcceptor>,
    routes: Routes,
    state: Arc<AppState>,
    open_connections: Arc<Semaphore>,
    closing: watch::Receiver<bool>,
    refusals: LogThrottle,
}

impl Admission {
    fn connection(&self, stream: TcpStream, peer: SocketAddr) {
        let opened = Instant::now();
        let Ok(slot) = self.open_connections.clone().try_acquire_owned() else {
            // Closed at once, so the client fails fast (and the API server applies the
            // webhook's failurePolicy) instead of waiting in the accept queue.
            drop(stream);
            if let Some(left_out) = self.refusals.admit() {
                tracing::warn!(
                    limit = self.state.limits.max_connections,
                    similar_left_out = left_out,
                    "connection refused: too many open"
                );
            }
            return;
        };
        let _ = stream.set_nodelay(true);
        let (tls, routes) = (self.tls.clone(), self.routes);
        let (state, closing) = (self.state.clone(), self.closing.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let Some(acceptor) = tls else {
                return serve_connection(stream, opened, routes, state, closing).await;
            };
            let handshake_deadline = opened + state.limits.header_timeout;
            match tokio::time::timeout_at(handshake_deadline.into(), acceptor.accept(stream)).await
            {
                Ok(Ok(tls_stream)) => {
                    serve_connection(tls_stream, opened, routes, state, closing).await
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
