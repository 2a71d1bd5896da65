//! `can_i` against the API server: a SubjectAccessReview per question, answers kept for
//! a few seconds (as Kubewarden's host keeps them), and a bound on both the wait and the
//! number of answers kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use guest_adapter::{AccessReview, AccessReviewer};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// How long an answer is reused.
const ANSWER_TTL: Duration = Duration::from_secs(5);
/// How long one review may take; an evaluation waits no longer.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers kept at most: a guest asking ever new questions cannot grow the cache.
const MAX_ANSWERS: usize = 4096;
/// The largest review asked (its JSON): a real one is a few hundred bytes, and the cache
/// keys on the whole review, so this bounds it to 4096 × 16 KiB.
const MAX_REVIEW_BYTES: usize = 16 << 10;

pub struct ApiAccessReviewer {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    answers: Mutex<HashMap<AccessReview, (Instant, Bytes)>>,
}

impl ApiAccessReviewer {
    pub fn new(client: kube::Client, runtime: tokio::runtime::Handle) -> Self {
        Self {
            client,
            runtime,
            answers: Mutex::default(),
        }
    }

    fn remembered(&self, review: &AccessReview) -> Option<Bytes> {
        let answers = self.answers.lock().expect("answer cache poisoned");
        answers
            .get(review)
            .filter(|(at, _)| at.elapsed() < ANSWER_TTL)
            .map(|(_, answer)| answer.clone())
    }

    fn remember(&self, review: &AccessReview, answer: Bytes) {
        let mut answers = self.answers.lock().expect("answer cache poisoned");
        answers.retain(|_, (at, _)| at.elapsed() < ANSWER_TTL);
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(review.clone(), (Instant::now(), answer));
    }
}

impl AccessReviewer for ApiAccessReviewer {
    fn review(
        &self,
        review: &AccessReview,
        fresh: bool,
        wait: Option<Duration>,
    ) -> Result<Bytes, String> {
        let size = serde_json::to_vec(review).map_or(usize::MAX, |json| json.len());
        if size > MAX_REVIEW_BYTES {
            return Err(format!(
                "a SubjectAccessReview of {size} bytes is over the limit of {MAX_REVIEW_BYTES}"
            ));
        }
        if !fresh && let Some(answer) = self.remembered(review) {
            return Ok(answer);
        }
        // No longer than the evaluation has left: the deadline cannot stop a host call.
        let wait = wait.map_or(REVIEW_TIMEOUT, |left| left.min(REVIEW_TIMEOUT));
        let attributes = &review.resource_attributes;
        let request = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(review.user.clone()),
                groups: review.groups.clone(),
                resource_attributes: Some(ResourceAttributes {
                    namespace: attributes.namespace.clone(),
                    verb: Some(attributes.verb.clone()),
                    group: attributes.group.clone(),
                    version: attributes.version.clone(),
                    resource: Some(attributes.resource.clone()),
                    subresource: attributes.subresource.clone(),
                    name: attributes.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        // Called from an evaluation's worker thread, outside the async runtime; the
        // timer is made inside it.
        let created = self
            .runtime
            .block_on(async {
                tokio::time::timeout(wait, api.create(&PostParams::default(), &request)).await
            })
            .map_err(|_| format!("the API server did not answer within {wait:?}"))?
            .map_err(|e| format!("the API server refused the SubjectAccessReview: {e}"))?;
        let status = created.status.unwrap_or_default();
        let answer = Bytes::from(serde_json::to_vec(&status).expect("a status serializes"));
        self.remember(review, answer.clone());
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_review_is_refused_before_anything_is_asked() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        // Nothing listens there: a review that got as far as asking would fail otherwise.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = runtime.block_on(async { kube::Client::try_from(config).unwrap() });
        let reviewer = ApiAccessReviewer::new(client, runtime.handle().clone());
        let review = AccessReview {
            user: "u".repeat(MAX_REVIEW_BYTES),
            groups: None,
            resource_attributes: Default::default(),
        };
        let err = reviewer.review(&review, false, None).unwrap_err();
        assert!(err.contains("is over the limit of 16384"), "{err}");
        let small = AccessReview {
            user: "u".into(),
            ..review
        };
        let err = reviewer
            .review(&small, false, Some(Duration::from_millis(200)))
            .unwrap_err();
        assert!(err.contains("refused") || err.contains("within"), "{err}");
        assert!(
            reviewer.answers.lock().unwrap().is_empty(),
            "failures are not kept"
        );
    }
}
