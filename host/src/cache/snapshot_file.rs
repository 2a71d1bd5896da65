//! A cluster snapshot from a file, for running without a cluster: YAML (one or more
//! documents) or JSON, each document an object or a List of objects.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use guest_adapter::ResourceKind;
use serde::Deserialize;
use serde_json::Value;

use super::list::{Changes, prepare_object};

/// The objects of the file, prepared and grouped by kind, with each kind's newest
/// resourceVersion. As in live mode, that is the newest among the objects (a List's own
/// resourceVersion is the whole store's, which the cache cannot know for one kind).
pub fn load(path: &Path) -> anyhow::Result<HashMap<ResourceKind, (Changes, u64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read cluster snapshot {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid cluster snapshot {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<HashMap<ResourceKind, (Changes, u64)>> {
    let mut kinds: HashMap<ResourceKind, (Changes, u64)> = HashMap::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document)
            .with_context(|| format!("document {} is not valid YAML/JSON", index + 1))?;
        if value.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let objects = match value["kind"].as_str() {
            Some(kind) if kind.ends_with("List") => {
                let items = value["items"].as_array().cloned().unwrap_or_default();
                // A typed List (NamespaceList) names the kind its items may omit.
                let item_kind = (kind != "List").then(|| kind.trim_end_matches("List").to_owned());
                let api_version = value["apiVersion"].as_str().map(str::to_owned);
                items
                    .into_iter()
                    .map(|mut item| {
                        if let (Some(map), Some(kind), Some(api)) =
                            (item.as_object_mut(), &item_kind, &api_version)
                        {
                            map.entry("kind")
                                .or_insert_with(|| Value::from(kind.as_str()));
                            map.entry("apiVersion")
                                .or_insert_with(|| Value::from(api.as_str()));
                        }
                        item
                    })
                    .collect()
            }
            _ => vec![value],
        };
        for object in objects {
            let (Some(api_version), Some(kind)) =
                (object["apiVersion"].as_str(), object["kind"].as_str())
            else {
                bail!(
                    "document {}: every object needs apiVersion and kind",
                    index + 1
                );
            };
            let kind = ResourceKind::new(api_version, kind);
            let Some((key, bytes, rv)) = prepare_object(&kind, object) else {
                bail!("document {}: a {kind} without metadata", index + 1);
            };
            let entry = kinds.entry(kind).or_default();
            entry.0.insert(key, Some(bytes));
            entry.1 = entry.1.max(rv);
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_documents_and_typed_lists() {
        let kinds = parse(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: default, resourceVersion: "3"}
---
apiVersion: networking.k8s.io/v1
kind: IngressList
metadata: {resourceVersion: "40"}
items:
  - metadata: {name: web, namespace: default, resourceVersion: "12"}
    spec: {rules: [{host: example.com}]}
---
"#,
        )
        .unwrap();
        let (namespaces, rv) = &kinds[&ResourceKind::namespaces()];
        assert_eq!((namespaces.len(), *rv), (1, 3));
        let (ingresses, rv) = &kinds[&ResourceKind::ingresses()];
        assert_eq!((ingresses.len(), *rv), (1, 12));
        let ingress: Value =
            serde_json::from_slice(ingresses.values().next().unwrap().as_ref().unwrap()).unwrap();
        assert_eq!(ingress["kind"], "Ingress");
    }

    #[test]
    fn reads_json() {
        let kinds = parse(
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"n"}}"#,
        )
        .unwrap();
        assert_eq!(kinds[&ResourceKind::services()].0.len(), 1);
    }

    #[test]
    fn objects_without_kind_are_errors() {
        let err = parse("metadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("apiVersion and kind"), "{err}");
    }
}
