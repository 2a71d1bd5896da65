//! Label and field selectors, parsed and matched with the Kubernetes API server's
//! semantics (`k8s.io/apimachinery/pkg/labels` and `.../fields`), so that an answer from
//! the cache equals what `kubectl get -l ... --field-selector ...` returns.

mod field;
mod label;

pub use field::{FieldSelector, ObjectFields};
pub use label::LabelSelector;

/// Why a selector was refused; the text says where, as the API server's does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub(crate) String);
