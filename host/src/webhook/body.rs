//! Reading a request body: by a deadline, within the server's budget of body bytes in
//! flight, and refused as soon as it is declared or turns out larger than the limit.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;

use super::limits::{BodyBudget, BodyReservation, BudgetSpent};

/// Why a body was not read; each maps to its own HTTP status.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    BudgetSpent(#[from] BudgetSpent),
    #[error("cannot read the request body: {0}")]
    Unreadable(hyper::Error),
    #[error("the request body did not arrive in time")]
    TimedOut,
}

/// Reads the whole body by `deadline`, within the server's budget of body bytes in
/// flight; refused early when it is declared or turns out larger than the limit.
pub(super) async fn read_body(
    request: Request<Incoming>,
    limit: usize,
    budget: &Arc<BodyBudget>,
    deadline: Instant,
) -> Result<(Bytes, BodyReservation), BodyError> {
    let too_large = || BodyError::TooLarge { limit };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    // Bytes are copied into segments of at most 64 KiB as they arrive, and the budget is
    // charged each segment's whole capacity: what is counted is what is held, whatever
    // the client claims it will send and however finely it chops its body. No frame of
    // hyper's is kept (a kept frame pins its read buffer), and a body is joined once, at
    // the end, only if it spans several segments.
    let mut reservation = budget.reservation();
    let expected = declared.map(|len| len as usize);
    let mut segments = BodySegments::default();
    let mut body = request.into_body();
    let read_all = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Unreadable)?;
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            if segments.len + data.len() > limit {
                return Err(too_large());
            }
            while !data.is_empty() {
                if segments.current.capacity() == segments.current.len() {
                    // Sized to what is left of a declared length; whole without one.
                    let capacity = expected.map_or(SEGMENT_BYTES, |expected| {
                        expected
                            .saturating_sub(segments.len)
                            .clamp(1, SEGMENT_BYTES)
                    });
                    reservation.grow(capacity)?;
                    segments.start(capacity);
                }
                let room = segments.current.capacity() - segments.current.len();
                let part = data.split_to(room.min(data.len()));
                segments.current.extend_from_slice(&part);
                segments.len += part.len();
            }
        }
        Ok(())
    };
    let outcome = tokio::time::timeout_at(deadline.into(), read_all).await;
    match outcome {
        Ok(Ok(())) => Ok((segments.join(), reservation)),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// Largest piece a body is read into.
const SEGMENT_BYTES: usize = 64 << 10;

/// A body as it arrives: full segments, and the one being filled.
#[derive(Default)]
struct BodySegments {
    full: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl BodySegments {
    fn start(&mut self, capacity: usize) {
        let full = std::mem::replace(&mut self.current, BytesMut::with_capacity(capacity));
        if !full.is_empty() {
            self.full.push(full.freeze());
        }
    }

    fn join(mut self) -> Bytes {
        if self.full.is_empty() {
            return self.current.freeze();
        }
        self.start(0);
        let mut joined = BytesMut::with_capacity(self.len);
        self.full
            .iter()
            .for_each(|segment| joined.extend_from_slice(segment));
        joined.freeze()
    }
}
