//! Which kinds each policy may read: what `contextAwareResources` grants, nothing else.

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

    pub fn allows(&self, kind: &ResourceKind) -> bool {
        self.granted.iter().any(|granted| granted.matches(kind))
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
        assert!(!AccessRules::default().allows(&ResourceKind::namespaces()));
    }
}
