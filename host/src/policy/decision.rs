//! Kubewarden's policy semantics: from a guest's verdict (or failure) to the response
//! Kubernetes receives. The steps run in Kubewarden's order: verdict, monitor mode,
//! mutation permission, custom message.

use super::{GuestVerdict, Policy, PolicyMode};
use crate::admission::{
    AdmissionResponse, IncomingReview, ParseError, Status, StatusCause, StatusDetails,
};
use crate::runtime::EvalError;
use guest_adapter::untrusted::{MAX_ANSWERED_BYTES, capped, untrusted};

/// Which endpoint asked; they differ in what they may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/validate/{id}`: an AdmissionReview; policy mode and mutation rules apply.
    Validate,
    /// `/validate_raw/{id}`: any JSON document; a mutation is a patch of the whole request.
    Raw,
    /// `/audit/{id}`: the policy's real verdict, never a mutation.
    Audit,
}

/// Code of a rejection that is not the policy's own verdict.
const INTERNAL_ERROR: u16 = 500;

/// Turns an evaluation outcome into the response for `review`.
pub fn decide(
    policy: &Policy,
    endpoint: Endpoint,
    review: &IncomingReview,
    outcome: Result<GuestVerdict, EvalError>,
) -> AdmissionResponse {
    let uid = review.uid.clone();
    if let Some(reason) = policy.load_error() {
        // A policy that could not load never lets anything through, not even in monitor mode.
        return rejection(uid, Some(INTERNAL_ERROR), reason.to_owned());
    }
    let mut response = match outcome {
        Ok(verdict) => from_verdict(policy, endpoint, review, verdict),
        Err(err) => {
            let error = err.to_string();
            if let Some(left_out) = policy.failure_log.admit() {
                tracing::warn!(
                    policy = %policy.id,
                    uid = %untrusted(&uid),
                    error = %loggable(review, &error),
                    similar_left_out = left_out,
                    "evaluation failed"
                );
            }
            rejection(
                uid,
                Some(INTERNAL_ERROR),
                format!(
                    "internal server error: policy '{}': {}",
                    policy.id,
                    capped(&error, MAX_ANSWERED_BYTES)
                ),
            )
        }
    };
    if policy.mode == PolicyMode::Monitor && endpoint != Endpoint::Audit {
        tracing::info!(
            policy = %policy.id,
            uid = %untrusted(&response.uid),
            allowed = response.allowed,
            reason = response.status.as_ref().and_then(|s| s.message.as_deref()).map(|m| loggable(review, m)),
            mutated = response.patch.is_some(),
            "policy evaluation (monitor mode): request allowed whatever the decision"
        );
        allow_in_monitor_mode(&mut response);
        return response;
    }
    let mut response = forbid_unpermitted_mutation(&policy.id, policy.allowed_to_mutate, response);
    apply_custom_message(policy.custom_message.as_deref(), &mut response);
    response
}

/// Monitor mode: the request is allowed, unmutated, whatever the policy decided (the
/// caller logs the real decision).
fn allow_in_monitor_mode(response: &mut AdmissionResponse) {
    response.allowed = true;
    response.status = None;
    response.patch = None;
    response.patch_type = None;
}

/// A mutation from a policy not allowed to mutate is a rejection, in Kubewarden's words.
fn forbid_unpermitted_mutation(
    policy_id: &str,
    allowed_to_mutate: bool,
    response: AdmissionResponse,
) -> AdmissionResponse {
    if response.patch.is_none() || allowed_to_mutate {
        return response;
    }
    rejection(
        response.uid,
        None,
        format!(
            "Request rejected by policy {policy_id}. The policy attempted to mutate the request, \
             but it is currently configured to not allow mutations."
        ),
    )
}

/// A rejection's message is replaced by the policy's custom message; the original
/// becomes the first cause.
fn apply_custom_message(custom: Option<&str>, response: &mut AdmissionResponse) {
    let (false, Some(custom)) = (response.allowed, custom) else {
        return;
    };
    let status = response.status.get_or_insert_with(Status::default);
    let original = status.message.replace(custom.to_owned());
    status
        .details
        .get_or_insert_with(StatusDetails::default)
        .causes
        .push(StatusCause { message: original });
}

fn from_verdict(
    policy: &Policy,
    endpoint: Endpoint,
    review: &IncomingReview,
    verdict: GuestVerdict,
) -> AdmissionResponse {
    let mut response = AdmissionResponse {
        uid: review.uid.clone(),
        allowed: verdict.accepted,
        warnings: verdict
            .warnings
            .filter(|w| !w.is_empty())
            .map(capped_warnings),
        audit_annotations: verdict.audit_annotations.filter(|a| !a.is_empty()),
        ..Default::default()
    };
    if !verdict.accepted {
        response.status = Some(Status {
            code: verdict.code,
            message: verdict
                .message
                .map(|m| capped(&m, MAX_ANSWERED_BYTES).into_owned()),
            details: None,
        });
        return response;
    }
    let Some(mutated) = verdict.mutated_object else {
        return response;
    };
    let original = match endpoint {
        Endpoint::Audit => return response,
        Endpoint::Validate => review.object(),
        Endpoint::Raw => serde_json::from_str(review.request.get()).map_err(ParseError::Json),
    };
    match original {
        Ok(serde_json::Value::Null) => rejection(
            response.uid,
            None,
            "Incoming object is null, which happens only with DELETE operations, \
             but the policy is attempting a mutation. This is not allowed"
                .to_owned(),
        ),
        Ok(original) => {
            response.set_patch(&original, &mutated);
            response
        }
        Err(err) => rejection(
            response.uid,
            Some(INTERNAL_ERROR),
            format!(
                "policy '{}' mutated a request whose object cannot be read: {err}",
                policy.id
            ),
        ),
    }
}

/// Text a policy wrote, as it may be logged: escaped and capped, and withheld entirely
/// for a Secret, whose `data` it may quote.
fn loggable(review: &IncomingReview, text: &str) -> String {
    if review.reviews_secret {
        format!("({} bytes withheld: the request is a Secret)", text.len())
    } else {
        untrusted(text).to_string()
    }
}

/// Most warnings a response carries (kube-apiserver itself keeps at most 4 KiB of them).
const MAX_WARNINGS: usize = 32;

fn capped_warnings(mut warnings: Vec<String>) -> Vec<String> {
    warnings.truncate(MAX_WARNINGS);
    for warning in &mut warnings {
        if let std::borrow::Cow::Owned(cut) = capped(warning, MAX_ANSWERED_BYTES) {
            *warning = cut;
        }
    }
    warnings
}

fn rejection(uid: String, code: Option<u16>, message: String) -> AdmissionResponse {
    AdmissionResponse {
        uid,
        allowed: false,
        status: Some(Status {
            code,
            message: Some(message),
            details: None,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
