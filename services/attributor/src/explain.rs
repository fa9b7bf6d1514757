//! `netmeter-attributor explain ADDR...`: how the attributor labels and classifies addresses
//! as the remote end of a flow from this cluster (its `--cloud`/`--region`), with the same
//! cloud ranges (the built-in snapshot, or `--cloud-ranges-dir`) and rules file. The tool to
//! reach for when a number looks wrong. It does not read the Kubernetes inventory: pod
//! addresses show as whatever their range says.

use std::net::IpAddr;
use std::process::ExitCode;

use serde::Serialize;

use crate::classify::{Direction, Place};
use crate::config::ExplainArgs;
use crate::enrich::{Enricher, Inputs, Remote};
use crate::inventory::IpOwnerHistory;

#[derive(Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub ip: IpAddr,
    /// aws, gcp, azure or empty.
    pub cloud: String,
    pub region: String,
    pub zone: String,
    /// Cloud service (S3, AzureStorage, Google Cloud, ...).
    pub service: String,
    /// The published prefix that matched, if a cloud range did.
    pub prefix: String,
    /// Name of the network rule that matched, if any.
    pub network: String,
    /// Name of the static host that matched, if any.
    pub host: String,
    pub class: &'static str,
    /// $/GiB sent to / received from this address.
    pub price_out: f64,
    pub price_in: f64,
}

pub fn explain(enricher: &Enricher, inputs: &Inputs, ip: IpAddr) -> Explanation {
    let cluster = enricher.cluster();
    let local = Place {
        cloud: &cluster.cloud,
        region: &cluster.region,
        zone: "",
        node: "",
    };
    let remote = enricher.remote(inputs, ip, 0, 0);
    let (class, price) = enricher.classify(inputs, &local, &remote);
    let mut e = Explanation {
        ip,
        cloud: String::new(),
        region: String::new(),
        zone: String::new(),
        service: String::new(),
        prefix: String::new(),
        network: String::new(),
        host: String::new(),
        class: class.name(),
        price_out: price.for_direction(Direction::Out),
        price_in: price.for_direction(Direction::In),
    };
    match remote {
        Remote::Owner(owner) => {
            (e.cloud, e.region, e.zone) = (
                owner.cloud.clone(),
                owner.region.clone(),
                owner.zone.clone(),
            );
            e.host = owner.name.clone();
        }
        Remote::Network(rule) => {
            (e.cloud, e.region, e.zone) =
                (rule.cloud.clone(), rule.region.clone(), rule.zone.clone());
            e.network = rule.name.clone();
        }
        Remote::Cloud(label) => {
            e.cloud = label.cloud.name().into();
            e.region = label.region.to_string();
            e.service = label.service.to_string();
            e.prefix = label.prefix.to_string();
        }
        Remote::Multicast | Remote::Private | Remote::Internet => {}
    }
    e
}

pub fn main(args: ExplainArgs) -> ExitCode {
    let settings = args.attribution.validate().unwrap_or_else(|e| e.exit());
    let ranges = crate::cloud::load(args.attribution.cloud_ranges.dir.as_deref())
        .map(|loaded| loaded.table)
        .unwrap_or_else(|e| {
            netmeter_common::ConfigError::invalid(
                "--cloud-ranges-dir",
                "NETMETER_CLOUD_RANGES_DIR",
                e,
            )
            .exit()
        });
    let enricher = Enricher::new(settings.place, settings.rules);
    let history = IpOwnerHistory::new(0);
    let inputs = Inputs {
        history: &history,
        cloud: &ranges,
    };
    for ip in args.addresses {
        let line = serde_json::to_string(&explain(&enricher, &inputs, ip)).expect("serializable");
        println!("{line}");
    }
    ExitCode::SUCCESS
}
