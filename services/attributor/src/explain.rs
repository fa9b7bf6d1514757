//! `netmeter-attributor explain ADDR...`: how the attributor labels, classifies and prices
//! addresses as the remote end of a flow from this cluster (its `--cloud`/`--region`), from a
//! node in `--from-zone` with address `--from-ip` (both optional: they choose the egress path),
//! with the same cloud ranges, country and network tables and rules file as the service. The
//! tool to reach for when a number looks wrong. It does not read the Kubernetes inventory: pod
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
    /// Country (ISO 3166-1 alpha-2) and network (AS number and name) of a public address.
    pub country: String,
    pub asn: u32,
    pub as_name: String,
    /// The priced path (rules file, `paths`) traffic to this address takes; empty: none.
    pub path: String,
    /// $/GiB sent to / received from this address in all: transfer plus processing.
    pub price_out: f64,
    pub price_in: f64,
    /// The transfer price of `class`.
    pub transfer_out: f64,
    pub transfer_in: f64,
    /// The processing charge of `path`.
    pub processing_out: f64,
    pub processing_in: f64,
}

/// The local side `explain` prices from.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalSide<'a> {
    pub zone: &'a str,
    pub ip: Option<IpAddr>,
}

pub fn explain(enricher: &Enricher, inputs: &Inputs, from: LocalSide, ip: IpAddr) -> Explanation {
    let cluster = enricher.cluster();
    let local = Place {
        cloud: &cluster.cloud,
        region: &cluster.region,
        zone: from.zone,
        node: "",
    };
    let remote = enricher.remote(inputs, ip, 0, 0);
    let geo = enricher.geo(&remote, ip);
    let local_ip = from
        .ip
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let pricing = enricher.price(inputs, &local, local_ip, &remote, ip, geo.country);
    let (transfer, processing) = (pricing.transfer, pricing.processing);
    let mut e = Explanation {
        ip,
        cloud: String::new(),
        region: String::new(),
        zone: String::new(),
        service: String::new(),
        prefix: String::new(),
        network: String::new(),
        host: String::new(),
        class: pricing.class.name(),
        country: geo.country.into(),
        asn: geo.asn,
        as_name: geo.as_name.into(),
        path: pricing.path.map_or_else(String::new, |p| p.name.clone()),
        price_out: transfer.for_direction(Direction::Out)
            + processing.for_direction(Direction::Out),
        price_in: transfer.for_direction(Direction::In) + processing.for_direction(Direction::In),
        transfer_out: transfer.for_direction(Direction::Out),
        transfer_in: transfer.for_direction(Direction::In),
        processing_out: processing.for_direction(Direction::Out),
        processing_in: processing.for_direction(Direction::In),
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
    let enricher = settings.enricher();
    let history = IpOwnerHistory::new(0);
    let inputs = Inputs {
        history: &history,
        cloud: &ranges,
    };
    for ip in args.addresses {
        let from = LocalSide {
            zone: &args.from_zone,
            ip: args.from_ip,
        };
        let line =
            serde_json::to_string(&explain(&enricher, &inputs, from, ip)).expect("serializable");
        println!("{line}");
    }
    ExitCode::SUCCESS
}
