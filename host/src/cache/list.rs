//! One kind's prepared List answer, rebuilt once per batch of changes.
//!
//! The cache keeps only the serialized List and, per object, where its bytes sit inside
//! it: no second copy of the objects, and a host call hands out the prepared bytes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use bytes::Bytes;
use guest_adapter::{ListJson, ResourceKind};
use serde_json::Value;

/// Where an object sorts in a List: by namespace, then name, as the API server lists them.
/// Spelled `namespace`, a NUL, then `name`: NUL sorts before every character a Kubernetes
/// name may have, so the text orders as the pair does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self(format!("{namespace}\0{name}").into_boxed_str())
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

/// The serialized List of one kind and where each object sits in it.
///
/// Three allocations however many objects: the List text, the keys of its items
/// concatenated, and one fixed-size entry per item. Beside the List, the index is most
/// of what the cache holds, and many small allocations would also pin the pages freed
/// around them while a List is parsed.
#[derive(Debug)]
pub struct KindList {
    kind: ResourceKind,
    list: ListJson,
    /// The keys of the items, in List order, one after the other.
    keys: String,
    /// In List (and key) order.
    items: Vec<Item>,
    resource_version: u64,
}

/// One object of a List: where its key ends in `keys` (it starts where the previous one
/// ends) and its bytes in the List.
#[derive(Debug, Clone, Copy)]
struct Item {
    key_end: usize,
    bytes: (usize, usize),
}

/// A change to apply: the object's new JSON, or `None` for a deletion.
pub type Changes = BTreeMap<ObjectKey, Option<Bytes>>;

impl KindList {
    pub fn new(kind: ResourceKind) -> Self {
        let mut list = Self {
            kind,
            list: ListJson::new(""),
            keys: String::new(),
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

    /// What this List keeps on the heap: its text, its keys and its index.
    pub fn held_bytes(&self) -> usize {
        self.list.len() + self.keys.capacity() + self.items.capacity() * size_of::<Item>()
    }

    /// The current items, key and bytes, in order.
    fn current(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut key_start = 0;
        self.items.iter().map(move |item| {
            let key = &self.keys[key_start..item.key_end];
            key_start = item.key_end;
            (key, &self.list.as_bytes()[item.bytes.0..item.bytes.1])
        })
    }

    /// The items after `changes`, in key order: a merge of the two sorted sequences.
    fn merged<'a>(&'a self, changes: &'a Changes) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut current = self.current().peekable();
        let mut changes = changes
            .iter()
            .map(|(key, bytes)| (key.as_str(), bytes.as_deref()))
            .peekable();
        std::iter::from_fn(move || {
            loop {
                let order = match (current.peek(), changes.peek()) {
                    (None, None) => return None,
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (Some((old, _)), Some((new, _))) => old.cmp(new),
                };
                match order {
                    Ordering::Less => return current.next(),
                    Ordering::Equal => {
                        current.next();
                    }
                    Ordering::Greater => {}
                }
                // A change: the new bytes, or nothing for a deletion.
                let (key, bytes) = changes.next().expect("peeked");
                if let Some(bytes) = bytes {
                    return Some((key, bytes));
                }
            }
        })
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
        // Sized exactly, in a first pass: the List is the bulk of what the cache holds.
        let (mut size, mut key_bytes, mut count) = (header.len() + 2, 0, 0);
        for (key, bytes) in self.merged(&changes) {
            size += bytes.len() + 1;
            key_bytes += key.len();
            count += 1;
        }
        let mut out = Vec::with_capacity(size);
        let mut keys = String::with_capacity(key_bytes);
        let mut items = Vec::with_capacity(count);
        out.extend_from_slice(header.as_bytes());
        for (key, bytes) in self.merged(&changes) {
            if !items.is_empty() {
                out.push(b',');
            }
            let start = out.len();
            out.extend_from_slice(bytes);
            keys.push_str(key);
            items.push(Item {
                key_end: keys.len(),
                bytes: (start, out.len()),
            });
        }
        out.extend_from_slice(b"]}");
        // Objects are serialized by serde_json and the header is built from JSON strings.
        let text = String::from_utf8(out).expect("a List built from JSON text is UTF-8");
        self.list = ListJson::new(text);
        self.keys = keys;
        self.items = items;
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
    fn orders_by_namespace_then_name_and_ignores_deleting_the_unknown() {
        let kind = ResourceKind::services();
        let object = |namespace: &str, name: &str| {
            prepare_object(
                &kind,
                json!({"metadata": {"namespace": namespace, "name": name}}),
            )
            .unwrap()
        };
        let (b_a, b_a_bytes, _) = object("b", "a");
        let (a_z, a_z_bytes, _) = object("a", "z");
        let (a, a_bytes, _) = object("a", "a-long-name");
        let mut list = KindList::new(kind.clone());
        list.apply(
            changes(&[
                (b_a, Some(b_a_bytes)),
                (a_z.clone(), Some(a_z_bytes)),
                (a, Some(a_bytes)),
            ]),
            3,
        );
        list.apply(
            changes(&[(ObjectKey::new("c", "gone"), None), (a_z, None)]),
            4,
        );
        let json: Value = serde_json::from_str(list.json().as_str()).unwrap();
        let names: Vec<(&str, &str)> = json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metadata"]["namespace"].as_str().unwrap(),
                    i["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, [("a", "a-long-name"), ("b", "a")]);
        assert_eq!(list.len(), 2);
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
