//! The Helm chart (`charts/netmeter`), rendered by the real helm (v4.2.3, installed by
//! `netmeter-stack install`) with its defaults and every `ci/*-values.yaml`, and checked as far
//! as it can be without a cluster:
//!
//! - `helm lint --strict` passes; the values schema refuses wrong types and unknown keys, and
//!   the templates refuse what the binaries would refuse at start;
//! - every rendered object is exactly its Kubernetes type: parsed into k8s-openapi's struct and
//!   serialized back, it must be unchanged, so a field the type does not know (a typo in a
//!   template) fails; the Prometheus operator's objects are checked against the fields we use;
//! - every netmeter container starts: its command, args and env (secrets as placeholders, the
//!   node name as the downward API would give it, mounted files as real files) pass the binary's
//!   own `--check-config`;
//! - least privilege, credentials only from Secrets, the attributor's RBAC, probes, the state
//!   directory, pods rolling when the rules change, and the `helm test` script (run here
//!   against stand-in services).
//!
//! Not here: `kubectl create --dry-run=client --validate=strict` needs an API server's OpenAPI
//! documents, which our test API server (`kube_api.rs`) does not serve; the typed round trip
//! checks the same field names and types offline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, PodSpec, Service, ServiceAccount, Volume,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use netmeter_tests::install;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const RELEASE: &str = "netmeter";
const NAMESPACE: &str = "netmeter";
/// What `--api-versions` says when the Prometheus operator's CRDs are installed.
const WITH_PROMETHEUS_OPERATOR: &[&str] = &["--api-versions", "monitoring.coreos.com/v1"];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/netmeter")
}

/// The defaults (no file) and every `ci/*-values.yaml`, as `-f` arguments.
fn values_files() -> Vec<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "default-values.yaml",
        "msk-scram-values.yaml",
        "clickhouse-cloud-values.yaml",
        "kafka-engine-values.yaml",
    ] {
        assert!(names.iter().any(|n| n == needed), "ci/{needed} is missing");
    }
    std::iter::once(Vec::new())
        .chain(
            files
                .into_iter()
                .map(|f| vec!["-f".to_string(), f.to_string_lossy().into_owned()]),
        )
        .collect()
}

fn helm(args: &[&str]) -> Output {
    let helm = install::require(&install::helm_bin()).unwrap_or_else(|e| panic!("{e:#}"));
    Command::new(helm)
        .args(args)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("netmeter-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("netmeter-helm-config"),
        )
        .output()
        .unwrap()
}

fn template_output<S: AsRef<str>>(extra: &[S]) -> Output {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend(extra.iter().map(AsRef::as_ref));
    helm(&args)
}

/// `helm template` with extra arguments: the rendered objects, as JSON.
fn template<S: AsRef<str>>(extra: &[S]) -> Vec<Value> {
    let output = template_output(extra);
    assert!(
        output.status.success(),
        "helm template {:?} failed: {}",
        extra.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| serde_yaml_ng::Value::deserialize(document).unwrap())
        .filter(|document| !document.is_null())
        .map(|document| serde_json::to_value(document).unwrap())
        .collect()
}

/// `helm template` that must fail: its error output.
fn template_error(extra: &[&str]) -> String {
    let output = template_output(extra);
    assert!(
        !output.status.success(),
        "helm template {extra:?} should fail"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// The one object of `kind` named `<release>-<component>` (or `<release>` for "").
fn object<'a>(objects: &'a [Value], kind_: &str, component: &str) -> &'a Value {
    let wanted = match component {
        "" => RELEASE.to_string(),
        c => format!("{RELEASE}-{c}"),
    };
    objects
        .iter()
        .find(|o| kind(o) == kind_ && name(o) == wanted)
        .unwrap_or_else(|| panic!("no {kind_} {wanted} among {:?}", summary(objects)))
}

fn summary(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| format!("{}/{}", kind(o), name(o)))
        .collect()
}

fn typed<T: DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{}/{} does not parse: {e}", kind(object), name(object)))
}

/// Every workload's pod spec, named `Kind/name`.
fn pod_specs(objects: &[Value]) -> Vec<(String, PodSpec)> {
    objects
        .iter()
        .filter_map(|o| {
            let spec = match kind(o) {
                "DaemonSet" => typed::<DaemonSet>(o).spec.template.spec,
                "Deployment" => typed::<Deployment>(o).spec.template.spec,
                "Job" => typed::<Job>(o).spec?.template.spec,
                "Pod" => typed::<Pod>(o).spec,
                _ => None,
            }?;
            Some((format!("{}/{}", kind(o), name(o)), spec))
        })
        .collect()
}

fn pod_spec(objects: &[Value], kind_: &str, component: &str) -> PodSpec {
    let object = object(objects, kind_, component);
    pod_specs(std::slice::from_ref(object)).remove(0).1
}

fn containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

fn env_value<'a>(container: &'a Container, variable: &str) -> Option<&'a str> {
    container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == variable)
        .and_then(|e| e.value.as_deref())
}

fn remove_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), remove_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(remove_nulls).collect()),
        other => other.clone(),
    }
}

/// Where `typed` lost or changed something of `original`.
fn first_difference(path: &str, original: &Value, typed: &Value) -> Option<String> {
    match (original, typed) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(key, value)| {
            let path = format!("{path}.{key}");
            match b.get(key) {
                None => Some(format!("{path} is not a field of the type")),
                Some(other) => first_difference(&path, value, other),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        (a, b) if a == b => None,
        (a, b) => Some(format!("{path}: {a} became {b}")),
    }
}

/// Parses `object` into `T` and back: what the type does not know, or reads differently.
fn type_difference<T: DeserializeOwned + serde::Serialize>(object: &Value) -> Option<String> {
    let back = match serde_json::from_value::<T>(object.clone()) {
        Ok(typed) => serde_json::to_value(typed).unwrap(),
        Err(e) => return Some(format!("does not parse: {e}")),
    };
    let (original, back) = (remove_nulls(object), remove_nulls(&back));
    first_difference("", &original, &back)
        .or_else(|| (original != back).then(|| format!("{original} became {back}")))
}

fn assert_exactly<T: DeserializeOwned + serde::Serialize>(object: &Value) {
    if let Some(difference) = type_difference::<T>(object) {
        panic!("{}/{}: {difference}", kind(object), name(object));
    }
}

/// The fields of the Prometheus operator's objects this chart uses; anything else is refused.
/// (Fields are here to be accepted, not all of them are read.)
#[allow(dead_code)]
mod prometheus_operator {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PodMonitor {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: PodMonitorSpec,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PodMonitorSpec {
        pub selector: LabelSelector,
        #[serde(default)]
        pub pod_target_labels: Vec<String>,
        pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PodMetricsEndpoint {
        pub port: String,
        pub path: String,
        pub interval: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct PrometheusRule {
        pub api_version: String,
        pub kind: String,
        pub metadata: ObjectMeta,
        pub spec: RuleGroups,
    }

    /// Also the shape of `files/alerts.yaml`, a Prometheus rule file.
    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct RuleGroups {
        pub groups: Vec<RuleGroup>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct RuleGroup {
        pub name: String,
        #[serde(default)]
        pub interval: Option<String>,
        pub rules: Vec<Rule>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        #[serde(default)]
        pub alert: Option<String>,
        #[serde(default)]
        pub record: Option<String>,
        pub expr: String,
        #[serde(default, rename = "for")]
        pub for_: Option<String>,
        #[serde(default)]
        pub labels: BTreeMap<String, String>,
        #[serde(default)]
        pub annotations: BTreeMap<String, String>,
    }
}

fn assert_object_is_exactly_its_type(object: &Value) {
    match (
        object["apiVersion"].as_str().unwrap_or_default(),
        kind(object),
    ) {
        ("v1", "ConfigMap") => assert_exactly::<ConfigMap>(object),
        ("v1", "Service") => assert_exactly::<Service>(object),
        ("v1", "ServiceAccount") => assert_exactly::<ServiceAccount>(object),
        ("v1", "Pod") => assert_exactly::<Pod>(object),
        ("apps/v1", "DaemonSet") => assert_exactly::<DaemonSet>(object),
        ("apps/v1", "Deployment") => assert_exactly::<Deployment>(object),
        ("batch/v1", "Job") => assert_exactly::<Job>(object),
        ("policy/v1", "PodDisruptionBudget") => assert_exactly::<PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => assert_exactly::<ClusterRole>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            assert_exactly::<ClusterRoleBinding>(object)
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => assert_exactly::<PriorityClass>(object),
        ("monitoring.coreos.com/v1", "PodMonitor") => {
            let _: prometheus_operator::PodMonitor = typed(object);
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            let _: prometheus_operator::PrometheusRule = typed(object);
        }
        (api_version, kind) => panic!("{api_version} {kind} is not an object this test knows"),
    }
}

#[test]
fn lint_passes_for_the_defaults_and_every_ci_values_file() {
    let chart = chart_dir();
    for values in values_files() {
        let mut args = vec!["lint", "--strict", chart.to_str().unwrap()];
        args.extend(values.iter().map(String::as_str));
        let output = helm(&args);
        assert!(
            output.status.success(),
            "helm lint {values:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_rendered_object_is_exactly_its_kubernetes_type() {
    // Also a check of this check: a misspelt field must be caught.
    let mut typo = template::<&str>(&[]);
    let daemonset = typo.iter_mut().find(|o| kind(o) == "DaemonSet").unwrap();
    daemonset["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = Value::Bool(true);
    assert_eq!(
        type_difference::<DaemonSet>(daemonset).as_deref(),
        Some(".spec.template.spec.containers[0].readinessProbes is not a field of the type")
    );

    for values in values_files() {
        for operator in [&[][..], WITH_PROMETHEUS_OPERATOR] {
            let args: Vec<&str> = values
                .iter()
                .map(String::as_str)
                .chain(operator.iter().copied())
                .collect();
            let objects = template(&args);
            assert!(objects.len() >= 10, "{args:?}: {:?}", summary(&objects));
            for object in &objects {
                assert_object_is_exactly_its_type(object);
                if object["metadata"].get("namespace").is_some() {
                    let expected = if kind(object) == "ConfigMap"
                        && name(object).ends_with("-dashboard")
                        && values
                            .iter()
                            .any(|v| v.ends_with("clickhouse-cloud-values.yaml"))
                    {
                        "monitoring"
                    } else {
                        NAMESPACE
                    };
                    assert_eq!(
                        object["metadata"]["namespace"],
                        expected,
                        "{}",
                        name(object)
                    );
                }
            }
        }
    }
}

/// Runs a container's command through its binary's `--check-config`, as the kubelet would
/// start it: env from the container (secretKeyRef as placeholders, configMapKeyRef from the
/// rendered ConfigMap, the node name from the downward API), files where they are mounted.
fn check_config(objects: &[Value], pod: &PodSpec, container: &Container) -> Result<(), String> {
    let command = container.command.clone().unwrap_or_default();
    let binary = netmeter_tests::workspace_bin(&command[0]).map_err(|e| e.to_string())?;
    let root = tempfile::tempdir().unwrap();
    let mounts = materialize_mounts(objects, pod, container, root.path());
    let relocate = |text: &str| {
        mounts
            .iter()
            .fold(text.to_string(), |text, (mount, local)| {
                text.replace(mount.as_str(), local.to_str().unwrap())
            })
    };
    let mut env = BTreeMap::new();
    assert!(
        container.env_from.is_none(),
        "{}: envFrom is not used",
        container.name
    );
    for variable in container.env.iter().flatten() {
        let value = match (&variable.value, &variable.value_from) {
            (Some(value), None) => relocate(value),
            (None, Some(source)) => {
                if let Some(secret) = &source.secret_key_ref {
                    format!("placeholder-{}-{}", secret.name, secret.key)
                } else if let Some(config_map) = &source.config_map_key_ref {
                    config_map_data(objects, &config_map.name)
                        .and_then(|data| data.get(&config_map.key).cloned())
                        .ok_or_else(|| {
                            format!("{}: no ConfigMap key {config_map:?}", variable.name)
                        })?
                } else if source
                    .field_ref
                    .as_ref()
                    .is_some_and(|f| f.field_path == "spec.nodeName")
                {
                    "node-test-1".to_string()
                } else {
                    return Err(format!("{}: unexpected source {source:?}", variable.name));
                }
            }
            other => return Err(format!("{}: {other:?}", variable.name)),
        };
        env.insert(variable.name.clone(), value);
    }
    let args: Vec<String> = args(container).iter().map(|a| relocate(a)).collect();
    if let Some(reference) = args.iter().find(|a| a.contains("$(")) {
        return Err(format!(
            "{reference}: $(VAR) references are not resolved here"
        ));
    }
    let output = Command::new(&binary)
        .arg("--check-config")
        .args(&args)
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    if !output.status.success() || stdout != "configuration ok\n" {
        return Err(format!(
            "{} --check-config {args:?} with {env:?}: {}\n{stdout}{stderr}",
            command[0], output.status
        ));
    }
    if stdout.contains("placeholder-") || stderr.contains("placeholder-") {
        return Err(format!(
            "{}: printed a secret: {stdout}{stderr}",
            command[0]
        ));
    }
    Ok(())
}

fn config_map_data(objects: &[Value], wanted: &str) -> Option<BTreeMap<String, String>> {
    objects
        .iter()
        .find(|o| kind(o) == "ConfigMap" && name(o) == wanted)
        .and_then(|o| typed::<ConfigMap>(o).data)
}

/// Writes every volume `container` mounts under `root`: the rendered ConfigMaps with their
/// content, the user's Secrets and ConfigMaps (which the chart only names) as placeholder
/// files, hostPaths and emptyDirs as empty directories. Returns (mount path, local path), longest first.
fn materialize_mounts(
    objects: &[Value],
    pod: &PodSpec,
    container: &Container,
    root: &Path,
) -> Vec<(String, PathBuf)> {
    let mut mounts = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let volume: &Volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("{}: no volume {}", container.name, mount.name));
        let local = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&local).unwrap();
        let (items, rendered) = if let Some(config_map) = &volume.config_map {
            (
                config_map.items.clone(),
                config_map_data(objects, &config_map.name),
            )
        } else if let Some(secret) = &volume.secret {
            (secret.items.clone(), None)
        } else {
            assert!(
                volume.host_path.is_some() || volume.empty_dir.is_some(),
                "{volume:?}"
            );
            mounts.push((mount.mount_path.clone(), local));
            continue;
        };
        let items = items.unwrap_or_else(|| panic!("{}: mount named items only", volume.name));
        for item in items {
            let content = match &rendered {
                Some(data) => data[&item.key].clone(),
                None => format!("placeholder {} of the user's {}\n", item.key, volume.name),
            };
            std::fs::write(local.join(&item.path), content).unwrap();
        }
        mounts.push((mount.mount_path.clone(), local));
    }
    mounts.sort_by_key(|(mount, _)| std::cmp::Reverse(mount.len()));
    mounts
}

#[test]
fn every_netmeter_container_passes_its_binary_check_config() {
    let mut checked = BTreeSet::new();
    for values in values_files() {
        let objects = template(&values);
        for (workload, spec) in pod_specs(&objects) {
            for container in containers(&spec) {
                let command = container.command.clone().unwrap_or_default();
                if !command[0].starts_with("netmeter-") {
                    continue;
                }
                check_config(&objects, &spec, container)
                    .unwrap_or_else(|e| panic!("{values:?} {workload}: {e}"));
                let subcommand = args(container)
                    .into_iter()
                    .find(|a| !a.starts_with('-'))
                    .unwrap_or_default();
                checked.insert(format!("{} {subcommand}", command[0]).trim().to_string());
            }
        }
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        [
            "netmeter-attributor",
            "netmeter-collector",
            "netmeter-sink",
            "netmeter-sink migrate"
        ]
    );

    // And the check is real: rules the schema lets through but the attributor refuses.
    let objects = template(&[
        "--set-json",
        r#"attributor.rules.networks=[{"name":"a","cidrs":["10.0.0.0/8"]},{"name":"b","cidrs":["10.0.0.0/8"]}]"#,
    ]);
    let spec = pod_spec(&objects, "Deployment", "attributor");
    let error = check_config(&objects, &spec, &spec.containers[0]).unwrap_err();
    assert!(
        error.contains(r#"10.0.0.0/8 is listed by both "a" and "network b""#),
        "{error}"
    );
}

#[test]
fn the_collector_runs_with_net_admin_only_on_the_host_network() {
    let objects = template::<&str>(&[]);
    let daemonset: DaemonSet = typed(object(&objects, "DaemonSet", "collector"));
    let spec = daemonset.spec;
    let strategy = spec.update_strategy.unwrap().rolling_update.unwrap();
    assert_eq!(serde_json::to_value(strategy.max_surge).unwrap(), 0);
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("netmeter-collector")
    );
    object(&objects, "PriorityClass", "collector");
    let tolerations = pod.tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "tolerates every taint: {tolerations:?}"
    );
    assert!(pod.init_containers.is_none(), "accounting is opt-in");

    let [collector] = &pod.containers[..] else {
        panic!("one container")
    };
    let security = collector.security_context.clone().unwrap();
    let capabilities = security.capabilities.unwrap();
    assert_eq!(capabilities.add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(capabilities.drop, Some(vec!["ALL".to_string()]));
    assert_eq!(security.privileged, None);
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));

    let node_name = collector
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NETMETER_NODE_NAME")
        .and_then(|e| e.value_from.clone()?.field_ref)
        .unwrap();
    assert_eq!(node_name.field_path, "spec.nodeName");

    // The state directory: a hostPath mounted where --state-dir points.
    let args = args(collector);
    let state_dir = flag(&args, "--state-dir").unwrap();
    assert_eq!(state_dir, "/var/lib/netmeter/collector");
    let mount = collector
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == state_dir)
        .unwrap();
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let host_path = volume.host_path.clone().unwrap();
    assert_eq!(host_path.path, state_dir);
    assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));

    // The kubelet waits longer than the collector's final dump may take.
    let timeout: u64 = flag(&args, "--shutdown-timeout")
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(timeout >= 6, "two dumps of 1M connections");
    assert!(pod.termination_grace_period_seconds.unwrap() as u64 > timeout);
    let port = collector.ports.clone().unwrap()[0].container_port;
    assert_eq!(
        flag(&args, "--http-addr"),
        Some(&*format!("0.0.0.0:{port}"))
    );
}

#[test]
fn conntrack_accounting_init_container_is_opt_in_and_the_only_privileged_one() {
    for values in values_files() {
        let objects = template(&values);
        for (workload, spec) in pod_specs(&objects) {
            for container in containers(&spec) {
                let security = container.security_context.clone().unwrap_or_default();
                let privileged = security.privileged == Some(true);
                assert_eq!(
                    privileged,
                    container.name == "enable-conntrack-accounting",
                    "{workload}/{}",
                    container.name
                );
                if workload.starts_with("DaemonSet/") {
                    continue;
                }
                // Everything else runs as nobody with nothing, and can read its Secrets.
                let pod_security = spec.security_context.clone().unwrap();
                assert_eq!(pod_security.run_as_non_root, Some(true), "{workload}");
                for secret in spec
                    .volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| v.secret.as_ref())
                {
                    if let Some(mode) = secret.default_mode {
                        assert!(mode & 0o040 != 0, "{workload}: {mode:o}");
                        assert_eq!(pod_security.fs_group, pod_security.run_as_group);
                    }
                }
                assert_eq!(
                    security.capabilities.unwrap().drop,
                    Some(vec!["ALL".to_string()]),
                    "{workload}"
                );
                assert_eq!(security.read_only_root_filesystem, Some(true), "{workload}");
                assert_eq!(
                    security.allow_privilege_escalation,
                    Some(false),
                    "{workload}"
                );
            }
        }
    }
    let objects = template(&["--set", "collector.conntrackAccounting.initContainer=true"]);
    let pod = pod_spec(&objects, "DaemonSet", "collector");
    let init = &pod.init_containers.unwrap()[0];
    let script = init.command.clone().unwrap().join(" ");
    assert!(
        script.contains("echo 1 > /proc/sys/net/netfilter/nf_conntrack_acct"),
        "{script}"
    );
    // The collector itself never switches it on (that would need it privileged).
    assert!(
        !args(&pod.containers[0])
            .iter()
            .any(|a| a.starts_with("--enable-acct"))
    );
}

#[test]
fn the_attributor_may_only_list_and_watch_the_six_kinds_it_reads() {
    assert!(
        !chart_dir().join("../attributor-rbac.yaml").exists(),
        "the chart's RBAC replaced charts/attributor-rbac.yaml"
    );
    let objects = template::<&str>(&[]);
    let role: ClusterRole = typed(object(&objects, "ClusterRole", "attributor"));
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert_eq!(rule.verbs, ["list", "watch"], "{rule:?}");
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.clone().unwrap() {
                granted.insert(format!("{group}/{resource}"));
            }
        }
    }
    assert_eq!(
        granted.into_iter().collect::<Vec<_>>(),
        [
            "/nodes",
            "/pods",
            "/services",
            "apps/replicasets",
            "batch/jobs",
            "discovery.k8s.io/endpointslices"
        ]
    );
    let binding: ClusterRoleBinding = typed(object(&objects, "ClusterRoleBinding", "attributor"));
    assert_eq!(binding.role_ref.name, "netmeter-attributor");
    let subject = &binding.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "netmeter-attributor", Some(NAMESPACE))
    );
    object(&objects, "ServiceAccount", "attributor");
    let pod = pod_spec(&objects, "Deployment", "attributor");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("netmeter-attributor")
    );
    // Only the attributor talks to the API server.
    for (workload, spec) in pod_specs(&objects) {
        let token = spec.automount_service_account_token;
        assert_eq!(token, Some(workload.contains("attributor")), "{workload}");
    }
}

#[test]
fn credentials_come_only_from_existing_secrets() {
    for values in values_files() {
        let objects = template(&values);
        assert!(!objects.iter().any(|o| kind(o) == "Secret"), "{values:?}");
        for (workload, spec) in pod_specs(&objects) {
            for container in containers(&spec) {
                for arg in args(container) {
                    let lower = arg.to_ascii_lowercase();
                    assert!(
                        !["password", "username", "clickhouse-user", "sasl-user"]
                            .iter()
                            .any(|word| lower.contains(word)),
                        "{workload}: credential on the command line: {arg}"
                    );
                }
                for variable in container.env.iter().flatten() {
                    if ["PASSWORD", "USERNAME", "_USER"]
                        .iter()
                        .any(|word| variable.name.contains(word))
                    {
                        assert!(variable.value.is_none(), "{workload}: {}", variable.name);
                        let from = variable.value_from.clone().unwrap();
                        assert!(
                            from.secret_key_ref.is_some(),
                            "{workload}: {}",
                            variable.name
                        );
                    }
                }
            }
        }
    }

    let msk = chart_dir().join("ci/msk-scram-values.yaml");
    let objects = template(&["-f", msk.to_str().unwrap()]);
    for (workload, spec) in pod_specs(&objects) {
        let container = spec.containers.last().unwrap();
        if !container.command.as_ref().unwrap()[0].starts_with("netmeter-") {
            continue;
        }
        let secret = |variable: &str| {
            let selector = container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == variable)
                .and_then(|e| e.value_from.clone()?.secret_key_ref)
                .unwrap_or_else(|| panic!("{workload}: no {variable}"));
            (selector.name, selector.key)
        };
        assert_eq!(
            env_value(container, "NETMETER_KAFKA_SECURITY_PROTOCOL"),
            Some("sasl_ssl")
        );
        assert_eq!(
            env_value(container, "NETMETER_KAFKA_SASL_MECHANISM"),
            Some("SCRAM-SHA-512")
        );
        assert_eq!(
            secret("NETMETER_KAFKA_SASL_USERNAME"),
            ("netmeter-kafka".into(), "username".into())
        );
        assert_eq!(
            secret("NETMETER_KAFKA_SASL_PASSWORD"),
            ("netmeter-kafka".into(), "password".into())
        );
        assert_eq!(
            env_value(container, "NETMETER_KAFKA_SSL_CA_LOCATION"),
            Some("/etc/netmeter/kafka-ca/ca.crt")
        );
        if workload.contains("sink") {
            assert_eq!(
                secret("NETMETER_CLICKHOUSE_PASSWORD"),
                ("netmeter-clickhouse".into(), "password".into())
            );
        }
    }

    // There is no value to put a secret in.
    for key in [
        "kafka.sasl.password",
        "kafka.sasl.username",
        "clickhouse.auth.password",
        "clickhouse.auth.user",
    ] {
        let error = template_error(&["--set", &format!("{key}=hunter2")]);
        let field = key.rsplit('.').next().unwrap();
        assert!(
            error.contains(&format!("additional properties '{field}' not allowed")),
            "{key}: {error}"
        );
    }
}

#[test]
fn changing_the_rules_or_the_cluster_place_rolls_the_attributors() {
    let checksum = |args: &[&str]| {
        let objects = template(args);
        let deployment = object(&objects, "Deployment", "attributor");
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base = checksum(&[]);
    assert_eq!(base.len(), 64, "sha256: {base}");
    assert_eq!(checksum(&[]), base, "stable");
    let rule = [
        "--set",
        "attributor.rules.networks[0].name=nat,attributor.rules.networks[0].cidrs[0]=10.0.0.1/32",
    ];
    assert_ne!(checksum(&rule), base, "a new rule");
    assert_ne!(checksum(&["--set", "cluster.region=eu-west-1"]), base);
    assert_ne!(checksum(&["--set", "cluster.name=prod"]), base);
    assert_eq!(
        checksum(&["--set", "sink.batchRows=1000"]),
        base,
        "unrelated values do not roll the attributors"
    );

    // The rules reach the attributor as the rules file, the place as its variables.
    let objects = template(&[
        "--set",
        "cluster.cloud=aws,cluster.region=eu-west-1,cluster.name=prod",
        "--set-json",
        r#"attributor.rules.prices={"aws":{"INTERNET":{"out":0.085}}}"#,
    ]);
    let data = config_map_data(&objects, "netmeter-attributor").unwrap();
    assert_eq!(data["NETMETER_CLOUD"], "aws");
    assert_eq!(data["NETMETER_REGION"], "eu-west-1");
    assert_eq!(data["NETMETER_CLUSTER"], "prod");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&data["rules.yaml"]).unwrap();
    assert_eq!(
        rules["prices"]["aws"]["INTERNET"]["out"].as_f64(),
        Some(0.085)
    );
    let pod = pod_spec(&objects, "Deployment", "attributor");
    assert_eq!(
        flag(&args(&pod.containers[0]), "--rules"),
        Some("/etc/netmeter/rules/rules.yaml")
    );
}

#[test]
fn services_are_probed_on_healthz_and_readyz_at_their_metrics_port() {
    for values in values_files() {
        let objects = template(&values);
        for (workload, spec) in pod_specs(&objects) {
            if workload.starts_with("Job/") || workload.starts_with("Pod/") {
                continue;
            }
            let container = &spec.containers[0];
            let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
                let get = probe.clone().unwrap().http_get.unwrap();
                assert_eq!(
                    serde_json::to_value(&get.port).unwrap(),
                    "metrics",
                    "{workload}"
                );
                get.path.unwrap()
            };
            assert_eq!(path(&container.liveness_probe), "/healthz", "{workload}");
            assert_eq!(path(&container.readiness_probe), "/readyz", "{workload}");
            let port = container.ports.clone().unwrap();
            assert_eq!(port[0].name.as_deref(), Some("metrics"));
            let address = flag(&args(container), "--http-addr").unwrap().to_string();
            assert!(
                address.ends_with(&format!(":{}", port[0].container_port)),
                "{workload}: {address}"
            );
            let grace = spec.termination_grace_period_seconds.unwrap();
            let timeout: i64 = flag(&args(container), "--shutdown-timeout")
                .unwrap()
                .trim_end_matches('s')
                .parse()
                .unwrap();
            assert!(grace > timeout, "{workload}: {grace} <= {timeout}");
        }
    }
}

#[test]
fn monitoring_objects_follow_the_prometheus_operator_crds() {
    let annotations = |objects: &[Value], kind_: &str, component: &str| {
        object(objects, kind_, component)["spec"]["template"]["metadata"]["annotations"].clone()
    };
    // Without the CRDs: scrape annotations, no operator objects.
    let objects = template::<&str>(&[]);
    assert!(
        !objects
            .iter()
            .any(|o| kind(o) == "PodMonitor" || kind(o) == "PrometheusRule")
    );
    for (kind_, component, port) in [
        ("DaemonSet", "collector", "9401"),
        ("Deployment", "attributor", "9090"),
        ("Deployment", "sink", "9090"),
    ] {
        let annotations = annotations(&objects, kind_, component);
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{component}");
        assert_eq!(annotations["prometheus.io/port"], port, "{component}");
        assert_eq!(annotations["prometheus.io/path"], "/metrics", "{component}");
    }

    // With them: a PodMonitor for the three, the rules file as a PrometheusRule.
    let objects = template(WITH_PROMETHEUS_OPERATOR);
    for (kind_, component) in [
        ("DaemonSet", "collector"),
        ("Deployment", "attributor"),
        ("Deployment", "sink"),
    ] {
        let annotations = annotations(&objects, kind_, component);
        assert!(
            annotations.get("prometheus.io/scrape").is_none(),
            "{component}"
        );
    }
    let monitor: prometheus_operator::PodMonitor = typed(object(&objects, "PodMonitor", ""));
    let endpoint = &monitor.spec.pod_metrics_endpoints[0];
    assert_eq!((&*endpoint.port, &*endpoint.path), ("metrics", "/metrics"));
    assert_eq!(
        monitor.spec.pod_target_labels,
        ["app.kubernetes.io/component"]
    );
    let components = monitor.spec.selector.match_expressions.unwrap()[0]
        .values
        .clone()
        .unwrap();
    assert_eq!(components, ["collector", "attributor", "sink"]);
    let rule: prometheus_operator::PrometheusRule = typed(object(&objects, "PrometheusRule", ""));
    let file: prometheus_operator::RuleGroups = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("files/alerts.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule.spec, file, "the PrometheusRule is files/alerts.yaml");
    assert!(!file.groups.is_empty());

    // Disabled, they stay away even with the CRDs.
    let mut args = WITH_PROMETHEUS_OPERATOR.to_vec();
    args.extend([
        "--set",
        "metrics.podMonitor.enabled=false,metrics.prometheusRule.enabled=false",
    ]);
    let objects = template(&args);
    assert!(
        !objects
            .iter()
            .any(|o| kind(o) == "PodMonitor" || kind(o) == "PrometheusRule")
    );
    assert_eq!(
        annotations(&objects, "DaemonSet", "collector")["prometheus.io/scrape"],
        "true"
    );

    // The dashboard: files/dashboard.json, labelled for Grafana's sidecar.
    let objects = template::<&str>(&[]);
    let dashboard: ConfigMap = typed(object(&objects, "ConfigMap", "dashboard"));
    assert_eq!(dashboard.metadata.labels.unwrap()["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(&dashboard.data.unwrap()["netmeter.json"]).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("files/dashboard.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json, file);
    assert!(json["panels"].is_array() && json["title"].is_string());
}

#[test]
fn values_schema_rejects_wrong_types_and_unknown_keys() {
    for (set, expected) in [
        (
            "attributor.replicas=two",
            "'/attributor/replicas': got string, want integer",
        ),
        ("collector.port=99999", "'/collector/port'"),
        ("kafka.securityProtocol=tls", "'/kafka/securityProtocol'"),
        (
            "attributor.replica=2",
            "additional properties 'replica' not allowed",
        ),
        (
            "collector.hostPID=true",
            "additional properties 'hostPID' not allowed",
        ),
        ("attributor.rules.networks[0].nmae=x", "'nmae'"),
        ("attributor.rules.prices.aws.CROSS_ZONE.out=1", "CROSS_ZONE"),
    ] {
        let error = template_error(&["--set", set]);
        assert!(error.contains(expected), "{set}: {error}");
    }
    // `--set a=1` is an integer for helm, which a string field refuses.
    let error = template_error(&["--set", "cluster.name=1"]);
    assert!(error.contains("'/cluster/name'"), "{error}");
}

#[test]
fn settings_the_binaries_would_refuse_fail_the_install() {
    for (args, expected) in [
        (
            vec!["--set", "kafka.securityProtocol=sasl_ssl"],
            "kafka.sasl.mechanism is required",
        ),
        (
            vec![
                "--set",
                "kafka.securityProtocol=sasl_ssl,kafka.sasl.mechanism=PLAIN",
            ],
            "kafka.sasl.existingSecret is required",
        ),
        (
            vec!["--set", "kafka.tls.ca.existingSecret=ca"],
            "kafka.tls is set but kafka.securityProtocol=plaintext",
        ),
        (
            vec!["--set", "collector.shutdownTimeoutSeconds=30"],
            "collector.terminationGracePeriodSeconds (30) must be above",
        ),
        (
            vec!["--set", "kafkaEngine.enabled=true"],
            "choose one way into ClickHouse",
        ),
        (
            vec![
                "--set",
                "clickhouse.cluster.name=prod,clickhouse.cluster.replication=none",
            ],
            "clickhouse.cluster.nodes is required with clickhouse.cluster.replication=none",
        ),
        (
            vec![
                "--set",
                "clickhouse.cluster.name=prod,clickhouse.cluster.nodes={http://a:8123}",
            ],
            "clickhouse.cluster.nodes is only for clickhouse.cluster.replication=none",
        ),
        (
            vec!["--set", "clickhouse.retention.flowsDays=30"],
            "clickhouse.retention.flowsDays is gone",
        ),
    ] {
        let error = template_error(&args);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[test]
fn the_kafka_engine_path_migrates_in_a_hook_and_runs_no_sink() {
    let values = chart_dir().join("ci/kafka-engine-values.yaml");
    let objects = template(&["-f", values.to_str().unwrap()]);
    assert!(
        !objects.iter().any(|o| name(o) == "netmeter-sink"),
        "{:?}",
        summary(&objects)
    );
    let job = object(&objects, "Job", "kafka-engine");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let pod = pod_spec(&objects, "Job", "kafka-engine");
    let args = args(&pod.containers[0]);
    let subcommand = args.iter().position(|a| a == "migrate").unwrap();
    assert_eq!(args[subcommand + 1], "--kafka-engine");
    assert_eq!(
        args[..subcommand]
            .iter()
            .filter(|a| a.contains("ttl-days="))
            .collect::<Vec<_>>(),
        [
            "--record-ttl-days=7",
            "--ttl-days=90",
            "--rollup-minute-ttl-days=30",
            "--rollup-hour-ttl-days=400"
        ],
        "retention before the subcommand: {args:?}"
    );
    // With the sink, the sink migrates at start and there is no Job.
    let objects = template::<&str>(&[]);
    assert!(!objects.iter().any(|o| kind(o) == "Job"));
}

#[test]
fn the_clickhouse_cluster_values_reach_the_sink_and_the_kafka_engine_job() {
    let env = |objects: &[Value], kind_: &str, component: &str| -> Vec<Option<String>> {
        let pod = pod_spec(objects, kind_, component);
        [
            "NETMETER_CLICKHOUSE_CLUSTER",
            "NETMETER_CLICKHOUSE_CLUSTER_REPLICATION",
            "NETMETER_CLICKHOUSE_CLUSTER_NODES",
        ]
        .iter()
        .map(|v| env_value(&pod.containers[0], v).map(String::from))
        .collect()
    };
    let some = |v: &str| Some(v.to_string());
    // One server by default: no cluster variable at all.
    assert_eq!(
        env(&template::<&str>(&[]), "Deployment", "sink"),
        [None, None, None]
    );
    let values = chart_dir().join("ci/clickhouse-cluster-values.yaml");
    let values = values.to_str().unwrap();
    assert_eq!(
        env(&template(&["-f", values]), "Deployment", "sink"),
        [some("prod"), some("keeper"), None]
    );
    let nodes = "clickhouse.cluster.replication=none,\
                 clickhouse.cluster.nodes={http://ch-0:8123,http://ch-1:8123}";
    assert_eq!(
        env(
            &template(&["-f", values, "--set", nodes]),
            "Deployment",
            "sink"
        ),
        [
            some("prod"),
            some("none"),
            some("http://ch-0:8123,http://ch-1:8123")
        ]
    );
    // The Kafka-engine Job creates the Kafka table and its views on the cluster too.
    let kafka_engine = chart_dir().join("ci/kafka-engine-values.yaml");
    let objects = template(&[
        "-f",
        kafka_engine.to_str().unwrap(),
        "--set",
        "clickhouse.cluster.name=prod",
    ]);
    assert_eq!(
        env(&objects, "Job", "kafka-engine"),
        [some("prod"), some("keeper"), None]
    );
    let error = template_error(&["--set", "clickhouse.cluster.name=a'b"]);
    assert!(error.contains("/clickhouse/cluster/name"), "{error}");
}

#[test]
fn image_defaults_to_the_app_version_of_this_workspace() {
    let chart: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let objects = template::<&str>(&[]);
    for (workload, spec) in pod_specs(&objects) {
        for container in containers(&spec) {
            assert_eq!(
                container.image.as_deref(),
                Some(&*format!("netmeter:{}", env!("CARGO_PKG_VERSION"))),
                "{workload}"
            );
        }
    }
    let objects = template(&[
        "--set",
        "image.repository=registry.example/netmeter,image.tag=1.2.3",
        "--set",
        "imagePullSecrets[0].name=regcred",
    ]);
    for (workload, spec) in pod_specs(&objects) {
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("registry.example/netmeter:1.2.3")
        );
        assert_eq!(
            spec.image_pull_secrets.unwrap()[0].name,
            "regcred",
            "{workload}"
        );
    }
}

/// A stand-in for a service's HTTP endpoint: answers every request with `status`.
fn stand_in(status: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
            );
        }
    });
    port
}

#[test]
fn helm_test_pod_asks_every_service_for_readyz() {
    let objects = template::<&str>(&[]);
    let test = object(&objects, "Pod", "test-readyz");
    assert_eq!(test["metadata"]["annotations"]["helm.sh/hook"], "test");
    let pod: Pod = typed(test);
    let container = &pod.spec.unwrap().containers[0];
    assert_eq!(
        env_value(container, "NETMETER_TEST_URLS"),
        Some("http://netmeter-attributor.netmeter.svc:9090 http://netmeter-sink.netmeter.svc:9090")
    );
    assert_eq!(
        env_value(container, "NETMETER_TEST_COLLECTOR_HOST"),
        Some("netmeter-collector.netmeter.svc")
    );
    assert_eq!(
        env_value(container, "NETMETER_TEST_COLLECTOR_PORT"),
        Some("9401")
    );
    let service: Service = typed(object(&objects, "Service", "collector"));
    let service = service.spec.unwrap();
    assert_eq!(service.cluster_ip.as_deref(), Some("None"));
    assert_eq!(service.publish_not_ready_addresses, Some(true));

    // The script, run here with the image's tools (sh, curl, getent) against stand-ins.
    let command = container.command.clone().unwrap();
    let run = |collector_status: u16| {
        let urls = format!(
            "http://127.0.0.1:{} http://127.0.0.1:{}",
            stand_in(200),
            stand_in(200)
        );
        let collector = stand_in(collector_status);
        Command::new(&command[0])
            .args(&command[1..])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("NETMETER_TEST_URLS", urls)
            .env("NETMETER_TEST_COLLECTOR_HOST", "127.0.0.1")
            .env("NETMETER_TEST_COLLECTOR_PORT", collector.to_string())
            .output()
            .unwrap()
    };
    let ready = run(200);
    let text = String::from_utf8_lossy(&ready.stdout);
    assert!(ready.status.success(), "{text}");
    assert_eq!(text.matches("ready: ").count(), 3, "{text}");
    let not_ready = run(503);
    let text = String::from_utf8_lossy(&not_ready.stdout);
    assert!(!not_ready.status.success(), "{text}");
    assert!(text.contains("NOT READY: http://127.0.0.1:"), "{text}");
}

/// `promtool`, from the Debian `prometheus` package (`scripts/install-deps --tests`).
fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs (Debian package prometheus, see scripts/install-deps --tests)")
}

#[test]
fn every_alert_fires_in_its_test_and_stays_quiet_in_another() {
    let rules = promtool(&["check", "rules", "files/alerts.yaml"], &chart_dir());
    let stdout = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rules.stderr)
    );
    // Every rule is an alert with a test that expects it to fire, and one where it is quiet
    // (another series in the same test, or an earlier evaluation with no alert).
    let file: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("files/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let tests: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(chart_dir().join("tests/alerts.test.yaml")).unwrap(),
    )
    .unwrap();
    let alerts: BTreeSet<&str> = file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().expect("every rule is an alert"))
        .collect();
    let mut fires = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            if !case["exp_alerts"].as_array().unwrap().is_empty() {
                fires.insert(case["alertname"].as_str().unwrap());
            }
        }
        let series = test["input_series"].as_array().unwrap().len();
        assert!(series >= 2, "{}: a firing and a quiet series", test["name"]);
    }
    assert_eq!(fires, alerts, "every alert has a test where it fires");
    let tested = promtool(
        &["test", "rules", "alerts.test.yaml"],
        &chart_dir().join("tests"),
    );
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
}
