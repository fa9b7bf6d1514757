//! No container engine runs here, so docker-compose.yml is checked as far as it can be:
//! it parses, its shape is what the README promises, every flag and NETMETER_* variable it
//! gives our binaries is one those binaries accept (per their `--help`) and passes their
//! `--check-config`, and it gives them their settings as the Helm chart does.

use std::collections::BTreeMap;
use std::process::Command;

use clap::CommandFactory;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Container;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn compose_file() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .unwrap();
    let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    doc
}

fn compose() -> BTreeMap<String, Value> {
    serde_yaml_ng::from_value(compose_file()["services"].clone()).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn infrastructure_is_kraft_kafka_and_clickhouse_server() {
    let services = compose();
    let kafka = &services["kafka"];
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    assert_eq!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller"),
        "KRaft mode"
    );
    assert!(
        services["clickhouse"]["image"]
            .as_str()
            .unwrap()
            .starts_with("clickhouse/clickhouse-server:")
    );
    let init = strings(&services["kafka-init"]["command"]).join(" ");
    for topic in netmeter_tests::stack::default_topics() {
        assert!(init.contains(&topic), "kafka-init creates {topic}");
    }
}

#[test]
fn collector_is_privileged_on_the_host_network() {
    let collector = &compose()["collector"];
    assert_eq!(collector["privileged"].as_bool(), Some(true));
    assert_eq!(collector["network_mode"].as_str(), Some("host"));
}

#[test]
fn every_service_command_matches_its_binary() {
    let services = compose();
    let ours: Vec<_> = services
        .iter()
        .filter(|(_, s)| s["build"]["dockerfile"].as_str() == Some("services/Dockerfile"))
        .collect();
    let names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["attributor", "collector", "sink"]);
    let dockerfile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/Dockerfile"
    ))
    .unwrap();

    for (name, service) in ours {
        let command = strings(&service["command"]);
        let binary = &command[0];
        assert_eq!(binary, &format!("netmeter-{name}"));
        assert!(
            dockerfile.contains(&format!("--bin {binary}")),
            "the Dockerfile builds {binary}"
        );
        let help = Command::new(netmeter_tests::workspace_bin(binary).unwrap())
            .arg("--help")
            .output()
            .unwrap();
        assert!(help.status.success());
        let help = String::from_utf8(help.stdout).unwrap();
        for flag in command.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.contains(&format!("{flag} ")),
                "{name}: {binary} has no flag {flag}"
            );
        }
        let env = environment(service);
        for var in env.keys().filter(|k| k.starts_with("NETMETER_")) {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{name}: {binary} reads no {var}"
            );
        }

        // The binary accepts the whole command, with the files compose mounts.
        let files = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = command[1..].to_vec();
        for config in service["configs"].as_sequence().into_iter().flatten() {
            let source = config["source"].as_str().unwrap();
            let target = config["target"].as_str().unwrap();
            let local = files.path().join(source);
            let content = compose_file()["configs"][source]["content"].clone();
            std::fs::write(&local, content.as_str().unwrap()).unwrap();
            for arg in &mut args {
                *arg = arg.replace(target, local.to_str().unwrap());
            }
        }
        let check = Command::new(netmeter_tests::workspace_bin(binary).unwrap())
            .arg("--check-config")
            .args(&args)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    serde_yaml_ng::from_value(service["environment"].clone()).unwrap_or_default()
}

/// A setting as a service receives it, named by its NETMETER_* variable.
#[derive(Debug, PartialEq)]
enum Setting {
    Flag(String),
    Variable(Option<String>),
}

/// The settings in `args` (`--flag value`, `--flag=value`, `--switch`), by their variables.
fn flag_settings(command: &clap::Command, args: &[String]) -> BTreeMap<String, Setting> {
    let mut settings = BTreeMap::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            continue;
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag, None),
        };
        let spec = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .unwrap_or_else(|| panic!("{}: no flag --{flag}", command.get_name()));
        let value = inline.unwrap_or_else(|| match spec.get_action().takes_values() {
            true => args.next().unwrap().clone(),
            false => "true".to_string(),
        });
        let variable = spec.get_env().unwrap().to_string_lossy().into_owned();
        settings.insert(variable, Setting::Flag(value));
    }
    settings
}

/// The main container of each of our workloads in the chart rendered with its defaults.
fn chart_containers() -> BTreeMap<String, Container> {
    let helm = netmeter_tests::install::require(&netmeter_tests::install::helm_bin())
        .unwrap_or_else(|e| panic!("{e:#}"));
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/netmeter");
    let output = Command::new(helm)
        .args(["template", "netmeter", chart])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut containers = BTreeMap::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let object = Value::deserialize(document).unwrap();
        let json = serde_json::to_value(&object).unwrap();
        let template = match object["kind"].as_str() {
            Some("DaemonSet") => {
                serde_json::from_value::<DaemonSet>(json)
                    .unwrap()
                    .spec
                    .template
            }
            Some("Deployment") => {
                serde_json::from_value::<Deployment>(json)
                    .unwrap()
                    .spec
                    .template
            }
            _ => continue,
        };
        let container = template.spec.unwrap().containers.remove(0);
        containers.insert(container.name.clone(), container);
    }
    containers
}

#[test]
fn compose_gives_settings_as_the_chart_does() {
    // Present in both, with the same value (or the same port, for the listen address).
    const SHARED: &[(&str, &[&str], &[&str])] = &[
        (
            "collector",
            &[
                "NETMETER_NODE_NAME",
                "NETMETER_KAFKA_BROKERS",
                "NETMETER_INTERVAL",
            ],
            &["NETMETER_STATE_DIR", "NETMETER_HTTP_ADDR"],
        ),
        (
            "attributor",
            &["NETMETER_CLUSTER", "NETMETER_KAFKA_BROKERS"],
            &["NETMETER_GROUP_ID", "NETMETER_RULES", "NETMETER_HTTP_ADDR"],
        ),
        (
            "sink",
            &["NETMETER_KAFKA_BROKERS", "NETMETER_CLICKHOUSE_URL"],
            &[
                "NETMETER_GROUP_ID",
                "NETMETER_CLICKHOUSE_DATABASE",
                "NETMETER_HTTP_ADDR",
            ],
        ),
    ];
    let services = compose();
    let chart = chart_containers();
    for (name, present, equal) in SHARED {
        let command = match *name {
            "collector" => netmeter_collector::Args::command(),
            "attributor" => netmeter_attributor::Args::command(),
            _ => netmeter_sink::Args::command(),
        };
        let service = &services[*name];
        let mut ours = flag_settings(&command, &strings(&service["command"])[1..]);
        for (variable, value) in environment(service) {
            ours.insert(variable, Setting::Variable(Some(value)));
        }
        let container = &chart[*name];
        let mut theirs = flag_settings(&command, container.args.as_deref().unwrap_or_default());
        for variable in container.env.iter().flatten() {
            theirs.insert(
                variable.name.clone(),
                Setting::Variable(variable.value.clone()),
            );
        }

        for (variable, setting) in &ours {
            let Some(chart_setting) = theirs.get(variable) else {
                continue;
            };
            assert_eq!(
                matches!(setting, Setting::Flag(_)),
                matches!(chart_setting, Setting::Flag(_)),
                "{name}: {variable} is {setting:?} in compose but {chart_setting:?} in the chart"
            );
        }
        for variable in present.iter().chain(equal.iter()) {
            assert!(
                ours.contains_key(*variable),
                "{name}: compose sets no {variable}"
            );
            assert!(
                theirs.contains_key(*variable),
                "{name}: the chart sets no {variable}"
            );
        }
        for variable in *equal {
            let value = |setting: &Setting| match setting {
                Setting::Flag(v) | Setting::Variable(Some(v)) => v.clone(),
                Setting::Variable(None) => panic!("{name}: {variable} from a reference"),
            };
            let (compose_value, chart_value) = (value(&ours[*variable]), value(&theirs[*variable]));
            if *variable == "NETMETER_HTTP_ADDR" {
                let port = |address: &str| address.rsplit(':').next().unwrap().to_string();
                assert_eq!(port(&compose_value), port(&chart_value), "{name}: port");
            } else {
                assert_eq!(compose_value, chart_value, "{name}: {variable}");
            }
        }
    }
}
