//! A fake Kubernetes API server that speaks the real list/watch protocol, for the
//! collections the cache reads: lists carry a `resourceVersion`; `?watch=true&
//! resourceVersion=N` streams `ADDED`/`MODIFIED`/`DELETED` events after N (and a
//! `BOOKMARK`), or a `410 Gone` ERROR event when N is older than the last compaction.
//! Lists are paged with `limit` and `continue`, as kube-rs asks for them. It serves API
//! discovery (`/api/v1`, `/apis/<group>/<version>`) for its collections, a custom
//! resource kind among them, and answers SubjectAccessReviews (`can_i`) from a list of
//! allowed users.
//! It can be stopped and restarted on the same port; its objects survive the restart.
//!
//! Over 400 lines on purpose: one protocol (store, paging, watch streams, compaction,
//! discovery), whose parts share the store's resourceVersion.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

mod apis;
mod list;

use apis::{discovery, review_access};

/// A collection the fake serves, e.g. `/api/v1/namespaces`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Collection {
    pub path: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

pub const NAMESPACES: Collection = Collection {
    path: "/api/v1/namespaces",
    api_version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    namespaced: false,
};
pub const SERVICES: Collection = Collection {
    path: "/api/v1/services",
    api_version: "v1",
    kind: "Service",
    plural: "services",
    namespaced: true,
};
pub const INGRESSES: Collection = Collection {
    path: "/apis/networking.k8s.io/v1/ingresses",
    api_version: "networking.k8s.io/v1",
    kind: "Ingress",
    plural: "ingresses",
    namespaced: true,
};
/// A custom resource kind, as a CRD would add it.
pub const WIDGETS: Collection = Collection {
    path: "/apis/example.com/v1/widgets",
    api_version: "example.com/v1",
    kind: "Widget",
    plural: "widgets",
    namespaced: true,
};
const COLLECTIONS: [Collection; 4] = [NAMESPACES, SERVICES, INGRESSES, WIDGETS];

const ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

#[derive(Debug, Clone)]
struct WatchEvent {
    collection: Collection,
    resource_version: u64,
    /// The serving period the event was recorded in: a watch opened in an earlier one
    /// ends instead of delivering it, so nothing reaches a client across a stop.
    epoch: u64,
    line: Bytes,
}

struct Store {
    resource_version: u64,
    objects: BTreeMap<(Collection, String, String), Value>,
    history: Vec<WatchEvent>,
    /// Watches from a resourceVersion below this get `410 Gone`.
    compacted_below: u64,
    events: broadcast::Sender<WatchEvent>,
    requests: Vec<String>,
    /// Bumped at every stop and start; see `WatchEvent::epoch`.
    epoch: u64,
    /// False between `stop` and `restart`: requests that slip in before the listener
    /// closes are refused, as a server that is down would.
    serving: bool,
    /// Users a SubjectAccessReview allows.
    allowed_users: Vec<String>,
}

/// The fake API server. Dropping it stops it.
pub struct FakeApiServer {
    address: SocketAddr,
    store: Arc<Mutex<Store>>,
    /// What the accept loop does with a connection.
    mode: watch::Sender<Mode>,
}

/// While stopped, the fake keeps its port and closes every connection at once, as a
/// server that is down refuses them: if it let the port go, another process (the
/// policy server under test, asking for any free port) could take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Serving,
    Stopped,
    Gone,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let (events, _) = broadcast::channel(4096);
        let store = Arc::new(Mutex::new(Store {
            resource_version: 100,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted_below: 0,
            events,
            requests: Vec::new(),
            epoch: 0,
            serving: false,
            allowed_users: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut server = Self {
            address,
            store,
            mode: watch::channel(Mode::Stopped).0,
        };
        server.serve(listener);
        server.restart().await;
        server
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A kubeconfig that points a client at this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.address
        )
    }

    /// Creates or replaces an object (`ADDED` or `MODIFIED`); returns its resourceVersion.
    pub fn apply(&self, collection: Collection, mut object: Value) -> u64 {
        let mut store = self.store.lock().unwrap();
        store.resource_version += 1;
        let rv = store.resource_version;
        object["apiVersion"] = json!(collection.api_version);
        object["kind"] = json!(collection.kind);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = object_key(collection, &object);
        let kind = if store.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(key, object.clone());
        store.record(collection, kind, object);
        rv
    }

    /// Deletes an object (`DELETED`).
    pub fn delete(&self, collection: Collection, namespace: &str, name: &str) {
        let mut store = self.store.lock().unwrap();
        let key = (collection, namespace.to_owned(), name.to_owned());
        let Some(mut object) = store.objects.remove(&key) else {
            panic!("no {} {namespace}/{name} to delete", collection.kind);
        };
        store.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(store.resource_version.to_string());
        store.record(collection, "DELETED", object);
    }

    /// Forgets the event history: a watch from an older resourceVersion gets `410 Gone`,
    /// and open watches are closed, as when etcd compacts.
    pub async fn compact(&mut self) {
        {
            let mut store = self.store.lock().unwrap();
            store.history.clear();
            store.compacted_below = store.resource_version + 1;
        }
        // Closing the open watches makes clients resume from their (now too old) version.
        self.stop();
        self.restart().await;
    }

    /// Stops serving: open watches end and new connections are closed at once. Takes
    /// effect before it returns: no event recorded afterwards reaches a watch opened
    /// before.
    pub fn stop(&mut self) {
        {
            let mut store = self.store.lock().unwrap();
            store.serving = false;
            store.epoch += 1;
        }
        self.mode.send_replace(Mode::Stopped);
    }

    /// Serves again on the same port, with the same objects.
    pub async fn restart(&mut self) {
        {
            let mut store = self.store.lock().unwrap();
            store.serving = true;
            store.epoch += 1;
        }
        self.mode.send_replace(Mode::Serving);
    }

    /// SubjectAccessReviews for `user` are allowed from now on (all others are denied).
    pub fn allow_user(&self, user: &str) {
        self.store
            .lock()
            .unwrap()
            .allowed_users
            .push(user.to_owned());
    }

    /// The requests received so far (method and URI), to check the protocol was used.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }

    /// The List this server answers for `collection` (what `kubectl get --raw` shows).
    pub fn list(&self, collection: Collection) -> Value {
        self.store.lock().unwrap().list(collection)
    }

    /// The accept loop, for the fake's whole life; [`Mode`] says what a connection gets.
    fn serve(&mut self, listener: TcpListener) {
        let store = self.store.clone();
        let mut mode = self.mode.subscribe();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    changed = mode.changed() => {
                        if changed.is_err() || *mode.borrow() == Mode::Gone {
                            return;
                        }
                        continue;
                    }
                };
                if *mode.borrow() != Mode::Serving {
                    drop(stream);
                    continue;
                }
                // The connection ends at the next change of mode (a stop).
                let (store, mut changed) = (store.clone(), mode.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            if request.uri().path() == ACCESS_REVIEWS {
                                return Ok::<_, Infallible>(review_access(&store, request).await);
                            }
                            Ok::<_, Infallible>(handle(&store, request))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = changed.changed() => {}
                    }
                });
            }
        });
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        self.mode.send_replace(Mode::Gone);
    }
}

impl Store {
    fn record(&mut self, collection: Collection, kind: &str, object: Value) {
        let line = format!("{}\n", json!({"type": kind, "object": object}));
        let event = WatchEvent {
            collection,
            resource_version: self.resource_version,
            epoch: self.epoch,
            line: Bytes::from(line),
        };
        self.history.push(event.clone());
        let _ = self.events.send(event);
    }
}

fn object_key(collection: Collection, object: &Value) -> (Collection, String, String) {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (collection, text("namespace"), text("name"))
}

type Body = BoxBody<Bytes, Infallible>;

fn handle(store: &Arc<Mutex<Store>>, request: Request<Incoming>) -> Response<Body> {
    let uri = request.uri().clone();
    // One lock for the whole answer, so a stop cannot fall between the check that the
    // server is serving and what it serves.
    let mut store = store.lock().unwrap();
    if !store.serving {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &status(503, "ServiceUnavailable", "the API server is stopped"),
        );
    }
    store.requests.push(format!("{} {uri}", request.method()));
    if let Some(resources) = discovery(uri.path()) {
        return json_response(StatusCode::OK, &resources);
    }
    let Some(collection) = COLLECTIONS.into_iter().find(|c| c.path == uri.path()) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status(404, "NotFound", "no such collection"),
        );
    };
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if query.get("watch").map(String::as_str) != Some("true") {
        let limit = query.get("limit").and_then(|l| l.parse().ok());
        let token = query.get("continue");
        let page = store.list_page(collection, limit, token.map(String::as_str));
        return match page {
            Ok(list) => json_response(StatusCode::OK, &list),
            Err((code, reason)) => {
                let name = if code == StatusCode::GONE {
                    "Expired"
                } else {
                    "BadRequest"
                };
                json_response(code, &status(code.as_u16(), name, &reason))
            }
        };
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let gone = from != 0 && from < store.compacted_below;
    let backlog: Vec<Bytes> = store
        .history
        .iter()
        .filter(|e| e.collection == collection && e.resource_version > from)
        .map(|e| e.line.clone())
        .collect();
    let mut live = store.events.subscribe();
    let (current, epoch) = (store.resource_version, store.epoch);
    drop(store);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    tokio::spawn(async move {
        if gone {
            let expired = status(
                410,
                "Expired",
                &format!("too old resource version: {from} ({current})"),
            );
            let _ = tx
                .send(Bytes::from(format!(
                    "{}\n",
                    json!({"type": "ERROR", "object": expired})
                )))
                .await;
            return;
        }
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let bookmark = json!({"type": "BOOKMARK", "object": {
            "apiVersion": collection.api_version, "kind": collection.kind,
            "metadata": {"resourceVersion": current.to_string()}}});
        if tx.send(Bytes::from(format!("{bookmark}\n"))).await.is_err() {
            return;
        }
        while let Ok(event) = live.recv().await {
            if event.epoch != epoch {
                return;
            }
            if event.collection == collection
                && event.resource_version > current
                && tx.send(event.line).await.is_err()
            {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}
