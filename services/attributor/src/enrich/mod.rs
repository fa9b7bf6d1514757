//! Enrichment: one raw conntrack delta -> up to two flow records, attributed, classified and
//! priced. Pure logic over an inventory snapshot; the Kafka plumbing lives in `pipeline.rs`.
//!
//! The rules (also in the README, "Attribution"):
//! - **NAT**: source = the original tuple's source, destination = the reply tuple's source,
//!   i.e. the real backend after a Service DNAT.
//! - **Owner** of an address: the Kubernetes inventory's as of the delta's interval, else a
//!   static host of the rules file (looked up only when the inventory has none).
//! - **Local endpoint**: the source if its owner is on the observing node, else the destination
//!   if its owner is, else the one that is not a public address (the source when both or neither
//!   are). A static host is on a node if the rules file names that node (`node`: the collector's
//!   `NETMETER_NODE_NAME`). The local endpoint's node is its owner's, else the observing node.
//!   Addresses of the node itself (node processes, hostNetwork pods) are attributed to the node
//!   and flagged `host_network`. `local_initiated`: the local endpoint is the source (the
//!   original tuple's, i.e. it opened the connection). `local_instance_type`: the instance type
//!   of the local endpoint's node as the inventory's node object gives it, else empty.
//! - **Records**: `out` carries what the local endpoint sent, `in` what it received; a direction
//!   with no packets yields no record. Both-local (same node) connections are recorded once,
//!   from the source's side.
//! - **Remote**: a multicast or broadcast address first (`MULTICAST`), then its owner (the
//!   inventory, then static hosts), then network rules, then the cloud ranges, then private
//!   ranges (`VPC`), else `INTERNET`. A public remote (cloud ranges, the internet, a network rule
//!   over public addresses) also gets its country and network ([`crate::geo`]).
//! - **Price** ([`Enricher::price`]): the transfer price of the class from the price book
//!   ([`crate::prices`]: by the local region, the remote's region and country; a network rule's
//!   own price replaces it), plus the processing charge of the first egress path of the rules
//!   file the traffic takes (`path`), kept apart in `processing_cost_usd`.
//! - **Record id**: a v8 UUID from xxh3-128 of (node, collector instance, batch sequence, delta
//!   index, direction): the same raw delta always yields the same ids, on every replica and on
//!   replay; `generation` tells a replay's records from the first pass.

use std::net::IpAddr;
use std::sync::Arc;

use netmeter_proto::{EncodedEndpoints, EndpointView, FlowView, GeoView, protocol_name};

use crate::classify::{self, Class, Direction, DirectionalPrice, Place};
use crate::cloud::{CloudLabel, CloudRanges};
use crate::delta::DeltaBatch;
use crate::geo::{GeoLabel, GeoTable};
use crate::inventory::{IpOwnerHistory, Owner};
use crate::prefix::{PrefixMap, private_ranges};
use crate::rules::{NetworkRule, PathRule, Rules};

/// Where the cluster runs, for endpoints whose node does not say (`--cloud`, `--region`).
#[derive(Clone, Debug, Default)]
pub struct ClusterPlace {
    pub cluster: String,
    pub cloud: String,
    pub region: String,
}

/// Everything enrichment needs besides the inventory and the cloud ranges.
pub struct Enricher {
    place: ClusterPlace,
    rules: Rules,
    private: PrefixMap<()>,
    geo: Arc<GeoTable>,
}

/// What traffic between a local place and a labelled remote costs per GiB, and the priced path
/// it takes, if any.
#[derive(Clone, Copy, Debug)]
pub struct Pricing<'a> {
    pub class: Class,
    /// The transfer price of `class` (a network rule's own price replaces it).
    pub transfer: DirectionalPrice,
    pub path: Option<&'a PathRule>,
    /// The path's processing charge, on top of `transfer`; zero without a path.
    pub processing: DirectionalPrice,
}

/// The inventory and cloud ranges as of one batch (snapshots; they change while we run).
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub history: &'a IpOwnerHistory,
    pub cloud: &'a CloudRanges,
}

/// What one batch yielded: the records, and their bytes by class and direction (for the
/// pipeline's metrics, so the hot path never maps class names back).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Enriched {
    pub records: usize,
    /// `[Class as usize][Direction as usize]`.
    pub bytes: [[u64; 2]; Class::ALL.len()],
}

/// How one remote address was labelled.
#[derive(Clone, Copy, Debug)]
pub enum Remote<'a> {
    /// A multicast group or the limited broadcast address: never leaves the network.
    Multicast,
    /// A pod, node, Service or endpoint of the cluster, or a static host.
    Owner(&'a Owner),
    Network(&'a NetworkRule),
    Cloud(&'a CloudLabel),
    Private,
    Internet,
}

impl Enricher {
    /// With the built-in country and network tables.
    pub fn new(place: ClusterPlace, rules: Rules) -> Enricher {
        Enricher::with_geo(place, rules, GeoTable::builtin())
    }

    pub fn with_geo(place: ClusterPlace, rules: Rules, geo: Arc<GeoTable>) -> Enricher {
        Enricher {
            place,
            rules,
            private: private_ranges(),
            geo,
        }
    }

    pub fn cluster(&self) -> &ClusterPlace {
        &self.place
    }

    /// Labels `ip` as the remote end of a flow during `[start, end)`.
    pub fn remote<'a>(
        &'a self,
        inputs: &Inputs<'a>,
        ip: IpAddr,
        start_ms: u64,
        end_ms: u64,
    ) -> Remote<'a> {
        let owner = self.owner_of(inputs.history, ip, start_ms, end_ms);
        self.label(inputs, ip, owner)
    }

    /// Who held `ip` during `[start, end)`: the inventory's owner, else a static host. The
    /// static hosts are only searched when the inventory has no owner.
    #[inline]
    fn owner_of<'a>(
        &'a self,
        history: &'a IpOwnerHistory,
        ip: IpAddr,
        start_ms: u64,
        end_ms: u64,
    ) -> Option<&'a Arc<Owner>> {
        history
            .owner_at(ip, start_ms, end_ms)
            .or_else(|| self.rules.hosts.lookup(ip).map(|(_, host)| host))
    }

    /// Labels a remote address whose owner (see [`owner_of`](Self::owner_of)) was looked up
    /// already: multicast, its owner, network rules, cloud ranges, private ranges, the
    /// internet.
    #[inline(always)] // once per delta; measured: LLVM does not inline it by itself
    fn label<'a>(
        &'a self,
        inputs: &Inputs<'a>,
        ip: IpAddr,
        owner: Option<&'a Arc<Owner>>,
    ) -> Remote<'a> {
        if classify::is_multicast(ip) {
            Remote::Multicast
        } else if let Some(owner) = owner {
            Remote::Owner(owner)
        } else if let Some((_, rule)) = self.rules.networks.lookup(ip) {
            Remote::Network(rule)
        } else if let Some(label) = inputs.cloud.lookup(ip) {
            Remote::Cloud(label)
        } else if self.private.lookup(ip).is_some() {
            Remote::Private
        } else {
            Remote::Internet
        }
    }

    /// The place of an inventory owner, with blanks filled from its node, then (for cluster
    /// members) from the cluster's cloud and region.
    fn place_of<'a>(&'a self, inputs: &Inputs<'a>, owner: &'a Owner) -> Place<'a> {
        if !(owner.cloud.is_empty() || owner.region.is_empty() || owner.zone.is_empty()) {
            // The common case: a pod from the Kubernetes index carries its node's place.
            return Place {
                cloud: &owner.cloud,
                region: &owner.region,
                zone: &owner.zone,
                node: &owner.node,
            };
        }
        let node = inputs.history.node(&owner.node);
        let pick = |own: &'a str, from_node: fn(&'a Owner) -> &'a str, default: &'a str| {
            if !own.is_empty() {
                own
            } else if let Some(node) = node.filter(|n| !from_node(n).is_empty()) {
                from_node(node)
            } else if owner.kind != crate::inventory::OwnerKind::Static {
                default
            } else {
                ""
            }
        };
        Place {
            cloud: pick(&owner.cloud, |n| &n.cloud, &self.place.cloud),
            region: pick(&owner.region, |n| &n.region, &self.place.region),
            zone: pick(&owner.zone, |n| &n.zone, ""),
            node: &owner.node,
        }
    }

    /// Country and network of a remote public address (cloud ranges, the internet, a network
    /// rule over public addresses); empty for everything else.
    #[inline]
    pub fn geo(&self, remote: &Remote, ip: IpAddr) -> GeoLabel<'_> {
        if self.is_public_remote(remote, ip) {
            self.geo.lookup(ip)
        } else {
            GeoLabel::default()
        }
    }

    /// Whether a labelled remote is a public address outside the cluster: a cloud range, the
    /// internet, or a network rule over public addresses. What gets a country and what a NAT
    /// gateway carries.
    #[inline]
    fn is_public_remote(&self, remote: &Remote, ip: IpAddr) -> bool {
        match remote {
            Remote::Cloud(_) | Remote::Internet => true,
            Remote::Network(_) => self.is_public(ip),
            Remote::Multicast | Remote::Owner(_) | Remote::Private => false,
        }
    }

    /// Classifies and prices traffic between a local endpoint (its place and address) and a
    /// labelled remote (its address and, for a public one, its country).
    pub fn price<'a>(
        &'a self,
        inputs: &Inputs<'a>,
        local: &Place,
        local_ip: IpAddr,
        remote: &Remote<'a>,
        remote_ip: IpAddr,
        country: &str,
    ) -> Pricing<'a> {
        let class = self.classify(inputs, local, remote);
        let transfer = match remote {
            Remote::Network(NetworkRule {
                price: Some(price), ..
            }) => *price,
            // The remote's region only when a rule asks (an owner's takes a lookup).
            _ => self.rules.prices.transfer(
                local.cloud,
                class,
                local.region,
                || match remote {
                    Remote::Owner(owner) => self.place_of(inputs, owner).region,
                    Remote::Network(rule) => &rule.region,
                    Remote::Cloud(label) => &label.region,
                    Remote::Multicast | Remote::Private | Remote::Internet => "",
                },
                country,
            ),
        };
        let path = self.path(local, local_ip, remote, remote_ip);
        let processing = path.map_or_else(DirectionalPrice::default, |path| {
            path.price.unwrap_or_else(|| {
                self.rules
                    .prices
                    .processing(local.cloud, path.kind, local.region)
            })
        });
        Pricing {
            class,
            transfer,
            path,
            processing,
        }
    }

    /// The first path of the rules file that traffic from `local` to `remote` takes.
    #[inline]
    fn path<'a>(
        &'a self,
        local: &Place,
        local_ip: IpAddr,
        remote: &Remote,
        remote_ip: IpAddr,
    ) -> Option<&'a PathRule> {
        if self.rules.paths.is_empty() {
            return None;
        }
        if matches!(remote, Remote::Multicast) {
            return None;
        }
        let public = self.is_public_remote(remote, remote_ip);
        let service = match remote {
            Remote::Cloud(label) => label.service.as_str(),
            _ => "",
        };
        let named = |list: &[String]| {
            !service.is_empty() && list.iter().any(|s| s.eq_ignore_ascii_case(service))
        };
        // The destination first: most traffic stays in the cluster and takes no path.
        self.rules.paths.iter().find(|path| {
            ((public && path.carries_public())
                || named(&path.services)
                || path.cidrs.iter().any(|net| net.contains(&remote_ip)))
                && !named(&path.except_services)
                && (path.zones.is_empty() || path.zones.iter().any(|zone| zone == local.zone))
                && (path.subnets.is_empty()
                    || path.subnets.iter().any(|net| net.contains(&local_ip)))
        })
    }

    /// Classifies traffic between a local place and a labelled remote.
    pub fn classify(&self, inputs: &Inputs, local: &Place, remote: &Remote) -> Class {
        match remote {
            Remote::Multicast => Class::Multicast,
            Remote::Owner(owner) => classify::between_places(local, &self.place_of(inputs, owner)),
            Remote::Network(rule) => match rule.class {
                Some(class) => class,
                None if rule.region.is_empty() && rule.zone.is_empty() && rule.cloud.is_empty() => {
                    Class::Vpc
                }
                None => classify::between_places(
                    local,
                    &Place {
                        cloud: &rule.cloud,
                        region: &rule.region,
                        zone: &rule.zone,
                        node: "",
                    },
                ),
            },
            Remote::Cloud(label) => {
                classify::to_cloud_range(local, label.cloud.name(), &label.region)
            }
            Remote::Private => Class::Vpc,
            Remote::Internet => Class::Internet,
        }
    }

    /// Enriches every delta of `batch` (converted and checked at the edge:
    /// [`DeltaBatch::from_wire`]), calling `emit` for each record with the record's endpoint
    /// fields already encoded (shared by a connection's `out` and `in` records).
    pub fn enrich(
        &self,
        batch: &DeltaBatch,
        inputs: &Inputs,
        generation: u64,
        mut emit: impl FnMut(&FlowView, &EncodedEndpoints),
    ) -> Enriched {
        let (start, end) = (batch.interval_start_unix_ms, batch.interval_end_unix_ms);
        let node_name = batch.node_name;
        let observing_node = inputs.history.node(node_name);
        let node_place = Place {
            node: node_name,
            ..observing_node.map_or(Place::default(), |n| Place {
                cloud: &n.cloud,
                region: &n.region,
                zone: &n.zone,
                node: "",
            })
        };
        let node_place = Place {
            cloud: or(node_place.cloud, &self.place.cloud),
            region: or(node_place.region, &self.place.region),
            ..node_place
        };
        let node_instance_type = observing_node.map_or("", |n| n.instance_type.as_str());
        let interval_seconds = (end.saturating_sub(start) + 500) / 1000;
        let id_prefix = IdPrefix::new(batch);
        let mut totals = Enriched::default();
        let mut encoded = EncodedEndpoints::default();
        for (index, delta) in batch.deltas.iter().enumerate() {
            let (src, dst) = (delta.src, delta.dst);
            let src_owner = self.owner_of(inputs.history, src, start, end);
            let dst_owner = self.owner_of(inputs.history, dst, start, end);
            let on_node = |o: Option<&Arc<Owner>>| {
                o.is_some_and(|o| o.node == node_name && !node_name.is_empty())
            };
            let local_is_src = if on_node(src_owner) {
                true
            } else if on_node(dst_owner) {
                false
            } else {
                !self.is_public(src) || self.is_public(dst)
            };
            let (local_ip, remote_ip, local_owner, remote_owner) = if local_is_src {
                (src, dst, src_owner, dst_owner)
            } else {
                (dst, src, dst_owner, src_owner)
            };
            let (local_port, remote_port) = if local_is_src {
                (delta.src_port, delta.dst_port)
            } else {
                (delta.dst_port, delta.src_port)
            };
            let local_place = match local_owner {
                Some(owner) => {
                    let place = self.place_of(inputs, owner);
                    // A static host without a `node` (or a Service address): the local
                    // endpoint is where it was observed.
                    Place {
                        node: or(place.node, node_name),
                        ..place
                    }
                }
                None => node_place,
            };
            // Almost every local endpoint is on the observing node: a string comparison, and a
            // lookup only for the others (a pod elsewhere that talks to a public address).
            let local_instance_type = if local_place.node == node_name {
                node_instance_type
            } else {
                inputs
                    .history
                    .node(local_place.node)
                    .map_or("", |n| n.instance_type.as_str())
            };
            let remote = self.label(inputs, remote_ip, remote_owner);
            let geo = self.geo(&remote, remote_ip);
            let pricing = self.price(
                inputs,
                &local_place,
                local_ip,
                &remote,
                remote_ip,
                geo.country,
            );
            let class = pricing.class;
            let mut local =
                endpoint_view(local_owner.map(|o| &**o), local_place, local_ip, local_port);
            // Unknown to the inventory but an address of the node itself, says the collector.
            local.host_network |= local_owner.is_none() && delta.node_endpoint;
            let (remote_view, service, network) =
                remote_view(self, inputs, &remote, remote_ip, remote_port);
            let (sent, received) = if local_is_src {
                (
                    (delta.orig_bytes, delta.orig_packets),
                    (delta.reply_bytes, delta.reply_packets),
                )
            } else {
                (
                    (delta.reply_bytes, delta.reply_packets),
                    (delta.orig_bytes, delta.orig_packets),
                )
            };
            encoded.encode(&local, &remote_view);
            for (direction, (bytes, packets)) in [(Direction::Out, sent), (Direction::In, received)]
            {
                if packets == 0 && bytes == 0 {
                    continue;
                }
                let mut id = RecordId::default();
                let processing_cost_usd = pricing.processing.cost(direction, bytes);
                let view = FlowView {
                    record_id: id.format(&id_prefix, index as u32, direction),
                    generation,
                    interval_start_unix_ms: start,
                    interval_seconds: interval_seconds as u32,
                    cluster: &self.place.cluster,
                    direction: direction.name(),
                    protocol: protocol_name(delta.protocol),
                    class: class.name(),
                    path: pricing.path.map_or("", |path| &path.name),
                    local,
                    local_initiated: local_is_src,
                    local_instance_type,
                    remote: remote_view,
                    remote_service: service,
                    remote_network: network,
                    remote_geo: GeoView {
                        country: geo.country,
                        asn: geo.asn,
                        as_name: geo.as_name,
                    },
                    bytes,
                    packets,
                    cost_usd: pricing.transfer.cost(direction, bytes) + processing_cost_usd,
                    processing_cost_usd,
                };
                emit(&view, &encoded);
                totals.records += 1;
                totals.bytes[class as usize][direction as usize] += bytes;
            }
        }
        totals
    }

    fn is_public(&self, ip: IpAddr) -> bool {
        self.private.lookup(ip).is_none() && !ip.is_loopback() && !ip.is_unspecified()
    }
}

fn or<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() { default } else { value }
}

fn endpoint_view<'a>(
    owner: Option<&'a Owner>,
    place: Place<'a>,
    ip: IpAddr,
    port: u32,
) -> EndpointView<'a> {
    let owned = |f: fn(&'a Owner) -> &'a str| owner.map_or("", f);
    EndpointView {
        cloud: place.cloud,
        region: place.region,
        zone: place.zone,
        node: place.node,
        namespace: owned(|o| &o.namespace),
        pod: owned(|o| o.pod()),
        workload_kind: owned(|o| &o.workload_kind),
        workload_name: owned(|o| &o.workload_name),
        app: owned(|o| &o.app),
        ip,
        port,
        host_network: owner.is_some_and(|o| o.host_network),
    }
}

/// The remote endpoint's fields, its cloud service and its network rule name.
fn remote_view<'a>(
    enricher: &'a Enricher,
    inputs: &Inputs<'a>,
    remote: &Remote<'a>,
    ip: IpAddr,
    port: u32,
) -> (EndpointView<'a>, &'a str, &'a str) {
    let bare = |cloud, region, zone| {
        endpoint_view(
            None,
            Place {
                cloud,
                region,
                zone,
                node: "",
            },
            ip,
            port,
        )
    };
    match *remote {
        Remote::Owner(owner) => (
            endpoint_view(Some(owner), enricher.place_of(inputs, owner), ip, port),
            "",
            "",
        ),
        Remote::Network(rule) => (bare(&rule.cloud, &rule.region, &rule.zone), "", &rule.name),
        Remote::Cloud(label) => (
            bare(label.cloud.name(), &label.region, ""),
            &label.service,
            "",
        ),
        Remote::Multicast | Remote::Private | Remote::Internet => (bare("", "", ""), "", ""),
    }
}

/// The part of a record id shared by all records of a batch: a hash of (node, collector
/// instance, sequence), each string preceded by its length so ("ab","c") and ("a","bc") differ.
struct IdPrefix(u64);

impl IdPrefix {
    fn new(batch: &DeltaBatch) -> IdPrefix {
        let mut key = Vec::with_capacity(64);
        for part in [batch.node_name, batch.collector_instance_id] {
            key.extend_from_slice(&(part.len() as u64).to_le_bytes());
            key.extend_from_slice(part.as_bytes());
        }
        key.extend_from_slice(&batch.sequence.to_le_bytes());
        IdPrefix(xxhash_rust::xxh3::xxh3_64(&key))
    }
}

/// A record id, formatted without allocating.
struct RecordId([u8; uuid::fmt::Hyphenated::LENGTH]);

impl Default for RecordId {
    fn default() -> Self {
        RecordId([0; uuid::fmt::Hyphenated::LENGTH])
    }
}

impl RecordId {
    fn format(&mut self, prefix: &IdPrefix, index: u32, direction: Direction) -> &str {
        let mut key = [0u8; 13];
        key[..8].copy_from_slice(&prefix.0.to_le_bytes());
        key[8..12].copy_from_slice(&index.to_le_bytes());
        key[12] = direction as u8;
        let bytes = xxhash_rust::xxh3::xxh3_128(&key).to_le_bytes();
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .encode_lower(&mut self.0)
    }
}

#[cfg(test)]
mod tests;
