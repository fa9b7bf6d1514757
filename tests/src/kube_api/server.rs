//! The handle tests hold, [`KubeApiServer`]: objects in, failures injected, requests read back;
//! and behind it the serving (one thread with its own runtime per start, so that an outage drops
//! every connection) and the routing of a request to GET, LIST or WATCH.

use std::net::TcpListener as StdTcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::http::{ApiError, Params, json_response, version};
use super::list::list;
use super::objects::{Resource, Store, lock, object_key};
use super::selectors::Filter;
use super::watch::{WatchSignal, open_watch};

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
}
