//! The rules file (`--rules`, YAML): what the user knows that the cluster and the cloud range
//! files do not. Three optional sections:
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
//! prices:              # $/GiB per provider x class x direction, over the defaults
//!   aws:
//!     INTERNET: {out: 0.085}
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::classify::{Class, DirectionalPrice, PriceOverrides};
use crate::inventory::{Owner, OwnerKind};
use crate::prefix::PrefixMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub networks: Vec<NetworkRule>,
    #[serde(default)]
    pub hosts: Vec<StaticHost>,
    #[serde(default)]
    pub prices: PriceOverrides,
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
    pub prices: PriceOverrides,
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
        let mut rules = Rules {
            prices: file.prices,
            ..Rules::default()
        };
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
        assert_eq!(rules.prices["aws"][&Class::Internet].out, 0.085);
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
