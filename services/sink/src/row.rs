//! [`FlowRow`]: one row of the `flows` table, converted from a wire record at the edge. A
//! record that cannot become a row (an address or id that does not parse) is rejected with a
//! reason and goes to the dead-letter topic.

use std::net::{IpAddr, Ipv6Addr};

use netmeter_proto::flows::Flow;
use serde::{Deserialize, Serialize};

/// Column names are the `flow.proto` field names; see `schema.rs` for the types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct FlowRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub record_id: uuid::Uuid,
    pub generation: u64,
    pub interval_start_unix_ms: u64,
    pub interval_seconds: u32,
    pub cluster: String,
    pub direction: String,
    pub protocol: String,
    pub class: String,
    pub path: String,
    pub local_cloud: String,
    pub local_region: String,
    pub local_zone: String,
    pub local_node: String,
    pub local_namespace: String,
    pub local_pod: String,
    pub local_workload_kind: String,
    pub local_workload_name: String,
    pub local_app: String,
    pub local_ip: Ipv6Addr,
    pub local_port: u16,
    pub local_host_network: bool,
    pub local_initiated: bool,
    pub local_instance_type: String,
    pub remote_cloud: String,
    pub remote_region: String,
    pub remote_zone: String,
    pub remote_node: String,
    pub remote_namespace: String,
    pub remote_pod: String,
    pub remote_workload_kind: String,
    pub remote_workload_name: String,
    pub remote_app: String,
    pub remote_ip: Ipv6Addr,
    pub remote_port: u16,
    pub remote_host_network: bool,
    pub remote_service: String,
    pub remote_network: String,
    pub remote_country: String,
    pub remote_asn: u32,
    pub remote_as_name: String,
    pub bytes: u64,
    pub packets: u64,
    pub cost_usd: f64,
    pub processing_cost_usd: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RowError {
    #[error("record_id {0:?} is not a UUID")]
    RecordId(String),
    #[error("{field} {value:?} is not an IP address")]
    Ip { field: &'static str, value: String },
    #[error("{field} {value} is not a port")]
    Port { field: &'static str, value: u32 },
}

impl RowError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            RowError::RecordId(_) => "bad_record_id",
            RowError::Ip { .. } => "bad_ip",
            RowError::Port { .. } => "bad_port",
        }
    }
}

fn ip(field: &'static str, value: &str) -> Result<Ipv6Addr, RowError> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(v4.to_ipv6_mapped()),
        Ok(IpAddr::V6(v6)) => Ok(v6),
        Err(_) => Err(RowError::Ip {
            field,
            value: value.to_string(),
        }),
    }
}

fn port(field: &'static str, value: u32) -> Result<u16, RowError> {
    u16::try_from(value).map_err(|_| RowError::Port { field, value })
}

impl TryFrom<Flow> for FlowRow {
    type Error = RowError;

    fn try_from(f: Flow) -> Result<FlowRow, RowError> {
        Ok(FlowRow {
            record_id: uuid::Uuid::parse_str(&f.record_id)
                .map_err(|_| RowError::RecordId(f.record_id.clone()))?,
            local_ip: ip("local_ip", &f.local_ip)?,
            remote_ip: ip("remote_ip", &f.remote_ip)?,
            local_port: port("local_port", f.local_port)?,
            remote_port: port("remote_port", f.remote_port)?,
            generation: f.generation,
            interval_start_unix_ms: f.interval_start_unix_ms,
            interval_seconds: f.interval_seconds,
            cluster: f.cluster,
            direction: f.direction,
            protocol: f.protocol,
            class: f.class,
            path: f.path,
            local_cloud: f.local_cloud,
            local_region: f.local_region,
            local_zone: f.local_zone,
            local_node: f.local_node,
            local_namespace: f.local_namespace,
            local_pod: f.local_pod,
            local_workload_kind: f.local_workload_kind,
            local_workload_name: f.local_workload_name,
            local_app: f.local_app,
            local_host_network: f.local_host_network,
            local_initiated: f.local_initiated,
            local_instance_type: f.local_instance_type,
            remote_cloud: f.remote_cloud,
            remote_region: f.remote_region,
            remote_zone: f.remote_zone,
            remote_node: f.remote_node,
            remote_namespace: f.remote_namespace,
            remote_pod: f.remote_pod,
            remote_workload_kind: f.remote_workload_kind,
            remote_workload_name: f.remote_workload_name,
            remote_app: f.remote_app,
            remote_host_network: f.remote_host_network,
            remote_service: f.remote_service,
            remote_network: f.remote_network,
            remote_country: f.remote_country,
            remote_asn: f.remote_asn,
            remote_as_name: f.remote_as_name,
            bytes: f.bytes,
            packets: f.packets,
            cost_usd: f.cost_usd,
            processing_cost_usd: f.processing_cost_usd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            record_id: "0a1b2c3d-0000-8000-8000-000000000001".into(),
            local_ip: "10.0.0.5".into(),
            remote_ip: "2a05:d07a:a000::1".into(),
            local_port: 40_000,
            remote_port: 443,
            bytes: 7,
            ..Default::default()
        }
    }

    #[test]
    fn ipv4_is_stored_mapped_and_ipv6_as_is() {
        let row = FlowRow::try_from(flow()).unwrap();
        assert_eq!(row.local_ip.to_string(), "::ffff:10.0.0.5");
        assert_eq!(row.remote_ip.to_string(), "2a05:d07a:a000::1");
        assert_eq!(
            (row.local_port, row.remote_port, row.bytes),
            (40_000, 443, 7)
        );
    }

    #[test]
    fn the_initiator_and_instance_type_are_carried_and_default_to_false_and_empty() {
        let row = FlowRow::try_from(Flow {
            local_initiated: true,
            local_instance_type: "m6i.large".into(),
            ..flow()
        })
        .unwrap();
        assert_eq!(
            (row.local_initiated, row.local_instance_type.as_str()),
            (true, "m6i.large")
        );
        let old = FlowRow::try_from(flow()).unwrap();
        assert_eq!(
            (old.local_initiated, old.local_instance_type.as_str()),
            (false, "")
        );
    }

    #[test]
    fn the_columns_are_the_proto_fields() {
        // The names the `clickhouse` crate derives (what an insert of `FlowRow` would send); the
        // types are held to the proto's by the Native columns that write them (`native.rs`).
        let wrong = crate::schema::proto_fields::name_mismatches(
            "FlowRow (services/sink/src/row.rs)",
            <FlowRow as clickhouse::Row>::COLUMN_NAMES,
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn bad_fields_are_named() {
        let bad = |f: Flow| FlowRow::try_from(f).unwrap_err().to_string();
        assert_eq!(
            bad(Flow {
                record_id: "x".into(),
                ..flow()
            }),
            "record_id \"x\" is not a UUID"
        );
        assert_eq!(
            bad(Flow {
                remote_ip: "10.0.0.300".into(),
                ..flow()
            }),
            "remote_ip \"10.0.0.300\" is not an IP address"
        );
        assert_eq!(
            bad(Flow {
                local_port: 70_000,
                ..flow()
            }),
            "local_port 70000 is not a port"
        );
    }
}
