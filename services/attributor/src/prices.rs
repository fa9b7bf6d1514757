//! The price book: what a GiB costs on each billable boundary, per cloud, by the regions on both
//! sides and, for internet egress, by the destination's country; and what each kind of egress
//! path (NAT gateway, interface endpoint, transit gateway, peering) charges for processing.
//!
//! The defaults are `data/prices.yaml`, built into the binary: the providers' published list
//! prices, each with its source and the date it was read (see that file and the README,
//! "Default prices"). The rules file puts its own rules in front of them:
//!
//! ```yaml
//! price_rules:          # first matching rule wins; these come before the defaults
//!   aws:
//!     - {class: INTER_REGION, from: eu-west-1, to: us-east-1, out: 0.015}
//!     - {path: nat_gateway, out: 0.04, in: 0.04}
//! prices:               # the short form: this class costs this, wherever it goes
//!   aws:
//!     INTERNET: {out: 0.085}
//! ```
//!
//! A rule names a `class` (one or a list) or a `path` kind, and optionally `from` (the local
//! endpoint's region), `to` (the remote endpoint's region) and `country` (the remote address's
//! country); a region may be a group's name (`groups:` in the defaults, e.g. a GCP continent).
//! The first rule of the cloud that matches gives the price; nothing matching is free. Prices
//! are US dollars per GiB (2^30 bytes), per direction: `out` for what the local endpoint sends,
//! `in` for what it receives.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::classify::{Class, DirectionalPrice};

/// The defaults, as shipped.
pub const DEFAULT_PRICES_YAML: &str = include_str!("../data/prices.yaml");

/// The kinds of egress path the rules file can declare (`paths:`), each with a per-GiB
/// processing charge on top of the transfer price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A managed NAT (AWS NAT gateway, GCP Cloud NAT, Azure NAT Gateway): charged per GiB in
    /// both directions.
    NatGateway,
    /// A private endpoint to a service (AWS PrivateLink interface endpoint, GCP Private Service
    /// Connect, Azure Private Link).
    InterfaceEndpoint,
    /// A transit gateway (AWS Transit Gateway, ...): charged on what is sent into it.
    TransitGateway,
    /// A peering link (AWS VPC peering, Azure VNet peering).
    Peering,
}

impl PathKind {
    pub fn name(self) -> &'static str {
        match self {
            PathKind::NatGateway => "nat_gateway",
            PathKind::InterfaceEndpoint => "interface_endpoint",
            PathKind::TransitGateway => "transit_gateway",
            PathKind::Peering => "peering",
        }
    }
}

/// One value or a list, as YAML allows both (`from: eu-west-1`, `from: [a, b]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// A price rule as written, in the defaults or in the rules file's `price_rules`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRule {
    #[serde(default)]
    pub class: Option<OneOrMany<Class>>,
    #[serde(default)]
    pub path: Option<PathKind>,
    #[serde(default)]
    pub from: Option<OneOrMany<String>>,
    #[serde(default)]
    pub to: Option<OneOrMany<String>>,
    #[serde(default)]
    pub country: Option<OneOrMany<String>>,
    #[serde(default)]
    pub out: f64,
    #[serde(default, rename = "in")]
    pub inbound: f64,
    /// Free text kept with the rule (the defaults use it for the source).
    #[serde(default)]
    pub note: Option<String>,
}

/// Where a default came from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PriceSource {
    pub cloud: String,
    pub what: String,
    pub url: String,
    pub read: String,
}

/// The defaults file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    #[serde(default)]
    pub sources: Vec<PriceSource>,
    /// cloud -> group name -> regions.
    #[serde(default)]
    pub groups: HashMap<String, HashMap<String, Vec<String>>>,
    /// cloud -> rules, first match wins.
    #[serde(default)]
    pub rules: HashMap<String, Vec<PriceRule>>,
}

/// Overrides in the short form of the rules file's `prices:`: cloud -> class -> price.
pub type PriceOverrides = HashMap<String, HashMap<Class, DirectionalPrice>>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PriceError {
    #[error("the price rules are invalid: {0}")]
    Parse(String),
    #[error("{cloud} price rule {index} ({rule}) {problem}")]
    Rule {
        cloud: String,
        index: usize,
        rule: String,
        problem: &'static str,
    },
}

/// A set of regions by their number in [`CloudPrices::regions`]; `None` in a rule: any region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RegionSet([u64; 4]);

/// At most this many distinct regions per cloud in the rules (each cloud has under 100).
const MAX_REGIONS: usize = 256;

impl RegionSet {
    #[inline]
    fn contains(&self, region: Option<u16>) -> bool {
        region.is_some_and(|r| self.0[r as usize / 64] & (1 << (r % 64)) != 0)
    }
}

/// A rule made ready for lookups: regions expanded from groups and numbered, countries
/// upper-cased.
#[derive(Clone, Debug, PartialEq)]
struct Compiled {
    path: Option<PathKind>,
    from: Option<RegionSet>,
    to: Option<RegionSet>,
    /// Empty: any.
    countries: Vec<[u8; 2]>,
    price: DirectionalPrice,
}

impl Compiled {
    #[inline]
    fn matches(&self, from: Option<u16>, to: Option<u16>, country: &str) -> bool {
        self.from.is_none_or(|set| set.contains(from))
            && self.to.is_none_or(|set| set.contains(to))
            && (self.countries.is_empty()
                || self
                    .countries
                    .iter()
                    .any(|c| c.as_slice() == country.as_bytes()))
    }
}

/// One cloud's rules, split by what they price so a lookup only reads its own.
#[derive(Clone, Debug, Default, PartialEq)]
struct CloudPrices {
    /// Every region the rules name, numbered.
    regions: rustc_hash::FxHashMap<String, u16>,
    by_class: [Vec<Compiled>; Class::ALL.len()],
    paths: Vec<Compiled>,
}

impl CloudPrices {
    #[inline]
    fn region(&self, name: &str) -> Option<u16> {
        if name.is_empty() {
            return None;
        }
        self.regions.get(name).copied()
    }
}

/// Every cloud's prices, ready for the hot path.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceBook {
    clouds: Vec<(String, CloudPrices)>,
    sources: Vec<PriceSource>,
}

impl Default for PriceBook {
    /// The built-in defaults.
    fn default() -> PriceBook {
        PriceBook::build(&HashMap::new(), &PriceOverrides::new())
            .expect("the built-in prices are valid (checked by the tests)")
    }
}

impl PriceBook {
    /// The defaults with the rules file's `price_rules` (first) and short-form `prices` in
    /// front of them.
    pub fn build(
        price_rules: &HashMap<String, Vec<PriceRule>>,
        overrides: &PriceOverrides,
    ) -> Result<PriceBook, PriceError> {
        let defaults: PriceFile = serde_yaml_ng::from_str(DEFAULT_PRICES_YAML)
            .map_err(|e| PriceError::Parse(format!("data/prices.yaml: {e}")))?;
        PriceBook::from_file(defaults, price_rules, overrides)
    }

    /// `file` as the defaults, for tests and tools.
    pub fn from_file(
        file: PriceFile,
        price_rules: &HashMap<String, Vec<PriceRule>>,
        overrides: &PriceOverrides,
    ) -> Result<PriceBook, PriceError> {
        let mut rules: HashMap<String, Vec<PriceRule>> = HashMap::new();
        for (cloud, list) in price_rules {
            rules
                .entry(cloud.to_ascii_lowercase())
                .or_default()
                .extend(list.iter().cloned());
        }
        for (cloud, classes) in overrides {
            let list = rules.entry(cloud.to_ascii_lowercase()).or_default();
            let mut classes: Vec<_> = classes.iter().collect();
            classes.sort_by_key(|(class, _)| **class as usize);
            for (class, price) in classes {
                list.push(PriceRule {
                    class: Some(OneOrMany::One(*class)),
                    path: None,
                    from: None,
                    to: None,
                    country: None,
                    out: price.out,
                    inbound: price.inbound,
                    note: Some("rules file, prices".into()),
                });
            }
        }
        for (cloud, list) in file.rules {
            rules
                .entry(cloud.to_ascii_lowercase())
                .or_default()
                .extend(list);
        }
        let mut clouds = Vec::new();
        for (cloud, list) in rules {
            let groups = file.groups.get(&cloud);
            let mut prices = CloudPrices::default();
            for (index, rule) in list.into_iter().enumerate() {
                let (classes, compiled) =
                    compile(&cloud, index, rule, groups, &mut prices.regions)?;
                if compiled.path.is_some() {
                    prices.paths.push(compiled);
                } else {
                    for class in classes {
                        prices.by_class[class as usize].push(compiled.clone());
                    }
                }
            }
            clouds.push((cloud, prices));
        }
        clouds.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(PriceBook {
            clouds,
            sources: file.sources,
        })
    }

    /// Where the defaults come from.
    pub fn sources(&self) -> &[PriceSource] {
        &self.sources
    }

    #[inline]
    fn cloud(&self, cloud: &str) -> Option<&CloudPrices> {
        self.clouds
            .iter()
            .find(|(name, _)| name == cloud)
            .map(|(_, prices)| prices)
    }

    /// The transfer price of `class` for traffic of a local endpoint in region `from` (in the
    /// cloud that bills: the cluster's) with a remote endpoint in region `to` (called only when
    /// a rule needs it) or, for a public address, in `country`; empty strings are unknown and
    /// match only rules that leave them open.
    #[inline]
    pub fn transfer<'t>(
        &self,
        cloud: &str,
        class: Class,
        from: &str,
        to: impl FnOnce() -> &'t str,
        country: &str,
    ) -> DirectionalPrice {
        let Some(prices) = self.cloud(cloud) else {
            return DirectionalPrice::default();
        };
        let rules = &prices.by_class[class as usize];
        let (from, to) = match rules.as_slice() {
            // Most classes have no rule, or one for anywhere.
            [] => return DirectionalPrice::default(),
            [only] if only.from.is_none() && only.to.is_none() && only.countries.is_empty() => {
                return only.price;
            }
            _ => (prices.region(from), prices.region(to())),
        };
        rules
            .iter()
            .find(|rule| rule.matches(from, to, country))
            .map_or_else(DirectionalPrice::default, |rule| rule.price)
    }

    /// The processing charge of a path of `kind` in region `from`.
    pub fn processing(&self, cloud: &str, kind: PathKind, from: &str) -> DirectionalPrice {
        self.cloud(cloud)
            .and_then(|prices| {
                let from = prices.region(from);
                prices
                    .paths
                    .iter()
                    .find(|rule| rule.path == Some(kind) && rule.matches(from, None, ""))
            })
            .map_or_else(DirectionalPrice::default, |rule| rule.price)
    }
}

fn compile(
    cloud: &str,
    index: usize,
    rule: PriceRule,
    groups: Option<&HashMap<String, Vec<String>>>,
    numbers: &mut rustc_hash::FxHashMap<String, u16>,
) -> Result<(Vec<Class>, Compiled), PriceError> {
    let problem = |problem| PriceError::Rule {
        cloud: cloud.into(),
        index,
        rule: format!("{rule:?}"),
        problem,
    };
    let classes = rule
        .class
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default();
    match (classes.is_empty(), rule.path.is_some()) {
        (true, false) => return Err(problem("names neither a class nor a path")),
        (false, true) => return Err(problem("names both a class and a path")),
        _ => {}
    }
    if !(rule.out >= 0.0 && rule.inbound >= 0.0 && rule.out.is_finite() && rule.inbound.is_finite())
    {
        return Err(problem("has a negative or non-finite price"));
    }
    let mut regions = |list: Option<OneOrMany<String>>| -> Result<Option<RegionSet>, PriceError> {
        let Some(list) = list else { return Ok(None) };
        let mut names = HashSet::new();
        for name in list.into_vec() {
            expand(&name, groups, &mut names, 0);
        }
        let mut set = RegionSet::default();
        for name in names {
            let next = numbers.len();
            let number = *numbers.entry(name).or_insert(next as u16) as usize;
            if number >= MAX_REGIONS {
                return Err(problem("names more than 256 regions in all"));
            }
            set.0[number / 64] |= 1 << (number % 64);
        }
        Ok(Some(set))
    };
    let mut countries = Vec::new();
    for code in rule
        .country
        .clone()
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
    {
        let code = code.to_ascii_uppercase();
        let bytes: [u8; 2] = code
            .as_bytes()
            .try_into()
            .map_err(|_| problem("has a country that is not a two-letter ISO code"))?;
        countries.push(bytes);
    }
    let compiled = Compiled {
        path: rule.path,
        from: regions(rule.from.clone())?,
        to: regions(rule.to.clone())?,
        countries,
        price: DirectionalPrice {
            out: rule.out,
            inbound: rule.inbound,
        },
    };
    Ok((classes, compiled))
}

/// Adds `name` to `set`, or its members if it is a group (groups may name groups).
fn expand(
    name: &str,
    groups: Option<&HashMap<String, Vec<String>>>,
    set: &mut HashSet<String>,
    depth: usize,
) {
    match groups.and_then(|g| g.get(name)) {
        Some(members) if depth < 8 => {
            for member in members {
                expand(member, groups, set, depth + 1);
            }
        }
        _ => {
            set.insert(name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn book(yaml: &str) -> PriceBook {
        PriceBook::from_file(
            serde_yaml_ng::from_str(yaml).unwrap(),
            &HashMap::new(),
            &PriceOverrides::new(),
        )
        .unwrap()
    }

    const SMALL: &str = r#"
groups:
  gcp:
    europe: [europe-west1, europe-west4]
    northern-america: [us-central1, us-east1]
rules:
  aws:
    - {class: INTER_ZONE, out: 0.01, in: 0.01}
    - {class: INTER_REGION, from: [us-east-1, us-east-2], to: [us-east-1, us-east-2], out: 0.01}
    - {class: INTER_REGION, from: sa-east-1, out: 0.138}
    - {class: INTER_REGION, out: 0.02}
    - {class: [INTERNET, INTER_CLOUD], out: 0.09}
    - {path: nat_gateway, from: ap-southeast-1, out: 0.059, in: 0.059}
    - {path: nat_gateway, out: 0.045, in: 0.045}
  gcp:
    - {class: INTER_REGION, from: europe, to: europe, out: 0.02}
    - {class: INTER_REGION, from: northern-america, to: europe, out: 0.05}
    - {class: INTERNET, country: [CN], out: 0.23}
    - {class: INTERNET, country: AU, out: 0.19}
    - {class: INTERNET, out: 0.12}
"#;

    #[test]
    fn the_first_matching_rule_wins() {
        let book = book(SMALL);
        let out = |cloud, class, from, to, country| {
            book.transfer(cloud, class, from, || to, country)
                .cost(crate::classify::Direction::Out, GIB)
        };
        assert_eq!(
            out("aws", Class::InterRegion, "us-east-1", "us-east-2", ""),
            0.01
        );
        assert_eq!(
            out("aws", Class::InterRegion, "us-east-1", "eu-west-1", ""),
            0.02
        );
        assert_eq!(
            out("aws", Class::InterRegion, "sa-east-1", "us-east-1", ""),
            0.138
        );
        assert_eq!(out("aws", Class::InterRegion, "", "", ""), 0.02);
        assert_eq!(out("aws", Class::InterCloud, "eu-west-1", "", "DE"), 0.09);
        assert_eq!(
            out("aws", Class::IntraZone, "eu-west-1", "eu-west-1", ""),
            0.0
        );
        assert_eq!(
            out(
                "gcp",
                Class::InterRegion,
                "europe-west1",
                "europe-west4",
                ""
            ),
            0.02
        );
        assert_eq!(
            out("gcp", Class::InterRegion, "us-east1", "europe-west4", ""),
            0.05
        );
        assert_eq!(
            out("gcp", Class::InterRegion, "us-east1", "us-central1", ""),
            0.0,
            "no rule for that pair in this small book"
        );
        assert_eq!(out("gcp", Class::Internet, "us-east1", "", "CN"), 0.23);
        assert_eq!(out("gcp", Class::Internet, "us-east1", "", "AU"), 0.19);
        assert_eq!(out("gcp", Class::Internet, "us-east1", "", "DE"), 0.12);
        assert_eq!(out("gcp", Class::Internet, "us-east1", "", ""), 0.12);
        assert_eq!(out("azure", Class::Internet, "westeurope", "", "DE"), 0.0);
        assert_eq!(
            book.transfer("aws", Class::InterZone, "", || "", "")
                .inbound,
            0.01
        );
        assert_eq!(
            book.processing("aws", PathKind::NatGateway, "us-east-1"),
            DirectionalPrice {
                out: 0.045,
                inbound: 0.045
            }
        );
        assert_eq!(
            book.processing("aws", PathKind::NatGateway, "ap-southeast-1")
                .out,
            0.059
        );
        assert_eq!(
            book.processing("aws", PathKind::TransitGateway, "us-east-1"),
            DirectionalPrice::default()
        );
    }

    #[test]
    fn the_rules_file_goes_first() {
        let rules: HashMap<String, Vec<PriceRule>> = serde_yaml_ng::from_str(
            "AWS:\n  - {class: INTER_REGION, from: us-east-1, to: eu-west-1, out: 0.015}\n  - {path: nat_gateway, out: 0.04, in: 0.04}\n",
        )
        .unwrap();
        let overrides: PriceOverrides = serde_yaml_ng::from_str(
            "aws:\n  INTERNET: {out: 0.05}\n  VPC: {out: 0.001, in: 0.001}\n",
        )
        .unwrap();
        let book =
            PriceBook::from_file(serde_yaml_ng::from_str(SMALL).unwrap(), &rules, &overrides)
                .unwrap();
        assert_eq!(
            book.transfer("aws", Class::InterRegion, "us-east-1", || "eu-west-1", "")
                .out,
            0.015
        );
        assert_eq!(
            book.transfer("aws", Class::InterRegion, "us-east-1", || "us-east-2", "")
                .out,
            0.01
        );
        assert_eq!(
            book.transfer("aws", Class::Internet, "us-east-1", || "", "DE")
                .out,
            0.05
        );
        assert_eq!(
            book.transfer("aws", Class::InterCloud, "us-east-1", || "", "DE")
                .out,
            0.09,
            "the short form replaces only the class it names"
        );
        assert_eq!(
            book.transfer("aws", Class::Vpc, "", || "", "").inbound,
            0.001
        );
        assert_eq!(
            book.processing("aws", PathKind::NatGateway, "ap-southeast-1")
                .out,
            0.04
        );
    }

    #[test]
    fn a_broken_rule_is_named() {
        let bad = |yaml: &str| {
            PriceBook::from_file(
                serde_yaml_ng::from_str(yaml).unwrap(),
                &HashMap::new(),
                &PriceOverrides::new(),
            )
            .unwrap_err()
            .to_string()
        };
        assert!(bad("rules:\n  aws:\n    - {out: 1}\n").contains("aws price rule 0"));
        assert!(
            bad("rules:\n  aws:\n    - {class: INTERNET, path: nat_gateway, out: 1}\n")
                .contains("both a class and a path")
        );
        assert!(
            bad("rules:\n  aws:\n    - {class: INTERNET, country: GER, out: 1}\n")
                .contains("two-letter")
        );
        assert!(bad("rules:\n  aws:\n    - {class: INTERNET, out: -1}\n").contains("negative"));
        assert!(
            serde_yaml_ng::from_str::<PriceFile>(
                "rules:\n  aws:\n    - {class: INTERNET, price: 1}\n"
            )
            .is_err()
        );
    }
}
