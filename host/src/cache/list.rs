//! One kind's prepared List answer, rebuilt once per batch of changes.
//!
//! The cache keeps only the serialized List and, per object, where its bytes sit inside
//! it: no second copy of the objects, and a host call hands out the prepared bytes.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;
use guest_adapter::{ListJson, ResourceKind};
use serde_json::Value;

/// Where an object sorts in a List: by namespace, then name, as the API server lists them.
/// One allocation per object: `namespace`, a NUL, then `name` (NUL sorts before every
/// character a Kubernetes name may have, so this orders as the pair does).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}\0{name}").into_boxed_str())
    }
}

/// The serialized List of one kind and the position of each object in it.
#[derive(Debug)]
pub struct KindList {
    kind: ResourceKind,
    list: ListJson,
    /// Sorted by key: a Vec, not a map, because the index is most of what the cache holds
    /// beside the List itself.
    items: Vec<(ObjectKey, Range<usize>)>,
    resource_version: u64,
}

/// A change to apply: the object's new JSON, or `None` for a deletion.
pub type Changes = BTreeMap<ObjectKey, Option<Bytes>>;

impl KindList {
    pub fn new(kind: ResourceKind) -> Self {
        let mut list = Self {
            kind,
            list: ListJson::new(""),
            items: Vec::new(),
            resource_version: 0,
        };
        list.apply(Changes::new(), 0);
        list
    }

    /// The prepared List JSON (a cheap, shared handle).
    pub fn json(&self) -> ListJson {
        self.list.clone()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Applies a batch of changes and rebuilds the List once. `resource_version` is the
    /// newest one the batch carried; the List keeps the highest it has seen.
    pub fn apply(&mut self, changes: Changes, resource_version: u64) {
        self.resource_version = self.resource_version.max(resource_version);
        let header = format!(
            r#"{{"apiVersion":{},"kind":{},"metadata":{{"resourceVersion":"{}"}},"items":["#,
            Value::from(self.kind.api_version.as_str()),
            Value::from(format!("{}List", self.kind.kind)),
            self.resource_version
        );
        let mut keys: Vec<&ObjectKey> = self
            .items
            .iter()
            .map(|(key, _)| key)
            .chain(changes.keys())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let item = |key: &ObjectKey| -> Option<&[u8]> {
            match changes.get(key) {
                Some(Some(new)) => Some(new),
                Some(None) => None,
                None => {
                    let at = self
                        .items
                        .binary_search_by(|(k, _)| k.cmp(key))
                        .expect("a key of the List is in its index");
                    Some(&self.list.as_bytes()[self.items[at].1.clone()])
                }
            }
        };
        // Sized exactly: the List is the bulk of what the cache holds.
        let size = header.len()
            + keys
                .iter()
                .filter_map(|k| item(k))
                .map(|b| b.len() + 1)
                .sum::<usize>()
            + 2;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(header.as_bytes());
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(bytes) = item(key) else { continue };
            if !items.is_empty() {
                out.push(b',');
            }
            let start = out.len();
            out.extend_from_slice(bytes);
            items.push((key.clone(), start..out.len()));
        }
        out.extend_from_slice(b"]}");
        self.items = items;
        // Objects are serialized by serde_json and the header is built from JSON strings.
        let text = String::from_utf8(out).expect("a List built from JSON text is UTF-8");
        self.list = ListJson::new(text);
    }
}

/// Prepares one object for the cache: drops what no policy needs (managed fields, the
/// last-applied annotation), makes sure it names its apiVersion and kind, serializes it.
pub fn prepare_object(kind: &ResourceKind, mut object: Value) -> Option<(ObjectKey, Bytes, u64)> {
    let map = object.as_object_mut()?;
    map.entry("apiVersion")
        .or_insert_with(|| Value::from(kind.api_version.as_str()));
    map.entry("kind")
        .or_insert_with(|| Value::from(kind.kind.as_str()));
    let metadata = map.get_mut("metadata")?.as_object_mut()?;
    metadata.remove("managedFields");
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    let text = |field: &str| {
        metadata
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let key = ObjectKey::new(text("namespace"), text("name"));
    let resource_version = text("resourceVersion").parse().unwrap_or(0);
    let bytes = serde_json::to_vec(&object).expect("a JSON value always serializes");
    Some((key, Bytes::from(bytes), resource_version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prepared(object: Value) -> (ObjectKey, Bytes, u64) {
        prepare_object(&ResourceKind::namespaces(), object).unwrap()
    }

    fn changes(items: &[(ObjectKey, Option<Bytes>)]) -> Changes {
        items.iter().cloned().collect()
    }

    #[test]
    fn an_empty_list_is_a_valid_kubernetes_list() {
        let list = KindList::new(ResourceKind::ingresses());
        let json: Value = serde_json::from_str(list.json().as_str()).unwrap();
        assert_eq!(
            json,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressList",
                   "metadata": {"resourceVersion": "0"}, "items": []})
        );
    }

    #[test]
    fn applies_adds_updates_and_deletes_in_key_order() {
        let mut list = KindList::new(ResourceKind::namespaces());
        let (b, b_bytes, _) = prepared(json!({"metadata": {"name": "b", "resourceVersion": "5"}}));
        let (a, a_bytes, _) = prepared(json!({"metadata": {"name": "a", "resourceVersion": "7"}}));
        list.apply(
            changes(&[(b.clone(), Some(b_bytes)), (a.clone(), Some(a_bytes))]),
            7,
        );
        let json: Value = serde_json::from_str(list.json().as_str()).unwrap();
        assert_eq!(json["metadata"]["resourceVersion"], "7");
        assert_eq!(json["items"][0]["metadata"]["name"], "a");
        assert_eq!(json["items"][1]["metadata"]["name"], "b");
        assert_eq!(json["items"][0]["kind"], "Namespace");

        let (_, a2, _) = prepared(json!({"metadata": {"name": "a", "labels": {"x": "y"}}}));
        list.apply(changes(&[(a.clone(), Some(a2)), (b, None)]), 9);
        let json: Value = serde_json::from_str(list.json().as_str()).unwrap();
        assert_eq!(json["items"].as_array().unwrap().len(), 1);
        assert_eq!(json["items"][0]["metadata"]["labels"]["x"], "y");
        assert_eq!(json["metadata"]["resourceVersion"], "9");
        assert_eq!(list.len(), 1);
    }

    #[test]
    fn trims_managed_fields_and_last_applied_configuration() {
        let (_, bytes, rv) = prepared(json!({
            "metadata": {
                "name": "a",
                "resourceVersion": "12",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
            }
        }));
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "a", "resourceVersion": "12"}})
        );
        assert_eq!(rv, 12);
    }
}
