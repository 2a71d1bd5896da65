//! What each policy may ask: what `contextAwareResources` grants, nothing else.

use crate::query::ResourceKind;

/// The kinds one policy was granted.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    granted: Vec<ResourceKind>,
}

impl AccessRules {
    pub fn new(granted: impl IntoIterator<Item = ResourceKind>) -> Self {
        Self {
            granted: granted.into_iter().collect(),
        }
    }

    /// Whether the policy may read `kind` from the cache.
    pub fn allows(&self, kind: &ResourceKind) -> bool {
        self.granted.iter().any(|granted| granted.matches(kind))
    }

    /// Whether the policy may ask the API server `can_i` (a SubjectAccessReview): only
    /// when granted `authorization.k8s.io/v1` `SubjectAccessReview`. Kubewarden does not
    /// gate it; here it is denied by default, as every other question is.
    pub fn allows_access_reviews(&self) -> bool {
        self.allows(&ResourceKind::subject_access_reviews())
    }

    pub fn granted(&self) -> &[ResourceKind] {
        &self.granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_match_regardless_of_case() {
        let rules = AccessRules::new([ResourceKind::new("V1", "namespace")]);
        assert!(rules.allows(&ResourceKind::namespaces()));
        assert!(!rules.allows(&ResourceKind::services()));
    }

    #[test]
    fn nothing_is_granted_by_default() {
        let rules = AccessRules::default();
        assert!(!rules.allows(&ResourceKind::namespaces()));
        assert!(!rules.allows_access_reviews());
    }

    #[test]
    fn access_reviews_need_their_own_grant() {
        let rules = AccessRules::new([ResourceKind::new(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
        )]);
        assert!(rules.allows_access_reviews());
        assert!(!AccessRules::new([ResourceKind::namespaces()]).allows_access_reviews());
    }
}
