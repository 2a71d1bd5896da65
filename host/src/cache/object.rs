//! One object made ready for the cache: trimmed of what no policy needs, named by its
//! key, serialized once, with the place of its labels in the text so selectors can read
//! them without parsing the object.

use std::collections::BTreeMap;
use std::ops::Range;

use bytes::Bytes;
use guest_adapter::ResourceKind;
use serde_json::{Map, Value};

/// Where an object sorts: `namespace/name`, the order of etcd's keys and so of the API
/// server's lists (a cluster-scoped object has the empty namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}/{name}").into_boxed_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key text's `(namespace, name)`.
    pub fn split(key: &str) -> (&str, &str) {
        key.split_once('/').unwrap_or(("", key))
    }
}

/// A serialized object and where its `metadata.labels` object sits in its text (empty
/// if it has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedObject {
    pub json: Bytes,
    pub labels: Range<usize>,
}

/// Changes to apply to a kind: an object's new state, or `None` for a deletion.
pub type Changes = BTreeMap<ObjectKey, Option<PreparedObject>>;

/// A prepared object with its key and resourceVersion.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub key: ObjectKey,
    pub object: PreparedObject,
    pub resource_version: u64,
}

/// Prepares one object for the cache: drops what no policy needs (managed fields, the
/// last-applied annotation), makes sure it names its apiVersion and kind, serializes it.
/// `None` if it has no metadata.
pub fn prepare_object(kind: &ResourceKind, mut object: Value) -> Option<Prepared> {
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
    let object = serialize(map);
    Some(Prepared {
        key,
        object,
        resource_version,
    })
}

/// Serializes an object as serde_json would, noting where `metadata.labels` lands.
fn serialize(object: &Map<String, Value>) -> PreparedObject {
    let mut out = Vec::with_capacity(512);
    let mut labels = 0..0;
    let write = |out: &mut Vec<u8>, value: &Value| {
        serde_json::to_writer(out, value).expect("a JSON value always serializes");
    };
    out.push(b'{');
    for (i, (key, value)) in object.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(&mut out, &Value::from(key.as_str()));
        out.push(b':');
        match (key.as_str(), value) {
            ("metadata", Value::Object(metadata)) => {
                out.push(b'{');
                for (j, (field, value)) in metadata.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write(&mut out, &Value::from(field.as_str()));
                    out.push(b':');
                    let start = out.len();
                    write(&mut out, value);
                    if field == "labels" && value.is_object() {
                        labels = start..out.len();
                    }
                }
                out.push(b'}');
            }
            _ => write(&mut out, value),
        }
    }
    out.push(b'}');
    PreparedObject {
        json: Bytes::from(out),
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trims_managed_fields_and_last_applied_configuration() {
        let prepared = prepare_object(
            &ResourceKind::namespaces(),
            json!({
                "metadata": {
                    "name": "a",
                    "resourceVersion": "12",
                    "managedFields": [{"manager": "kubectl"}],
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
                }
            }),
        )
        .unwrap();
        let json: Value = serde_json::from_slice(&prepared.object.json).unwrap();
        assert_eq!(
            json,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "a", "resourceVersion": "12"}})
        );
        assert_eq!(prepared.resource_version, 12);
        assert_eq!(prepared.key.as_str(), "/a");
        assert!(prepared.object.labels.is_empty());
    }

    #[test]
    fn serializes_as_serde_json_does_and_finds_the_labels() {
        let object = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "we\"b", "tier": "x"},
                         "annotations": {"labels": "{\"a\":1}"}},
            "spec": {"template": {"metadata": {"labels": {"not": "these"}}}}
        });
        let prepared = prepare_object(&ResourceKind::services(), object.clone()).unwrap();
        assert_eq!(prepared.object.json, serde_json::to_vec(&object).unwrap());
        let labels = &prepared.object.json[prepared.object.labels.clone()];
        assert_eq!(labels, br#"{"app":"we\"b","tier":"x"}"#);
    }

    #[test]
    fn keys_sort_as_etcd_keys_and_split_back() {
        // '-' sorts before '/': etcd lists namespace "a-b" before namespace "a".
        assert!(ObjectKey::new("a-b", "x") < ObjectKey::new("a", "x"));
        assert_eq!(
            ObjectKey::split(ObjectKey::new("shop", "web").as_str()),
            ("shop", "web")
        );
        assert_eq!(ObjectKey::split("/cluster-scoped"), ("", "cluster-scoped"));
    }
}
