//! An in-process Kubernetes API server for tests. It speaks the real HTTP list/watch protocol
//! (paginated LIST at a consistent snapshot, chunked WATCH with bookmarks, 410 Gone), so a kube-rs
//! client, in-process or in a child process via a kubeconfig, cannot tell it from kube-apiserver.
//! Tests change objects with [`KubeApiServer::apply`] and [`KubeApiServer::delete`], inject the
//! failures a real cluster has (compaction, expired or closed watches, error statuses, an outage on
//! the same port) and read what the client asked for ([`KubeApiServer::requests`] and counters).
//!
//! Served: cluster-wide and namespaced GET/LIST/WATCH of the collections in [`Resource`],
//! equality- and set-based label selectors, dotted-path field selectors, `/version` and health
//! checks. Not served: writes over HTTP, discovery, protobuf, TLS and authentication.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::TcpListener as StdTcpListener;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Declares [`Resource`] and its table row in one line per collection.
macro_rules! resources {
    ($($variant:ident => $prefix:literal, $plural:literal, $kind:literal, $scope:ident;)*) => {
        /// A collection the server serves; `apply`, `delete` and the counters take one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Resource {
            $(#[doc = concat!("`", $prefix, "/", $plural, "` (", $kind, ")")] $variant,)*
        }

        impl Resource {
            /// Every served collection.
            pub const ALL: &[Resource] = &[$(Resource::$variant),*];

            fn spec(self) -> ResourceSpec {
                match self {
                    $(Resource::$variant => ResourceSpec {
                        prefix: $prefix,
                        plural: $plural,
                        kind: $kind,
                        scope: Scope::$scope,
                    },)*
                }
            }
        }
    };
}

resources! {
    // variant        group/version path             plural            kind             scope
    Pods =>           "/api/v1",                    "pods",           "Pod",           Namespaced;
    Nodes =>          "/api/v1",                    "nodes",          "Node",          Cluster;
    Services =>       "/api/v1",                    "services",       "Service",       Namespaced;
    EndpointSlices => "/apis/discovery.k8s.io/v1",  "endpointslices", "EndpointSlice", Namespaced;
    ReplicaSets =>    "/apis/apps/v1",              "replicasets",    "ReplicaSet",    Namespaced;
    Jobs =>           "/apis/batch/v1",             "jobs",           "Job",           Namespaced;
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Namespaced,
    Cluster,
}

/// What the server needs to know about a collection: its URL and the type names it writes.
#[derive(Clone, Copy)]
struct ResourceSpec {
    prefix: &'static str,
    plural: &'static str,
    kind: &'static str,
    scope: Scope,
}

impl ResourceSpec {
    /// `v1` for the core group, `apps/v1` for the others.
    fn api_version(&self) -> &'static str {
        self.prefix
            .strip_prefix("/apis/")
            .or_else(|| self.prefix.strip_prefix("/api/"))
            .unwrap_or(self.prefix)
    }

    fn group(&self) -> &'static str {
        self.api_version()
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
}

/// Timeout of a watch without `timeoutSeconds`: kube-apiserver's `--min-request-timeout`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);
/// How long `start()` retries binding the old port, in case a socket still holds it.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The test API server. It serves on `127.0.0.1` from its own thread and Tokio runtime, so sync
/// tests (that run our binaries against [`write_kubeconfig`](Self::write_kubeconfig)) and async
/// tests (that use [`client`](Self::client)) use it the same way; every method takes `&self`, so
/// it can be shared in an `Arc`. Dropping it stops it.
pub struct KubeApiServer {
    store: Arc<Mutex<Store>>,
    port: u16,
    serving: Mutex<Option<Serving>>,
}

impl KubeApiServer {
    /// Starts an empty server on a free port of 127.0.0.1.
    pub fn new() -> anyhow::Result<Self> {
        let listener =
            StdTcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0 for the API")?;
        let port = listener.local_addr()?.port();
        let store = Arc::new(Mutex::new(Store::new()));
        let serving = serve(listener, store.clone())?;
        Ok(Self {
            store,
            port,
            serving: Mutex::new(Some(serving)),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, the same across `stop()`/`start()`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kube-rs client of this server, like a pod's in-cluster client minus TLS and auth.
    ///
    /// # Panics
    /// Outside a Tokio runtime: the client spawns its request buffer on the current runtime, and
    /// must be used from that runtime.
    pub fn client(&self) -> kube::Client {
        let url: Uri = self.url().parse().expect("the server URL is a valid URI");
        kube::Client::try_from(kube::Config::new(url))
            .expect("a plain-HTTP kube client builds from a valid URL")
    }

    /// Writes `dir/kubeconfig`, pointing at this server with namespace `default`, for binaries
    /// that load `KUBECONFIG`.
    pub fn write_kubeconfig(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: netmeter-test
  cluster:
    server: {url}
users:
- name: netmeter-test
  user: {{}}
contexts:
- name: netmeter-test
  context:
    cluster: netmeter-test
    user: netmeter-test
    namespace: default
current-context: netmeter-test
",
            url = self.url()
        );
        std::fs::write(&path, kubeconfig)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// Creates or replaces an object (anything that serializes to a Kubernetes object: a
    /// k8s-openapi type or `json!`) and returns it as stored. Like the API server, it sets `kind`,
    /// `apiVersion`, a new `resourceVersion`, and keeps (or sets) `uid` and `creationTimestamp`; a
    /// namespaced object without a namespace goes to `default`. Watchers get ADDED or MODIFIED;
    /// replacing an object with an identical one is a no-op, as on a real server.
    ///
    /// # Panics
    /// If `object` is not a JSON object with `metadata.name`: that is a bug in the test.
    pub fn apply(&self, resource: Resource, object: impl Serialize) -> Value {
        let object = serde_json::to_value(object).expect("a Kubernetes object serializes to JSON");
        self.lock().apply(resource, object)
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped resources) and returns its
    /// last state stamped with the deletion's resourceVersion, which is what watchers get in the
    /// DELETED event; `None` if there was no such object.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.lock().delete(resource, namespace, name)
    }

    /// The stored object, if any (`namespace` is ignored for cluster-scoped resources).
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let store = self.lock();
        let key = object_key(resource.spec(), namespace, name);
        store.collection(resource).objects.get(&key).cloned()
    }

    /// The current resourceVersion: one counter for all collections, like etcd's revision.
    pub fn resource_version(&self) -> u64 {
        self.lock().revision
    }

    /// Forgets the history up to now, like an etcd compaction: a WATCH from an older
    /// resourceVersion, or a LIST continued from an older page, then gets 410 Expired. Open
    /// watches are not affected (use [`expire_watches`](Self::expire_watches) for that).
    pub fn compact(&self) {
        let mut store = self.lock();
        store.compacted = store.revision;
        for collection in store.collections.values_mut() {
            collection.log.clear();
        }
    }

    /// Ends every open watch with an ERROR event carrying a 410 Expired Status, as
    /// kube-apiserver does when a watcher falls behind: the client has to list again.
    pub fn expire_watches(&self) {
        let mut store = self.lock();
        let oldest = store.revision;
        for watch in store.watches.drain(..) {
            let _ = watch.signals.send(WatchSignal::Expire { oldest });
        }
    }

    /// Ends every open watch cleanly, as at its timeout: the client watches again from its last
    /// resourceVersion, without listing.
    pub fn close_watches(&self) {
        for watch in self.lock().watches.drain(..) {
            let _ = watch.signals.send(WatchSignal::Close);
        }
    }

    /// Simulates an API server outage: closes the listener and drops every connection, open
    /// watches mid-stream included; connections are refused until [`start`](Self::start). The
    /// objects and their history are kept. Returns once the port is closed.
    pub fn stop(&self) {
        let serving = self
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(serving) = serving {
            let _ = serving.shutdown.send(());
            let _ = serving.thread.join();
        }
        self.lock().watches.clear();
    }

    /// Serves again, on the same port, with the same objects and history. A no-op if running.
    pub fn start(&self) -> anyhow::Result<()> {
        let mut serving = self.serving.lock().unwrap_or_else(PoisonError::into_inner);
        if serving.is_none() {
            let listener = bind_again(self.port)?;
            *serving = Some(serve(listener, self.store.clone())?);
        }
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Answers the next `count` GET, LIST and WATCH requests for `resource` with an error Status
    /// of HTTP `status` (reason as kube-apiserver would give it; 429 also sends `Retry-After: 1`).
    /// Note: kube-rs 5 clients retry 429, 503 and 504 themselves (up to 15 times, with backoff)
    /// before a caller sees the error; 500 or 403 reach the caller at once.
    pub fn fail_requests(&self, resource: Resource, status: u16, count: usize) {
        let mut store = self.lock();
        if count == 0 {
            store.failures.remove(&resource);
        } else {
            store.failures.insert(resource, (status, count));
        }
    }

    /// Caps LIST pages at `size` items whatever `limit` the client asks for (the API may return
    /// fewer items than asked); `0` removes the cap. kube-rs asks for 500, so this is how a test
    /// gets several pages with few objects.
    pub fn set_max_page_size(&self, size: usize) {
        self.lock().max_page_size = size;
    }

    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (default 1 s; real
    /// servers send one about every minute). Applies to watches opened afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.lock().bookmark_interval = interval;
    }

    /// LIST requests for `resource` so far, one per page.
    pub fn list_count(&self, resource: Resource) -> usize {
        self.lock().counters(resource).lists
    }

    /// WATCH requests for `resource` so far, including those answered with an error.
    pub fn watch_count(&self, resource: Resource) -> usize {
        self.lock().counters(resource).watches
    }

    /// BOOKMARK events sent to watchers of `resource` so far.
    pub fn bookmark_count(&self, resource: Resource) -> usize {
        self.lock().counters(resource).bookmarks
    }

    /// Watches of `resource` open right now: wait for one before changing objects to test live
    /// events rather than the initial list.
    pub fn open_watches(&self, resource: Resource) -> usize {
        let mut store = self.lock();
        store.watches.retain(|w| !w.signals.is_closed());
        store
            .watches
            .iter()
            .filter(|w| w.resource == resource)
            .count()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    /// The raw (percent-encoded) query string, `""` if none.
    pub query: String,
}

impl ApiRequest {
    /// The decoded query parameters, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        Params::parse(&self.query).0
    }

    /// The decoded value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<String> {
        Params::parse(&self.query).get(name).map(str::to_owned)
    }

    pub fn is_watch(&self) -> bool {
        Params::parse(&self.query).flag("watch")
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The store: objects, their history and the open watches.

/// (namespace, name), the namespace `""` for cluster-scoped objects. Ordered like etcd keys, so
/// lists come back in a real cluster's order and a continue token can be a key.
type ObjectKey = (String, String);

fn object_key(spec: ResourceSpec, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if spec.namespaced() { namespace } else { "" };
    (namespace.to_owned(), name.to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One revision of a collection, like an etcd event.
struct Change {
    revision: u64,
    change_type: ChangeType,
    /// The object after the change; after a deletion, its last state with the new revision.
    object: Value,
    /// The object before the change: to undo it when listing at an older revision, and to tell a
    /// watch with a selector that an object entered or left its selection.
    previous: Option<Value>,
}

#[derive(Default)]
struct Collection {
    objects: BTreeMap<ObjectKey, Value>,
    /// Changes since the last compaction, oldest first.
    log: Vec<Arc<Change>>,
}

enum WatchSignal {
    Change(Arc<Change>),
    Expire { oldest: u64 },
    Close,
}

/// The store's end of an open watch. Changes are sent to it under the store lock, so a watch
/// registered in the same critical section as its replay misses nothing and gets nothing twice.
struct OpenWatch {
    resource: Resource,
    signals: mpsc::UnboundedSender<WatchSignal>,
}

#[derive(Clone, Copy, Default)]
struct Counters {
    lists: usize,
    watches: usize,
    bookmarks: usize,
}

struct Store {
    /// The last resourceVersion handed out; 1 when empty, so that no list ever reports "0",
    /// which means "any version" in a request.
    revision: u64,
    /// The revision of the last compaction: history at or after it is complete.
    compacted: u64,
    next_uid: u64,
    collections: HashMap<Resource, Collection>,
    watches: Vec<OpenWatch>,
    counters: HashMap<Resource, Counters>,
    requests: Vec<ApiRequest>,
    /// Injected failures: (HTTP status, requests left to fail).
    failures: HashMap<Resource, (u16, usize)>,
    max_page_size: usize,
    bookmark_interval: Duration,
}

impl Store {
    fn new() -> Self {
        Self {
            revision: 1,
            compacted: 1,
            next_uid: 1,
            collections: Resource::ALL
                .iter()
                .map(|&r| (r, Collection::default()))
                .collect(),
            watches: Vec::new(),
            counters: HashMap::new(),
            requests: Vec::new(),
            failures: HashMap::new(),
            max_page_size: 0,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
        }
    }

    fn collection(&self, resource: Resource) -> &Collection {
        &self.collections[&resource]
    }

    fn collection_mut(&mut self, resource: Resource) -> &mut Collection {
        self.collections
            .get_mut(&resource)
            .expect("every resource has a collection")
    }

    fn counters(&self, resource: Resource) -> Counters {
        self.counters.get(&resource).copied().unwrap_or_default()
    }

    fn count(&mut self, resource: Resource) -> &mut Counters {
        self.counters.entry(resource).or_default()
    }

    fn apply(&mut self, resource: Resource, mut object: Value) -> Value {
        let spec = resource.spec();
        let fields = object
            .as_object_mut()
            .unwrap_or_else(|| panic!("a {} must be a JSON object", spec.kind));
        fields.insert("kind".into(), spec.kind.into());
        fields.insert("apiVersion".into(), spec.api_version().into());
        let meta = fields
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap_or_else(|| panic!("a {}'s metadata must be a JSON object", spec.kind));
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("a {} needs metadata.name", spec.kind))
            .to_owned();
        let namespace = if spec.namespaced() {
            let namespace = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            meta.insert("namespace".into(), namespace.clone().into());
            namespace
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace, name);
        let previous = self.collection(resource).objects.get(&key).cloned();
        let previous_meta = previous.as_ref().map(|p| &p["metadata"]);
        // Identity and age survive updates, as on a real server.
        for field in ["uid", "creationTimestamp"] {
            if let Some(kept) = previous_meta.and_then(|m| m.get(field)) {
                meta.insert(field.into(), kept.clone());
            } else if !meta.get(field).is_some_and(Value::is_string) {
                let value = match field {
                    "uid" => {
                        self.next_uid += 1;
                        format!("00000000-0000-4000-8000-{:012x}", self.next_uid - 1)
                    }
                    _ => now_rfc3339(),
                };
                meta.insert(field.into(), value.into());
            }
        }
        if let Some(previous) = &previous {
            meta.insert(
                "resourceVersion".into(),
                previous["metadata"]["resourceVersion"].clone(),
            );
            if object == *previous {
                return object;
            }
        }
        self.revision += 1;
        object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        let change_type = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.collection_mut(resource)
            .objects
            .insert(key, object.clone());
        self.record(
            resource,
            Change {
                revision: self.revision,
                change_type,
                object: object.clone(),
                previous,
            },
        );
        object
    }

    fn delete(&mut self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = object_key(resource.spec(), namespace, name);
        let previous = self.collection_mut(resource).objects.remove(&key)?;
        self.revision += 1;
        let mut object = previous.clone();
        object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        self.record(
            resource,
            Change {
                revision: self.revision,
                change_type: ChangeType::Deleted,
                object: object.clone(),
                previous: Some(previous),
            },
        );
        Some(object)
    }

    fn record(&mut self, resource: Resource, change: Change) {
        let change = Arc::new(change);
        self.collection_mut(resource).log.push(change.clone());
        self.watches.retain(|watch| {
            watch.resource != resource
                || watch
                    .signals
                    .send(WatchSignal::Change(change.clone()))
                    .is_ok()
        });
    }

    /// The collection as it was at `revision`, rebuilt by undoing later changes; `None` if that
    /// history was compacted away.
    fn objects_at(
        &self,
        resource: Resource,
        revision: u64,
    ) -> Option<Cow<'_, BTreeMap<ObjectKey, Value>>> {
        let collection = self.collection(resource);
        if revision >= self.revision {
            return Some(Cow::Borrowed(&collection.objects));
        }
        if revision < self.compacted {
            return None;
        }
        let mut objects = collection.objects.clone();
        for change in collection.log.iter().rev() {
            if change.revision <= revision {
                break;
            }
            let key = key_of(&change.object);
            match &change.previous {
                Some(previous) => objects.insert(key, previous.clone()),
                None => objects.remove(&key),
            };
        }
        Some(Cow::Owned(objects))
    }

    /// Takes one injected failure for a request to `resource`, if one is pending.
    fn injected_failure(&mut self, resource: Resource) -> Option<ApiError> {
        let (status, left) = self.failures.get_mut(&resource)?;
        let status = *status;
        *left -= 1;
        if *left == 0 {
            self.failures.remove(&resource);
        }
        Some(ApiError::new(
            status,
            format!("injected failure for {}", resource.spec().plural),
        ))
    }
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A test that panicked while holding the lock must not hide its own failure behind ours.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key_of(object: &Value) -> ObjectKey {
    let meta = &object["metadata"];
    let field = |name: &str| meta[name].as_str().unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

/// Now, at whole seconds, as Kubernetes writes timestamps.
fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Serving: one thread with its own runtime per start, so that stop() can drop every connection.

struct Serving {
    shutdown: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn serve(listener: StdTcpListener, store: Arc<Mutex<Store>>) -> anyhow::Result<Serving> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the API server's runtime")?;
    let listener = {
        let _context = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let app = Router::new().fallback(handle).with_state(store);
    let (shutdown, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("kube-api-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    result = async { axum::serve(listener, app).await } => {
                        if let Err(e) = result {
                            eprintln!("test Kubernetes API server stopped: {e}");
                        }
                    }
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: watches end mid-stream and idle
            // keep-alive connections close, as when kube-apiserver goes away.
            drop(runtime);
        })
        .context("cannot start the API server's thread")?;
    Ok(Serving { shutdown, thread })
}

fn bind_again(port: u16) -> anyhow::Result<StdTcpListener> {
    let deadline = Instant::now() + REBIND_TIMEOUT;
    loop {
        match StdTcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => return Ok(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot bind 127.0.0.1:{port} again")),
        }
    }
}

async fn handle(State(store): State<Arc<Mutex<Store>>>, request: Request) -> Response {
    let uri = request.uri();
    let recorded = ApiRequest {
        method: request.method().to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
    };
    lock(&store).requests.push(recorded.clone());
    respond(&store, request.method(), &recorded).unwrap_or_else(ApiError::into_response)
}

fn respond(
    shared: &Arc<Mutex<Store>>,
    method: &Method,
    request: &ApiRequest,
) -> Result<Response, ApiError> {
    let Some(route) = Route::parse(&request.path) else {
        return match request.path.as_str() {
            "/version" => Ok(json_response(StatusCode::OK, &version())),
            "/healthz" | "/livez" | "/readyz" => Ok(Response::new(Body::from("ok"))),
            _ => Err(ApiError::new(
                404,
                "the server could not find the requested resource".into(),
            )
            .with_details(json!({}))),
        };
    };
    if method != Method::GET {
        return Err(ApiError::new(
            405,
            "the server does not allow this method on the requested resource".into(),
        ));
    }
    let params = Params::parse(&request.query);
    let mut store = lock(shared);
    let watch = route.name.is_none() && params.flag("watch");
    let counters = store.count(route.resource);
    match (&route.name, watch) {
        (None, true) => counters.watches += 1,
        (None, false) => counters.lists += 1,
        (Some(_), _) => {}
    }
    if let Some(failure) = store.injected_failure(route.resource) {
        return Err(failure);
    }
    match &route.name {
        Some(name) => get(&store, &route, name),
        None => {
            let filter = Filter::new(route.namespace.clone(), &params)?;
            if watch {
                open_watch(shared, &mut store, route.resource, filter, &params)
            } else {
                list(&store, route.resource, &filter, &params)
            }
        }
    }
}

/// Which collection, namespace and object a path names.
struct Route {
    resource: Resource,
    namespace: Option<String>,
    name: Option<String>,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        Resource::ALL.iter().find_map(|&resource| {
            let spec = resource.spec();
            let rest = path.strip_prefix(spec.prefix)?.strip_prefix('/')?;
            let segments: Vec<&str> = rest.split('/').collect();
            let (namespace, tail) = match segments.as_slice() {
                ["namespaces", namespace, tail @ ..] if spec.namespaced() => {
                    (Some(*namespace), tail)
                }
                tail => (None, tail),
            };
            let name = match tail {
                [plural] if *plural == spec.plural => None,
                [plural, name] if *plural == spec.plural => {
                    // A namespaced object is only addressable within its namespace.
                    if spec.namespaced() && namespace.is_none() {
                        return None;
                    }
                    Some(*name)
                }
                _ => return None,
            };
            if namespace.is_some_and(str::is_empty) || name.is_some_and(str::is_empty) {
                return None;
            }
            Some(Route {
                resource,
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
            })
        })
    }
}

fn get(store: &Store, route: &Route, name: &str) -> Result<Response, ApiError> {
    let spec = route.resource.spec();
    let key = object_key(spec, route.namespace.as_deref().unwrap_or_default(), name);
    match store.collection(route.resource).objects.get(&key) {
        Some(object) => Ok(json_response(StatusCode::OK, object)),
        None => Err(
            ApiError::new(404, format!("{} \"{name}\" not found", spec.plural))
                .with_details(json!({"name": name, "group": spec.group(), "kind": spec.plural})),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// LIST: pages of a consistent snapshot, continued by key.

fn list(
    store: &Store,
    resource: Resource,
    filter: &Filter,
    params: &Params,
) -> Result<Response, ApiError> {
    let spec = resource.spec();
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {limit:?}")))?,
        None => 0,
    };
    let page_size = [limit, store.max_page_size]
        .into_iter()
        .filter(|&n| n > 0)
        .min();
    let (revision, after) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if params.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (revision, key) = ContinueToken::parse(token)?;
            (revision, Some(key))
        }
        None => (list_revision(store, params)?, None),
    };
    let objects = store.objects_at(resource, revision).ok_or_else(|| {
        if after.is_some() {
            ApiError::new(
                410,
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter."
                    .into(),
            )
        } else {
            ApiError::too_old(revision, store.compacted)
        }
    })?;
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut matching = objects
        .range((start, Bound::Unbounded))
        .filter(|(_, object)| filter.matches(object));
    let items: Vec<(&ObjectKey, &Value)> = match page_size {
        Some(n) => matching.by_ref().take(n).collect(),
        None => matching.by_ref().collect(),
    };
    let remaining = matching.count();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if remaining > 0 {
        let (last, _) = items.last().expect("a truncated page has items");
        metadata["continue"] = ContinueToken::format(revision, last).into();
        if !filter.has_selectors() {
            // Like the apiserver: only exact without selectors.
            metadata["remainingItemCount"] = remaining.into();
        }
    }
    let body = json!({
        "kind": spec.list_kind(),
        "apiVersion": spec.api_version(),
        "metadata": metadata,
        "items": items.into_iter().map(|(_, o)| o).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// The revision a LIST without `continue` reads at.
fn list_revision(store: &Store, params: &Params) -> Result<u64, ApiError> {
    let Some(requested) = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    else {
        return Ok(store.revision);
    };
    let requested = parse_resource_version(requested)?;
    if requested > store.revision {
        return Err(ApiError::new(
            504,
            format!(
                "Too large resource version: {requested}, current: {}",
                store.revision
            ),
        )
        .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge",
            "message": "Too large resource version"}], "retryAfterSeconds": 1})));
    }
    match params.get("resourceVersionMatch") {
        Some("Exact") => Ok(requested),
        _ => Ok(store.revision),
    }
}

fn parse_resource_version(value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {value:?}: must be a non-negative integer"
        ))
    })
}

/// `<revision>/<namespace>/<name>`: the snapshot and the last key served. Opaque to clients, like
/// the apiserver's base64 token, but readable in a request log.
struct ContinueToken;

impl ContinueToken {
    fn format(revision: u64, (namespace, name): &ObjectKey) -> String {
        format!("{revision}/{namespace}/{name}")
    }

    fn parse(token: &str) -> Result<(u64, ObjectKey), ApiError> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
        let mut parts = token.splitn(3, '/');
        let revision = parts
            .next()
            .and_then(|r| r.parse().ok())
            .ok_or_else(invalid)?;
        let namespace = parts.next().ok_or_else(invalid)?;
        let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(invalid)?;
        Ok((revision, (namespace.to_owned(), name.to_owned())))
    }
}

// ---------------------------------------------------------------------------------------------
// WATCH: newline-delimited JSON events in a chunked response.

fn open_watch(
    shared: &Arc<Mutex<Store>>,
    store: &mut Store,
    resource: Resource,
    filter: Filter,
    params: &Params,
) -> Result<Response, ApiError> {
    let spec = resource.spec();
    let timeout = match params.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = params.flag("allowWatchBookmarks");
    let send_initial_events = params.flag("sendInitialEvents");
    let from = match params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0")
    {
        Some(v) => Some(parse_resource_version(v)?),
        None => None,
    };
    let mut watch = WatchStream {
        store: shared.clone(),
        resource,
        filter,
        signals: None,
        pending: VecDeque::new(),
        revision: store.revision,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        bookmarks: None,
        finished: false,
    };
    match from {
        // Like the watch cache: 200, then one ERROR event, then the end.
        Some(from) if from < store.compacted && !send_initial_events => {
            watch
                .pending
                .push_back(error_line(&ApiError::too_old(from, store.compacted)));
            watch.finished = true;
        }
        Some(from) if !send_initial_events => {
            for change in store.collection(resource).log.iter() {
                if change.revision > from {
                    watch.push_change(change);
                }
            }
            watch.revision = store.revision.max(from);
        }
        // No resourceVersion, "0" or a streaming list: the current state as ADDED events first.
        _ => {
            for object in store.collection(resource).objects.values() {
                if watch.filter.matches(object) {
                    watch.pending.push_back(event_line("ADDED", object));
                }
            }
            if send_initial_events {
                watch
                    .pending
                    .push_back(bookmark_line(spec, store.revision, true));
                store.count(resource).bookmarks += 1;
            }
        }
    }
    if !watch.finished {
        let (signals, receiver) = mpsc::unbounded_channel();
        store.watches.push(OpenWatch { resource, signals });
        watch.signals = Some(receiver);
        if bookmarks {
            let period = store.bookmark_interval;
            let mut interval =
                tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            watch.bookmarks = Some(interval);
        }
    }
    let body = futures::stream::unfold(watch, |mut watch| async move {
        let line = watch.next_line().await?;
        Some((Ok::<_, Infallible>(line), watch))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .expect("a static response builds"))
}

/// One open watch's response body. Dropped when the client goes away or the server stops, which
/// closes its channel, and the store forgets it on the next change.
struct WatchStream {
    store: Arc<Mutex<Store>>,
    resource: Resource,
    filter: Filter,
    signals: Option<mpsc::UnboundedReceiver<WatchSignal>>,
    /// Lines ready to send: the replay, then whatever one wake-up produced.
    pending: VecDeque<Bytes>,
    /// The revision this client has been told everything up to.
    revision: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
    bookmarks: Option<tokio::time::Interval>,
    finished: bool,
}

impl WatchStream {
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.finished {
                return None;
            }
            let signals = self.signals.as_mut()?;
            tokio::select! {
                () = &mut self.deadline => self.finished = true,
                signal = signals.recv() => self.handle(signal),
                () = tick(&mut self.bookmarks) => self.bookmark(),
            }
        }
    }

    fn handle(&mut self, signal: Option<WatchSignal>) {
        match signal {
            Some(WatchSignal::Change(change)) => self.push_change(&change),
            Some(WatchSignal::Expire { oldest }) => {
                let error = ApiError::too_old(self.revision, oldest);
                self.pending.push_back(error_line(&error));
                self.finished = true;
            }
            Some(WatchSignal::Close) | None => self.finished = true,
        }
    }

    /// Queues `change` as this watch sees it: a modification that moves an object into or out of
    /// the selection is an ADDED, or a DELETED of its previous content at the new revision, as in
    /// the apiserver's watch cache.
    fn push_change(&mut self, change: &Change) {
        self.revision = self.revision.max(change.revision);
        let now = self.filter.matches(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.filter.matches(p));
        let line = match (change.change_type, before, now) {
            (ChangeType::Added, _, true) => event_line("ADDED", &change.object),
            (ChangeType::Deleted, _, true) => event_line("DELETED", &change.object),
            (ChangeType::Modified, true, true) => event_line("MODIFIED", &change.object),
            (ChangeType::Modified, false, true) => event_line("ADDED", &change.object),
            (ChangeType::Modified, true, false) => {
                let mut left = change.previous.clone().expect("it matched before");
                left["metadata"]["resourceVersion"] = change.revision.to_string().into();
                event_line("DELETED", &left)
            }
            _ => return,
        };
        self.pending.push_back(line);
    }

    /// A bookmark at the store's revision, sent only after every change up to it: changes are
    /// queued under the store lock, so once we have read the revision they are all in the channel.
    fn bookmark(&mut self) {
        let revision = lock(&self.store).revision;
        if let Some(signals) = self.signals.as_mut() {
            let mut queued = Vec::new();
            while let Ok(signal) = signals.try_recv() {
                queued.push(signal);
            }
            for signal in queued {
                self.handle(Some(signal));
                if self.finished {
                    return;
                }
            }
        }
        self.revision = self.revision.max(revision);
        self.pending
            .push_back(bookmark_line(self.resource.spec(), self.revision, false));
        lock(&self.store).count(self.resource).bookmarks += 1;
    }
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("JSON values serialize");
    line.push(b'\n');
    line.into()
}

fn bookmark_line(spec: ResourceSpec, revision: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": spec.kind, "apiVersion": spec.api_version(), "metadata": metadata});
    event_line("BOOKMARK", &object)
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.status())
}

// ---------------------------------------------------------------------------------------------
// Selectors.

/// Which objects a request sees: its namespace and its label and field selectors.
struct Filter {
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
}

enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// `path=value` or `path!=value`, the path dotted into the object (`spec.nodeName`). The
/// apiserver accepts only a few paths per resource; we accept any.
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

impl Filter {
    fn new(namespace: Option<String>, params: &Params) -> Result<Self, ApiError> {
        let labels = split_requirements(params.get("labelSelector").unwrap_or_default())
            .map(parse_label_requirement)
            .collect::<Result<_, _>>()?;
        let fields = split_requirements(params.get("fieldSelector").unwrap_or_default())
            .map(parse_field_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace,
            labels,
            fields,
        })
    }

    fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    fn matches(&self, object: &Value) -> bool {
        let meta = &object["metadata"];
        if let Some(namespace) = &self.namespace
            && meta["namespace"].as_str() != Some(namespace)
        {
            return false;
        }
        let label = |key: &str| meta["labels"][key].as_str();
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(k, v) => label(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::NotExists(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|requirement| {
                let pointer = format!("/{}", requirement.path.replace('.', "/"));
                let value = match object.pointer(&pointer) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                (value == requirement.value) == requirement.equal
            })
    }
}

/// Splits a selector at the commas outside `( )`.
fn split_requirements(selector: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

fn parse_label_requirement(term: &str) -> Result<LabelRequirement, ApiError> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: {term:?}"));
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(invalid())
        } else {
            Ok(k.to_owned())
        }
    };
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').filter(|&c| c > open).ok_or_else(invalid)?;
        let values = term[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_owned())
            .collect();
        let mut head = term[..open].split_whitespace();
        let (Some(k), Some(operator), None) = (head.next(), head.next(), head.next()) else {
            return Err(invalid());
        };
        return match operator {
            "in" => Ok(LabelRequirement::In(key(k)?, values)),
            "notin" => Ok(LabelRequirement::NotIn(key(k)?, values)),
            _ => Err(invalid()),
        };
    }
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelRequirement::Equals(key(k)?, v.trim().to_owned()));
    }
    Ok(LabelRequirement::Exists(key(term)?))
}

fn parse_field_requirement(term: &str) -> Result<FieldRequirement, ApiError> {
    let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
        (p, v, false)
    } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        (p, v, true)
    } else {
        return Err(ApiError::bad_request(format!(
            "invalid field selector: {term:?}"
        )));
    };
    Ok(FieldRequirement {
        path: path.trim().to_owned(),
        value: value.trim().to_owned(),
        equal,
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP details.

/// Decoded query parameters.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(name), percent_decode(value))
                })
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean parameter, parsed like Go's `strconv.ParseBool`.
    fn flag(&self, name: &str) -> bool {
        matches!(
            self.get(name),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if let Some(byte) = s
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()) =>
            {
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(body).expect("JSON values serialize"),
        ))
        .expect("a static response builds")
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-netmeter-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// A failure, sent as a `Status` object: as the response body, or in a watch ERROR event.
#[derive(Debug)]
struct ApiError {
    code: u16,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, message: String) -> Self {
        Self {
            code,
            message,
            details: None,
        }
    }

    fn bad_request(message: String) -> Self {
        Self::new(400, message)
    }

    /// kube-apiserver's words for a resourceVersion older than its history.
    fn too_old(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn reason(&self) -> &'static str {
        match self.code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        }
    }

    fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason(),
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = json_response(status, &self.status());
        if self.code == 429 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_cluster_wide_namespaced_and_single_objects() {
        let route = Route::parse("/api/v1/pods").unwrap();
        assert_eq!(
            (route.resource, route.namespace, route.name),
            (Resource::Pods, None, None)
        );
        let route = Route::parse("/apis/apps/v1/namespaces/web/replicasets/rs-1").unwrap();
        assert_eq!(
            (route.resource, route.namespace, route.name),
            (
                Resource::ReplicaSets,
                Some("web".into()),
                Some("rs-1".into())
            )
        );
        let route = Route::parse("/api/v1/nodes/node-a").unwrap();
        assert_eq!(route.name.as_deref(), Some("node-a"));
        assert!(Route::parse("/api/v1/pods/p").is_none());
        assert!(Route::parse("/api/v1/namespaces/x/nodes").is_none());
        assert!(Route::parse("/api/v1/configmaps").is_none());
        assert!(Route::parse("/api/v1/podsx").is_none());
    }

    #[test]
    fn spec_derives_api_version_and_group() {
        let spec = Resource::EndpointSlices.spec();
        assert_eq!(spec.api_version(), "discovery.k8s.io/v1");
        assert_eq!(spec.group(), "discovery.k8s.io");
        assert_eq!(Resource::Pods.spec().api_version(), "v1");
        assert_eq!(Resource::Pods.spec().group(), "");
        assert_eq!(Resource::Jobs.spec().list_kind(), "JobList");
    }

    #[test]
    fn label_selectors_follow_kubernetes_semantics() {
        let pod = json!({"metadata": {"namespace": "a", "labels": {"app": "web", "tier": "fe"}}});
        let matches = |selector: &str| {
            let params = Params::parse(&format!("labelSelector={selector}"));
            Filter::new(None, &params).unwrap().matches(&pod)
        };
        assert!(matches("app%3Dweb"));
        assert!(matches("app==web,tier"));
        assert!(!matches("app!=web"));
        assert!(matches("missing!=x"));
        assert!(matches("app in (api, web),!missing"));
        assert!(!matches("app notin (web)"));
        assert!(matches("missing notin (web)"));
        assert!(!matches("missing"));
        let params = Params::parse("labelSelector=app+in+web");
        assert!(Filter::new(None, &params).is_err());
    }

    #[test]
    fn field_selectors_read_dotted_paths() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let matches = |selector: &str| {
            let params = Params::parse(&format!("fieldSelector={selector}"));
            Filter::new(None, &params).unwrap().matches(&pod)
        };
        assert!(matches("spec.nodeName%3Dn1,metadata.name%3D%3Dp"));
        assert!(!matches("spec.nodeName!%3Dn1"));
        assert!(matches("status.phase%3D"));
    }

    #[test]
    fn percent_decoding_handles_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb+c%zz%4"), "a/b c%zz%4");
    }

    #[test]
    fn a_continue_token_round_trips() {
        let key = ("default".to_owned(), "p-1".to_owned());
        let token = ContinueToken::format(7, &key);
        assert_eq!(ContinueToken::parse(&token).unwrap(), (7, key));
        assert!(ContinueToken::parse("x/y").is_err());
    }

    #[test]
    fn listing_at_an_old_revision_undoes_later_changes() {
        let mut store = Store::new();
        store.apply(Resource::Pods, json!({"metadata": {"name": "a"}}));
        let at = store.revision;
        store.apply(
            Resource::Pods,
            json!({"metadata": {"name": "a"}, "spec": {"x": 1}}),
        );
        store.apply(Resource::Pods, json!({"metadata": {"name": "b"}}));
        store.delete(Resource::Pods, "default", "a");
        let old = store.objects_at(Resource::Pods, at).unwrap();
        assert_eq!(
            old.keys().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            old.values().next().unwrap()["metadata"]["resourceVersion"],
            "2"
        );
        assert!(old.values().next().unwrap().get("spec").is_none());
        store.compacted = store.revision;
        assert!(store.objects_at(Resource::Pods, at).is_none());
    }

    #[test]
    fn applying_an_identical_object_changes_nothing() {
        let mut store = Store::new();
        let first = store.apply(
            Resource::Nodes,
            json!({"metadata": {"name": "n", "namespace": "x"}}),
        );
        assert!(first["metadata"].get("namespace").is_none());
        let again = store.apply(Resource::Nodes, json!({"metadata": {"name": "n"}}));
        assert_eq!(again, first);
        assert_eq!(store.revision, 2);
    }
}
