//! The fake's answers beside list and watch: API discovery for its collections, and
//! SubjectAccessReviews.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, COLLECTIONS, Store, json_response, status};

/// The APIResourceList of a group version (`/api/v1`, `/apis/<group>/<version>`).
pub(super) fn discovery(path: &str) -> Option<Value> {
    let group_version = match path.strip_prefix("/api/") {
        Some(version) => version.to_owned(),
        None => path.strip_prefix("/apis/")?.to_owned(),
    };
    let resources: Vec<Value> = COLLECTIONS
        .iter()
        .filter(|c| c.api_version == group_version)
        .flat_map(|c| {
            let verbs = [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
            [
                json!({"name": c.plural, "singularName": c.kind.to_lowercase(),
                       "namespaced": c.namespaced, "kind": c.kind, "verbs": verbs}),
                // Subresources share their parent's kind; discovery must skip them.
                json!({"name": format!("{}/status", c.plural), "singularName": "",
                       "namespaced": c.namespaced, "kind": c.kind, "verbs": ["get", "patch"]}),
            ]
        })
        .collect();
    (!resources.is_empty()).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1",
               "groupVersion": group_version, "resources": resources})
    })
}

/// `POST .../subjectaccessreviews`: allowed if the user was allowed, denied otherwise.
pub(super) async fn review_access(
    store: &Arc<Mutex<Store>>,
    request: Request<Incoming>,
) -> Response<Body> {
    let uri = request.uri().clone();
    let method = request.method().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut store = store.lock().unwrap();
    if !store.serving {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the API server is stopped"),
        );
    }
    store.requests.push(format!("{method} {uri}"));
    let Ok(mut review) = serde_json::from_slice::<Value>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &status(400, "BadRequest", "not JSON"),
        );
    };
    let user = review["spec"]["user"].as_str().unwrap_or_default();
    let allowed = store.allowed_users.iter().any(|u| u == user);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "allowed by the fake API server"})
    } else {
        json!({"allowed": false})
    };
    json_response(StatusCode::CREATED, &review)
}
