//! Kubernetes objects for the test API server ([`crate::kube_api`]), built in code: nodes with
//! zones and provider ids, pods with their owner chains, Services and EndpointSlices.

use serde_json::{Value, json};

/// RFC 3339 text of a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    format_rfc3339(unix_ms)
}

fn format_rfc3339(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    // Second precision, like the API server.
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A node in `zone` of `region` on AWS, with one InternalIP.
pub fn node(name: &str, region: &str, zone: &str, internal_ip: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "topology.kubernetes.io/region": region,
                "topology.kubernetes.io/zone": zone,
                "node.kubernetes.io/instance-type": "m6i.large",
            },
        },
        "spec": {"providerID": format!("aws:///{zone}/i-{name}")},
        "status": {"addresses": [
            {"type": "InternalIP", "address": internal_ip},
            {"type": "Hostname", "address": name},
        ]},
    })
}

/// A running pod. `controller` is its controlling owner `(kind, name)`, if any.
pub fn pod(
    namespace: &str,
    name: &str,
    node: &str,
    ips: &[&str],
    controller: Option<(&str, &str)>,
    app: &str,
    start_ms: u64,
) -> Value {
    let mut pod = json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": app},
            "creationTimestamp": rfc3339(start_ms),
        },
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "example"}]},
        "status": {
            "phase": "Running",
            "startTime": rfc3339(start_ms),
            "podIP": ips.first().copied().unwrap_or_default(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        },
    });
    if let Some((kind, owner)) = controller {
        pod["metadata"]["ownerReferences"] = owner_ref(kind, owner);
    }
    pod
}

/// A pod on the node's network (`hostNetwork: true`), holding the node's address.
pub fn host_network_pod(
    namespace: &str,
    name: &str,
    node: &str,
    node_ip: &str,
    start_ms: u64,
) -> Value {
    let mut pod = pod(
        namespace,
        name,
        node,
        &[node_ip],
        Some(("DaemonSet", name)),
        name,
        start_ms,
    );
    pod["spec"]["hostNetwork"] = json!(true);
    pod
}

/// `pod` after it completed at `finished_ms` (its IP may be reused from then on).
pub fn completed(mut pod: Value, finished_ms: u64) -> Value {
    pod["status"]["phase"] = json!("Succeeded");
    pod["status"]["containerStatuses"] = json!([{
        "name": "main", "image": "example", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "finishedAt": rfc3339(finished_ms)}},
    }]);
    pod
}

fn owner_ref(kind: &str, name: &str) -> Value {
    let api_version = match kind {
        "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        _ => "v1",
    };
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": format!("uid-{kind}-{name}"), "controller": true}])
}

/// A ReplicaSet controlled by `deployment`.
pub fn replica_set(namespace: &str, name: &str, deployment: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace, "ownerReferences": owner_ref("Deployment", deployment)}})
}

/// A Job controlled by `cron_job`.
pub fn job(namespace: &str, name: &str, cron_job: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": namespace, "ownerReferences": owner_ref("CronJob", cron_job)}})
}

pub fn service(namespace: &str, name: &str, cluster_ip: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [{"port": 80}]},
    })
}

/// An EndpointSlice of Service `service` whose endpoints are not pods (a selector-less
/// Service in front of hosts outside the cluster): `(address, zone)` each.
pub fn external_endpoint_slice(
    namespace: &str,
    service: &str,
    endpoints: &[(&str, &str)],
) -> Value {
    json!({
        "metadata": {
            "name": format!("{service}-ext"),
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": endpoints.iter().map(|(ip, zone)| json!({"addresses": [ip], "zone": zone})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_formats_unix_milliseconds() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000_123), "2026-11-18T11:06:40Z");
        assert_eq!(super::rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
