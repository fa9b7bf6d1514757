//! `netmeter-attributor explain`: what a user runs when a number looks wrong. One JSON object
//! per address, with the same flags (cloud, region, range files, rules) as the service.

use std::process::Command;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-attributor");

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
    let output = Command::new(BIN)
        .args([
            "explain",
            "--cloud",
            "aws",
            "--region",
            "ap-northeast-2",
            "--cloud-ranges-dir",
        ])
        .arg(netmeter_tests::cloud_ranges_dir())
        .arg("--rules")
        .arg(&rules)
        .args([
            "3.5.140.7",
            "2a05:d07a:a000::1",
            "34.35.1.2",
            "20.33.154.10",
            "10.0.200.10",
            "10.50.0.4",
            "172.20.0.1",
            "203.0.113.9",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let brief = |v: &Value| {
        json!({"ip": v["ip"], "cloud": v["cloud"], "region": v["region"], "service": v["service"],
               "network": v["network"], "host": v["host"], "class": v["class"], "price_out": v["price_out"]})
    };
    let expected = [
        json!({"ip": "3.5.140.7", "cloud": "aws", "region": "ap-northeast-2", "service": "S3", "network": "", "host": "", "class": "INTRA_REGION", "price_out": 0.0}),
        json!({"ip": "2a05:d07a:a000::1", "cloud": "aws", "region": "eu-south-1", "service": "S3", "network": "", "host": "", "class": "INTER_REGION", "price_out": 0.02}),
        json!({"ip": "34.35.1.2", "cloud": "gcp", "region": "africa-south1", "service": "Google Cloud", "network": "", "host": "", "class": "INTER_CLOUD", "price_out": 0.09}),
        json!({"ip": "20.33.154.10", "cloud": "azure", "region": "koreacentral", "service": "AzureStorage", "network": "", "host": "", "class": "INTER_CLOUD", "price_out": 0.09}),
        json!({"ip": "10.0.200.10", "cloud": "", "region": "", "service": "", "network": "nat-gateway", "host": "", "class": "VPC", "price_out": 0.045}),
        json!({"ip": "10.50.0.4", "cloud": "aws", "region": "ap-northeast-2", "service": "", "network": "", "host": "billing-db", "class": "INTRA_REGION", "price_out": 0.0}),
        json!({"ip": "172.20.0.1", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "VPC", "price_out": 0.0}),
        json!({"ip": "203.0.113.9", "cloud": "", "region": "", "service": "", "network": "", "host": "", "class": "INTERNET", "price_out": 0.085}),
    ];
    assert_eq!(lines.iter().map(brief).collect::<Vec<_>>(), expected);
    assert_eq!(lines[0]["prefix"], "3.5.140.0/22");
}

#[test]
fn a_bad_address_or_missing_range_files_exit_2_with_one_line() {
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();
    let out = run(&["explain", "--cloud-ranges-dir", "/nonexistent", "10.0.0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: --cloud-ranges-dir (env NETMETER_CLOUD_RANGES_DIR):"),
        "{stderr}"
    );
    let out = run(&["explain", "10.0.0.300"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("10.0.0.300"));
}
