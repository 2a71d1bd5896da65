//! A guest's stdout and stderr (WASI): each line goes to the server's log, tagged with
//! the policy, escaped, and within one allowance for both streams per instance (one
//! instance is one evaluation). Writes past the allowance succeed and are dropped: a guest whose
//! `eprintln!` failed would panic, turning a chatty policy into a broken one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use guest_adapter::untrusted::{MAX_LOGGED_BYTES_PER_EVALUATION, untrusted};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write a guest is offered at once.
const WRITE_PERMIT_BYTES: usize = 64 << 10;

/// One stream of a guest's output; clones write to the same place.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    state: Arc<Mutex<OutputState>>,
    stream: Stream,
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout = 0,
    Stderr = 1,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// What both streams of one instance share.
struct OutputState {
    policy: Arc<str>,
    /// The line each stream is writing, up to its newline.
    lines: [Vec<u8>; 2],
    left: usize,
    dropped: usize,
}

impl GuestOutput {
    /// Stdout and stderr for one instance of `policy`'s guest.
    pub(crate) fn streams(policy: Arc<str>) -> (Self, Self) {
        let state = Arc::new(Mutex::new(OutputState {
            policy,
            lines: [Vec::new(), Vec::new()],
            left: MAX_LOGGED_BYTES_PER_EVALUATION,
            dropped: 0,
        }));
        let stream = |stream| Self {
            state: state.clone(),
            stream,
        };
        (stream(Stream::Stdout), stream(Stream::Stderr))
    }

    fn write(&self, bytes: &[u8]) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(self.stream, bytes);
    }
}

impl OutputState {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let kept = bytes.len().min(self.left);
        self.left -= kept;
        if kept < bytes.len() {
            if self.dropped == 0 {
                tracing::warn!(
                    target: "policy_output",
                    policy = %self.policy,
                    stream = stream.name(),
                    limit_bytes = MAX_LOGGED_BYTES_PER_EVALUATION,
                    "the policy wrote more output than one evaluation may; the rest is dropped"
                );
            }
            self.dropped += bytes.len() - kept;
        }
        for &byte in &bytes[..kept] {
            if byte == b'\n' {
                self.emit(stream);
            } else {
                self.lines[stream as usize].push(byte);
            }
        }
    }

    fn emit(&mut self, stream: Stream) {
        let line = std::mem::take(&mut self.lines[stream as usize]);
        let text = String::from_utf8_lossy(&line);
        tracing::info!(
            target: "policy_output",
            policy = %self.policy,
            stream = stream.name(),
            "{}",
            untrusted(&text)
        );
    }
}

impl Drop for OutputState {
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            if !self.lines[stream as usize].is_empty() {
                self.emit(stream);
            }
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        GuestOutput::write(self, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

// What `#[async_trait]` would write: the stream is always ready.
impl Pollable for GuestOutput {
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        GuestOutput::write(&self, bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_allowance_is_accepted_and_dropped() {
        let (mut stdout, mut output) = GuestOutput::streams("p".into());
        let line = vec![b'x'; 1000];
        for _ in 0..50 {
            assert!(OutputStream::write(&mut output, Bytes::from(line.clone())).is_ok());
            assert!(OutputStream::write(&mut stdout, Bytes::from(line.clone())).is_ok());
            assert_eq!(output.check_write().unwrap(), WRITE_PERMIT_BYTES);
        }
        let state = output.state.lock().unwrap();
        assert_eq!(state.left, 0);
        assert_eq!(state.dropped, 100 * 1000 - MAX_LOGGED_BYTES_PER_EVALUATION);
    }
}
