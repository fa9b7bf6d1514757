//! The Kubernetes index: kube-rs reflectors over Nodes, Pods, Services, EndpointSlices,
//! ReplicaSets and Jobs (list/watch only; see the chart's RBAC), turned into address tenures
//! in the [`IpOwnerHistory`](crate::inventory::IpOwnerHistory).
//!
//! Across watch restarts, `410 Gone` and API-server outages the reflectors keep the last
//! state, which keeps being served; `netmeter_attributor_kubernetes_stale{resource}` is 1
//! until the watch is back and has re-listed. A re-list is diffed like any other change, so
//! objects deleted during an outage end their tenures when we learn of it.

mod owners;

pub use owners::{
    Holding, Key, Objects, changes, completed_tenures, current_holdings, finished_pods, node_owner,
    parse_provider_id,
};

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::inventory::{IpOwnerHistory, OwnerKind, Recorded, Tenure};

/// Changes are applied at most this often (a rollout changes hundreds of pods at once).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The reflector stores of every watched kind.
#[derive(Clone)]
pub struct Stores {
    nodes: Store<Node>,
    pods: Store<Pod>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    replica_sets: Store<ReplicaSet>,
    jobs: Store<Job>,
}

impl Stores {
    fn snapshot(&self) -> Objects {
        Objects {
            nodes: self.nodes.state(),
            pods: self.pods.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            replica_sets: self.replica_sets.state(),
            jobs: self.jobs.state(),
        }
    }

    async fn wait_until_ready(&self) {
        // Errors only when the writer is dropped, i.e. at shutdown.
        let _ = tokio::join!(
            self.nodes.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.services.wait_until_ready(),
            self.endpoint_slices.wait_until_ready(),
            self.replica_sets.wait_until_ready(),
            self.jobs.wait_until_ready(),
        );
    }
}

/// Starts one watcher per kind; `changed` is notified on every change.
fn spawn_watchers(client: &Client, changed: &Arc<Notify>, shutdown: &CancellationToken) -> Stores {
    Stores {
        nodes: spawn_watcher("nodes", client, changed, shutdown),
        pods: spawn_watcher("pods", client, changed, shutdown),
        services: spawn_watcher("services", client, changed, shutdown),
        endpoint_slices: spawn_watcher("endpointslices", client, changed, shutdown),
        replica_sets: spawn_watcher("replicasets", client, changed, shutdown),
        jobs: spawn_watcher("jobs", client, changed, shutdown),
    }
}

fn spawn_watcher<K>(
    resource: &'static str,
    client: &Client,
    changed: &Arc<Notify>,
    shutdown: &CancellationToken,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let api = Api::<K>::all(client.clone());
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(drive(
        resource,
        stream,
        api,
        changed.clone(),
        shutdown.clone(),
    ));
    store
}

/// How often a stale watch probes whether the API server answers again.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Drives one watch stream, keeping the staleness gauge and the error counter. A watch that
/// resumes after an outage yields nothing until something changes, so while stale, a small
/// list (`limit=1`) probes the API server: once it answers and the watch has had no error
/// since, the state is current again.
async fn drive<K>(
    resource: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    api: Api<K>,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let stale = metrics::gauge!(crate::metric_list::KUBERNETES_STALE.name, "resource" => resource);
    let errors =
        metrics::counter!(crate::metric_list::KUBERNETES_WATCH_ERRORS.name, "resource" => resource);
    stale.set(1.0);
    let mut is_stale = true;
    let mut synced_once = false;
    let mut last_error = tokio::time::Instant::now();
    let mut probe = tokio::time::interval(PROBE_EVERY);
    let mut stream = std::pin::pin!(stream);
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.next() => item,
            _ = probe.tick(), if is_stale && synced_once => {
                let quiet = last_error.elapsed() >= PROBE_EVERY;
                let answers = api.list_metadata(&kube::api::ListParams::default().limit(1)).await.is_ok();
                if quiet && answers && last_error.elapsed() >= PROBE_EVERY {
                    is_stale = false;
                    stale.set(0.0);
                    tracing::info!(resource, "Kubernetes API answers again; watch resumed");
                }
                continue;
            }
        };
        match item {
            Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
            Some(Ok(_)) => {
                synced_once = true;
                if is_stale {
                    is_stale = false;
                    stale.set(0.0);
                    tracing::info!(resource, "Kubernetes watch is in sync");
                }
                changed.notify_one();
            }
            Some(Err(err)) => {
                errors.increment(1);
                last_error = tokio::time::Instant::now();
                if !is_stale {
                    is_stale = true;
                    stale.set(1.0);
                    tracing::warn!(resource, error = %err, "Kubernetes watch failed; serving the last known state until it resyncs");
                }
            }
            None => return,
        }
    }
}

/// Keeps `history` in line with the cluster until shutdown: every change becomes tenures,
/// recorded locally and sent to `publish` (the inventory topic). `synced` turns true after the
/// first full reconciliation.
pub async fn maintain(
    client: Client,
    history: Arc<RwLock<IpOwnerHistory>>,
    publish: mpsc::Sender<Vec<Tenure>>,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let changed = Arc::new(Notify::new());
    let started_ms = now_ms();
    let stores = spawn_watchers(&client, &changed, &shutdown);
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = stores.wait_until_ready() => {}
    }
    // What we knew before (from the inventory topic) and is no longer there ended while no
    // replica was watching. Tenures that started after our list may come from a replica that
    // is ahead of us: those are left to it.
    let mut before: HashMap<Key, Holding> = {
        let history = history.read().expect("history lock");
        history
            .tenures()
            .filter(|t| t.end_ms.is_none() && t.start_ms < started_ms)
            .filter(|t| t.owner.kind != OwnerKind::Static)
            .map(|t| {
                (
                    (t.ip, t.uid.clone()),
                    Holding {
                        start_ms: t.start_ms,
                        owner: t.owner.clone(),
                    },
                )
            })
            .collect()
    };
    let objects_gauge = |resource: &'static str, n: usize| {
        metrics::gauge!(crate::metric_list::KUBERNETES_OBJECTS.name, "resource" => resource)
            .set(n as f64)
    };
    loop {
        let objects = stores.snapshot();
        for (resource, n) in [
            ("nodes", objects.nodes.len()),
            ("pods", objects.pods.len()),
            ("services", objects.services.len()),
            ("endpointslices", objects.endpoint_slices.len()),
            ("replicasets", objects.replica_sets.len()),
            ("jobs", objects.jobs.len()),
        ] {
            objects_gauge(resource, n);
        }
        let now_held = current_holdings(&objects);
        let mut updates = changes(&before, &now_held, &finished_pods(&objects), now_ms());
        // Pods that completed before we ever saw them running (record merges repeats away).
        updates.extend(completed_tenures(&objects));
        let recorded = record_all(&history, updates);
        if !recorded.is_empty() {
            tracing::debug!(tenures = recorded.len(), "inventory changed");
            if publish.send(recorded).await.is_err() {
                return;
            }
        }
        before = now_held;
        synced.send_replace(true);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// Records tenures in the shared history; returns those that changed something.
pub fn record_all(history: &RwLock<IpOwnerHistory>, tenures: Vec<Tenure>) -> Vec<Tenure> {
    let mut history = history.write().expect("history lock");
    let recorded: Vec<Tenure> = tenures
        .into_iter()
        .filter(|t| history.record(t.clone()) != Recorded::Unchanged)
        .collect();
    metrics::gauge!(crate::metric_list::INVENTORY_TENURES.name).set(history.len() as f64);
    recorded
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
