//! The rules file (`--rules`, YAML): what the user knows that the cluster and the cloud range
//! files do not. Five optional sections:
//!
//! ```yaml
//! networks:            # named CIDRs outside the cluster; they take precedence over cloud ranges
//!   - name: nat-gateway-eu-west-1a
//!     cidrs: [10.0.200.10/32]
//!     zone: eu-west-1a          # optional: region, zone, cloud place the network
//!     class: VPC                # optional: forces the class
//!     price: {out: 0.045, in: 0.045}   # optional $/GiB, replaces the class price
//! hosts:               # static inventory: hosts outside Kubernetes, attributed like pods
//!   - name: billing-db
//!     cidrs: [10.0.50.7/32]
//!     cloud: aws
//!     region: eu-west-1
//!     zone: eu-west-1b
//!     node: billing-db-vm       # optional: the machine whose collector observes it
//!     namespace: billing        # optional, as are workload_kind, workload_name, labels
//!     labels: {app: postgres}
//! paths:               # priced egress paths: a processing charge on top of the transfer
//!   - name: nat-us-east-1a
//!     kind: nat_gateway         # nat_gateway, interface_endpoint, transit_gateway, peering
//!     zones: [us-east-1a]       # optional: local endpoints in these zones take it
//!     subnets: [10.0.0.0/19]    # optional: local endpoints with an address in these subnets
//!     # what goes through it: every public address (the default of a nat_gateway), cloud
//!     # services by name, and/or destination CIDRs (a peer VPC, an endpoint's addresses)
//!     public: true
//!     services: []
//!     cidrs: []
//!     except_services: [S3, DYNAMODB]   # gateway endpoints: these bypass it, free
//!     price: {out: 0.045, in: 0.045}    # optional $/GiB; the price book's for its kind otherwise
//! price_rules:         # rules in front of the default price book (see `prices.rs`)
//!   aws:
//!     - {class: INTER_REGION, from: us-east-1, to: eu-west-1, out: 0.02}
//! prices:              # short form: $/GiB per provider x class x direction, over the defaults
//!   aws:
//!     INTERNET: {out: 0.085}
//! ```
//!
//! The first path (in file order) whose local side and destination match is the one a flow
//! takes; `except_services` is checked first.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::classify::{Class, DirectionalPrice};
use crate::inventory::{Owner, OwnerKind};
use crate::prefix::PrefixMap;
use crate::prices::PriceBook;
use crate::prices::{PathKind, PriceOverrides, PriceRule};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub networks: Vec<NetworkRule>,
    #[serde(default)]
    pub hosts: Vec<StaticHost>,
    #[serde(default)]
    pub paths: Vec<PathRule>,
    #[serde(default)]
    pub price_rules: HashMap<String, Vec<PriceRule>>,
    #[serde(default)]
    pub prices: PriceOverrides,
}

/// A priced egress path (NAT gateway, interface endpoint, transit gateway, peering).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub name: String,
    pub kind: PathKind,
    /// Local endpoints in these zones take the path; empty: any zone.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Local endpoints with an address in these subnets take it; empty: any address.
    #[serde(default)]
    pub subnets: Vec<IpNet>,
    /// Every public address goes through it (cloud ranges and the internet). Defaults to true
    /// for a `nat_gateway` that lists no `services` and no `cidrs`, else false.
    #[serde(default)]
    pub public: Option<bool>,
    /// Cloud services (as the range files name them, e.g. S3, any case) reached through it.
    #[serde(default)]
    pub services: Vec<String>,
    /// Destination addresses reached through it.
    #[serde(default)]
    pub cidrs: Vec<IpNet>,
    /// Cloud services that bypass it (gateway endpoints).
    #[serde(default)]
    pub except_services: Vec<String>,
    /// $/GiB processed; the price book's for this kind and region when absent.
    #[serde(default)]
    pub price: Option<DirectionalPrice>,
}

impl PathRule {
    /// Whether public addresses take this path (see [`PathRule::public`]).
    pub fn carries_public(&self) -> bool {
        self.public.unwrap_or(
            self.kind == PathKind::NatGateway && self.services.is_empty() && self.cidrs.is_empty(),
        )
    }
}

/// A named network outside the cluster (VPC, on-prem, NAT gateway, load balancer, peering).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkRule {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    #[serde(default)]
    pub cloud: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub class: Option<Class>,
    #[serde(default)]
    pub price: Option<DirectionalPrice>,
}

/// A host (or range of hosts) outside Kubernetes, attributed like a workload, as either end
/// of a flow.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHost {
    pub name: String,
    pub cidrs: Vec<IpNet>,
    #[serde(default)]
    pub cloud: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    /// The node (machine) whose collector observes this host: its `NETMETER_NODE_NAME`. A
    /// host on the observing node is that node's local endpoint even when it is a
    /// connection's destination; two hosts on one node exchange `INTRA_NODE` traffic.
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub workload_kind: String,
    #[serde(default)]
    pub workload_name: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rules file {path} is invalid: {source}")]
    Parse {
        path: String,
        source: serde_yaml_ng::Error,
    },
    #[error("rules file {path}: {what} {name:?} has no cidrs")]
    NoCidrs {
        path: String,
        what: &'static str,
        name: String,
    },
    #[error("rules file {path}: path {name:?} {problem}")]
    Path {
        path: String,
        name: String,
        problem: &'static str,
    },
    #[error("rules file {path}: {source}")]
    Prices {
        path: String,
        source: crate::prices::PriceError,
    },
    #[error("rules file {path}: {cidr} is listed by both {first:?} and {second:?}")]
    Duplicate {
        path: String,
        cidr: IpNet,
        first: String,
        second: String,
    },
}

/// The rules, indexed for lookup.
#[derive(Debug, Default)]
pub struct Rules {
    pub networks: PrefixMap<Arc<NetworkRule>>,
    pub hosts: PrefixMap<Arc<Owner>>,
    pub paths: Vec<PathRule>,
    pub prices: PriceBook,
}

impl Rules {
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: RulesFile =
            serde_yaml_ng::from_str(&text).map_err(|source| RulesError::Parse {
                path: shown.clone(),
                source,
            })?;
        Rules::build(file, &shown)
    }

    pub fn build(file: RulesFile, path: &str) -> Result<Rules, RulesError> {
        let prices = PriceBook::build(&file.price_rules, &file.prices).map_err(|source| {
            RulesError::Prices {
                path: path.into(),
                source,
            }
        })?;
        let mut rules = Rules {
            prices,
            ..Rules::default()
        };
        for rule in &file.paths {
            let problem = |problem| RulesError::Path {
                path: path.into(),
                name: rule.name.clone(),
                problem,
            };
            if !rule.carries_public() && rule.services.is_empty() && rule.cidrs.is_empty() {
                return Err(problem(
                    "carries nothing: give it `cidrs`, `services` or `public: true`",
                ));
            }
            if rule
                .price
                .is_some_and(|price| !(price.out >= 0.0 && price.inbound >= 0.0))
            {
                return Err(problem("has a negative price"));
            }
        }
        rules.paths = file.paths;
        let mut seen: HashMap<IpNet, String> = HashMap::new();
        let mut claim = |cidr: IpNet, name: &str, what| match seen.insert(cidr.trunc(), name.into())
        {
            Some(first) => Err(RulesError::Duplicate {
                path: path.into(),
                cidr,
                first,
                second: format!("{what} {name}"),
            }),
            None => Ok(()),
        };
        let no_cidrs = |what, name: &str| RulesError::NoCidrs {
            path: path.into(),
            what,
            name: name.into(),
        };
        for rule in file.networks {
            if rule.cidrs.is_empty() {
                return Err(no_cidrs("network", &rule.name));
            }
            let rule = Arc::new(rule);
            for cidr in &rule.cidrs {
                claim(*cidr, &rule.name, "network")?;
                rules.networks.insert(*cidr, rule.clone());
            }
        }
        for host in file.hosts {
            if host.cidrs.is_empty() {
                return Err(no_cidrs("host", &host.name));
            }
            let app = host
                .labels
                .get("app.kubernetes.io/name")
                .or_else(|| host.labels.get("app"))
                .cloned()
                .unwrap_or_default();
            let owner = Arc::new(Owner {
                cloud: host.cloud,
                region: host.region,
                zone: host.zone,
                node: host.node,
                namespace: host.namespace,
                workload_kind: host.workload_kind,
                workload_name: host.workload_name,
                app,
                ..Owner::new(OwnerKind::Static, host.name.clone())
            });
            for cidr in &host.cidrs {
                claim(*cidr, &host.name, "host")?;
                rules.hosts.insert(*cidr, owner.clone());
            }
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
networks:
  - name: nat-gateway
    cidrs: [10.0.200.10/32]
    zone: eu-west-1a
    price: {out: 0.045, in: 0.045}
  - name: on-prem
    cidrs: [192.168.0.0/16, "fd10::/16"]
    class: VPC
hosts:
  - name: billing-db
    cidrs: [10.0.50.7/32]
    cloud: aws
    region: eu-west-1
    zone: eu-west-1b
    node: billing-db-vm
    labels: {app: postgres}
prices:
  aws:
    INTERNET: {out: 0.085}
"#;

    #[test]
    fn the_documented_example_loads() {
        let file: RulesFile = serde_yaml_ng::from_str(EXAMPLE).unwrap();
        let rules = Rules::build(file, "rules.yaml").unwrap();
        let network = |ip: &str| {
            rules
                .networks
                .lookup(ip.parse().unwrap())
                .map(|(_, r)| r.name.clone())
        };
        assert_eq!(network("10.0.200.10").as_deref(), Some("nat-gateway"));
        assert_eq!(network("fd10::1").as_deref(), Some("on-prem"));
        assert_eq!(network("10.0.200.11"), None);
        let (_, db) = rules.hosts.lookup("10.0.50.7".parse().unwrap()).unwrap();
        assert_eq!(
            (
                db.name.as_str(),
                db.zone.as_str(),
                db.node.as_str(),
                db.app.as_str()
            ),
            ("billing-db", "eu-west-1b", "billing-db-vm", "postgres")
        );
        assert_eq!(
            rules
                .prices
                .transfer("aws", Class::Internet, "eu-west-1", || "", "DE")
                .out,
            0.085
        );
    }

    #[test]
    fn mistakes_are_reported_with_the_file_and_the_entry() {
        let err = |text: &str| {
            let file: RulesFile = match serde_yaml_ng::from_str(text) {
                Ok(f) => f,
                Err(e) => return e.to_string(),
            };
            Rules::build(file, "r.yaml").unwrap_err().to_string()
        };
        assert!(
            err("networks:\n  - name: x\n    cidrs: [10.0.0.0/8]\n    colour: red\n")
                .contains("colour")
        );
        let bad_cidr = err("networks:\n  - name: x\n    cidrs: [10.0.0.300/8]\n");
        assert!(
            bad_cidr.contains("networks[0].cidrs[0]") && bad_cidr.contains("line 3"),
            "{bad_cidr}"
        );
        assert_eq!(
            err("networks:\n  - name: x\n    cidrs: []\n"),
            "rules file r.yaml: network \"x\" has no cidrs"
        );
        assert_eq!(
            err(
                "networks:\n  - name: x\n    cidrs: [10.1.0.0/16]\nhosts:\n  - name: y\n    cidrs: [10.1.0.0/16]\n"
            ),
            "rules file r.yaml: 10.1.0.0/16 is listed by both \"x\" and \"host y\""
        );
        let missing = Rules::load(Path::new("/nonexistent/rules.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read rules file /nonexistent/rules.yaml"),
            "{missing}"
        );
    }
}
