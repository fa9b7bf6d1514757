//! The raw topic's batches as the attributor reads them: the wire batch
//! (`netmeter_proto::raw::ConntrackBatch`) is checked and converted once, at the edge, into
//! [`DeltaBatch`] and its [`ConntrackDelta`]s; enrichment never sees a prost struct.
//!
//! The conversion is on the hot path (every delta of every raw message): a batch borrows its
//! strings from the decoded wire batch and converts its deltas into one `Vec` of plain `Copy`
//! values, the only allocation per batch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netmeter_proto::raw::{ConnectionDelta, ConntrackBatch};

/// The deltas one collector published for one interval `[start, end)` of its node.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaBatch<'a> {
    /// The observing node.
    pub node_name: &'a str,
    pub collector_instance_id: &'a str,
    /// Numbers the collector instance's batches; part of every record id.
    pub sequence: u64,
    pub interval_start_unix_ms: u64,
    pub interval_end_unix_ms: u64,
    pub deltas: Vec<ConntrackDelta>,
}

/// What one connection transferred during the interval, with its two ends resolved through NAT:
/// the source is the original tuple's source (who opened the connection), the destination the
/// reply tuple's source (the real backend after a Service DNAT).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConntrackDelta {
    /// IANA protocol number.
    pub protocol: u32,
    pub src: IpAddr,
    pub src_port: u32,
    pub dst: IpAddr,
    pub dst_port: u32,
    /// Source -> destination (the original direction).
    pub orig_bytes: u64,
    pub orig_packets: u64,
    /// Destination -> source (the reply direction).
    pub reply_bytes: u64,
    pub reply_packets: u64,
    /// The collector saw an address of the node itself (node processes, hostNetwork pods).
    pub node_endpoint: bool,
}

/// A delta the attributor cannot read; the whole raw message goes to the dead-letter topic.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeltaError {
    #[error("delta {index} has no {tuple} tuple")]
    MissingTuple { index: usize, tuple: &'static str },
    #[error("delta {index}: {which} address is {len} bytes long, expected 4 or 16")]
    Address {
        index: usize,
        which: &'static str,
        len: usize,
    },
}

impl DeltaError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeltaError::MissingTuple { .. } => "missing_tuple",
            DeltaError::Address { .. } => "bad_address",
        }
    }
}

impl<'a> DeltaBatch<'a> {
    /// Converts a decoded wire batch. All or nothing: the first malformed delta fails the batch.
    pub fn from_wire(batch: &'a ConntrackBatch) -> Result<DeltaBatch<'a>, DeltaError> {
        let deltas = batch
            .deltas
            .iter()
            .enumerate()
            .map(|(index, delta)| ConntrackDelta::from_wire(index, delta))
            .collect::<Result<_, _>>()?;
        Ok(DeltaBatch {
            node_name: &batch.node_name,
            collector_instance_id: &batch.collector_instance_id,
            sequence: batch.sequence,
            interval_start_unix_ms: batch.interval_start_unix_ms,
            interval_end_unix_ms: batch.interval_end_unix_ms,
            deltas,
        })
    }
}

impl ConntrackDelta {
    /// Converts the wire delta at `index` of its batch (the index names it in errors).
    #[inline]
    pub fn from_wire(index: usize, delta: &ConnectionDelta) -> Result<ConntrackDelta, DeltaError> {
        let original = delta.original.as_ref().ok_or(DeltaError::MissingTuple {
            index,
            tuple: "original",
        })?;
        let reply = delta.reply.as_ref().ok_or(DeltaError::MissingTuple {
            index,
            tuple: "reply",
        })?;
        let address = |bytes: &[u8], which| match bytes.len() {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(bytes).expect("4 bytes"),
            ))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(bytes).expect("16 bytes"),
            ))),
            len => Err(DeltaError::Address { index, which, len }),
        };
        Ok(ConntrackDelta {
            protocol: delta.protocol,
            src: address(&original.src, "original source")?,
            src_port: original.src_port,
            dst: address(&reply.src, "reply source")?,
            dst_port: reply.src_port,
            orig_bytes: delta.orig_bytes,
            orig_packets: delta.orig_packets,
            reply_bytes: delta.reply_bytes,
            reply_packets: delta.reply_packets,
            node_endpoint: delta.node_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netmeter_tests::records::{batch, delta};

    #[test]
    fn ends_are_resolved_through_nat_and_counters_kept_by_direction() {
        // 10.0.0.5 opened a connection to a Service address; the reply came from the backend.
        let mut wire = delta("10.0.0.5", 40000, "10.96.0.10", 80, (1000, 10), (50, 2));
        wire.reply.as_mut().unwrap().src = vec![10, 0, 2, 5];
        wire.reply.as_mut().unwrap().src_port = 8080;
        wire.node_endpoint = true;
        let wire = batch("node-a", "c1", 7, 1_000, 11_000, vec![wire]);
        let batch = DeltaBatch::from_wire(&wire).unwrap();
        assert_eq!(
            (batch.node_name, batch.collector_instance_id, batch.sequence),
            ("node-a", "c1", 7)
        );
        assert_eq!(
            (batch.interval_start_unix_ms, batch.interval_end_unix_ms),
            (1_000, 11_000)
        );
        let d = batch.deltas[0];
        assert_eq!(
            (d.src, d.src_port, d.dst, d.dst_port),
            (
                "10.0.0.5".parse().unwrap(),
                40000,
                "10.0.2.5".parse().unwrap(),
                8080
            )
        );
        assert_eq!(
            (d.orig_bytes, d.orig_packets, d.reply_bytes, d.reply_packets),
            (1000, 10, 50, 2)
        );
        assert!(d.node_endpoint);
    }

    #[test]
    fn a_malformed_delta_fails_the_whole_batch_and_says_which() {
        let good = delta("10.0.0.5", 1, "10.0.0.6", 2, (1, 1), (0, 0));
        let mut no_reply = good.clone();
        no_reply.reply = None;
        let wire = batch("node-a", "c1", 1, 0, 1, vec![good.clone(), no_reply]);
        assert_eq!(
            DeltaBatch::from_wire(&wire),
            Err(DeltaError::MissingTuple {
                index: 1,
                tuple: "reply"
            })
        );
        let mut short = good;
        short.original.as_mut().unwrap().src = vec![10, 0, 0];
        let wire = batch("node-a", "c1", 1, 0, 1, vec![short]);
        let err = DeltaBatch::from_wire(&wire).unwrap_err();
        assert_eq!(
            err,
            DeltaError::Address {
                index: 0,
                which: "original source",
                len: 3
            }
        );
        assert_eq!(err.metric_label(), "bad_address");
    }
}
