//! From Kubernetes objects to address owners: which (address, owner) pairs the cluster shows
//! right now, and how that differs from what we recorded before. Pure functions over
//! k8s-openapi types; the watchers that feed them are in `mod.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use crate::inventory::{Owner, OwnerKind, Tenure};

/// A snapshot of the watched objects.
#[derive(Default)]
pub struct Objects {
    pub nodes: Vec<Arc<Node>>,
    pub pods: Vec<Arc<Pod>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    pub replica_sets: Vec<Arc<ReplicaSet>>,
    pub jobs: Vec<Arc<Job>>,
}

/// An (address, owner uid) pair the cluster currently shows, with when it started.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub start_ms: u64,
    pub owner: Arc<Owner>,
}

pub type Key = (IpAddr, String);

/// Every address held right now, by (address, owner uid).
pub fn current_holdings(objects: &Objects) -> HashMap<Key, Holding> {
    let mut held = HashMap::new();
    let nodes: HashMap<&str, Arc<Owner>> = objects
        .nodes
        .iter()
        .filter_map(|node| {
            let name = node.metadata.name.as_deref()?;
            Some((name, Arc::new(node_owner(node))))
        })
        .collect();
    for node in &objects.nodes {
        let (Some(name), Some(uid)) = (&node.metadata.name, &node.metadata.uid) else {
            continue;
        };
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            if address.type_ != "InternalIP" {
                continue;
            }
            if let Ok(ip) = address.address.parse() {
                held.insert(
                    (ip, uid.clone()),
                    Holding {
                        start_ms: created_ms(&node.metadata),
                        owner: nodes[name.as_str()].clone(),
                    },
                );
            }
        }
    }
    let controllers = Controllers::new(objects);
    for pod in &objects.pods {
        let (Some(uid), Some(spec), Some(status)) = (&pod.metadata.uid, &pod.spec, &pod.status)
        else {
            continue;
        };
        // hostNetwork pods use the node's address: they are attributed to the node.
        if spec.host_network == Some(true) || is_terminal(pod) {
            continue;
        }
        let node = spec.node_name.clone().unwrap_or_default();
        let place = nodes.get(node.as_str());
        let (workload_kind, workload_name) = controllers.workload(&pod.metadata);
        let owner = Arc::new(Owner {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            zone: place.map(|n| n.zone.clone()).unwrap_or_default(),
            region: place.map(|n| n.region.clone()).unwrap_or_default(),
            cloud: place.map(|n| n.cloud.clone()).unwrap_or_default(),
            node,
            workload_kind,
            workload_name,
            app: app_label(&pod.metadata),
            ..Owner::new(
                OwnerKind::Pod,
                pod.metadata.name.clone().unwrap_or_default(),
            )
        });
        let start_ms = status
            .start_time
            .as_ref()
            .map(time_ms)
            .unwrap_or_else(|| created_ms(&pod.metadata));
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref());
        for ip in ips {
            if let Ok(ip) = ip.parse() {
                held.insert(
                    (ip, uid.clone()),
                    Holding {
                        start_ms,
                        owner: owner.clone(),
                    },
                );
            }
        }
    }
    for service in &objects.services {
        let (Some(uid), Some(spec)) = (&service.metadata.uid, &service.spec) else {
            continue;
        };
        let name = service.metadata.name.clone().unwrap_or_default();
        let owner = Arc::new(Owner {
            namespace: service.metadata.namespace.clone().unwrap_or_default(),
            workload_kind: "Service".into(),
            workload_name: name.clone(),
            ..Owner::new(OwnerKind::Service, name)
        });
        let ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.as_ref());
        for ip in ips {
            if let Ok(ip) = ip.parse() {
                held.insert(
                    (ip, uid.clone()),
                    Holding {
                        start_ms: created_ms(&service.metadata),
                        owner: owner.clone(),
                    },
                );
            }
        }
    }
    for slice in &objects.endpoint_slices {
        let Some(uid) = &slice.metadata.uid else {
            continue;
        };
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
            .unwrap_or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            // Pod endpoints are attributed through the pod, which says more.
            if endpoint.target_ref.as_ref().and_then(|t| t.kind.as_deref()) == Some("Pod") {
                continue;
            }
            let node = endpoint.node_name.clone().unwrap_or_default();
            let owner = Arc::new(Owner {
                namespace: slice.metadata.namespace.clone().unwrap_or_default(),
                zone: endpoint.zone.clone().unwrap_or_default(),
                node,
                workload_kind: "Service".into(),
                workload_name: service.clone(),
                ..Owner::new(OwnerKind::Endpoint, service.clone())
            });
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse() {
                    held.insert(
                        (ip, uid.clone()),
                        Holding {
                            start_ms: created_ms(&slice.metadata),
                            owner: owner.clone(),
                        },
                    );
                }
            }
        }
    }
    held
}

/// The tenures to record so the history matches `now_held`:
/// - a pair held now that was not before starts (at the object's own start time);
/// - a pair whose owner changed (labels, node zone learned later) is re-recorded;
/// - a pair held before but not now ends: at the pod's finish time when it completed, else at
///   `now_ms`, but never after another owner of the same address started.
pub fn changes(
    before: &HashMap<Key, Holding>,
    now_held: &HashMap<Key, Holding>,
    finished_ms: &HashMap<String, u64>,
    now_ms: u64,
) -> Vec<Tenure> {
    let mut out = Vec::new();
    for ((ip, uid), holding) in now_held {
        if before.get(&(*ip, uid.clone())) != Some(holding) {
            out.push(Tenure {
                ip: *ip,
                uid: uid.clone(),
                start_ms: holding.start_ms,
                end_ms: None,
                owner: holding.owner.clone(),
            });
        }
    }
    for ((ip, uid), holding) in before {
        if now_held.contains_key(&(*ip, uid.clone())) {
            continue;
        }
        let successor_start = now_held
            .iter()
            .filter(|((other_ip, _), h)| other_ip == ip && h.start_ms >= holding.start_ms)
            .map(|(_, h)| h.start_ms)
            .min();
        let end = finished_ms
            .get(uid)
            .copied()
            .unwrap_or(now_ms)
            .min(successor_start.unwrap_or(u64::MAX))
            .max(holding.start_ms);
        out.push(Tenure {
            ip: *ip,
            uid: uid.clone(),
            start_ms: holding.start_ms,
            end_ms: Some(end),
            owner: holding.owner.clone(),
        });
    }
    out
}

/// The closed tenures of completed pods: from their start until their last container
/// finished. A pod that completed before we first saw it still held its IP until then.
pub fn completed_tenures(objects: &Objects) -> Vec<Tenure> {
    let finished = finished_pods(objects);
    let mut tenures = Vec::new();
    for pod in objects.pods.iter().filter(|p| is_terminal(p)) {
        let (Some(uid), Some(status)) = (&pod.metadata.uid, &pod.status) else {
            continue;
        };
        let Some(&end_ms) = finished.get(uid) else {
            continue;
        };
        let start_ms = status
            .start_time
            .as_ref()
            .map(time_ms)
            .unwrap_or_else(|| created_ms(&pod.metadata));
        let owner = Arc::new(Owner {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            app: app_label(&pod.metadata),
            ..Owner::new(
                OwnerKind::Pod,
                pod.metadata.name.clone().unwrap_or_default(),
            )
        });
        let ips = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref());
        for ip in ips.filter_map(|ip| ip.parse().ok()) {
            tenures.push(Tenure {
                ip,
                uid: uid.clone(),
                start_ms,
                end_ms: Some(end_ms.max(start_ms)),
                owner: owner.clone(),
            });
        }
    }
    tenures
}

/// When each completed (Succeeded/Failed) pod's last container finished, by pod uid.
pub fn finished_pods(objects: &Objects) -> HashMap<String, u64> {
    objects
        .pods
        .iter()
        .filter(|p| is_terminal(p))
        .filter_map(|pod| {
            let uid = pod.metadata.uid.clone()?;
            let finished = pod
                .status
                .as_ref()?
                .container_statuses
                .iter()
                .flatten()
                .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                .map(time_ms)
                .max()?;
            Some((uid, finished))
        })
        .collect()
}

/// A completed pod no longer holds its address (the IP may already be reused), even while
/// the object remains.
fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Node labels and provider id -> the node's place and instance.
pub fn node_owner(node: &Node) -> Owner {
    let name = node.metadata.name.clone().unwrap_or_default();
    let label = |keys: &[&str]| {
        let labels = node.metadata.labels.as_ref();
        keys.iter()
            .find_map(|k| labels.and_then(|l| l.get(*k)))
            .cloned()
            .unwrap_or_default()
    };
    let provider_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .unwrap_or("");
    let (cloud, instance_id) = parse_provider_id(provider_id);
    Owner {
        node: name.clone(),
        zone: label(&[
            "topology.kubernetes.io/zone",
            "failure-domain.beta.kubernetes.io/zone",
        ]),
        region: label(&[
            "topology.kubernetes.io/region",
            "failure-domain.beta.kubernetes.io/region",
        ]),
        cloud: cloud.into(),
        instance_type: label(&[
            "node.kubernetes.io/instance-type",
            "beta.kubernetes.io/instance-type",
        ]),
        instance_id,
        host_network: true,
        ..Owner::new(OwnerKind::Node, name)
    }
}

/// `aws:///eu-west-1a/i-0abc` -> (aws, i-0abc); `gce://project/zone/name` -> (gcp, name);
/// `azure:///subscriptions/.../virtualMachines/vm-1` -> (azure, vm-1).
pub fn parse_provider_id(provider_id: &str) -> (&'static str, String) {
    let Some((scheme, rest)) = provider_id.split_once("://") else {
        return ("", String::new());
    };
    let last = rest.rsplit('/').next().unwrap_or("").to_string();
    match scheme {
        "aws" => ("aws", last),
        "gce" => ("gcp", last),
        "azure" => ("azure", last),
        _ => ("", String::new()),
    }
}

fn app_label(meta: &ObjectMeta) -> String {
    let labels = meta.labels.as_ref();
    ["app.kubernetes.io/name", "app"]
        .iter()
        .find_map(|k| labels.and_then(|l| l.get(*k)))
        .cloned()
        .unwrap_or_default()
}

fn created_ms(meta: &ObjectMeta) -> u64 {
    meta.creation_timestamp.as_ref().map(time_ms).unwrap_or(0)
}

fn time_ms(time: &Time) -> u64 {
    time.0.as_millisecond().max(0) as u64
}

/// ReplicaSet and Job controllers, to follow a pod's owner chain to its workload.
struct Controllers<'a> {
    replica_sets: HashMap<(&'a str, &'a str), &'a OwnerReference>,
    jobs: HashMap<(&'a str, &'a str), &'a OwnerReference>,
}

impl<'a> Controllers<'a> {
    fn new(objects: &'a Objects) -> Self {
        fn index<'a>(
            metas: impl Iterator<Item = &'a ObjectMeta>,
        ) -> HashMap<(&'a str, &'a str), &'a OwnerReference> {
            metas
                .filter_map(|m| {
                    Some((
                        (m.namespace.as_deref()?, m.name.as_deref()?),
                        controller(m)?,
                    ))
                })
                .collect()
        }
        Controllers {
            replica_sets: index(objects.replica_sets.iter().map(|r| &r.metadata)),
            jobs: index(objects.jobs.iter().map(|j| &j.metadata)),
        }
    }

    /// Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, Pod -> StatefulSet/DaemonSet/...;
    /// a pod without a controller is its own workload (kind `Pod`).
    fn workload(&self, pod: &ObjectMeta) -> (String, String) {
        let namespace = pod.namespace.as_deref().unwrap_or("");
        let Some(owner) = controller(pod) else {
            return ("Pod".into(), pod.name.clone().unwrap_or_default());
        };
        let parent = match owner.kind.as_str() {
            "ReplicaSet" => self.replica_sets.get(&(namespace, owner.name.as_str())),
            "Job" => self.jobs.get(&(namespace, owner.name.as_str())),
            _ => None,
        };
        match parent {
            Some(parent) => (parent.kind.clone(), parent.name.clone()),
            None => (owner.kind.clone(), owner.name.clone()),
        }
    }
}

fn controller(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let owners = meta.owner_references.as_ref()?;
    owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
}
