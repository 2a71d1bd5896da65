//! What a guest may ask of the cluster, independent of the call style that asked.

use std::fmt;

/// A Kubernetes resource kind, as `apiVersion` + `kind` (`v1`/`Namespace`,
/// `networking.k8s.io/v1`/`Ingress`). Spelled as the API server spells it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceKind {
    pub api_version: String,
    pub kind: String,
}

impl ResourceKind {
    pub fn new(api_version: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    pub fn namespaces() -> Self {
        Self::new("v1", "Namespace")
    }

    pub fn services() -> Self {
        Self::new("v1", "Service")
    }

    pub fn ingresses() -> Self {
        Self::new("networking.k8s.io/v1", "Ingress")
    }

    /// The API server's spelling of this kind, if it is one of the well-known kinds
    /// (`V1`/`namespace` -> `v1`/`Namespace`); other kinds are kept as written.
    pub fn canonical(self) -> Self {
        [Self::namespaces(), Self::services(), Self::ingresses()]
            .into_iter()
            .find(|known| known.matches(&self))
            .unwrap_or(self)
    }

    /// Whether `other` names the same kind, ignoring the case differences people make
    /// when they write configuration by hand (`kind: namespace`).
    pub fn matches(&self, other: &ResourceKind) -> bool {
        self.api_version.eq_ignore_ascii_case(&other.api_version)
            && self.kind.eq_ignore_ascii_case(&other.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_kinds_get_the_api_servers_spelling() {
        assert_eq!(
            ResourceKind::new("V1", "namespace").canonical(),
            ResourceKind::namespaces()
        );
        let custom = ResourceKind::new("example.com/v1", "widget");
        assert_eq!(custom.clone().canonical(), custom);
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// One question to the cluster cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterQuery {
    /// Every object of a kind, across all namespaces, as a Kubernetes List.
    ListAll(ResourceKind),
}

impl ClusterQuery {
    pub fn kind(&self) -> &ResourceKind {
        match self {
            Self::ListAll(kind) => kind,
        }
    }
}
