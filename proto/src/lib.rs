//! The wire contract between netmeter's services: the only place wire types are defined.
//!
//! - [`raw`]: the raw topic, one [`raw::ConntrackBatch`] per Kafka message.
//! - [`flows`]: the enriched topic, length-delimited [`flows::Flow`] records per Kafka message;
//!   [`FlowView`] writes the same bytes from borrowed strings. [`flow_fields`] lists the
//!   record's fields (generated from `flow.proto`), for every copy of them to follow.
//! - [`inventory`]: the inventory topic, one [`inventory::IpTenure`] per Kafka message.
//! - The dead-letter topic carries the original message value unchanged, with headers that
//!   say where it came from and why it was rejected ([`DEAD_LETTER_REASON_HEADER`], ...).
//!
//! The schema version travels twice: in the topic name (`netmeter.raw.v1`) and in the
//! [`SCHEMA_HEADER`] Kafka header, so a consumer can reject a message it cannot read without
//! guessing. Services convert these types into their own at the edge.

use prost::Message;

/// Raw conntrack deltas, as published by the collector.
pub mod raw {
    include!(concat!(env!("OUT_DIR"), "/netmeter.raw.v1.rs"));
}

/// Enriched flow records, as published by the attributor and read by the sink or ClickHouse.
pub mod flows {
    include!(concat!(env!("OUT_DIR"), "/netmeter.flows.v1.rs"));
}

/// Who held which IP address when, as learned from the Kubernetes API by the attributors.
pub mod inventory {
    include!(concat!(env!("OUT_DIR"), "/netmeter.inventory.v1.rs"));
}

pub mod flow_fields;
mod flow_view;
pub use flow_view::{EncodedEndpoints, EndpointView, FlowView, GeoView};

/// Kafka header that names the schema of a message's value.
pub const SCHEMA_HEADER: &str = "netmeter-schema";

/// Dead-letter headers: why the message was rejected, which service rejected it, and where it
/// was read (`topic/partition/offset`).
pub const DEAD_LETTER_REASON_HEADER: &str = "netmeter-dead-letter-reason";
pub const DEAD_LETTER_SERVICE_HEADER: &str = "netmeter-dead-letter-service";
pub const DEAD_LETTER_SOURCE_HEADER: &str = "netmeter-dead-letter-source";

/// Kafka header of flow messages that are not the default protobuf: `netmeter-encoding: json`
/// (the attributor's `--output-format json`, the sink's dead letters of rows ClickHouse refused).
pub const ENCODING_HEADER: &str = "netmeter-encoding";
/// The [`ENCODING_HEADER`] value of newline-delimited JSON.
pub const JSON_ENCODING: &[u8] = b"json";

/// Default prefix of every topic name; configurable per deployment.
pub const DEFAULT_TOPIC_PREFIX: &str = "netmeter.";

/// The source of `flow.proto`, for ClickHouse's Kafka engine (its format schema file) and docs.
pub const FLOW_PROTO: &str = include_str!("../netmeter/flow.proto");

/// A versioned stream: its topic name suffix and the header value its messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    RawV1,
    FlowsV1,
    InventoryV1,
    /// Rejected messages of any schema (their value is unchanged).
    DeadLetterV1,
}

impl Schema {
    /// The version tag, used both as topic suffix and header value (`raw.v1`).
    pub fn tag(self) -> &'static str {
        match self {
            Schema::RawV1 => "raw.v1",
            Schema::FlowsV1 => "flows.v1",
            Schema::InventoryV1 => "inventory.v1",
            Schema::DeadLetterV1 => "dead-letter.v1",
        }
    }

    /// The full topic name under `prefix` (`netmeter.` + `raw.v1`).
    pub fn topic(self, prefix: &str) -> String {
        format!("{prefix}{}", self.tag())
    }

    /// Checks a message's schema header; `None` means the header is missing.
    pub fn check_header(self, value: Option<&[u8]>) -> Result<(), DecodeError> {
        match value {
            Some(v) if v == self.tag().as_bytes() => Ok(()),
            Some(v) => Err(DecodeError::WrongSchema {
                expected: self.tag(),
                found: String::from_utf8_lossy(v).into_owned(),
            }),
            None => Err(DecodeError::MissingSchemaHeader {
                expected: self.tag(),
            }),
        }
    }
}

/// Why a message could not be read; the reason a dead-letter record carries.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message has no `{SCHEMA_HEADER}` header (expected `{expected}`)")]
    MissingSchemaHeader { expected: &'static str },
    #[error("message schema is `{found}`, this consumer reads `{expected}`")]
    WrongSchema {
        expected: &'static str,
        found: String,
    },
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl DecodeError {
    /// A short, fixed label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DecodeError::MissingSchemaHeader { .. } => "missing_schema",
            DecodeError::WrongSchema { .. } => "wrong_schema",
            DecodeError::Protobuf(_) => "invalid_protobuf",
        }
    }
}

/// The name of an IP protocol number, as flow records carry it (ClickHouse's `protocol`
/// column) and as the services log it: the IANA keyword of the common protocols, else the
/// number.
pub fn protocol_name(protocol: u32) -> &'static str {
    static NUMBERS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (0..256).map(|n: u32| n.to_string()).collect());
    match protocol {
        1 => "icmp",
        2 => "igmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "ipv6-icmp",
        132 => "sctp",
        n if n < 256 => &NUMBERS[n as usize],
        _ => "invalid",
    }
}

/// Encodes a raw batch as one Kafka message value.
pub fn encode_batch(batch: &raw::ConntrackBatch) -> Vec<u8> {
    batch.encode_to_vec()
}

/// Decodes one Kafka message value of the raw topic.
pub fn decode_batch(bytes: &[u8]) -> Result<raw::ConntrackBatch, DecodeError> {
    Ok(raw::ConntrackBatch::decode(bytes)?)
}

/// Decodes one Kafka message value of the inventory topic.
pub fn decode_tenure(bytes: &[u8]) -> Result<inventory::IpTenure, DecodeError> {
    Ok(inventory::IpTenure::decode(bytes)?)
}

/// Appends one flow record, prefixed with its varint length (ClickHouse `Protobuf` framing).
pub fn encode_flow(flow: &flows::Flow, out: &mut Vec<u8>) {
    flow.encode_length_delimited(out)
        .expect("a Vec grows as needed, so encoding cannot run out of space");
}

/// Decodes every length-delimited flow record in one Kafka message value.
pub fn decode_flows(mut bytes: &[u8]) -> Result<Vec<flows::Flow>, DecodeError> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        records.push(flows::Flow::decode_length_delimited(&mut bytes)?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raw::{AddressFamily, ConnectionDelta, ConntrackBatch, Tuple};

    #[test]
    fn protocols_have_their_iana_names_else_their_number() {
        assert_eq!(protocol_name(6), "tcp");
        assert_eq!(protocol_name(58), "ipv6-icmp");
        assert_eq!(protocol_name(253), "253");
        assert_eq!(protocol_name(300), "invalid");
    }

    fn sample_batch() -> ConntrackBatch {
        ConntrackBatch {
            node_name: "node-a".into(),
            collector_instance_id: "3f2a".into(),
            sequence: 42,
            interval_start_unix_ms: 1_700_000_000_000,
            interval_end_unix_ms: 1_700_000_005_000,
            deltas: vec![
                ConnectionDelta {
                    family: AddressFamily::Ipv4 as i32,
                    protocol: 6,
                    original: Some(Tuple {
                        src: vec![10, 0, 0, 5],
                        dst: vec![10, 96, 0, 10],
                        src_port: 40000,
                        dst_port: 80,
                    }),
                    reply: Some(Tuple {
                        src: vec![10, 0, 1, 7],
                        dst: vec![10, 0, 0, 5],
                        src_port: 8080,
                        dst_port: 40000,
                    }),
                    conntrack_id: 7,
                    zone: 0,
                    orig_bytes: 1_000_052,
                    orig_packets: 20,
                    reply_bytes: 1_040,
                    reply_packets: 20,
                    new: true,
                    destroyed: false,
                    assured: true,
                    nat: true,
                    mark: 0,
                    node_endpoint: false,
                },
                ConnectionDelta {
                    family: AddressFamily::Ipv6 as i32,
                    protocol: 17,
                    original: Some(Tuple {
                        src: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1].to_vec(),
                        dst: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2].to_vec(),
                        src_port: 5353,
                        dst_port: 53,
                    }),
                    reply: None,
                    conntrack_id: 8,
                    zone: 3,
                    orig_bytes: 1_028_000,
                    orig_packets: 1_000,
                    destroyed: true,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn raw_batch_round_trips() {
        let batch = sample_batch();
        let decoded = decode_batch(&encode_batch(&batch)).unwrap();
        assert_eq!(decoded, batch);
    }

    #[test]
    fn flows_round_trip_length_delimited() {
        let flows: Vec<flows::Flow> = (0..3)
            .map(|i| flows::Flow {
                record_id: format!("node-a/3f2a/42/{i}/out"),
                class: "INTER_ZONE".into(),
                local_ip: "10.0.0.5".into(),
                remote_ip: "fd00::2".into(),
                bytes: 1000 + i,
                cost_usd: 0.01 * i as f64,
                ..Default::default()
            })
            .collect();
        let mut value = Vec::new();
        for flow in &flows {
            encode_flow(flow, &mut value);
        }
        assert_eq!(decode_flows(&value).unwrap(), flows);
        assert!(decode_flows(&[]).unwrap().is_empty());
    }

    /// `ConnectionDelta` as first shipped, before `mark` (15) existed: written by hand so the
    /// test keeps describing the old schema when the real one grows.
    #[derive(Clone, PartialEq, prost::Message)]
    struct ConnectionDeltaWithoutMark {
        #[prost(int32, tag = "1")]
        family: i32,
        #[prost(uint32, tag = "2")]
        protocol: u32,
        #[prost(message, optional, tag = "3")]
        original: Option<Tuple>,
        #[prost(uint64, tag = "7")]
        orig_bytes: u64,
        #[prost(bool, tag = "12")]
        destroyed: bool,
    }

    #[test]
    fn older_message_still_decodes() {
        let old = ConnectionDeltaWithoutMark {
            family: AddressFamily::Ipv4 as i32,
            protocol: 17,
            original: Some(Tuple {
                src: vec![10, 0, 0, 1],
                dst: vec![10, 0, 0, 2],
                src_port: 1,
                dst_port: 2,
            }),
            orig_bytes: 99,
            destroyed: true,
        };
        let new = ConnectionDelta::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(new.protocol, 17);
        assert_eq!(new.orig_bytes, 99);
        assert!(new.destroyed);
        assert_eq!(
            new.mark, 0,
            "a field the old writer did not know reads as its default"
        );
        assert_eq!(new.original, old.original);
    }

    #[test]
    fn newer_message_decodes_with_unknown_fields_ignored() {
        let full = sample_batch().deltas[0].clone();
        let old = ConnectionDeltaWithoutMark::decode(full.encode_to_vec().as_slice()).unwrap();
        assert_eq!(old.orig_bytes, full.orig_bytes);
        assert_eq!(old.original, full.original);
    }

    /// `Flow` as first shipped, before `local_initiated` (22) and `local_instance_type` (23):
    /// written by hand, a few fields around the new ones are enough to show the framing holds.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FlowBeforeInitiator {
        #[prost(string, tag = "1")]
        record_id: String,
        #[prost(string, tag = "13")]
        local_node: String,
        #[prost(bool, tag = "21")]
        local_host_network: bool,
        #[prost(string, tag = "30")]
        remote_cloud: String,
        #[prost(uint64, tag = "50")]
        bytes: u64,
    }

    #[test]
    fn an_old_flow_reader_skips_the_initiator_and_instance_type() {
        let new = flows::Flow {
            record_id: "0a1b2c3d-0000-8000-8000-000000000001".into(),
            local_node: "node-a".into(),
            local_host_network: true,
            local_initiated: true,
            local_instance_type: "m6i.large".into(),
            remote_cloud: "aws".into(),
            bytes: 1_000,
            ..Default::default()
        };
        let mut value = Vec::new();
        encode_flow(&new, &mut value);
        encode_flow(&new, &mut value);
        let mut rest = value.as_slice();
        for _ in 0..2 {
            let old = FlowBeforeInitiator::decode_length_delimited(&mut rest).unwrap();
            assert_eq!(
                old,
                FlowBeforeInitiator {
                    record_id: new.record_id.clone(),
                    local_node: "node-a".into(),
                    local_host_network: true,
                    remote_cloud: "aws".into(),
                    bytes: 1_000,
                }
            );
        }
        assert!(rest.is_empty(), "both records were read whole");
    }

    #[test]
    fn a_new_flow_reader_defaults_the_initiator_and_instance_type() {
        let old = FlowBeforeInitiator {
            record_id: "0a1b2c3d-0000-8000-8000-000000000002".into(),
            local_node: "node-b".into(),
            local_host_network: false,
            remote_cloud: "gcp".into(),
            bytes: 7,
        };
        let mut value = Vec::new();
        old.encode_length_delimited(&mut value).unwrap();
        let new = decode_flows(&value).unwrap();
        assert_eq!(
            new,
            vec![flows::Flow {
                record_id: old.record_id.clone(),
                local_node: "node-b".into(),
                remote_cloud: "gcp".into(),
                bytes: 7,
                local_initiated: false,
                local_instance_type: String::new(),
                ..Default::default()
            }],
            "a record written before the fields existed reads false and \"\""
        );
    }

    #[test]
    fn schema_header_is_checked() {
        assert_eq!(Schema::RawV1.topic(DEFAULT_TOPIC_PREFIX), "netmeter.raw.v1");
        assert_eq!(Schema::FlowsV1.topic("prod."), "prod.flows.v1");
        Schema::RawV1.check_header(Some(b"raw.v1")).unwrap();
        let wrong = Schema::RawV1.check_header(Some(b"raw.v2")).unwrap_err();
        assert_eq!(wrong.metric_label(), "wrong_schema");
        assert_eq!(
            wrong.to_string(),
            "message schema is `raw.v2`, this consumer reads `raw.v1`"
        );
        let missing = Schema::FlowsV1.check_header(None).unwrap_err();
        assert_eq!(missing.metric_label(), "missing_schema");
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let err = decode_batch(&[0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(err.metric_label(), "invalid_protobuf");
        assert!(decode_flows(&[0x05, 0x01]).is_err(), "truncated record");
    }

    #[test]
    fn flow_proto_is_flat_for_clickhouse() {
        // ClickHouse's Protobuf format maps fields to columns: no nested or repeated fields.
        let code: Vec<&str> = FLOW_PROTO
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//"))
            .collect();
        assert_eq!(code.iter().filter(|l| l.starts_with("message ")).count(), 1);
        assert!(
            !code
                .iter()
                .any(|l| l.starts_with("repeated ") || l.starts_with("map<"))
        );
    }
}
