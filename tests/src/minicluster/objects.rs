//! The mini-cluster as Kubernetes objects, built with [`crate::cluster`]'s builders.

use serde_json::{Value, json};

use super::{
    CART, CART_TARGET_PORT, CART_VIP, Controller, MiniCluster, NodeSpec, PodSpec, REGION, Workload,
    node_spec,
};
use crate::cluster;

/// A node with its zone and region labels, provider id, instance type and both addresses.
pub(super) fn node(node: &NodeSpec) -> Value {
    let mut object = cluster::node(node.name, REGION, node.zone, &node.ip.to_string());
    object["status"]["addresses"]
        .as_array_mut()
        .expect("cluster::node writes addresses")
        .push(json!({"type": "InternalIP", "address": node.ip6.to_string()}));
    object
}

/// `workload`'s hostNetwork pod on `node`.
pub(super) fn host_network_pod(workload: &Workload, node: &NodeSpec, start_ms: u64) -> Value {
    let mut pod = cluster::host_network_pod(
        workload.namespace,
        &format!("{}-{}", workload.name, node.name),
        node.name,
        &node.ip.to_string(),
        start_ms,
    );
    pod["metadata"]["ownerReferences"][0]["name"] = json!(workload.name);
    pod["metadata"]["ownerReferences"][0]["uid"] =
        json!(format!("uid-{}-{}", workload.kind, workload.name));
    pod
}

pub(super) fn pod(pod: &PodSpec, start_ms: u64) -> Value {
    let controller = match &pod.controller {
        Controller::ReplicaSet(rs) => ("ReplicaSet", *rs),
        Controller::StatefulSet => ("StatefulSet", pod.workload.name),
        Controller::Job(job) => ("Job", *job),
    };
    cluster::pod(
        pod.workload.namespace,
        pod.name,
        pod.node,
        &[&pod.ip().to_string(), &pod.ip6().to_string()],
        Some(controller),
        pod.workload.name,
        start_ms,
    )
}

pub(super) fn replica_set(workload: &Workload, name: &str) -> Value {
    cluster::replica_set(workload.namespace, name, workload.name)
}

pub(super) fn job(workload: &Workload, name: &str) -> Value {
    cluster::job(workload.namespace, name, workload.name)
}

pub(super) fn cart_service() -> Value {
    let mut service = cluster::service(CART.namespace, CART.name, &CART_VIP.to_string());
    service["spec"]["selector"] = json!({"app.kubernetes.io/name": CART.name});
    service["spec"]["ports"] =
        json!([{"port": super::CART_PORT, "targetPort": CART_TARGET_PORT, "protocol": "TCP"}]);
    service
}

/// The EndpointSlice of `shop/cart`: its running pods, with their nodes and zones.
pub(super) fn cart_endpoints(cluster: &MiniCluster) -> Value {
    let endpoints: Vec<Value> = cluster
        .pods_of(&CART)
        .iter()
        .map(|p| {
            let zone = node_spec(p.spec.node).map(|n| n.zone).unwrap_or_default();
            json!({
                "addresses": [p.spec.ip().to_string()],
                "conditions": {"ready": true},
                "nodeName": p.spec.node,
                "zone": zone,
                "targetRef": {"kind": "Pod", "namespace": CART.namespace, "name": p.spec.name},
            })
        })
        .collect();
    json!({
        "metadata": {
            "name": "cart-x7k2p",
            "namespace": CART.namespace,
            "labels": {"kubernetes.io/service-name": CART.name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"port": CART_TARGET_PORT, "protocol": "TCP"}],
    })
}
