//! [`FlowView`]: a flow record that borrows its strings, encoded straight to the wire.
//!
//! The attributor writes millions of records per second, and most of their strings (zone,
//! namespace, workload, ...) are shared by many records. Building an owned [`flows::Flow`] per
//! record would allocate ~25 strings each time; a view encodes from borrowed `&str` instead,
//! producing exactly the bytes prost would (checked by the tests below).

use std::net::IpAddr;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::flows;

/// One endpoint of a flow (the local one on the observing node, or the remote one).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EndpointView<'a> {
    pub cloud: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
    pub node: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub workload_kind: &'a str,
    pub workload_name: &'a str,
    pub app: &'a str,
    pub ip: IpAddr,
    pub port: u32,
    pub host_network: bool,
}

/// A flow record; field meanings are documented in `flow.proto`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowView<'a> {
    pub record_id: &'a str,
    pub generation: u64,
    pub interval_start_unix_ms: u64,
    pub interval_seconds: u32,
    pub cluster: &'a str,
    pub direction: &'a str,
    pub protocol: &'a str,
    pub class: &'a str,
    pub local: EndpointView<'a>,
    /// The local endpoint opened the connection (it is the original tuple's source).
    pub local_initiated: bool,
    /// The instance type of the local endpoint's node; empty when unknown.
    pub local_instance_type: &'a str,
    pub remote: EndpointView<'a>,
    pub remote_service: &'a str,
    pub remote_network: &'a str,
    pub bytes: u64,
    pub packets: u64,
    pub cost_usd: f64,
}

/// Field numbers of an endpoint block (`local_*` start at 10, `remote_*` at 30).
const LOCAL_BASE: u32 = 10;
const REMOTE_BASE: u32 = 30;
/// The local fields that are not part of an [`EndpointView`], after the local block (10-21).
const LOCAL_INITIATED: u32 = 22;
const LOCAL_INSTANCE_TYPE: u32 = 23;

impl<'a> FlowView<'a> {
    /// Appends the record prefixed with its varint length (ClickHouse `Protobuf` framing),
    /// byte-for-byte what [`crate::encode_flow`] writes for the equivalent [`flows::Flow`].
    pub fn encode_length_delimited(&self, out: &mut Vec<u8>) {
        self.encode_with(None, out)
    }

    /// [`encode_length_delimited`](Self::encode_length_delimited) with the endpoint fields
    /// already encoded (by [`EncodedEndpoints::encode`] from this view's `local` and `remote`):
    /// the `out` and `in` records of a connection share them, so they are encoded once.
    pub fn encode_length_delimited_using(&self, endpoints: &EncodedEndpoints, out: &mut Vec<u8>) {
        self.encode_with(Some(endpoints), out)
    }

    fn encode_with(&self, endpoints: Option<&EncodedEndpoints>, out: &mut Vec<u8>) {
        // Records are a few hundred bytes, so the length takes 2 bytes: reserve them, write the
        // body, then fill them in (shifting the body only when the guess was wrong).
        out.reserve(512);
        let prefix_at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.encode_fields(endpoints, out);
        let len = out.len() - prefix_at - 2;
        if (128..16_384).contains(&len) {
            out[prefix_at] = (len as u8 & 0x7f) | 0x80;
            out[prefix_at + 1] = (len >> 7) as u8;
        } else {
            let mut prefix = Vec::with_capacity(10);
            prost::encoding::encode_varint(len as u64, &mut prefix);
            out.splice(prefix_at..prefix_at + 2, prefix);
        }
    }

    fn encode_fields(&self, endpoints: Option<&EncodedEndpoints>, out: &mut Vec<u8>) {
        put_str(1, self.record_id, out);
        put_u64(2, self.generation, out);
        put_u64(3, self.interval_start_unix_ms, out);
        if self.interval_seconds != 0 {
            put_varint_field(4, u64::from(self.interval_seconds), out);
        }
        put_str(5, self.cluster, out);
        put_str(6, self.direction, out);
        put_str(7, self.protocol, out);
        put_str(8, self.class, out);
        // Field order as prost writes it: the local block (10-21), the local fields of the
        // record (22-23), the remote block (30-41), then 42 on.
        match endpoints {
            Some(encoded) => out.extend_from_slice(encoded.local()),
            None => self.local.encode_fields(LOCAL_BASE, out),
        }
        if self.local_initiated {
            put_varint_field(LOCAL_INITIATED, 1, out);
        }
        put_str(LOCAL_INSTANCE_TYPE, self.local_instance_type, out);
        match endpoints {
            Some(encoded) => out.extend_from_slice(encoded.remote()),
            None => self.remote.encode_fields(REMOTE_BASE, out),
        }
        put_str(42, self.remote_service, out);
        put_str(43, self.remote_network, out);
        put_u64(50, self.bytes, out);
        put_u64(51, self.packets, out);
        if self.cost_usd != 0.0 {
            put_key(52, 1, out); // wire type 1: 64-bit
            out.extend_from_slice(&self.cost_usd.to_le_bytes());
        }
    }

    /// The owned prost message with the same content.
    pub fn to_flow(&self) -> flows::Flow {
        let (l, r) = (&self.local, &self.remote);
        flows::Flow {
            record_id: self.record_id.into(),
            generation: self.generation,
            interval_start_unix_ms: self.interval_start_unix_ms,
            interval_seconds: self.interval_seconds,
            cluster: self.cluster.into(),
            direction: self.direction.into(),
            protocol: self.protocol.into(),
            class: self.class.into(),
            local_cloud: l.cloud.into(),
            local_region: l.region.into(),
            local_zone: l.zone.into(),
            local_node: l.node.into(),
            local_namespace: l.namespace.into(),
            local_pod: l.pod.into(),
            local_workload_kind: l.workload_kind.into(),
            local_workload_name: l.workload_name.into(),
            local_app: l.app.into(),
            local_ip: l.ip.to_string(),
            local_port: l.port,
            local_host_network: l.host_network,
            local_initiated: self.local_initiated,
            local_instance_type: self.local_instance_type.into(),
            remote_cloud: r.cloud.into(),
            remote_region: r.region.into(),
            remote_zone: r.zone.into(),
            remote_node: r.node.into(),
            remote_namespace: r.namespace.into(),
            remote_pod: r.pod.into(),
            remote_workload_kind: r.workload_kind.into(),
            remote_workload_name: r.workload_name.into(),
            remote_app: r.app.into(),
            remote_ip: r.ip.to_string(),
            remote_port: r.port,
            remote_host_network: r.host_network,
            remote_service: self.remote_service.into(),
            remote_network: self.remote_network.into(),
            bytes: self.bytes,
            packets: self.packets,
            cost_usd: self.cost_usd,
        }
    }
}

/// The encoded endpoint fields of a flow, shared by its records (see
/// [`FlowView::encode_length_delimited_using`]): the local block, then the remote block, which
/// the record's own local fields (22-23) go between.
#[derive(Debug, Default, Clone)]
pub struct EncodedEndpoints {
    bytes: Vec<u8>,
    /// Where the remote block starts in `bytes`.
    remote_at: usize,
}

impl EncodedEndpoints {
    /// Encodes `local` and `remote`, replacing what was there (the buffer is reused).
    pub fn encode(&mut self, local: &EndpointView, remote: &EndpointView) {
        self.bytes.clear();
        local.encode_fields(LOCAL_BASE, &mut self.bytes);
        self.remote_at = self.bytes.len();
        remote.encode_fields(REMOTE_BASE, &mut self.bytes);
    }

    fn local(&self) -> &[u8] {
        &self.bytes[..self.remote_at]
    }

    fn remote(&self) -> &[u8] {
        &self.bytes[self.remote_at..]
    }
}

impl EndpointView<'_> {
    fn strings(&self) -> [(&'static str, &str); 9] {
        [
            ("cloud", self.cloud),
            ("region", self.region),
            ("zone", self.zone),
            ("node", self.node),
            ("namespace", self.namespace),
            ("pod", self.pod),
            ("workload_kind", self.workload_kind),
            ("workload_name", self.workload_name),
            ("app", self.app),
        ]
    }

    fn encode_fields(&self, base: u32, out: &mut Vec<u8>) {
        for (i, (_, value)) in self.strings().into_iter().enumerate() {
            put_str(base + i as u32, value, out);
        }
        let mut ip = IpText::default();
        put_str(base + 9, ip.format(self.ip), out);
        if self.port != 0 {
            put_varint_field(base + 10, u64::from(self.port), out);
        }
        if self.host_network {
            put_varint_field(base + 11, 1, out);
        }
    }

    fn serialize_into<M: SerializeMap>(&self, side: &str, map: &mut M) -> Result<(), M::Error> {
        for (name, value) in self.strings() {
            map.serialize_entry(&format_args!("{side}_{name}"), value)?;
        }
        map.serialize_entry(&format_args!("{side}_ip"), &self.ip)?;
        map.serialize_entry(&format_args!("{side}_port"), &self.port)?;
        map.serialize_entry(&format_args!("{side}_host_network"), &self.host_network)
    }
}

/// JSON output: one flat object whose keys are the `flow.proto` field names, so the same
/// ClickHouse table can read either encoding.
impl Serialize for FlowView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("record_id", self.record_id)?;
        map.serialize_entry("generation", &self.generation)?;
        map.serialize_entry("interval_start_unix_ms", &self.interval_start_unix_ms)?;
        map.serialize_entry("interval_seconds", &self.interval_seconds)?;
        map.serialize_entry("cluster", self.cluster)?;
        map.serialize_entry("direction", self.direction)?;
        map.serialize_entry("protocol", self.protocol)?;
        map.serialize_entry("class", self.class)?;
        self.local.serialize_into("local", &mut map)?;
        map.serialize_entry("local_initiated", &self.local_initiated)?;
        map.serialize_entry("local_instance_type", self.local_instance_type)?;
        self.remote.serialize_into("remote", &mut map)?;
        map.serialize_entry("remote_service", self.remote_service)?;
        map.serialize_entry("remote_network", self.remote_network)?;
        map.serialize_entry("bytes", &self.bytes)?;
        map.serialize_entry("packets", &self.packets)?;
        map.serialize_entry("cost_usd", &self.cost_usd)?;
        map.end()
    }
}

// Hand-written varints: the values are small (tags < 64, strings < 16 KiB) and this is the
// attributor's hottest loop; prost's generic `BufMut` path costs more than the bytes.
fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(tag: u32, wire_type: u32, out: &mut Vec<u8>) {
    put_varint(u64::from(tag << 3 | wire_type), out);
}

fn put_varint_field(tag: u32, value: u64, out: &mut Vec<u8>) {
    put_key(tag, 0, out);
    put_varint(value, out);
}

fn put_str(tag: u32, value: &str, out: &mut Vec<u8>) {
    if !value.is_empty() {
        put_key(tag, 2, out);
        put_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }
}

fn put_u64(tag: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        put_varint_field(tag, value, out);
    }
}

/// Formats an address without allocating (IPv6 text is at most 45 bytes; 48 leaves room).
/// IPv4 by hand: it is most addresses, and `fmt` machinery costs more than the digits.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl IpText {
    fn format(&mut self, ip: IpAddr) -> &str {
        self.len = 0;
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                use std::fmt::Write;
                write!(self, "{v6}").expect("an IPv6 address fits in 48 bytes");
            }
        }
        std::str::from_utf8(&self.buf[..self.len]).expect("an IP address formats as ASCII")
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    fn endpoint(ip: &str, port: u32, host_network: bool) -> EndpointView<'static> {
        EndpointView {
            cloud: "aws",
            region: "eu-west-1",
            zone: "eu-west-1a",
            node: "node-a",
            namespace: "shop",
            pod: "cart-7d9f-abcde",
            workload_kind: "Deployment",
            workload_name: "cart",
            app: "cart",
            ip: ip.parse().unwrap(),
            port,
            host_network,
        }
    }

    fn sample() -> FlowView<'static> {
        FlowView {
            record_id: "0a1b2c3d-0000-8000-8000-000000000001",
            generation: 7,
            interval_start_unix_ms: 1_700_000_000_000,
            interval_seconds: 10,
            cluster: "prod",
            direction: "out",
            protocol: "tcp",
            class: "INTER_ZONE",
            local: endpoint("10.0.0.5", 43512, false),
            local_initiated: true,
            local_instance_type: "m6i.large",
            remote: EndpointView {
                zone: "",
                app: "",
                ..endpoint("2a05:d07a:a000::1", 443, true)
            },
            remote_service: "S3",
            remote_network: "",
            bytes: 1_000_052,
            packets: 20,
            cost_usd: 0.0093,
        }
    }

    /// [`sample`] with no field at its default, so that a field the encoder or the JSON output
    /// forgets shows.
    fn full() -> FlowView<'static> {
        FlowView {
            local: endpoint("10.0.0.5", 43512, true),
            remote: endpoint("2a05:d07a:a000::1", 443, true),
            remote_network: "peering",
            ..sample()
        }
    }

    /// The field names of `flow.proto`, in file order.
    fn proto_fields() -> Vec<&'static str> {
        crate::FLOW_PROTO
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && l.ends_with(';') && l.contains(" = "))
            .filter(|l| !l.starts_with("syntax") && !l.starts_with("package"))
            .map(|l| l.split_whitespace().nth(1).expect("type name = number;"))
            .collect()
    }

    #[test]
    fn every_proto_field_is_encoded_and_serialized() {
        let view = full();
        let json = serde_json::to_value(view).unwrap();
        let json = json.as_object().unwrap();
        let mut keys: Vec<&str> = json.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut fields = proto_fields();
        fields.sort_unstable();
        assert_eq!(keys, fields, "the JSON keys are the proto's field names");
        for (name, value) in json {
            let default = [json!(""), json!(0), json!(0.0), json!(false)];
            assert!(
                !default.contains(value),
                "{name} is at its default in full()"
            );
        }
        let mut ours = Vec::new();
        view.encode_length_delimited(&mut ours);
        let mut theirs = Vec::new();
        crate::encode_flow(&view.to_flow(), &mut theirs);
        assert_eq!(ours, theirs, "every field is encoded as prost encodes it");
    }

    #[test]
    fn encodes_exactly_what_prost_encodes() {
        for view in [
            sample(),
            full(),
            FlowView {
                bytes: 0,
                cost_usd: 0.0,
                interval_seconds: 0,
                record_id: "",
                local_initiated: false,
                local_instance_type: "",
                ..sample()
            },
        ] {
            let mut ours = Vec::new();
            view.encode_length_delimited(&mut ours);
            let mut theirs = Vec::new();
            crate::encode_flow(&view.to_flow(), &mut theirs);
            assert_eq!(ours, theirs);
            let decoded = flows::Flow::decode_length_delimited(&ours[..]).unwrap();
            assert_eq!(decoded, view.to_flow());
        }
    }

    #[test]
    fn pre_encoded_endpoints_give_the_same_bytes() {
        let mut endpoints = EncodedEndpoints::default();
        for view in [
            sample(),
            FlowView {
                local_initiated: false,
                local_instance_type: "",
                ..sample()
            },
        ] {
            endpoints.encode(&view.local, &view.remote);
            let (mut plain, mut shared) = (Vec::new(), Vec::new());
            view.encode_length_delimited(&mut plain);
            view.encode_length_delimited_using(&endpoints, &mut shared);
            assert_eq!(plain, shared);
        }
    }

    #[test]
    fn short_and_long_records_get_the_right_length_prefix() {
        let short = FlowView {
            local: endpoint("10.0.0.1", 0, false),
            ..sample()
        };
        let tiny = FlowView {
            local: EndpointView {
                cloud: "",
                region: "",
                zone: "",
                node: "",
                namespace: "",
                pod: "",
                workload_kind: "",
                workload_name: "",
                app: "",
                ..short.local
            },
            remote: EndpointView {
                cloud: "",
                region: "",
                zone: "",
                node: "",
                namespace: "",
                pod: "",
                workload_kind: "",
                workload_name: "",
                app: "",
                ..short.remote
            },
            cluster: "",
            record_id: "",
            ..short
        };
        let long_name = "x".repeat(20_000);
        let long = FlowView {
            cluster: &long_name,
            ..sample()
        };
        let mut buf = Vec::new();
        for view in [tiny, long, sample()] {
            view.encode_length_delimited(&mut buf);
        }
        let decoded = crate::decode_flows(&buf).unwrap();
        assert_eq!(
            decoded,
            vec![tiny.to_flow(), long.to_flow(), sample().to_flow()]
        );
        assert!(tiny.to_flow().encoded_len() < 128);
    }

    #[test]
    fn addresses_format_like_std() {
        let mut text = IpText::default();
        for ip in [
            "0.0.0.0",
            "10.0.0.5",
            "192.168.100.255",
            "8.8.8.8",
            "::",
            "::ffff:10.0.0.5",
            "2a05:d07a:a000::1",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(text.format(ip), ip.to_string());
        }
    }

    #[test]
    fn json_keys_are_the_proto_field_names() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["local_ip"], "10.0.0.5");
        assert_eq!(json["remote_ip"], "2a05:d07a:a000::1");
        assert_eq!(json["remote_host_network"], true);
        assert_eq!(json["local_workload_name"], "cart");
        assert_eq!(json["bytes"], 1_000_052);
        assert_eq!(json["class"], "INTER_ZONE");
        assert_eq!(json["local_initiated"], true);
        assert_eq!(json["local_instance_type"], "m6i.large");
    }
}
