//! A cluster snapshot from a file, for running without a cluster: YAML (one or more
//! documents) or JSON, each document an object or a List of objects.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use guest_adapter::{ResourceKind, Scope};
use serde_json::Value;

use super::index::KindIndex;
use super::object::{Changes, prepare_object};

/// The objects of a file, by kind.
#[derive(Debug, Default)]
pub struct Snapshot {
    kinds: HashMap<ResourceKind, FileKind>,
}

#[derive(Debug, Default)]
struct FileKind {
    changes: Changes,
    /// The newest among the objects, as in live mode (a List's own resourceVersion is
    /// the whole store's, which the cache cannot know for one kind).
    resource_version: u64,
    /// Whether any object names a namespace: the file's way to tell a kind's scope.
    namespaced: bool,
}

impl Snapshot {
    /// The snapshot of `kind` (matched ignoring case, spelled as the file spells it),
    /// if the file has objects of it.
    pub fn take(&mut self, kind: &ResourceKind) -> Option<KindIndex> {
        let key = self.kinds.keys().find(|k| k.matches(kind)).cloned()?;
        let file_kind = self.kinds.remove(&key)?;
        let scope = if file_kind.namespaced {
            Scope::Namespaced
        } else if file_kind.changes.is_empty() {
            // No object to tell: as Kubernetes has it, if known.
            super::well_known_scope(&key)
        } else {
            Scope::Cluster
        };
        Some(KindIndex::new(key, scope).apply(&file_kind.changes, file_kind.resource_version))
    }

    /// Whether the file has `kind` (objects of it, or an empty typed List of it).
    pub fn has(&self, kind: &ResourceKind) -> bool {
        self.kinds.keys().any(|k| k.matches(kind))
    }

    /// How many objects of `kind` the file has (for tests).
    pub fn count(&self, kind: &ResourceKind) -> usize {
        self.kinds.get(kind).map_or(0, |k| k.changes.len())
    }
}

pub fn load(path: &Path) -> anyhow::Result<Snapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read cluster snapshot {}", path.display()))?;
    parse(&text).with_context(|| format!("invalid cluster snapshot {}", path.display()))
}

pub fn parse(text: &str) -> anyhow::Result<Snapshot> {
    let mut kinds: HashMap<ResourceKind, FileKind> = HashMap::new();
    let mut input = text.as_bytes();
    let options = crate::yaml::snapshot_options(text.len());
    // Documents stream one at a time; empty ones (after a trailing `---`) are skipped, so
    // an index counts the documents that hold something.
    let documents = serde_saphyr::read_with_options::<_, Value>(&mut input, options);
    for (index, value) in documents.enumerate() {
        let value = value
            .map_err(|e| crate::yaml::describe(&e))
            .with_context(|| format!("document {} is not valid YAML/JSON", index + 1))?;
        let objects = match value["kind"].as_str() {
            Some(kind) if kind.ends_with("List") => {
                let items = value["items"].as_array().cloned().unwrap_or_default();
                // A typed List (NamespaceList) names the kind its items may omit.
                let item_kind = (kind != "List").then(|| kind.trim_end_matches("List").to_owned());
                let api_version = value["apiVersion"].as_str().map(str::to_owned);
                // An empty typed List says the kind has no objects: the kind is known.
                if let (Some(kind), Some(api)) = (&item_kind, &api_version) {
                    kinds.entry(ResourceKind::new(api, kind)).or_default();
                }
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
            if let Some(labels) = object["metadata"]["labels"].as_object()
                && let Some((key, _)) = labels.iter().find(|(_, value)| !value.is_string())
            {
                bail!(
                    "document {}: label {key} of a {kind} is not a string (quote it: \"1\", \"true\")",
                    index + 1
                );
            }
            let namespaced = object["metadata"]["namespace"]
                .as_str()
                .is_some_and(|namespace| !namespace.is_empty());
            let Some(prepared) = prepare_object(&kind, object) else {
                bail!("document {}: a {kind} without metadata", index + 1);
            };
            let entry = kinds.entry(kind).or_default();
            entry.changes.insert(prepared.key, Some(prepared.object));
            entry.resource_version = entry.resource_version.max(prepared.resource_version);
            entry.namespaced |= namespaced;
        }
    }
    Ok(Snapshot { kinds })
}

#[cfg(test)]
mod tests {
    use guest_adapter::KindSnapshot;

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
        let mut kinds = kinds;
        let namespaces = kinds.take(&ResourceKind::namespaces()).unwrap();
        assert_eq!((namespaces.len(), namespaces.resource_version()), (1, 3));
        assert_eq!(namespaces.scope(), Scope::Cluster);
        let ingresses = kinds
            .take(&ResourceKind::new("Networking.k8s.io/v1", "ingress"))
            .unwrap();
        assert_eq!((ingresses.len(), ingresses.resource_version()), (1, 12));
        assert_eq!(ingresses.scope(), Scope::Namespaced);
        let ingress: Value =
            serde_json::from_str(&ingresses.get("default", "web").unwrap().to_text()).unwrap();
        assert_eq!(ingress["kind"], "Ingress");
    }

    #[test]
    fn reads_json() {
        let kinds = parse(
            r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"n"}}"#,
        )
        .unwrap();
        assert_eq!(kinds.count(&ResourceKind::services()), 1);
    }

    #[test]
    fn labels_must_be_strings_as_on_the_api_server() {
        let err =
            parse("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {version: 1}}\n")
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("label version of a v1/Namespace is not a string"),
            "{err}"
        );
    }

    #[test]
    fn objects_without_kind_are_errors() {
        let err = parse("metadata: {name: x}\n").unwrap_err();
        assert!(err.to_string().contains("apiVersion and kind"), "{err}");
    }

    #[test]
    fn an_exported_cluster_of_any_size_fits_the_budget() {
        let mut text = String::new();
        for i in 0..3_000 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{i}}}\n"
            ));
        }
        let items: Vec<String> = (0..50_000)
            .map(|i| format!(r#"{{"metadata":{{"name":"s-{i}","namespace":"n"}}}}"#))
            .collect();
        text.push_str(&format!(
            "---\n{{\"apiVersion\":\"v1\",\"kind\":\"ServiceList\",\"items\":[{}]}}\n",
            items.join(",")
        ));
        let kinds = parse(&text).unwrap();
        assert_eq!(kinds.count(&ResourceKind::namespaces()), 3_000);
        assert_eq!(kinds.count(&ResourceKind::services()), 50_000);
    }

    #[test]
    fn documents_that_explode_or_repeat_a_key_are_refused() {
        let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n");
        bomb.push_str("data:\n  l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let items = vec![format!("*l{}", level - 1); 10].join(", ");
            bomb.push_str(&format!("  l{level}: &l{level} [{items}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(
            format!("{err:#}").contains("too large or too complex"),
            "{err:#}"
        );

        let twice = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, name: b}\n";
        let err = parse(twice).unwrap_err();
        assert!(
            format!("{err:#}").contains("duplicate mapping key `name`"),
            "{err:#}"
        );
    }
}
