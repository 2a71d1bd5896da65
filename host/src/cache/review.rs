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
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (at, _)| at.elapsed() < ANSWER_TTL);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(review.clone(), (Instant::now(), answer));
    }
}

impl AccessReviewer for ApiAccessReviewer {
    fn review(&self, review: &AccessReview, fresh: bool) -> Result<Bytes, String> {
        if !fresh && let Some(answer) = self.remembered(review) {
            return Ok(answer);
        }
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
                tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &request))
                    .await
            })
            .map_err(|_| format!("the API server did not answer within {REVIEW_TIMEOUT:?}"))?
            .map_err(|e| format!("the API server refused the SubjectAccessReview: {e}"))?;
        let status = created.status.unwrap_or_default();
        let answer = Bytes::from(serde_json::to_vec(&status).expect("a status serializes"));
        self.remember(review, answer.clone());
        Ok(answer)
    }
}
