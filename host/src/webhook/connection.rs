//! One client connection: HTTP/1.1 or HTTP/2 over it, and the watchdog that closes it
//! when the client stalls, idles too long, or the server shuts down.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use super::limits::ServerLimits;
use super::routes::{AppState, Routes, handle};

/// After the watchdog asks a connection to close, it gets this long to finish what it is
/// writing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// When the server closes, a request about to begin on a connection (its first, or one
/// whose head has begun to arrive) gets this long to begin.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Requests one HTTP/2 connection may have in flight; a client that wants more opens
/// another connection (Go's HTTP/2 client, the API server's, does).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// Room hyper may use to read one HTTP/1 message head (and buffer body bytes): more
/// than any real client's headers (the API server's are under 1 KiB), and small enough
/// that a thousand connections stalled mid-request hold 16 MiB.
const MAX_READ_BUFFER_BYTES: usize = 16 << 10;

/// Serves one connection until the client closes it, it breaks a deadline, or `closing`
/// turns true; `opened` is when it was accepted (the header deadline counts from there).
pub(crate) async fn serve_connection<IO>(
    io: IO,
    opened: Instant,
    routes: Routes,
    state: Arc<AppState>,
    mut closing: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits: &ServerLimits = &state.limits;
    let (header_timeout, idle_timeout) = (limits.header_timeout, limits.idle_timeout);
    let activity = Arc::new(Activity::new(opened));
    let service = service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<hyper::body::Incoming>| {
            let in_progress = activity.begin_request(request.version() == hyper::Version::HTTP_2);
            let state = state.clone();
            async move {
                let response = handle(state, routes, request).await;
                drop(in_progress);
                response
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Header deadlines are the watchdog's: hyper's own (30 s once a timer is set) would
    // also close a kept-alive connection idling between requests, which clients reuse.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_READ_BUFFER_BYTES);
    // Each stream is a request in flight: bounded per connection as connections are.
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
    let io = Watched {
        inner: io,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // When the server began closing: from then on, a request in progress is finished and
    // a request about to begin (a new connection's first, or a head that has begun to
    // arrive) gets FIRST_REQUEST_GRACE; an idle connection is closed.
    let mut closing_since: Option<Instant> = None;
    loop {
        if let Some(since) = closing_since
            && !activity.in_progress()
            && (!activity.awaits_request() || Instant::now() >= since + FIRST_REQUEST_GRACE)
        {
            break;
        }
        let deadline = match closing_since {
            None => activity.deadline(header_timeout, idle_timeout),
            Some(since) => (!activity.in_progress()).then_some(since + FIRST_REQUEST_GRACE),
        };
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection closed with an error");
                }
                return;
            }
            () = activity.changed.notified() => continue,
            () = expired => {
                // Re-checked: a request may have begun as the timer fired. (While
                // closing, the top of the loop decides.)
                if closing_since.is_none()
                    && activity.deadline(header_timeout, idle_timeout).is_some_and(|d| d <= Instant::now())
                {
                    tracing::debug!("closing a connection that stalled or idled");
                    break;
                }
            }
            _ = closing.changed(), if closing_since.is_none() => {
                // Closing, or the server is gone.
                closing_since = Some(Instant::now());
            }
        }
    }
    // HTTP/1: close once the response in progress (if any) is written, with
    // `Connection: close`; HTTP/2: GOAWAY, so the client retries what was not processed.
    connection.as_mut().graceful_shutdown();
    if closing_since.is_some() {
        // The server's grace period bounds this.
        let _ = connection.await;
    } else {
        let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
    }
}

/// What the watchdog needs to know of a connection: whether a request is in progress, and
/// since when it has been idle or receiving a request's head.
struct Activity {
    opened: Instant,
    in_progress: AtomicUsize,
    /// Requests begun on this connection.
    requests: AtomicU64,
    /// Milliseconds after `opened` when it last went idle.
    idle_since_ms: AtomicU64,
    /// Milliseconds after `opened` when bytes of a new HTTP/1 request head arrived on an
    /// idle connection; zero when none did.
    head_started_ms: AtomicU64,
    /// HTTP/2 (seen from its first request): pings and window updates arrive between
    /// requests, so bytes on an idle connection are not the start of a request.
    http2: AtomicBool,
    changed: Notify,
}

/// A request in progress; the connection goes idle when the last one is dropped.
struct InProgress(Arc<Activity>);

impl Activity {
    fn new(opened: Instant) -> Self {
        Self {
            opened,
            in_progress: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        // At least 1, so that zero can mean "never".
        (self.opened.elapsed().as_millis() as u64).max(1)
    }

    fn begin_request(self: &Arc<Self>, http2: bool) -> InProgress {
        if http2 {
            self.http2.store(true, Ordering::Release);
        }
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.head_started_ms.store(0, Ordering::Release);
        self.changed.notify_one();
        InProgress(self.clone())
    }

    fn in_progress(&self) -> bool {
        self.in_progress.load(Ordering::Acquire) > 0
    }

    /// A request is about to begin: the connection has had none yet, or the head of the
    /// next one has begun to arrive.
    fn awaits_request(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
            || self.head_started_ms.load(Ordering::Acquire) > 0
    }

    fn bytes_read(&self) {
        if self.in_progress.load(Ordering::Acquire) == 0
            && !self.http2.load(Ordering::Acquire)
            && self.requests.load(Ordering::Acquire) > 0
            && self.head_started_ms.load(Ordering::Acquire) == 0
        {
            self.head_started_ms.store(self.now_ms(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes: `header_timeout` after it
    /// opened while no request has begun, or after a new request's head began to arrive;
    /// `idle_timeout` after the last request ended; never while a request is in progress
    /// (the body deadline and the evaluation timeout bound those).
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, timeout: Duration| self.opened + Duration::from_millis(ms) + timeout;
        if self.requests.load(Ordering::Acquire) == 0 {
            return Some(self.opened + header_timeout);
        }
        let head_started = self.head_started_ms.load(Ordering::Acquire);
        if head_started > 0 {
            return Some(at(head_started, header_timeout));
        }
        Some(at(self.idle_since_ms.load(Ordering::Acquire), idle_timeout))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Release);
        activity.in_progress.fetch_sub(1, Ordering::AcqRel);
        activity.changed.notify_one();
    }
}

/// The connection's stream, reporting reads to the watchdog.
struct Watched<IO> {
    inner: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(120);

    #[test]
    fn a_new_connection_must_begin_a_request_within_the_header_timeout() {
        let activity = Arc::new(Activity::new(Instant::now()));
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some(activity.opened + HEADER)
        );
        // Bytes of the first head do not extend it.
        activity.bytes_read();
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some(activity.opened + HEADER)
        );
    }

    #[test]
    fn no_deadline_while_a_request_is_in_progress_then_the_idle_timeout() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let request = activity.begin_request(false);
        assert_eq!(activity.deadline(HEADER, IDLE), None);
        drop(request);
        let deadline = activity.deadline(HEADER, IDLE).unwrap();
        assert!(deadline >= activity.opened + IDLE, "{deadline:?}");
    }

    #[test]
    fn the_next_head_on_a_kept_alive_connection_gets_the_header_timeout() {
        let activity = Arc::new(Activity::new(Instant::now()));
        drop(activity.begin_request(false));
        activity.bytes_read();
        let deadline = activity.deadline(HEADER, IDLE).unwrap();
        assert!(deadline < activity.opened + IDLE, "{deadline:?}");
        // Once the request begins, it is its own deadlines that count.
        let _request = activity.begin_request(false);
        assert_eq!(activity.deadline(HEADER, IDLE), None);
    }

    #[test]
    fn http2_frames_between_requests_are_not_a_stalled_head() {
        let activity = Arc::new(Activity::new(Instant::now()));
        drop(activity.begin_request(true));
        activity.bytes_read();
        let deadline = activity.deadline(HEADER, IDLE).unwrap();
        assert!(deadline >= activity.opened + IDLE, "{deadline:?}");
    }
}
