//! What a guest may ask of the cluster, independent of the call style that asked.

use std::fmt;

use crate::mask::FieldMask;
use crate::selector::{FieldSelector, LabelSelector};

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

    /// What `can_i` needs granted: the API it calls.
    pub fn subject_access_reviews() -> Self {
        Self::new("authorization.k8s.io/v1", "SubjectAccessReview")
    }

    /// The API group (empty for the core group) and version.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.api_version.as_str()),
        }
    }

    /// The API server's spelling of this kind, if it is one of the well-known kinds
    /// (`V1`/`namespace` -> `v1`/`Namespace`); other kinds are kept as written (API
    /// discovery gives their spelling).
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

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// One question to the cluster cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterQuery {
    List(ListQuery),
    Get(GetQuery),
}

impl ClusterQuery {
    pub fn kind(&self) -> &ResourceKind {
        match self {
            Self::List(query) => &query.kind,
            Self::Get(query) => &query.kind,
        }
    }
}

/// The objects of a kind, in one namespace or all, that the selectors select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub kind: ResourceKind,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Keep only these fields of each object (Kubewarden's `field_masks`).
    pub mask: Option<FieldMask>,
}

/// One object by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetQuery {
    pub kind: ResourceKind,
    /// `None` for a cluster-scoped kind.
    pub namespace: Option<String>,
    pub name: String,
    pub mask: Option<FieldMask>,
}

/// A query argument the host cannot use; `field` is the argument's name as the guest
/// spelled it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidArgument {
    pub field: &'static str,
    pub reason: String,
}

/// An absent or empty optional string (some SDKs send `""` for "none").
pub(crate) fn given(text: Option<String>) -> Option<String> {
    text.filter(|text| !text.is_empty())
}

impl ListQuery {
    /// Every object of a kind.
    pub fn all(kind: ResourceKind) -> Self {
        Self {
            kind,
            namespace: None,
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
            mask: None,
        }
    }

    /// A query from a guest's arguments: the selectors are parsed here, so a bad one is
    /// refused before anything is looked up.
    pub fn parse(
        kind: ResourceKind,
        namespace: Option<String>,
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, InvalidArgument> {
        let labels = LabelSelector::parse(label_selector.unwrap_or_default()).map_err(|e| {
            InvalidArgument {
                field: "label_selector",
                reason: e.to_string(),
            }
        })?;
        let fields = FieldSelector::parse(field_selector.unwrap_or_default()).map_err(|e| {
            InvalidArgument {
                field: "field_selector",
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            kind,
            namespace: given(namespace),
            labels,
            fields,
            mask: None,
        })
    }
}

impl GetQuery {
    /// A query from a guest's arguments: a name is needed.
    pub fn parse(
        kind: ResourceKind,
        namespace: Option<String>,
        name: String,
    ) -> Result<Self, InvalidArgument> {
        if name.is_empty() {
            return Err(InvalidArgument {
                field: "name",
                reason: "must not be empty".into(),
            });
        }
        Ok(Self {
            kind,
            namespace: given(namespace),
            name,
            mask: None,
        })
    }
}

/// Checks the kind a guest named: both parts are needed to find it.
pub fn kind(api_version: String, kind: String) -> Result<ResourceKind, InvalidArgument> {
    if api_version.is_empty() {
        return Err(InvalidArgument {
            field: "api_version",
            reason: "must not be empty (`v1` for the core group, `group/version` otherwise)".into(),
        });
    }
    if kind.is_empty() {
        return Err(InvalidArgument {
            field: "kind",
            reason: "must not be empty (the singular PascalCase kind, e.g. `Namespace`)".into(),
        });
    }
    Ok(ResourceKind::new(api_version, kind))
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

    #[test]
    fn group_and_version() {
        assert_eq!(ResourceKind::namespaces().group_version(), ("", "v1"));
        assert_eq!(
            ResourceKind::ingresses().group_version(),
            ("networking.k8s.io", "v1")
        );
    }

    #[test]
    fn a_bad_selector_names_its_argument() {
        let err =
            ListQuery::parse(ResourceKind::services(), None, Some("app in web"), None).unwrap_err();
        assert_eq!(err.field, "label_selector");
        let err =
            ListQuery::parse(ResourceKind::services(), None, None, Some("spec.x=1")).unwrap_err();
        assert_eq!(err.field, "field_selector");
    }

    #[test]
    fn empty_strings_mean_absent() {
        let query = ListQuery::parse(
            ResourceKind::services(),
            Some(String::new()),
            Some(""),
            Some(""),
        )
        .unwrap();
        assert_eq!(query, ListQuery::all(ResourceKind::services()));
    }
}
