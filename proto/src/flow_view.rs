//! [`FlowView`]: a flow record that borrows its strings, encoded straight to the wire.
//!
//! The attributor writes millions of records per second, and most of their strings (zone,
//! namespace, workload, ...) are shared by many records. Building an owned [`flows::Flow`] per
//! record would allocate ~25 strings each time; a view encodes from borrowed `&str` instead,
//! producing exactly the bytes prost would (checked by the tests below). Field numbers and JSON
//! keys are the constants `build.rs` generates from `flow.proto` ([`crate::flow_fields`]); the
//! tests check that every field of `flow.proto` is encoded, with its wire type, and serialized.

use std::net::IpAddr;

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::flow_fields::{self as field, FieldType, FlowField};
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
    /// The priced path (NAT gateway, endpoint, ...) the traffic crossed; empty when none.
    pub path: &'a str,
    pub local: EndpointView<'a>,
    /// The local endpoint opened the connection (it is the original tuple's source).
    pub local_initiated: bool,
    /// The instance type of the local endpoint's node; empty when unknown.
    pub local_instance_type: &'a str,
    pub remote: EndpointView<'a>,
    pub remote_service: &'a str,
    pub remote_network: &'a str,
    /// Where a public remote address is: country, AS number and AS name.
    pub remote_geo: GeoView<'a>,
    pub bytes: u64,
    pub packets: u64,
    /// Transfer plus processing.
    pub cost_usd: f64,
    /// The part of `cost_usd` charged by `path`.
    pub processing_cost_usd: f64,
}

/// Country and network of a public address; empty and 0 when unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeoView<'a> {
    pub country: &'a str,
    pub asn: u32,
    pub as_name: &'a str,
}

/// The fields of one side's [`EndpointView`] (`local_*` or `remote_*`), from `flow.proto`.
struct EndpointFields {
    cloud: FlowField,
    region: FlowField,
    zone: FlowField,
    node: FlowField,
    namespace: FlowField,
    pod: FlowField,
    workload_kind: FlowField,
    workload_name: FlowField,
    app: FlowField,
    ip: FlowField,
    port: FlowField,
    host_network: FlowField,
}

const LOCAL: EndpointFields = EndpointFields {
    cloud: field::LOCAL_CLOUD,
    region: field::LOCAL_REGION,
    zone: field::LOCAL_ZONE,
    node: field::LOCAL_NODE,
    namespace: field::LOCAL_NAMESPACE,
    pod: field::LOCAL_POD,
    workload_kind: field::LOCAL_WORKLOAD_KIND,
    workload_name: field::LOCAL_WORKLOAD_NAME,
    app: field::LOCAL_APP,
    ip: field::LOCAL_IP,
    port: field::LOCAL_PORT,
    host_network: field::LOCAL_HOST_NETWORK,
};

const REMOTE: EndpointFields = EndpointFields {
    cloud: field::REMOTE_CLOUD,
    region: field::REMOTE_REGION,
    zone: field::REMOTE_ZONE,
    node: field::REMOTE_NODE,
    namespace: field::REMOTE_NAMESPACE,
    pod: field::REMOTE_POD,
    workload_kind: field::REMOTE_WORKLOAD_KIND,
    workload_name: field::REMOTE_WORKLOAD_NAME,
    app: field::REMOTE_APP,
    ip: field::REMOTE_IP,
    port: field::REMOTE_PORT,
    host_network: field::REMOTE_HOST_NETWORK,
};

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
        put_str(field::RECORD_ID, self.record_id, out);
        put_u64(field::GENERATION, self.generation, out);
        put_u64(
            field::INTERVAL_START_UNIX_MS,
            self.interval_start_unix_ms,
            out,
        );
        put_u32(field::INTERVAL_SECONDS, self.interval_seconds, out);
        put_str(field::CLUSTER, self.cluster, out);
        put_str(field::DIRECTION, self.direction, out);
        put_str(field::PROTOCOL, self.protocol, out);
        put_str(field::CLASS, self.class, out);
        put_str(field::PATH, self.path, out);
        // Field order as prost writes it (number order): the local block, the record's own
        // local fields, the remote block, then the rest.
        match endpoints {
            Some(encoded) => out.extend_from_slice(encoded.local()),
            None => self.local.encode_fields(&LOCAL, out),
        }
        put_bool(field::LOCAL_INITIATED, self.local_initiated, out);
        put_str(field::LOCAL_INSTANCE_TYPE, self.local_instance_type, out);
        match endpoints {
            Some(encoded) => out.extend_from_slice(encoded.remote()),
            None => self.remote.encode_fields(&REMOTE, out),
        }
        put_str(field::REMOTE_SERVICE, self.remote_service, out);
        put_str(field::REMOTE_NETWORK, self.remote_network, out);
        put_str(field::REMOTE_COUNTRY, self.remote_geo.country, out);
        put_u32(field::REMOTE_ASN, self.remote_geo.asn, out);
        put_str(field::REMOTE_AS_NAME, self.remote_geo.as_name, out);
        put_u64(field::BYTES, self.bytes, out);
        put_u64(field::PACKETS, self.packets, out);
        put_f64(field::COST_USD, self.cost_usd, out);
        put_f64(field::PROCESSING_COST_USD, self.processing_cost_usd, out);
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
            path: self.path.into(),
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
            remote_country: self.remote_geo.country.into(),
            remote_asn: self.remote_geo.asn,
            remote_as_name: self.remote_geo.as_name.into(),
            bytes: self.bytes,
            packets: self.packets,
            cost_usd: self.cost_usd,
            processing_cost_usd: self.processing_cost_usd,
        }
    }
}

/// The encoded endpoint fields of a flow, shared by its records (see
/// [`FlowView::encode_length_delimited_using`]): the local block, then the remote block, which
/// the record's own local fields (`local_initiated`, `local_instance_type`) go between.
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
        local.encode_fields(&LOCAL, &mut self.bytes);
        self.remote_at = self.bytes.len();
        remote.encode_fields(&REMOTE, &mut self.bytes);
    }

    fn local(&self) -> &[u8] {
        &self.bytes[..self.remote_at]
    }

    fn remote(&self) -> &[u8] {
        &self.bytes[self.remote_at..]
    }
}

impl EndpointView<'_> {
    fn strings(&self, fields: &EndpointFields) -> [(FlowField, &str); 9] {
        [
            (fields.cloud, self.cloud),
            (fields.region, self.region),
            (fields.zone, self.zone),
            (fields.node, self.node),
            (fields.namespace, self.namespace),
            (fields.pod, self.pod),
            (fields.workload_kind, self.workload_kind),
            (fields.workload_name, self.workload_name),
            (fields.app, self.app),
        ]
    }

    fn encode_fields(&self, fields: &EndpointFields, out: &mut Vec<u8>) {
        put_str(fields.cloud, self.cloud, out);
        put_str(fields.region, self.region, out);
        put_str(fields.zone, self.zone, out);
        put_str(fields.node, self.node, out);
        put_str(fields.namespace, self.namespace, out);
        put_str(fields.pod, self.pod, out);
        put_str(fields.workload_kind, self.workload_kind, out);
        put_str(fields.workload_name, self.workload_name, out);
        put_str(fields.app, self.app, out);
        let mut ip = IpText::default();
        put_str(fields.ip, ip.format(self.ip), out);
        put_u32(fields.port, self.port, out);
        put_bool(fields.host_network, self.host_network, out);
    }

    fn serialize_into<M: SerializeMap>(
        &self,
        fields: &EndpointFields,
        map: &mut M,
    ) -> Result<(), M::Error> {
        for (field, value) in self.strings(fields) {
            map.serialize_entry(field.name, value)?;
        }
        map.serialize_entry(fields.ip.name, &self.ip)?;
        map.serialize_entry(fields.port.name, &self.port)?;
        map.serialize_entry(fields.host_network.name, &self.host_network)
    }
}

/// JSON output: one flat object whose keys are the `flow.proto` field names, so the same
/// ClickHouse table can read either encoding.
impl Serialize for FlowView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry(field::RECORD_ID.name, self.record_id)?;
        map.serialize_entry(field::GENERATION.name, &self.generation)?;
        map.serialize_entry(
            field::INTERVAL_START_UNIX_MS.name,
            &self.interval_start_unix_ms,
        )?;
        map.serialize_entry(field::INTERVAL_SECONDS.name, &self.interval_seconds)?;
        map.serialize_entry(field::CLUSTER.name, self.cluster)?;
        map.serialize_entry(field::DIRECTION.name, self.direction)?;
        map.serialize_entry(field::PROTOCOL.name, self.protocol)?;
        map.serialize_entry(field::CLASS.name, self.class)?;
        map.serialize_entry(field::PATH.name, self.path)?;
        self.local.serialize_into(&LOCAL, &mut map)?;
        map.serialize_entry(field::LOCAL_INITIATED.name, &self.local_initiated)?;
        map.serialize_entry(field::LOCAL_INSTANCE_TYPE.name, self.local_instance_type)?;
        self.remote.serialize_into(&REMOTE, &mut map)?;
        map.serialize_entry(field::REMOTE_SERVICE.name, self.remote_service)?;
        map.serialize_entry(field::REMOTE_NETWORK.name, self.remote_network)?;
        map.serialize_entry(field::REMOTE_COUNTRY.name, self.remote_geo.country)?;
        map.serialize_entry(field::REMOTE_ASN.name, &self.remote_geo.asn)?;
        map.serialize_entry(field::REMOTE_AS_NAME.name, self.remote_geo.as_name)?;
        map.serialize_entry(field::BYTES.name, &self.bytes)?;
        map.serialize_entry(field::PACKETS.name, &self.packets)?;
        map.serialize_entry(field::COST_USD.name, &self.cost_usd)?;
        map.serialize_entry(field::PROCESSING_COST_USD.name, &self.processing_cost_usd)?;
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

// One writer per field type, each leaving out a default value as proto3 (and prost) does.
// Inlined, so that a field's key is a constant where the field is (measured with cachegrind:
// 3-6% fewer instructions per record than out-of-line calls). The type checks are for the
// tests: a field whose type changed in `flow.proto` is named.

#[inline]
fn put_varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
    put_key(number, 0, out);
    put_varint(value, out);
}

#[inline]
fn put_str(field: FlowField, value: &str, out: &mut Vec<u8>) {
    debug_assert_eq!(field.ty, FieldType::String, "{field} is not a string");
    if !value.is_empty() {
        put_key(field.number, 2, out);
        put_varint(value.len() as u64, out);
        out.extend_from_slice(value.as_bytes());
    }
}

#[inline]
fn put_u64(field: FlowField, value: u64, out: &mut Vec<u8>) {
    debug_assert_eq!(field.ty, FieldType::Uint64, "{field} is not a uint64");
    if value != 0 {
        put_varint_field(field.number, value, out);
    }
}

#[inline]
fn put_u32(field: FlowField, value: u32, out: &mut Vec<u8>) {
    debug_assert_eq!(field.ty, FieldType::Uint32, "{field} is not a uint32");
    if value != 0 {
        put_varint_field(field.number, u64::from(value), out);
    }
}

#[inline]
fn put_bool(field: FlowField, value: bool, out: &mut Vec<u8>) {
    debug_assert_eq!(field.ty, FieldType::Bool, "{field} is not a bool");
    if value {
        put_varint_field(field.number, 1, out);
    }
}

#[inline]
fn put_f64(field: FlowField, value: f64, out: &mut Vec<u8>) {
    debug_assert_eq!(field.ty, FieldType::Double, "{field} is not a double");
    if value != 0.0 {
        put_key(field.number, 1, out); // wire type 1: 64-bit
        out.extend_from_slice(&value.to_le_bytes());
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
            path: "",
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
            remote_geo: GeoView::default(),
            bytes: 1_000_052,
            packets: 20,
            cost_usd: 0.0093,
            processing_cost_usd: 0.0,
        }
    }

    /// [`sample`] with no field at its default, so that a field the encoder or the JSON output
    /// forgets shows.
    fn full() -> FlowView<'static> {
        FlowView {
            local: endpoint("10.0.0.5", 43512, true),
            remote: endpoint("2a05:d07a:a000::1", 443, true),
            remote_network: "peering",
            path: "nat-eu-west-1a",
            remote_geo: GeoView {
                country: "IE",
                asn: 16509,
                as_name: "AMAZON-02",
            },
            processing_cost_usd: 0.0042,
            ..sample()
        }
    }

    /// The field names of `flow.proto`, as its descriptor gives them.
    fn proto_fields() -> Vec<&'static str> {
        field::ALL.iter().map(|f| f.name).collect()
    }

    /// The (number, wire type) of each field in one encoded record, in order.
    fn encoded_fields(mut bytes: &[u8]) -> Vec<(u32, u32)> {
        use prost::encoding::{DecodeContext, decode_key, skip_field};
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let (number, wire_type) = decode_key(&mut bytes).unwrap();
            fields.push((number, wire_type as u32));
            skip_field(wire_type, number, &mut bytes, DecodeContext::default()).unwrap();
        }
        fields
    }

    /// What is wrong in `fields` (an encoding of [`full`]) against `flow.proto`, one line per
    /// field, naming `place`.
    fn encoding_mismatches(place: &str, fields: &[(u32, u32)]) -> Vec<String> {
        let mut wrong = Vec::new();
        for f in field::ALL {
            match fields.iter().find(|(number, _)| *number == f.number) {
                None => wrong.push(format!(
                    "flow.proto field `{f}` is not in {place} (or full() leaves it at its default)"
                )),
                Some(&(_, wire_type)) if wire_type != f.ty.wire_type() => wrong.push(format!(
                    "flow.proto field `{f}` is encoded by {place} with wire type {wire_type}, \
                     expected {}",
                    f.ty.wire_type()
                )),
                Some(_) => {}
            }
        }
        for (number, _) in fields {
            if !field::ALL.iter().any(|f| f.number == *number) {
                wrong.push(format!(
                    "{place} writes field {number}, which flow.proto lacks"
                ));
            }
        }
        for pair in fields.windows(2) {
            if pair[0].0 >= pair[1].0 {
                wrong.push(format!(
                    "{place} writes field {} after field {}: prost writes them in number order",
                    pair[1].0, pair[0].0
                ));
            }
        }
        wrong
    }

    #[test]
    fn every_proto_field_is_encoded_and_serialized() {
        let view = full();
        let json = serde_json::to_value(view).unwrap();
        let json = json.as_object().unwrap();
        let mut wrong = Vec::new();
        for f in field::ALL {
            if !json.contains_key(f.name) {
                wrong.push(format!(
                    "flow.proto field `{f}` is not a key of FlowView's JSON \
                     (proto/src/flow_view.rs, impl Serialize for FlowView)"
                ));
            }
        }
        let mut ours = Vec::new();
        view.encode_length_delimited(&mut ours);
        let mut theirs = Vec::new();
        crate::encode_flow(&view.to_flow(), &mut theirs);
        // Both without their length prefix (2 bytes: a full record is 128 bytes to 16 KiB).
        wrong.extend(encoding_mismatches(
            "FlowView::encode_length_delimited (proto/src/flow_view.rs)",
            &encoded_fields(&ours[2..]),
        ));
        wrong.extend(encoding_mismatches(
            "FlowView::to_flow (proto/src/flow_view.rs)",
            &encoded_fields(&theirs[2..]),
        ));
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
