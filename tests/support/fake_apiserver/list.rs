//! Lists as the API server pages them: `limit` and `continue`, tokens that expire with
//! compaction.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::{Collection, Store};

impl Store {
    pub(super) fn list(&self, collection: Collection) -> Value {
        self.list_page(collection, None, None)
            .expect("a whole list needs no continue token")
    }

    /// One page of a List: at most `limit` items after where `token` (a previous page's
    /// `continue`) left off, and a `continue` of its own if more remain. The token is
    /// opaque to clients; here it is the snapshot's resourceVersion and the last key
    /// served, so deletions between pages skip nothing. It expires (410) when history is
    /// compacted past it, as etcd's do.
    pub(super) fn list_page(
        &self,
        collection: Collection,
        limit: Option<usize>,
        token: Option<&str>,
    ) -> Result<Value, (StatusCode, String)> {
        let (snapshot_rv, after) = match token {
            Some(token) => {
                let mut parts = token.splitn(3, '/');
                match (
                    parts.next().and_then(|rv| rv.parse::<u64>().ok()),
                    parts.next(),
                    parts.next(),
                ) {
                    (Some(rv), Some(namespace), Some(name)) => {
                        (rv, Some((namespace.to_owned(), name.to_owned())))
                    }
                    _ => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            format!("invalid continue token {token}"),
                        ));
                    }
                }
            }
            None => (self.resource_version, None),
        };
        if token.is_some() && snapshot_rv < self.compacted_below {
            return Err((
                StatusCode::GONE,
                "The provided continue parameter is too old to display a consistent list result."
                    .into(),
            ));
        }
        let matching: Vec<(&(Collection, String, String), &Value)> = self
            .objects
            .iter()
            .filter(|((c, namespace, name), _)| {
                *c == collection
                    && after.as_ref().is_none_or(|(ns, n)| {
                        (namespace.as_str(), name.as_str()) > (ns.as_str(), n.as_str())
                    })
            })
            .collect();
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let page = &matching[..matching.len().min(limit)];
        // Like the API server, list items carry no apiVersion/kind of their own.
        let items: Vec<Value> = page
            .iter()
            .map(|(_, object)| {
                let mut item = (*object).clone();
                let map = item.as_object_mut().unwrap();
                map.remove("apiVersion");
                map.remove("kind");
                item
            })
            .collect();
        let mut metadata = json!({"resourceVersion": snapshot_rv.to_string()});
        if let (true, Some(((_, namespace, name), _))) = (page.len() < matching.len(), page.last())
        {
            metadata["continue"] = json!(format!("{snapshot_rv}/{namespace}/{name}"));
            metadata["remainingItemCount"] = json!(matching.len() - page.len());
        }
        Ok(json!({
            "apiVersion": collection.api_version,
            "kind": format!("{}List", collection.kind),
            "metadata": metadata,
            "items": items,
        }))
    }
}
