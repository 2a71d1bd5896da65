//! Request routing and the JSON answers of every endpoint.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::admission::{AdmissionResponse, IncomingReview, OutgoingReview};
use crate::cache::ClusterState;
use crate::policy::{Endpoint, Evaluator, decide};

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
        self.serving.load(Ordering::Acquire) && self.cache.as_ref().is_none_or(|c| c.all_synced())
    }
}

/// Everything a request handler needs.
pub struct AppState {
    pub evaluator: Evaluator,
    /// Largest request body accepted; kube-apiserver's own limit is 3 MiB.
    pub max_body_bytes: usize,
    pub readiness: Readiness,
    /// Serve `POST /noop`: parse the review as `/validate` does, allow it, run no policy.
    /// Off unless asked for: it is the floor for benchmarks, not something to point
    /// Kubernetes at.
    pub noop_route: bool,
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
    let response = result.unwrap_or_else(|err| {
        if err.status.is_server_error() {
            tracing::error!(%method, %path, status = %err.status, message = %err.message, "request failed");
        } else {
            tracing::debug!(%method, %path, status = %err.status, message = %err.message, "request refused");
        }
        json_response(
            err.status,
            &serde_json::json!({"status": err.status.as_u16(), "message": err.message}),
        )
    });
    Ok(response)
}

async fn route(
    state: &AppState,
    routes: Routes,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let endpoint = match (segments.as_slice(), routes) {
        (["readiness"], _) => return probe(request.method(), state.readiness.is_ready()),
        (["livez"], _) => return probe(request.method(), true),
        (["validate", id], Routes::All) => (Endpoint::Validate, *id),
        (["validate_raw", id], Routes::All) => (Endpoint::Raw, *id),
        (["audit", id], Routes::All) => (Endpoint::Audit, *id),
        (["noop"], Routes::All) if state.noop_route => return noop(state, request).await,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route for {path}"),
            ));
        }
    };
    require_post(&request)?;
    let (endpoint, id) = endpoint;
    let policy = state
        .evaluator
        .policy(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no policy with id '{id}'")))?
        .clone();
    let review = read_review(state, request).await?;
    // The answer must echo the uid, or the API server refuses it: say so now.
    if endpoint != Endpoint::Raw && review.uid.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid request: request.uid is missing or empty; an AdmissionReview's answer must echo it",
        ));
    }
    // Overload is not a verdict: a 503 lets the API server apply the webhook's
    // failurePolicy.
    let outcome = state
        .evaluator
        .validate(&policy, review.request.clone())
        .await
        .map_err(|overloaded| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, overloaded.to_string())
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
) -> Result<Response<Full<Bytes>>, ApiError> {
    require_post(&request)?;
    let review = read_review(state, request).await?;
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
) -> Result<IncomingReview, ApiError> {
    let body = read_body(request, state.max_body_bytes).await?;
    IncomingReview::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))
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

/// Reads the whole body, refusing early when it is declared or turns out larger than `limit`.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request body: {err}"),
        )),
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
