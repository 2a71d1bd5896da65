//! The admission.k8s.io wire format: what Kubernetes sends and what it expects back.
//!
//! The request is kept as raw JSON: policies receive it byte for byte as Kubernetes sent
//! it, and only the few fields the server itself needs are parsed out of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// Why an incoming body is not an admission request we can evaluate.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not valid JSON: {0}")]
    Json(serde_json::Error),
    #[error("the body has no `request` object")]
    MissingRequest,
    #[error("`request` is not a JSON object")]
    RequestNotObject,
    #[error("`request.{field}` is not valid: {reason}")]
    Field { field: &'static str, reason: String },
}

/// An incoming AdmissionReview (or a raw `{"request": ...}` document).
#[derive(Debug)]
pub struct IncomingReview {
    pub api_version: String,
    /// The `request` exactly as received.
    pub request: Arc<RawValue>,
    pub uid: String,
    /// The review is of a Secret: text a policy wrote about it may quote its `data`, so
    /// it is never logged.
    pub reviews_secret: bool,
}

impl IncomingReview {
    pub fn parse(body: &[u8]) -> Result<Self, ParseError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope {
            #[serde(default)]
            api_version: Option<String>,
            #[serde(default)]
            request: Option<Box<RawValue>>,
        }
        #[derive(Deserialize)]
        struct RequestHeader {
            #[serde(default)]
            uid: Option<String>,
            #[serde(default)]
            kind: Option<KindHeader>,
        }
        #[derive(Deserialize)]
        struct KindHeader {
            #[serde(default)]
            group: String,
            #[serde(default)]
            kind: String,
        }
        let envelope: Envelope = serde_json::from_slice(body).map_err(ParseError::Json)?;
        let request = envelope.request.ok_or(ParseError::MissingRequest)?;
        if !request.get().starts_with('{') {
            return Err(ParseError::RequestNotObject);
        }
        let header: RequestHeader =
            serde_json::from_str(request.get()).map_err(|e| ParseError::Field {
                field: "uid",
                reason: e.to_string(),
            })?;
        Ok(Self {
            api_version: envelope
                .api_version
                .unwrap_or_else(|| ADMISSION_API_VERSION.to_owned()),
            request: request.into(),
            uid: header.uid.unwrap_or_default(),
            reviews_secret: header
                .kind
                .is_some_and(|k| k.group.is_empty() && k.kind == "Secret"),
        })
    }

    /// `request.object`, parsed on demand (only a mutation needs it).
    pub fn object(&self) -> Result<serde_json::Value, ParseError> {
        #[derive(Deserialize)]
        struct ObjectOnly {
            #[serde(default)]
            object: serde_json::Value,
        }
        serde_json::from_str::<ObjectOnly>(self.request.get())
            .map(|o| o.object)
            .map_err(|e| ParseError::Field {
                field: "object",
                reason: e.to_string(),
            })
    }
}

/// `response.status` of an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Status {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// `status.details`: where a custom rejection message keeps the policy's own message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatusDetails {
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatusCause {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `response` of an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// Base64 of an RFC 6902 JSON patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_annotations: Option<BTreeMap<String, String>>,
}

impl AdmissionResponse {
    /// Sets the patch that turns `original` into `mutated`; none if they are equal.
    pub fn set_patch(&mut self, original: &serde_json::Value, mutated: &serde_json::Value) {
        let patch = json_patch::diff(original, mutated);
        if patch.0.is_empty() {
            return;
        }
        let json = serde_json::to_vec(&patch).expect("a JSON patch always serializes");
        self.patch_type = Some("JSONPatch".to_owned());
        self.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
    }
}

/// The AdmissionReview sent back to Kubernetes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutgoingReview {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

impl OutgoingReview {
    pub fn new(api_version: String, response: AdmissionResponse) -> Self {
        Self {
            api_version,
            kind: "AdmissionReview".to_owned(),
            response,
        }
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_request_verbatim() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","object":{"b":1,"a":"\u00e9"}}}"#;
        let review = IncomingReview::parse(body).unwrap();
        assert_eq!(review.uid, "u-1");
        assert_eq!(
            review.request.get(),
            r#"{"uid":"u-1","object":{"b":1,"a":"\u00e9"}}"#
        );
        assert_eq!(review.object().unwrap(), json!({"b": 1, "a": "é"}));
    }

    #[test]
    fn rejects_reviews_without_a_request_object() {
        assert!(matches!(
            IncomingReview::parse(b"{}"),
            Err(ParseError::MissingRequest)
        ));
        assert!(matches!(
            IncomingReview::parse(br#"{"request": [1]}"#),
            Err(ParseError::RequestNotObject)
        ));
        assert!(matches!(
            IncomingReview::parse(b"{"),
            Err(ParseError::Json(_))
        ));
        assert!(matches!(
            IncomingReview::parse(br#"{"request": {"uid": 7}}"#),
            Err(ParseError::Field { field: "uid", .. })
        ));
    }

    #[test]
    fn patch_is_base64_json_patch() {
        let mut response = AdmissionResponse::default();
        response.set_patch(&json!({"a": 1}), &json!({"a": 1, "b": 2}));
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response.patch.unwrap())
            .unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(patch, json!([{"op": "add", "path": "/b", "value": 2}]));
    }

    #[test]
    fn equal_objects_give_no_patch() {
        let mut response = AdmissionResponse::default();
        response.set_patch(&json!({"a": 1}), &json!({"a": 1}));
        assert!(response.patch.is_none() && response.patch_type.is_none());
    }
}
