use serde_json::json;

use super::*;
use crate::cache::object::prepare_object;

fn service(namespace: &str, name: &str, labels: Value) -> Value {
    json!({"metadata": {"namespace": namespace, "name": name, "labels": labels},
           "spec": {"ports": [{"port": 80}]}})
}

fn changes(objects: impl IntoIterator<Item = Value>) -> Changes {
    objects
        .into_iter()
        .map(|object| {
            let prepared = prepare_object(&ResourceKind::services(), object).unwrap();
            (prepared.key, Some(prepared.object))
        })
        .collect()
}

fn names(answer: &Answer) -> Vec<String> {
    let list: Value = serde_json::from_str(&answer.to_text()).expect("a valid List");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            format!(
                "{}/{}",
                item["metadata"]["namespace"].as_str().unwrap_or_default(),
                item["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

fn list(index: &KindIndex, namespace: Option<&str>, labels: &str, fields: &str) -> Vec<String> {
    let labels = LabelSelector::parse(labels).unwrap();
    let fields = FieldSelector::parse(fields).unwrap();
    names(&index.list(namespace, &labels, &fields))
}

/// Enough services that they span many blocks: 40 namespaces of 60.
fn many() -> KindIndex {
    let objects = (0..40).flat_map(|ns| {
        (0..60).map(move |i| {
            service(
                &format!("ns-{ns:02}"),
                &format!("svc-{i:02}"),
                json!({"tier": if i % 3 == 0 { "backend" } else { "frontend" }, "n": i.to_string()}),
            )
        })
    });
    KindIndex::new(ResourceKind::services(), Scope::Namespaced).apply(&changes(objects), 7)
}

#[test]
fn an_empty_kind_is_a_valid_kubernetes_list() {
    let index = KindIndex::new(ResourceKind::ingresses(), Scope::Namespaced);
    let json: Value = serde_json::from_str(
        &index
            .list(None, &LabelSelector::default(), &FieldSelector::default())
            .to_text(),
    )
    .unwrap();
    assert_eq!(
        json,
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressList",
               "metadata": {"resourceVersion": "0"}, "items": []})
    );
}

#[test]
fn spans_blocks_and_answers_in_key_order() {
    let index = many();
    assert!(index.blocks.len() > 5, "{index:?}");
    assert_eq!(index.len(), 2400);
    let all = list(&index, None, "", "");
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    assert_eq!(all.len(), 2400);
    // Every namespace is one run, wherever the block boundaries fall.
    for ns in 0..40 {
        let namespace = format!("ns-{ns:02}");
        let names = list(&index, Some(&namespace), "", "");
        assert_eq!(names.len(), 60, "{namespace}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(&format!("{namespace}/")))
        );
    }
    assert!(list(&index, Some("ns-4"), "", "").is_empty());
    assert!(list(&index, Some("zz"), "", "").is_empty());
}

#[test]
fn gets_every_object_and_nothing_else() {
    let index = many();
    for (ns, i) in [(0, 0), (0, 59), (17, 31), (39, 59)] {
        let object = index
            .get(&format!("ns-{ns:02}"), &format!("svc-{i:02}"))
            .unwrap();
        let object: Value = serde_json::from_str(&object.to_text()).unwrap();
        assert_eq!(object["metadata"]["name"], format!("svc-{i:02}"));
    }
    assert!(index.get("ns-00", "svc-60").is_none());
    assert!(index.get("ns-40", "svc-00").is_none());
    assert!(index.get("", "svc-00").is_none());
    assert!(index.get("a", "b").is_none());
}

#[test]
fn selects_by_labels_and_fields() {
    let index = many();
    assert_eq!(list(&index, Some("ns-03"), "tier=backend", "").len(), 20);
    assert_eq!(list(&index, None, "tier=backend,n in (0,3)", "").len(), 80);
    assert_eq!(
        list(&index, None, "", "metadata.name=svc-07"),
        (0..40)
            .map(|ns| format!("ns-{ns:02}/svc-07"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        list(&index, Some("ns-05"), "n", "metadata.name!=svc-00").len(),
        59
    );
    assert!(list(&index, None, "missing", "").is_empty());
}

#[test]
fn changes_rebuild_only_their_blocks() {
    let before = many();
    let update = changes([service("ns-20", "svc-05", json!({"tier": "changed"}))]);
    let mut update = update;
    update.insert(ObjectKey::new("ns-21", "svc-00"), None);
    update.insert(ObjectKey::new("ns-00", "gone-anyway"), None);
    let after = before.apply(&update, 9);
    assert_eq!(after.len(), 2399);
    assert_eq!(after.resource_version(), 9);
    let shared = after
        .blocks
        .iter()
        .filter(|b| before.blocks.iter().any(|old| Arc::ptr_eq(old, b)))
        .count();
    assert!(
        shared >= after.blocks.len() - 2,
        "{shared} of {}",
        after.blocks.len()
    );
    assert_eq!(list(&after, None, "tier=changed", ""), ["ns-20/svc-05"]);
    assert!(after.get("ns-21", "svc-00").is_none());
    // The old snapshot is untouched.
    assert!(before.get("ns-21", "svc-00").is_some());
    // Objects before the first and after the last key land at the ends.
    let edges = after.apply(
        &changes([
            service("a", "first", json!({})),
            service("zz", "last", json!({})),
        ]),
        10,
    );
    let all = list(&edges, None, "", "");
    assert_eq!(
        (all[0].as_str(), all[all.len() - 1].as_str()),
        ("a/first", "zz/last")
    );
}

#[test]
fn cluster_scoped_objects_have_the_empty_namespace() {
    let namespaces = changes((0..3).map(|i| json!({"metadata": {"name": format!("n{i}")}})));
    let index = KindIndex::new(ResourceKind::namespaces(), Scope::Cluster).apply(&namespaces, 3);
    assert!(index.get("", "n1").is_some());
    assert_eq!(list(&index, None, "", "metadata.namespace=").len(), 3);
    assert_eq!(list(&index, Some(""), "", "").len(), 3);
}

#[test]
fn labels_with_escapes_are_read_right() {
    let index = KindIndex::new(ResourceKind::services(), Scope::Namespaced).apply(
        &changes([service("a", "b", json!({"k": "v\u{e9}", "x\"y": "1"}))]),
        1,
    );
    assert_eq!(list(&index, None, "k", "").len(), 1);
    let block = &index.blocks[0];
    let labels = block.labels(&block.items[0]);
    assert_eq!(labels.get("x\"y"), Some("1"));
}
