//! Request routing and the JSON answers of every endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use guest_adapter::untrusted;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::body::{BodyError, read_body};
use super::limits::{BodyBudget, BodyReservation, ServerLimits, request_deadline};
use crate::admission::{AdmissionResponse, IncomingReview, OutgoingReview};
use crate::cache::ClusterState;
use crate::policy::{Endpoint, ServedPolicies, Unavailable, decide};
use crate::throttle::LogThrottle;

/// Whether the server is ready to answer admission requests: it is serving, and the
/// cluster cache (if any) has completed the first list of every kind.
#[derive(Clone, Default)]
pub struct Readiness {
    serving: Arc<AtomicBool>,
    cache: Option<Arc<ClusterState>>,
}

impl Readiness {
    pub fn new(cache: Option<Arc<ClusterState>>) -> Self {
        Self {
            serving: Arc::default(),
            cache,
        }
    }

    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Shutting down: tell load balancers to stop sending requests.
    pub fn set_draining(&self) {
        self.serving.store(false, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.cache.as_ref().is_none_or(|c| c.all_synced())
    }

    fn is_draining(&self) -> bool {
        !self.serving.load(Ordering::Acquire)
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The policies served; reloads replace them.
    pub policies: Arc<ServedPolicies>,
    pub limits: ServerLimits,
    pub body_budget: Arc<BodyBudget>,
    pub readiness: Readiness,
    /// Serve `POST /noop`: parse the review as `/validate` does, allow it, run no policy.
    /// Off unless asked for: it is the floor for benchmarks, not something to point
    /// Kubernetes at.
    pub noop_route: bool,
    /// 503s are logged once per interval: under overload, one line per refusal would
    /// add a log flood to the outage.
    pub unavailable_log: LogThrottle,
}

impl AppState {
    pub fn new(
        policies: Arc<ServedPolicies>,
        limits: ServerLimits,
        readiness: Readiness,
        noop_route: bool,
    ) -> Self {
        Self {
            policies,
            body_budget: Arc::new(BodyBudget::new(limits.body_bytes_in_flight)),
            limits,
            readiness,
            noop_route,
            unavailable_log: LogThrottle::default(),
        }
    }
}

/// An answer that is not a verdict: its status and a message for a person.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        let status = match error {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::BudgetSpent(_) => StatusCode::SERVICE_UNAVAILABLE,
            BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
            BodyError::TimedOut => StatusCode::REQUEST_TIMEOUT,
        };
        Self::new(status, error.to_string())
    }
}

/// Which routes a listener serves: everything, or only the health probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routes {
    All,
    ProbesOnly,
}

pub(crate) async fn handle(
    state: Arc<AppState>,
    routes: Routes,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let result = route(&state, routes, request).await;
    let mut response = result.unwrap_or_else(|err| {
        let (path, message) = (untrusted(&path), untrusted(&err.message));
        if err.status == StatusCode::SERVICE_UNAVAILABLE {
            if let Some(left_out) = state.unavailable_log.admit() {
                tracing::warn!(%method, %path, %message, similar_left_out = left_out, "request refused for now");
            }
        } else if err.status.is_server_error() {
            tracing::error!(%method, %path, status = %err.status, %message, "request failed");
        } else {
            tracing::debug!(%method, %path, status = %err.status, %message, "request refused");
        }
        json_response(
            err.status,
            &serde_json::json!({"status": err.status.as_u16(), "message": err.message}),
        )
    });
    if state.readiness.is_draining() {
        // HTTP/1: this connection is not reused; the client opens one to a replica that
        // is not shutting down. (HTTP/2 drops the header and gets a GOAWAY instead.)
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

async fn route(
    state: &AppState,
    routes: Routes,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let received = Instant::now();
    let deadline = request_deadline(
        received,
        request.uri().query(),
        state.limits.max_request_deadline,
    );
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let endpoint = match (segments.as_slice(), routes) {
        (["readiness"], _) => return probe(request.method(), state.readiness.is_ready()),
        (["livez"], _) => return probe(request.method(), true),
        (["validate", id], Routes::All) => (Endpoint::Validate, *id),
        (["validate_raw", id], Routes::All) => (Endpoint::Raw, *id),
        (["audit", id], Routes::All) => (Endpoint::Audit, *id),
        (["noop"], Routes::All) if state.noop_route => {
            return noop(state, request, deadline).await;
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {}", untrusted(&path)),
            ));
        }
    };
    require_post(&request)?;
    let (endpoint, id) = endpoint;
    // This set answers the request, even if a reload replaces it meanwhile.
    let evaluator = state.policies.current();
    let policy = evaluator
        .policy(id)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no policy with id '{}'", untrusted(id)),
            )
        })?
        .clone();
    // Held until the evaluation ends: the parsed review is a copy of these bytes, and a
    // queued evaluation keeps it.
    let (review, body_bytes) = read_review(state, request, deadline).await?;
    // The answer must echo the uid, or the API server refuses it: say so now.
    if endpoint != Endpoint::Raw && review.uid.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request: request.uid is missing or empty; an AdmissionReview's answer must echo it",
        ));
    }
    // Overload is not a verdict: a 503 lets the API server apply the webhook's
    // failurePolicy.
    let outcome = evaluator
        .validate(&policy, review.request.clone(), deadline, body_bytes)
        .await
        .map_err(|unavailable| {
            let message = match unavailable {
                Unavailable::DeadlinePassed => format!(
                    "{unavailable} (waited {:?} for policy '{}')",
                    received.elapsed(),
                    policy.id
                ),
                Unavailable::Overloaded(_) => unavailable.to_string(),
            };
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        })?;
    let response = decide(&policy, endpoint, &review, outcome);
    Ok(match endpoint {
        Endpoint::Raw => {
            json_response(StatusCode::OK, &serde_json::json!({ "response": response }))
        }
        Endpoint::Validate | Endpoint::Audit => json_response(
            StatusCode::OK,
            &OutgoingReview::new(review.api_version.clone(), response),
        ),
    })
}

/// The same HTTP, TLS and review parsing as `/validate`, without a policy: what the
/// server costs before any wasm runs.
async fn noop(
    state: &AppState,
    request: Request<Incoming>,
    deadline: Instant,
) -> Result<Response<Full<Bytes>>, ApiError> {
    require_post(&request)?;
    let (review, _body_bytes) = read_review(state, request, deadline).await?;
    let response = AdmissionResponse {
        uid: review.uid,
        allowed: true,
        ..AdmissionResponse::default()
    };
    Ok(json_response(
        StatusCode::OK,
        &OutgoingReview::new(review.api_version, response),
    ))
}

fn require_post(request: &Request<Incoming>) -> Result<(), ApiError> {
    if request.method() == Method::POST {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} only accepts POST", request.uri().path()),
    ))
}

async fn read_review(
    state: &AppState,
    request: Request<Incoming>,
    deadline: Instant,
) -> Result<(IncomingReview, BodyReservation), ApiError> {
    let body_deadline = deadline.min(Instant::now() + state.limits.body_timeout);
    let (body, reservation) = read_body(
        request,
        state.limits.max_body_bytes,
        &state.body_budget,
        body_deadline,
    )
    .await?;
    let review = IncomingReview::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))?;
    Ok((review, reservation))
}

fn probe(method: &Method, healthy: bool) -> Result<Response<Full<Bytes>>, ApiError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "probes only accept GET",
        ));
    }
    if healthy {
        Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ok"}),
        ))
    } else {
        Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not ready"))
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).expect("response types always serialize");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
