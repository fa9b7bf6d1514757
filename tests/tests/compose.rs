//! No container engine runs here, so docker-compose.yml is checked as far as it can be:
//! it parses, its shape is what the README promises, and every flag and NETMETER_* variable
//! it gives our binaries is one those binaries accept (per their `--help`).

use std::collections::BTreeMap;
use std::process::Command;

use serde_yaml_ng::Value;

fn compose() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docker-compose.yml"
    ))
    .unwrap();
    let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc.apply_merge().unwrap();
    serde_yaml_ng::from_value(doc["services"].clone()).unwrap()
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
        let env: BTreeMap<String, Value> =
            serde_yaml_ng::from_value(service["environment"].clone()).unwrap_or_default();
        for var in env.keys().filter(|k| k.starts_with("NETMETER_")) {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{name}: {binary} reads no {var}"
            );
        }
    }
}
