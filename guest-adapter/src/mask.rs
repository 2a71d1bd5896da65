//! Field masks (Kubewarden's `field_masks`): a policy names the fields it reads and gets
//! objects pruned to them, so it parses less. As in Kubewarden's host, `apiVersion`,
//! `kind` and `metadata` are always kept whole; a path ends on a field that is kept
//! whole unless a longer path goes below it; arrays are transparent (`spec.ports.port`
//! keeps `port` in every item of `ports`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::answer::Answer;

/// The fields to keep, as a tree of path segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMask {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    children: BTreeMap<String, Node>,
}

/// What every object keeps whatever the mask says.
const ALWAYS_KEPT: [&str; 3] = ["apiVersion", "kind", "metadata"];

impl FieldMask {
    /// A mask of dot-separated paths; `None` when there are none (the whole object).
    pub fn new<S: AsRef<str>>(paths: impl IntoIterator<Item = S>) -> Option<Self> {
        let mut root = Node::default();
        for path in paths {
            let mut node = &mut root;
            for segment in path.as_ref().split('.').filter(|s| !s.is_empty()) {
                node = node.children.entry(segment.to_owned()).or_default();
            }
        }
        (!root.children.is_empty()).then_some(Self { root })
    }

    fn prune_object(&self, object: &mut Value) {
        if let Value::Object(fields) = object {
            fields.retain(|key, value| {
                if ALWAYS_KEPT.contains(&key.as_str()) {
                    return true;
                }
                match self.root.children.get(key) {
                    Some(node) => {
                        node.prune(value);
                        true
                    }
                    None => false,
                }
            });
        }
    }

    /// The object of a get, pruned.
    pub fn apply_to_object(&self, answer: &Answer) -> Answer {
        self.apply(answer, |mask, object| mask.prune_object(object))
    }

    /// Every item of a List, pruned. Items are parsed and written one at a time, so the
    /// host holds one parsed object at most, however long the List.
    pub fn apply_to_list(&self, answer: &Answer) -> Answer {
        const ITEMS: &[u8] = b"\"items\":";
        let text = answer.to_bytes();
        let Some(at) = text.windows(ITEMS.len()).position(|w| w == ITEMS) else {
            return answer.clone();
        };
        let items = at + ITEMS.len();
        let mut out = Vec::with_capacity(text.len() / 2);
        out.extend_from_slice(&text[..items]);
        out.push(b'[');
        let mut deserializer = serde_json::Deserializer::from_slice(&text[items..]);
        serde::Deserializer::deserialize_seq(
            &mut deserializer,
            PruneItems {
                mask: self,
                out: &mut out,
            },
        )
        .expect("the cache holds valid JSON");
        // `items` is the List's last field, as the cache writes Lists: what follows the
        // array's `]` closes the List.
        let close = text
            .iter()
            .rposition(|&b| b == b']')
            .unwrap_or(text.len() - 1);
        out.extend_from_slice(&text[close..]);
        Answer::from(String::from_utf8(out).expect("JSON text is UTF-8"))
    }

    fn apply(&self, answer: &Answer, prune: impl Fn(&Self, &mut Value)) -> Answer {
        let mut value: Value =
            serde_json::from_slice(&answer.to_bytes()).expect("the cache holds valid JSON");
        prune(self, &mut value);
        Answer::from(value.to_string())
    }
}

/// Writes each item of a JSON array, pruned, as it is read.
struct PruneItems<'a> {
    mask: &'a FieldMask,
    out: &'a mut Vec<u8>,
}

impl<'de> serde::de::Visitor<'de> for PruneItems<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a List's items")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let mut first = true;
        while let Some(mut item) = items.next_element::<Value>()? {
            self.mask.prune_object(&mut item);
            if !std::mem::take(&mut first) {
                self.out.push(b',');
            }
            serde_json::to_writer(&mut *self.out, &item).expect("a JSON value always serializes");
        }
        Ok(())
    }
}

impl Node {
    fn prune(&self, value: &mut Value) {
        if self.children.is_empty() {
            return; // the path ends here: keep everything below
        }
        match value {
            Value::Array(items) => items.iter_mut().for_each(|item| self.prune(item)),
            Value::Object(fields) => fields.retain(|key, value| match self.children.get(key) {
                Some(node) => {
                    node.prune(value);
                    true
                }
                None => false,
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn masked(paths: &[&str], object: Value) -> Value {
        let mask = FieldMask::new(paths).unwrap();
        let answer = mask.apply_to_object(&Answer::from(object.to_string()));
        serde_json::from_str(&answer.to_text()).unwrap()
    }

    #[test]
    fn keeps_the_named_fields_and_what_every_object_needs() {
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"type": "ClusterIP", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80}, {"name": "m", "port": 9090}]},
            "status": {"loadBalancer": {}}
        });
        assert_eq!(
            masked(
                &["spec.selector", "spec.ports.port", "metadata.name"],
                service.clone()
            ),
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 9090}]}
            })
        );
        // A longer path narrows a shorter one.
        assert_eq!(
            masked(&["spec", "spec.type"], service)["spec"],
            json!({"type": "ClusterIP"})
        );
    }

    #[test]
    fn an_empty_list_stays_a_list() {
        let mask = FieldMask::new(["spec"]).unwrap();
        let list = r#"{"apiVersion":"v1","kind":"ServiceList","metadata":{},"items":[]}"#;
        assert_eq!(mask.apply_to_list(&Answer::from(list)).to_text(), list);
    }

    #[test]
    fn no_paths_is_no_mask() {
        assert_eq!(FieldMask::new(Vec::<String>::new()), None);
        assert_eq!(FieldMask::new([""]), None);
    }

    #[test]
    fn prunes_every_item_of_a_list() {
        let mask = FieldMask::new(["spec.type"]).unwrap();
        let list = json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {},
            "items": [{"metadata": {"name": "a"}, "spec": {"type": "A", "x": 1}},
                      {"metadata": {"name": "b"}, "spec": {"type": "B"}, "status": {}}]});
        let pruned: Value = serde_json::from_str(
            &mask
                .apply_to_list(&Answer::from(list.to_string()))
                .to_text(),
        )
        .unwrap();
        assert_eq!(
            pruned["items"],
            json!([{"metadata": {"name": "a"}, "spec": {"type": "A"}},
                   {"metadata": {"name": "b"}, "spec": {"type": "B"}}])
        );
    }
}
