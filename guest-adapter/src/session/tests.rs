use std::sync::Mutex;

use bytes::Bytes;

use super::*;
use crate::selector::{FieldSelector, LabelSelector};

/// One object of a fake snapshot: namespace, name, labels.
type FakeObject = (
    &'static str,
    &'static str,
    Vec<(&'static str, &'static str)>,
);

/// A snapshot that holds objects in order.
pub(crate) struct FakeSnapshot {
    pub kind: ResourceKind,
    pub scope: Scope,
    pub objects: Vec<FakeObject>,
}

impl FakeSnapshot {
    fn json(&self, namespace: &str, name: &str) -> String {
        format!(r#"{{"metadata":{{"name":"{name}","namespace":"{namespace}"}}}}"#)
    }
}

impl KindSnapshot for FakeSnapshot {
    fn kind(&self) -> &ResourceKind {
        &self.kind
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn list(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Answer {
        let items: Vec<String> = self
            .objects
            .iter()
            .filter(|(ns, name, object_labels)| {
                namespace.is_none_or(|wanted| wanted == *ns)
                    && labels.matches(|key| {
                        object_labels
                            .iter()
                            .find(|(k, _)| *k == key)
                            .map(|(_, v)| *v)
                    })
                    && fields.matches(crate::selector::ObjectFields {
                        namespace: ns,
                        name,
                    })
            })
            .map(|(ns, name, _)| self.json(ns, name))
            .collect();
        Answer::from(format!(r#"{{"items":[{}]}}"#, items.join(",")))
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Answer> {
        self.objects
            .iter()
            .any(|(ns, n, _)| *ns == namespace && *n == name)
            .then(|| Answer::from(self.json(namespace, name)))
    }
}

/// A cache whose snapshots can be replaced between calls.
#[derive(Default)]
pub(crate) struct FakeCache(pub Mutex<Vec<Arc<FakeSnapshot>>>);

impl FakeCache {
    pub(crate) fn with(snapshots: Vec<FakeSnapshot>) -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            snapshots.into_iter().map(Arc::new).collect(),
        )))
    }
}

impl ClusterCache for FakeCache {
    fn snapshot(&self, kind: &ResourceKind) -> Result<Arc<dyn KindSnapshot>, CacheError> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.kind.matches(kind))
            .map(|s| s.clone() as Arc<dyn KindSnapshot>)
            .ok_or_else(|| CacheError::Unavailable(kind.clone()))
    }
}

pub(crate) fn namespaces(names: &[&'static str]) -> FakeSnapshot {
    FakeSnapshot {
        kind: ResourceKind::namespaces(),
        scope: Scope::Cluster,
        objects: names.iter().map(|n| ("", *n, vec![])).collect(),
    }
}

pub(crate) fn services() -> FakeSnapshot {
    FakeSnapshot {
        kind: ResourceKind::services(),
        scope: Scope::Namespaced,
        objects: vec![
            ("shop", "db", vec![("tier", "backend")]),
            ("shop", "web", vec![("tier", "frontend")]),
            ("team-a", "api", vec![("tier", "backend")]),
        ],
    }
}

pub(crate) fn session(granted: &[ResourceKind], cache: Arc<FakeCache>) -> GuestSession {
    let context = PolicyContext::new("p1", AccessRules::new(granted.to_vec()), cache);
    GuestSession::new(Arc::new(context))
}

fn list(kind: ResourceKind) -> ClusterQuery {
    ClusterQuery::List(ListQuery::all(kind))
}

fn get(kind: ResourceKind, namespace: Option<&str>, name: &str) -> ClusterQuery {
    ClusterQuery::Get(GetQuery {
        kind,
        namespace: namespace.map(str::to_owned),
        name: name.to_owned(),
        mask: None,
    })
}

#[test]
fn one_evaluation_sees_one_snapshot_per_kind() {
    let cache = FakeCache::with(vec![namespaces(&["first"])]);
    let mut session = session(&[ResourceKind::namespaces()], cache.clone());
    let query = list(ResourceKind::namespaces());
    assert!(session.query(&query).unwrap().to_text().contains("first"));
    *cache.0.lock().unwrap() = vec![Arc::new(namespaces(&["second"]))];
    assert!(session.query(&query).unwrap().to_text().contains("first"));
    let mut next = GuestSession::new(session.context.clone());
    assert!(next.query(&query).unwrap().to_text().contains("second"));
}

#[test]
fn ungranted_kinds_are_denied_with_policy_and_kind() {
    let cache = FakeCache::with(vec![namespaces(&[]), services()]);
    let mut session = session(&[ResourceKind::namespaces()], cache);
    let err = session.query(&list(ResourceKind::services())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy 'p1' is not allowed to read v1/Service: grant it in the policy's contextAwareResources"
    );
    let err = session
        .query(&get(ResourceKind::services(), Some("shop"), "web"))
        .unwrap_err();
    assert!(matches!(err, HostCallError::NotAllowed { .. }), "{err}");
}

#[test]
fn cache_errors_name_the_policy() {
    let mut session = session(&[ResourceKind::namespaces()], Arc::default());
    let err = session
        .query(&list(ResourceKind::namespaces()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy 'p1': v1/Namespace is not available yet: the cache has not finished its first list"
    );
}

#[test]
fn gets_find_objects_by_scope_and_say_not_found_as_kubewarden_does() {
    let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
    let granted = [ResourceKind::namespaces(), ResourceKind::services()];
    let mut session = session(&granted, cache);
    let found = |session: &mut GuestSession, query| session.query(&query).map(|a| a.to_text());
    assert!(found(&mut session, get(ResourceKind::namespaces(), None, "shop")).is_ok());
    assert!(
        found(
            &mut session,
            get(ResourceKind::services(), Some("shop"), "web")
        )
        .is_ok()
    );
    let cases = [
        (
            get(ResourceKind::services(), Some("shop"), "gone"),
            "Cannot find v1/Service named 'gone' inside of namespace 'Some(\"shop\")'",
        ),
        // The wrong scope names no object, as on the API server.
        (
            get(ResourceKind::services(), None, "web"),
            "Cannot find v1/Service named 'web' inside of namespace 'None'",
        ),
        (
            get(ResourceKind::namespaces(), Some("shop"), "shop"),
            "Cannot find v1/Namespace named 'shop' inside of namespace 'Some(\"shop\")'",
        ),
    ];
    for (query, message) in cases {
        let err = session.query(&query).unwrap_err();
        assert!(matches!(err, HostCallError::NotFound { .. }));
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn lists_by_namespace_and_selectors() {
    let cache = FakeCache::with(vec![namespaces(&["shop"]), services()]);
    let granted = [ResourceKind::namespaces(), ResourceKind::services()];
    let mut session = session(&granted, cache);
    let names = |session: &mut GuestSession, namespace: Option<&str>, labels, fields| {
        let query = ListQuery::parse(
            ResourceKind::services(),
            namespace.map(str::to_owned),
            labels,
            fields,
        )
        .unwrap();
        let answer = session.query(&ClusterQuery::List(query)).unwrap().to_text();
        let list: serde_json::Value = serde_json::from_str(&answer).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&mut session, Some("shop"), None, None), ["db", "web"]);
    assert_eq!(
        names(&mut session, None, Some("tier=backend"), None),
        ["db", "api"]
    );
    assert_eq!(
        names(&mut session, None, None, Some("metadata.namespace=team-a")),
        ["api"]
    );
    assert_eq!(
        names(
            &mut session,
            Some("shop"),
            None,
            Some("metadata.namespace=team-a")
        ),
        Vec::<String>::new()
    );
    let by_namespace = ListQuery {
        namespace: Some("shop".into()),
        ..ListQuery::all(ResourceKind::namespaces())
    };
    let err = session
        .query(&ClusterQuery::List(by_namespace))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "resource v1/Namespace is cluster wide. Cannot search for it inside of a namespace"
    );
}

struct Reviewer;

impl AccessReviewer for Reviewer {
    fn review(
        &self,
        review: &AccessReview,
        _fresh: bool,
        _wait: Option<Duration>,
    ) -> Result<Bytes, String> {
        Ok(Bytes::from(format!(
            r#"{{"allowed":{}}}"#,
            review.user == "admin"
        )))
    }
}

#[test]
fn can_i_needs_its_grant_and_a_cluster() {
    let review = AccessReview {
        user: "admin".into(),
        groups: None,
        resource_attributes: Default::default(),
    };
    let granted = AccessRules::new([ResourceKind::subject_access_reviews()]);
    let without_cluster = PolicyContext::new("p1", granted.clone(), Arc::new(crate::NoCluster));
    let err = GuestSession::new(Arc::new(without_cluster))
        .can_i(&review, false)
        .unwrap_err();
    assert!(err.to_string().contains("no Kubernetes API"), "{err}");

    let ungranted = PolicyContext::new("p1", AccessRules::default(), Arc::new(crate::NoCluster))
        .with_reviewer(Arc::new(Reviewer));
    let err = GuestSession::new(Arc::new(ungranted))
        .can_i(&review, false)
        .unwrap_err();
    assert!(matches!(err, HostCallError::AccessReviewsNotAllowed { .. }));

    let granted = PolicyContext::new("p1", granted, Arc::new(crate::NoCluster))
        .with_reviewer(Arc::new(Reviewer));
    let answer = GuestSession::new(Arc::new(granted))
        .can_i(&review, false)
        .unwrap();
    assert_eq!(answer.to_text(), r#"{"allowed":true}"#);
}
