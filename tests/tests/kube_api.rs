//! The test Kubernetes API server behaves like kube-apiserver for kube-rs 5: a watcher syncs in
//! pages, streams live changes, lists again after a 410, resumes after an outage, and gets
//! bookmarks; raw HTTP shows the wire format.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use netmeter_tests::kube_api::{KubeApiServer, Resource};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The longest any single step may take; every test is bounded by a few of these.
const STEP: Duration = Duration::from_secs(10);

fn pod(name: &str, app: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn apply_pods(server: &KubeApiServer, names: &[&str]) {
    for name in names {
        server.apply(Resource::Pods, pod(name, "web"));
    }
}

/// A kube-rs pod watcher with the default backoff, driven by its own task like in a service, so
/// that it reconnects while the test does something else.
struct PodWatcher {
    events: mpsc::UnboundedReceiver<Result<Event<Pod>, watcher::Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodWatcher {
    fn start(server: &KubeApiServer, config: watcher::Config) -> Self {
        let mut stream = watcher(Api::<Pod>::all(server.client()), config)
            .default_backoff()
            .boxed();
        let (sender, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                if sender.send(event).is_err() {
                    break;
                }
            }
        });
        Self { events, task }
    }

    async fn next(&mut self) -> Result<Event<Pod>, watcher::Error> {
        tokio::time::timeout(STEP, self.events.recv())
            .await
            .expect("a watcher event within the step timeout")
            .expect("a watcher stream does not end")
    }

    /// The next event that is not an error (errors are what the backoff retries).
    async fn next_ok(&mut self) -> Event<Pod> {
        loop {
            if let Ok(event) = self.next().await {
                return event;
            }
        }
    }

    /// The names of the next Init ... InitDone cycle, in order.
    async fn next_init(&mut self) -> Vec<String> {
        match self.next_ok().await {
            Event::Init => {}
            other => panic!("expected Init, got {other:?}"),
        }
        let mut names = Vec::new();
        loop {
            match self.next().await {
                Ok(Event::InitApply(pod)) => names.push(pod.name_any()),
                Ok(Event::InitDone) => return names,
                other => panic!("expected InitApply or InitDone, got {other:?}"),
            }
        }
    }
}

impl Drop for PodWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn wait_for_watch(server: &KubeApiServer) {
    let deadline = Instant::now() + STEP;
    while server.open_watches(Resource::Pods) == 0 {
        assert!(
            Instant::now() < deadline,
            "the watcher never opened a watch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rv(pod: &Pod) -> u64 {
    pod.resource_version().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_reads_one_consistent_snapshot() {
    let server = KubeApiServer::new().unwrap();
    apply_pods(&server, &["a", "b", "c", "d", "e"]);
    let snapshot = server.resource_version();
    let pods: Api<Pod> = Api::all(server.client());

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(2);
    let mut pages = 0;
    loop {
        let page = pods.list(&params).await.unwrap();
        pages += 1;
        assert_eq!(page.metadata.resource_version, Some(snapshot.to_string()));
        names.extend(page.items.iter().map(|p| p.name_any()));
        if pages == 1 {
            // Later pages still show the first page's snapshot, as with etcd.
            server.apply(Resource::Pods, pod("bb", "web"));
            server.delete(Resource::Pods, "default", "d");
        }
        match page.metadata.continue_ {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(server.list_count(Resource::Pods), 3);

    let now = pods.list(&ListParams::default()).await.unwrap();
    let names: Vec<String> = now.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["a", "b", "bb", "c", "e"]);
    assert_eq!(
        now.metadata.resource_version,
        Some((snapshot + 2).to_string())
    );
    assert_eq!(now.metadata.continue_, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_syncs_in_pages_then_streams_live_changes() {
    let server = KubeApiServer::new().unwrap();
    server.set_max_page_size(2);
    apply_pods(&server, &["a", "b", "c", "d", "e"]);
    let listed_at = server.resource_version();
    let mut pods = PodWatcher::start(&server, watcher::Config::default());

    assert_eq!(pods.next_init().await, ["a", "b", "c", "d", "e"]);
    assert_eq!(server.list_count(Resource::Pods), 3);
    wait_for_watch(&server).await;

    // What kube-rs 5's default watcher asks for, exactly (it starts every query with `&`).
    let requests = server.requests();
    let queries: Vec<&str> = requests.iter().map(|r| r.query.as_str()).collect();
    assert_eq!(requests[0].path, "/api/v1/pods");
    assert_eq!(queries[0], "&limit=500");
    assert_eq!(
        queries[1],
        format!("&limit=500&continue={listed_at}%2Fdefault%2Fb")
    );
    assert_eq!(
        queries[2],
        format!("&limit=500&continue={listed_at}%2Fdefault%2Fd")
    );
    assert_eq!(
        queries[3],
        format!(
            "&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={listed_at}"
        )
    );
    assert_eq!(server.watch_count(Resource::Pods), 1);

    let added = server.apply(Resource::Pods, pod("f", "web"));
    match pods.next().await.unwrap() {
        Event::Apply(pod) => {
            assert_eq!(pod.name_any(), "f");
            assert_eq!(rv(&pod), listed_at + 1);
            assert_eq!(pod.uid().as_deref(), added["metadata"]["uid"].as_str());
            assert_eq!(pod.spec.unwrap().node_name.as_deref(), Some("node-a"));
        }
        other => panic!("expected Apply(f), got {other:?}"),
    }
    server.apply(Resource::Pods, pod("a", "api"));
    match pods.next().await.unwrap() {
        Event::Apply(pod) => {
            assert_eq!(pod.name_any(), "a");
            assert_eq!(pod.labels()["app"], "api");
            assert_eq!(rv(&pod), listed_at + 2);
        }
        other => panic!("expected Apply(a), got {other:?}"),
    }
    server.delete(Resource::Pods, "default", "b").unwrap();
    match pods.next().await.unwrap() {
        Event::Delete(pod) => {
            assert_eq!(pod.name_any(), "b");
            assert_eq!(rv(&pod), listed_at + 3);
        }
        other => panic!("expected Delete(b), got {other:?}"),
    }

    // A watch that ends cleanly is resumed from its resourceVersion, without a list.
    server.close_watches();
    server.apply(Resource::Pods, pod("g", "web"));
    match pods.next_ok().await {
        Event::Apply(pod) => assert_eq!(pod.name_any(), "g"),
        other => panic!("expected Apply(g), got {other:?}"),
    }
    assert_eq!(server.list_count(Resource::Pods), 3);
    assert_eq!(server.watch_count(Resource::Pods), 2);
    let resumed = server.requests().last().unwrap().param("resourceVersion");
    assert_eq!(resumed, Some((listed_at + 3).to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_makes_the_watcher_list_again() {
    let server = KubeApiServer::new().unwrap();
    apply_pods(&server, &["a", "b", "c"]);
    let mut pods = PodWatcher::start(&server, watcher::Config::default());
    assert_eq!(pods.next_init().await, ["a", "b", "c"]);
    wait_for_watch(&server).await;
    let lists = server.list_count(Resource::Pods);

    server.compact();
    server.expire_watches();
    // The watcher backs off (>= 800 ms) before listing again: these changes fall in the gap.
    server.delete(Resource::Pods, "default", "b");
    server.apply(Resource::Pods, pod("d", "web"));

    match pods.next().await {
        Err(watcher::Error::WatchError(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 watch error, got {other:?}"),
    }
    assert_eq!(pods.next_init().await, ["a", "c", "d"]);
    assert_eq!(server.list_count(Resource::Pods), lists + 1);

    wait_for_watch(&server).await;
    server.apply(Resource::Pods, pod("e", "web"));
    match pods.next().await.unwrap() {
        Event::Apply(pod) => assert_eq!(pod.name_any(), "e"),
        other => panic!("expected Apply(e), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resumes_after_an_outage_without_listing_again() {
    let server = KubeApiServer::new().unwrap();
    apply_pods(&server, &["a", "b"]);
    let mut pods = PodWatcher::start(&server, watcher::Config::default());
    assert_eq!(pods.next_init().await, ["a", "b"]);
    wait_for_watch(&server).await;
    let (lists, watches) = (
        server.list_count(Resource::Pods),
        server.watch_count(Resource::Pods),
    );

    server.stop();
    assert!(!server.is_running());
    let refused = TcpStream::connect(("127.0.0.1", server.port())).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    server.apply(Resource::Pods, pod("z", "web"));
    server.delete(Resource::Pods, "default", "a");
    // The outage itself: the watcher retries against a closed port for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start().unwrap();

    // Replayed from the history, in order, on the same port.
    match pods.next_ok().await {
        Event::Apply(pod) => assert_eq!(pod.name_any(), "z"),
        other => panic!("expected Apply(z), got {other:?}"),
    }
    match pods.next_ok().await {
        Event::Delete(pod) => assert_eq!(pod.name_any(), "a"),
        other => panic!("expected Delete(a), got {other:?}"),
    }
    assert_eq!(server.list_count(Resource::Pods), lists);
    assert!(server.watch_count(Resource::Pods) > watches);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_away_longer_than_the_history_lists_again() {
    let server = KubeApiServer::new().unwrap();
    apply_pods(&server, &["a", "b"]);
    let mut pods = PodWatcher::start(&server, watcher::Config::default());
    assert_eq!(pods.next_init().await, ["a", "b"]);
    wait_for_watch(&server).await;
    let watched_from = server.resource_version();

    server.stop();
    server.delete(Resource::Pods, "default", "a");
    server.apply(Resource::Pods, pod("c", "web"));
    server.compact();
    server.start().unwrap();

    assert_eq!(pods.next_init().await, ["b", "c"]);
    let requests = server.requests();
    let expired = requests
        .iter()
        .find(|r| r.is_watch() && r.param("resourceVersion") == Some(watched_from.to_string()))
        .expect("the watcher resumed from its last resourceVersion");
    assert_eq!(expired.path, "/api/v1/pods");
    assert_eq!(server.list_count(Resource::Pods), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selector_watch_sees_objects_enter_and_leave() {
    let server = KubeApiServer::new().unwrap();
    server.apply(Resource::Pods, pod("web-1", "web"));
    server.apply(Resource::Pods, pod("api-1", "api"));
    let mut pods = PodWatcher::start(&server, watcher::Config::default().labels("app=web"));
    assert_eq!(pods.next_init().await, ["web-1"]);
    wait_for_watch(&server).await;

    let relabelled = server.apply(Resource::Pods, pod("web-1", "api"));
    match pods.next().await.unwrap() {
        // The last state it was selected in, at the revision it left.
        Event::Delete(pod) => {
            assert_eq!(pod.name_any(), "web-1");
            assert_eq!(pod.labels()["app"], "web");
            assert_eq!(
                pod.resource_version().as_deref(),
                relabelled["metadata"]["resourceVersion"].as_str()
            );
        }
        other => panic!("expected Delete(web-1), got {other:?}"),
    }
    server.apply(Resource::Pods, pod("api-1", "web"));
    match pods.next().await.unwrap() {
        Event::Apply(pod) => assert_eq!(pod.name_any(), "api-1"),
        other => panic!("expected Apply(api-1), got {other:?}"),
    }
    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.is_watch())
        .unwrap();
    assert_eq!(watch.param("labelSelector").as_deref(), Some("app=web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_file_reaches_the_server() {
    let server = KubeApiServer::new().unwrap();
    server.apply(Resource::Nodes, json!({"metadata": {"name": "node-a"}}));
    let dir = tempfile::tempdir().unwrap();
    let path = server.write_kubeconfig(dir.path()).unwrap();

    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.cluster_url.to_string(), format!("{}/", server.url()));
    let client = kube::Client::try_from(config).unwrap();
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(nodes.items.len(), 1);
    assert_eq!(nodes.items[0].name_any(), "node-a");
    assert_eq!(nodes.items[0].metadata.namespace, None);
    assert!(nodes.items[0].metadata.creation_timestamp.is_some());
    let pod = Api::<Pod>::default_namespaced(client)
        .get_opt("missing")
        .await
        .unwrap();
    assert!(pod.is_none());
}

/// A raw HTTP/1.1 exchange: the status, lower-cased headers and the de-chunked body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn lines(&self) -> Vec<Value> {
        self.body
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn raw_get(server: &KubeApiServer, target: &str) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    stream.set_read_timeout(Some(STEP)).unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, mut body) = raw.split_once("\r\n\r\n").unwrap();
    let mut head = head.lines();
    let status = head
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = head
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    let mut decoded = String::new();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v == "chunked")
    {
        loop {
            let (size, rest) = body.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            decoded.push_str(&rest[..size]);
            body = &rest[size + 2..];
        }
    } else {
        decoded.push_str(body);
    }
    RawResponse {
        status,
        headers,
        body: decoded,
    }
}

#[test]
fn bookmarks_report_progress_on_a_raw_watch() {
    let server = KubeApiServer::new().unwrap();
    server.set_bookmark_interval(Duration::from_millis(200));
    let from = server.resource_version();
    let started = Instant::now();
    let response = std::thread::scope(|scope| {
        scope.spawn(|| {
            // The pod arrives mid-watch, after a few bookmarks: the pacing under test.
            std::thread::sleep(Duration::from_millis(500));
            server.apply(Resource::Pods, pod("late", "web"));
        });
        raw_get(
            &server,
            &format!(
                "/api/v1/pods?watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=2"
            ),
        )
    });
    let elapsed = started.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(4)).contains(&elapsed),
        "timeoutSeconds=2 ended the stream after {elapsed:?}"
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));

    let events = response.lines();
    let added = events.iter().position(|e| e["type"] == "ADDED").unwrap();
    assert_eq!(events[added]["object"]["metadata"]["name"], "late");
    assert_eq!(events[added]["object"]["kind"], "Pod");
    assert_eq!(events[added]["object"]["apiVersion"], "v1");
    let bookmarks: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "BOOKMARK")
        .collect();
    assert_eq!(bookmarks.len() + 1, events.len());
    assert!(bookmarks.len() >= 5, "{} bookmarks in 2 s", bookmarks.len());
    assert_eq!(server.bookmark_count(Resource::Pods), bookmarks.len());
    for (position, bookmark) in bookmarks {
        let rv = if position < added { from } else { from + 1 };
        assert_eq!(
            bookmark["object"],
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}})
        );
    }
}

#[test]
fn a_too_old_resource_version_gets_410_in_the_stream() {
    let server = KubeApiServer::new().unwrap();
    server.apply(Resource::Pods, pod("a", "web"));
    server.apply(Resource::Pods, pod("b", "web"));
    server.compact();
    let response = raw_get(&server, "/api/v1/pods?watch=true&resourceVersion=2");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.lines(),
        [json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 2 (3)", "reason": "Expired", "code": 410,
        }})]
    );
    // From the compacted revision itself the history is complete: no error, no events.
    let from_now = raw_get(
        &server,
        "/api/v1/pods?watch=true&resourceVersion=3&timeoutSeconds=1",
    );
    assert_eq!(from_now.body, "");
}

#[test]
fn unknown_paths_and_missing_objects_get_a_404_status() {
    let server = KubeApiServer::new().unwrap();
    let response = raw_get(&server, "/api/v1/configmaps");
    assert_eq!(response.status, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&response.body).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server could not find the requested resource", "reason": "NotFound",
            "details": {}, "code": 404})
    );
    let missing = raw_get(&server, "/apis/apps/v1/namespaces/default/replicasets/web");
    assert_eq!(missing.status, 404);
    let status: Value = serde_json::from_str(&missing.body).unwrap();
    assert_eq!(status["message"], "replicasets \"web\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "web", "group": "apps", "kind": "replicasets"})
    );
}

#[test]
fn injected_failures_answer_the_next_requests() {
    let server = KubeApiServer::new().unwrap();
    server.fail_requests(Resource::Services, 500, 2);
    for _ in 0..2 {
        let failed = raw_get(&server, "/api/v1/services");
        assert_eq!(failed.status, 500);
        let status: Value = serde_json::from_str(&failed.body).unwrap();
        assert_eq!(status["reason"], "InternalError");
    }
    let ok = raw_get(&server, "/api/v1/services");
    assert_eq!(ok.status, 200);
    let list: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(
        list,
        json!({"kind": "ServiceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "1"}, "items": []})
    );
    assert_eq!(server.list_count(Resource::Services), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_list_watcher_syncs_without_a_list() {
    let server = KubeApiServer::new().unwrap();
    apply_pods(&server, &["a", "b"]);
    let mut pods = PodWatcher::start(&server, watcher::Config::default().streaming_lists());
    // Ends at the BOOKMARK annotated k8s.io/initial-events-end.
    assert_eq!(pods.next_init().await, ["a", "b"]);
    assert_eq!(server.list_count(Resource::Pods), 0);
    let watch = &server.requests()[0];
    assert_eq!(watch.param("sendInitialEvents").as_deref(), Some("true"));
    assert_eq!(watch.param("resourceVersion").as_deref(), Some("0"));

    server.apply(Resource::Pods, pod("c", "web"));
    match pods.next().await.unwrap() {
        Event::Apply(pod) => assert_eq!(pod.name_any(), "c"),
        other => panic!("expected Apply(c), got {other:?}"),
    }
}

#[test]
fn namespaced_paths_see_one_namespace_and_objects_by_name() {
    let server = KubeApiServer::new().unwrap();
    server.apply(Resource::Pods, pod("a", "web"));
    let mut system = pod("dns", "dns");
    system.metadata.namespace = Some("kube-system".into());
    server.apply(Resource::Pods, system);
    server.apply(Resource::Nodes, json!({"metadata": {"name": "node-a"}}));

    let list: Value =
        serde_json::from_str(&raw_get(&server, "/api/v1/namespaces/kube-system/pods").body)
            .unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["metadata"]["name"], "dns");
    assert_eq!(list["items"][0]["kind"], "Pod");

    let node: Value = serde_json::from_str(&raw_get(&server, "/api/v1/nodes/node-a").body).unwrap();
    assert_eq!(node["metadata"]["name"], "node-a");
    assert_eq!(node["metadata"]["resourceVersion"], "4");
    assert_eq!(server.get(Resource::Nodes, "", "node-a").unwrap(), node);
    let pod: Value =
        serde_json::from_str(&raw_get(&server, "/api/v1/namespaces/default/pods/a").body).unwrap();
    assert_eq!(
        pod["metadata"]["uid"],
        server.get(Resource::Pods, "default", "a").unwrap()["metadata"]["uid"]
    );
}
