//! Classification and pricing: which billing boundary a flow crosses, and what it costs.
//!
//! The rules (also in the README, "Classification"), for a flow between the local endpoint on
//! the observing node and a remote endpoint:
//! - Remote address multicast (224.0.0.0/4, ff00::/8) or the limited broadcast
//!   (255.255.255.255) -> `MULTICAST`, before every other rule: such packets (IGMP and MLD
//!   reports, mDNS, DHCP) never leave the local network, whoever else the address matches.
//! - Remote is a known place (a pod, node or Service of the cluster, a static host, or a
//!   network rule that names a region/zone), compared field by field, first match wins:
//!   same node -> `INTRA_NODE`; clouds known and different -> `INTER_CLOUD`; regions known and
//!   different -> `INTER_REGION`; zones known -> `INTRA_ZONE` or `INTER_ZONE`; regions known and
//!   equal -> `INTRA_REGION`; otherwise `UNKNOWN`.
//! - A network rule with a `class` -> that class; a network rule without place or class -> `VPC`.
//! - Remote in a cloud provider's published ranges: our cloud unknown -> `INTERNET`; another
//!   cloud -> `INTER_CLOUD`; same cloud and region -> `INTRA_REGION` (the zone of a cloud service
//!   is not published); same cloud, other or global region -> `INTER_REGION`.
//! - Any other private address (RFC 1918, 100.64/10, fc00::/7, link-local) -> `VPC`.
//! - Any other address -> `INTERNET`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Class {
    IntraNode,
    IntraZone,
    InterZone,
    IntraRegion,
    InterRegion,
    InterCloud,
    Vpc,
    Internet,
    Unknown,
    Multicast,
}

impl Class {
    /// Every class, in declaration order: `Class::ALL[class as usize] == class`, so arrays of
    /// `Class::ALL.len()` entries are indexed by `class as usize`.
    pub const ALL: [Class; 10] = [
        Class::IntraNode,
        Class::IntraZone,
        Class::InterZone,
        Class::IntraRegion,
        Class::InterRegion,
        Class::InterCloud,
        Class::Vpc,
        Class::Internet,
        Class::Unknown,
        Class::Multicast,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::IntraNode => "INTRA_NODE",
            Class::IntraZone => "INTRA_ZONE",
            Class::InterZone => "INTER_ZONE",
            Class::IntraRegion => "INTRA_REGION",
            Class::InterRegion => "INTER_REGION",
            Class::InterCloud => "INTER_CLOUD",
            Class::Vpc => "VPC",
            Class::Internet => "INTERNET",
            Class::Unknown => "UNKNOWN",
            Class::Multicast => "MULTICAST",
        }
    }

    /// The class named `name` (as [`name`](Self::name) writes it), e.g. back from a record.
    #[inline]
    pub fn from_name(name: &str) -> Option<Class> {
        Some(match name {
            "INTRA_NODE" => Class::IntraNode,
            "INTRA_ZONE" => Class::IntraZone,
            "INTER_ZONE" => Class::InterZone,
            "INTRA_REGION" => Class::IntraRegion,
            "INTER_REGION" => Class::InterRegion,
            "INTER_CLOUD" => Class::InterCloud,
            "VPC" => Class::Vpc,
            "INTERNET" => Class::Internet,
            "UNKNOWN" => Class::Unknown,
            "MULTICAST" => Class::Multicast,
            _ => return None,
        })
    }
}

/// Whether traffic to `remote` is [`Class::Multicast`]: a multicast group or the limited
/// broadcast address. (A subnet's directed broadcast looks like any host address.)
#[inline]
pub fn is_multicast(remote: IpAddr) -> bool {
    match remote {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    }
}

/// Which way the bytes of a record went, seen from the local endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The local endpoint sent them.
    Out,
    /// The local endpoint received them.
    In,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// Where an endpoint is; an empty field is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place<'a> {
    pub cloud: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
    pub node: &'a str,
}

/// Classifies a flow between two known places.
pub fn between_places(local: &Place, remote: &Place) -> Class {
    let known = |a: &str, b: &str| !a.is_empty() && !b.is_empty();
    if known(local.node, remote.node) && local.node == remote.node {
        Class::IntraNode
    } else if known(local.cloud, remote.cloud) && local.cloud != remote.cloud {
        Class::InterCloud
    } else if known(local.region, remote.region) && local.region != remote.region {
        Class::InterRegion
    } else if known(local.zone, remote.zone) {
        if local.zone == remote.zone {
            Class::IntraZone
        } else {
            Class::InterZone
        }
    } else if known(local.region, remote.region) {
        Class::IntraRegion
    } else {
        Class::Unknown
    }
}

/// Classifies a flow to an address in a cloud provider's published ranges.
pub fn to_cloud_range(local: &Place, cloud: &str, region: &str) -> Class {
    if local.cloud.is_empty() {
        Class::Internet
    } else if local.cloud != cloud {
        Class::InterCloud
    } else if local.region.is_empty() {
        Class::Unknown
    } else if local.region == region {
        Class::IntraRegion
    } else {
        Class::InterRegion
    }
}

/// Price in US dollars per GiB (2^30 bytes, the unit AWS and GCP meter data transfer in),
/// one for each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionalPrice {
    #[serde(default)]
    pub out: f64,
    #[serde(default, rename = "in")]
    pub inbound: f64,
}

impl DirectionalPrice {
    pub fn for_direction(&self, direction: Direction) -> f64 {
        match direction {
            Direction::Out => self.out,
            Direction::In => self.inbound,
        }
    }

    /// Cost of `bytes` in `direction`.
    pub fn cost(&self, direction: Direction, bytes: u64) -> f64 {
        bytes as f64 / GIB * self.for_direction(direction)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(cloud: &'a str, region: &'a str, zone: &'a str, node: &'a str) -> Place<'a> {
        Place {
            cloud,
            region,
            zone,
            node,
        }
    }

    #[test]
    fn every_rule_between_known_places() {
        let local = place("aws", "eu-west-1", "eu-west-1a", "node-a");
        let cases = [
            (
                place("aws", "eu-west-1", "eu-west-1a", "node-a"),
                Class::IntraNode,
            ),
            (place("", "", "", "node-a"), Class::IntraNode),
            (
                place("aws", "eu-west-1", "eu-west-1a", "node-b"),
                Class::IntraZone,
            ),
            (
                place("aws", "eu-west-1", "eu-west-1b", "node-c"),
                Class::InterZone,
            ),
            (place("", "", "eu-west-1b", ""), Class::InterZone),
            (place("aws", "eu-west-1", "", ""), Class::IntraRegion),
            (
                place("aws", "us-east-1", "us-east-1a", "node-x"),
                Class::InterRegion,
            ),
            (
                place("gcp", "europe-west1", "europe-west1-b", ""),
                Class::InterCloud,
            ),
            (place("", "", "", "node-z"), Class::Unknown),
            (place("", "", "", ""), Class::Unknown),
        ];
        for (remote, expected) in cases {
            assert_eq!(between_places(&local, &remote), expected, "{remote:?}");
        }
    }

    #[test]
    fn multicast_and_limited_broadcast_addresses() {
        for address in [
            "224.0.0.22",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "ff02::16",
            "ff02::fb",
            "ff05::1:3",
        ] {
            assert!(is_multicast(address.parse().unwrap()), "{address}");
        }
        for address in [
            "223.255.255.255",
            "240.0.0.1",
            "10.0.0.255",
            "8.8.8.8",
            "fe80::1",
            "fd00::ff",
            "2001:db8::ff00",
        ] {
            assert!(!is_multicast(address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn all_lists_every_class_at_its_index_once() {
        for (index, class) in Class::ALL.iter().enumerate() {
            assert_eq!(*class as usize, index, "{class:?}");
            assert_eq!(Class::from_name(class.name()), Some(*class));
        }
        assert_eq!(Class::from_name("inter_zone"), None);
        let mut names: Vec<_> = Class::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Class::ALL.len());
        let parsed: Class = serde_yaml_ng::from_str("MULTICAST").unwrap();
        assert_eq!(parsed, Class::Multicast);
    }

    #[test]
    fn every_rule_for_cloud_ranges() {
        let local = place("aws", "ap-northeast-2", "ap-northeast-2a", "node-a");
        assert_eq!(
            to_cloud_range(&local, "aws", "ap-northeast-2"),
            Class::IntraRegion
        );
        assert_eq!(
            to_cloud_range(&local, "aws", "us-east-1"),
            Class::InterRegion
        );
        assert_eq!(to_cloud_range(&local, "aws", "GLOBAL"), Class::InterRegion);
        assert_eq!(
            to_cloud_range(&local, "gcp", "africa-south1"),
            Class::InterCloud
        );
        assert_eq!(
            to_cloud_range(&place("", "", "", "n"), "aws", "us-east-1"),
            Class::Internet
        );
        assert_eq!(
            to_cloud_range(&place("aws", "", "", "n"), "aws", "us-east-1"),
            Class::Unknown
        );
    }

    #[test]
    fn a_misspelt_class_or_direction_is_rejected() {
        use crate::prices::PriceOverrides;
        assert!(
            serde_yaml_ng::from_str::<PriceOverrides>("aws:\n  CROSS_ZONE: {out: 1}\n").is_err()
        );
        assert!(
            serde_yaml_ng::from_str::<PriceOverrides>("aws:\n  INTERNET: {egress: 1}\n").is_err()
        );
    }
}
