//! `can_i`: whether a user may do something, asked of the API server as a
//! SubjectAccessReview. The one question the cache cannot answer.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The review a guest asks for (Kubewarden's `SubjectAccessReview` request shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessReview {
    pub user: String,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    pub resource_attributes: ResourceAttributes,
}

/// What is being done, as `SubjectAccessReviewSpec.resourceAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceAttributes {
    #[serde(default)]
    pub namespace: Option<String>,
    pub verb: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    pub resource: String,
    #[serde(default)]
    pub subresource: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// Asks the API server. Blocking: it is called from an evaluation's worker thread, and
/// bounded by its own timeout.
pub trait AccessReviewer: Send + Sync {
    /// The `SubjectAccessReviewStatus` JSON the API server answered (`allowed`, and
    /// `denied`, `reason`, `evaluationError` when present). A recent answer to the same
    /// review may be reused unless `fresh` is asked for. It waits at most `wait` (what is
    /// left of the evaluation's time), if given.
    fn review(
        &self,
        review: &AccessReview,
        fresh: bool,
        wait: Option<std::time::Duration>,
    ) -> Result<Bytes, String>;
}
