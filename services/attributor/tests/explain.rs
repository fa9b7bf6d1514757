//! `netmeter-attributor explain`: what a user runs when a number looks wrong. One JSON object
//! per address, with the same flags (cloud, region, range files, rules) as the service; on a
//! fresh clone with no flags at all (the built-in cloud range snapshot).

use std::process::{Command, Output};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-attributor");

/// The binary with `args` and none of the attributor's settings from the environment.
fn explain(args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .arg("explain")
        .args(args)
        .env_remove("NETMETER_CLOUD_RANGES_DIR")
        .env_remove("NETMETER_CLOUD_RANGES_REFRESH")
        .env_remove("NETMETER_CLOUD")
        .env_remove("NETMETER_REGION")
        .env_remove("NETMETER_RULES")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn explains_cloud_rule_host_private_and_internet_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "networks:\n  - name: nat-gateway\n    cidrs: [10.0.200.10/32]\n    price: {out: 0.045, in: 0.045}\n\
         hosts:\n  - name: billing-db\n    cidrs: [10.50.0.4/32]\n    cloud: aws\n    region: ap-northeast-2\n    zone: ap-northeast-2c\n\
         prices:\n  aws:\n    INTERNET: {out: 0.085}\n",
    )
    .unwrap();
    // The real files on disk, as a directory of downloads would hold them.
    let ranges = dir.path().join("ranges");
    std::fs::create_dir(&ranges).unwrap();
    netmeter_attributor::cloud::snapshot::write_to(&ranges).unwrap();
    let output = explain(&[
        "--cloud",
        "aws",
        "--region",
        "ap-northeast-2",
        "--cloud-ranges-dir",
        ranges.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "3.5.140.7",
        "2a05:d07a:a000::1",
        "34.35.1.2",
        "20.33.154.10",
        "10.0.200.10",
        "10.50.0.4",
        "172.20.0.1",
        "203.0.113.9",
        "224.0.0.22",
        "ff02::16",
    ]);
    let lines = lines(&output);
    let brief = |v: &Value| {
        json!({"ip": v["ip"], "cloud": v["cloud"], "region": v["region"], "service": v["service"],
               "network": v["network"], "host": v["host"], "class": v["class"], "price_out": v["price_out"]})
    };
    let expected = [
        json!({"ip": "3.5.140.7", "cloud": "aws", "region": "ap-northeast-2", "service": "S3", "network": "", "host": "", "class": "INTRA_REGION", "price_out": 0.0}),
        json!({"ip": "2a05:d07a:a000::1", "cloud": "aws", "region": "eu-south-1", "service": "S3", "network": "", "host": "", "class": "INTER_REGION", "price_out": 0.08}),
        json!({"ip": "34.35.1.2", "cloud": "gcp", "region": "africa-south1", "service": "Google Cloud", "network": "", "host": "", "class": "INTER_CLOUD", "price_out": 0.126}),
        json!({"ip": "20.33.154.10", "cloud": "azure", "region": "koreacentral", "service": "AzureStorage", "network": "", "host": "", "class": "INTER_CLOUD", "price_out": 0.126}),
        json!({"ip": "10.0.200.10", "cloud": "", "region": "", "service": "", "network": "nat-gateway", "host": "", "class": "VPC", "price_out": 0.045}),
        json!({"ip": "10.50.0.4", "cloud": "aws", "region": "ap-northeast-2", "service": "", "network": "", "host": "billing-db", "class": "INTRA_REGION", "price_out": 0.0}),
        json!({"ip": "172.20.0.1", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "VPC", "price_out": 0.0}),
        json!({"ip": "203.0.113.9", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "INTERNET", "price_out": 0.085}),
        json!({"ip": "224.0.0.22", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "MULTICAST", "price_out": 0.0}),
        json!({"ip": "ff02::16", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "MULTICAST", "price_out": 0.0}),
    ];
    assert_eq!(lines.iter().map(brief).collect::<Vec<_>>(), expected);
    assert_eq!(lines[0]["prefix"], "3.5.140.0/22");
    assert_eq!(lines[8]["price_in"], 0.0);
}

#[test]
fn without_any_flag_the_built_in_snapshot_answers() {
    let lines = lines(&explain(&["3.5.140.7", "34.35.1.2", "224.0.0.22"]));
    assert_eq!(
        lines,
        [
            // Where the cluster runs is unknown: any cloud address is internet to it.
            json!({"ip": "3.5.140.7", "cloud": "aws", "region": "ap-northeast-2", "zone": "",
                   "service": "S3", "prefix": "3.5.140.0/22", "network": "", "host": "",
                   "class": "INTERNET", "country": "KR", "asn": 16509,
                   "as_name": "Amazon.com, Inc.", "path": "", "price_out": 0.0, "price_in": 0.0,
                   "transfer_out": 0.0, "transfer_in": 0.0, "processing_out": 0.0,
                   "processing_in": 0.0}),
            json!({"ip": "34.35.1.2", "cloud": "gcp", "region": "africa-south1", "zone": "",
                   "service": "Google Cloud", "prefix": "34.35.0.0/16", "network": "", "host": "",
                   "class": "INTERNET", "country": "ZA", "asn": 396982, "as_name": "Google LLC",
                   "path": "", "price_out": 0.0, "price_in": 0.0, "transfer_out": 0.0,
                   "transfer_in": 0.0, "processing_out": 0.0, "processing_in": 0.0}),
            json!({"ip": "224.0.0.22", "cloud": "", "region": "", "zone": "", "service": "",
                   "prefix": "", "network": "", "host": "", "class": "MULTICAST", "country": "",
                   "asn": 0, "as_name": "", "path": "", "price_out": 0.0, "price_in": 0.0,
                   "transfer_out": 0.0, "transfer_in": 0.0, "processing_out": 0.0,
                   "processing_in": 0.0}),
        ]
    );
}

#[test]
fn a_file_in_the_ranges_directory_overrides_its_provider_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gcp-cloud.json"),
        r#"{"creationTime": "2026-11-30T08:00:00", "prefixes": [
            {"ipv4Prefix": "34.35.0.0/17", "service": "Google Cloud", "scope": "europe-west3"}]}"#,
    )
    .unwrap();
    let output = explain(&[
        "--cloud",
        "gcp",
        "--region",
        "europe-west3",
        "--cloud-ranges-dir",
        dir.path().to_str().unwrap(),
        "34.35.1.2",
        "34.35.200.1",
        "34.1.208.1",
        "3.5.140.7",
    ]);
    let brief: Vec<Value> = lines(&output)
        .iter()
        .map(|v| json!([v["ip"], v["cloud"], v["region"], v["prefix"], v["class"]]))
        .collect();
    assert_eq!(
        brief,
        [
            json!([
                "34.35.1.2",
                "gcp",
                "europe-west3",
                "34.35.0.0/17",
                "INTRA_REGION"
            ]),
            // Outside the new file's prefixes: GCP's snapshot is replaced, not merged.
            json!(["34.35.200.1", "", "", "", "INTERNET"]),
            json!(["34.1.208.1", "", "", "", "INTERNET"]),
            // The other providers still come from the snapshot.
            json!([
                "3.5.140.7",
                "aws",
                "ap-northeast-2",
                "3.5.140.0/22",
                "INTER_CLOUD"
            ]),
        ]
    );
}

#[test]
fn a_bad_address_or_missing_range_files_exit_2_with_one_line() {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env_remove("NETMETER_CLOUD_RANGES_DIR")
            .output()
            .unwrap()
    };
    let out = run(&["explain", "--cloud-ranges-dir", "/nonexistent", "10.0.0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: --cloud-ranges-dir (env NETMETER_CLOUD_RANGES_DIR): /nonexistent is not a \
             directory"
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let out = run(&["explain", "--cloud-ranges-refresh", "6h", "10.0.0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --cloud-ranges-refresh (env NETMETER_CLOUD_RANGES_REFRESH):"),
        "{stderr}"
    );
    let out = run(&["explain", "10.0.0.300"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.300"));
}

#[test]
fn from_a_zone_the_path_both_prices_and_the_destination_show() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "paths:\n  - name: nat-a\n    kind: nat_gateway\n    zones: [us-east-1a]\n    except_services: [S3]\n\
         \x20 - name: nat-b\n    kind: nat_gateway\n    zones: [us-east-1b]\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let brief = |zone: &str, address: &str| {
        let v = &lines(&explain(&[
            "--cloud",
            "aws",
            "--region",
            "us-east-1",
            "--rules",
            rules,
            "--from-zone",
            zone,
            address,
        ]))[0];
        json!({"class": v["class"], "country": v["country"], "asn": v["asn"],
               "as_name": v["as_name"], "path": v["path"], "price_out": v["price_out"],
               "transfer_out": v["transfer_out"], "processing_out": v["processing_out"],
               "processing_in": v["processing_in"]})
    };
    assert_eq!(
        brief("us-east-1a", "5.9.1.10"),
        json!({"class": "INTERNET", "country": "DE", "asn": 24940,
               "as_name": "Hetzner Online GmbH", "path": "nat-a", "price_out": 0.135,
               "transfer_out": 0.09, "processing_out": 0.045, "processing_in": 0.045})
    );
    // S3 from zone a takes the gateway endpoint; from zone b the NAT gateway.
    assert_eq!(
        brief("us-east-1a", "52.216.10.20"),
        json!({"class": "INTRA_REGION", "country": "US", "asn": 16509,
               "as_name": "Amazon.com, Inc.", "path": "", "price_out": 0.0,
               "transfer_out": 0.0, "processing_out": 0.0, "processing_in": 0.0})
    );
    assert_eq!(brief("us-east-1b", "52.216.10.20")["path"], "nat-b");
    assert_eq!(brief("us-east-1b", "52.216.10.20")["processing_in"], 0.045);
    // IPv6: a Hetzner address in Germany.
    let v6 = brief("us-east-1b", "2a01:4f8::1");
    assert_eq!(
        (v6["country"].as_str(), v6["asn"].as_u64()),
        (Some("DE"), Some(24940))
    );
}
