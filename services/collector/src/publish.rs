//! Publishing intervals to the raw topic: batches of at most `max_message_bytes`, keyed by
//! node, sent one at a time and in order by an idempotent producer. While the broker is
//! unreachable, batches wait in a bounded buffer; when it is full the oldest batch is dropped
//! and counted (its sequence number becomes a visible gap downstream). Nothing is lost silently.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use netmeter_proto::{SCHEMA_HEADER, Schema, raw};
use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::output::{Interval, wire_delta, wire_interval};

/// Splits an interval into encoded batches no larger than `max_bytes`, numbering them from
/// `next_sequence` (which is advanced).
pub fn encode_batches(
    interval: &Interval,
    node_name: &str,
    instance_id: &str,
    next_sequence: &mut u64,
    max_bytes: usize,
) -> Vec<EncodedBatch> {
    let (start, end) = wire_interval(interval);
    let new_batch = |sequence| raw::ConntrackBatch {
        node_name: node_name.to_string(),
        collector_instance_id: instance_id.to_string(),
        sequence,
        interval_start_unix_ms: start,
        interval_end_unix_ms: end,
        deltas: Vec::new(),
    };
    let mut batches = Vec::new();
    let mut current = new_batch(*next_sequence);
    let mut size = current.encoded_len();
    for delta in &interval.deltas {
        let wire = wire_delta(delta);
        // Field 6 (repeated message): tag + length prefix + body.
        let added = 1 + prost::length_delimiter_len(wire.encoded_len()) + wire.encoded_len();
        if !current.deltas.is_empty() && size + added > max_bytes {
            batches.push(EncodedBatch::from(current));
            *next_sequence += 1;
            current = new_batch(*next_sequence);
            size = current.encoded_len();
        }
        size += added;
        current.deltas.push(wire);
    }
    // An interval without deltas still publishes an (empty) batch: consumers see the node is alive.
    let mut last = EncodedBatch::from(current);
    last.completes_interval_at = interval.last_part.then_some(interval.end);
    batches.push(last);
    *next_sequence += 1;
    batches
}

/// A batch ready to send.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub sequence: u64,
    pub deltas: usize,
    pub payload: Vec<u8>,
    /// The end of the interval this batch is the last of: once the broker acknowledged it,
    /// everything up to then is published (the marker of [`crate::state`]).
    pub completes_interval_at: Option<SystemTime>,
}

impl From<raw::ConntrackBatch> for EncodedBatch {
    fn from(batch: raw::ConntrackBatch) -> Self {
        EncodedBatch {
            sequence: batch.sequence,
            deltas: batch.deltas.len(),
            payload: batch.encode_to_vec(),
            completes_interval_at: None,
        }
    }
}

/// Batches waiting for the broker, bounded in bytes; oldest dropped first.
pub struct SendBuffer {
    batches: VecDeque<EncodedBatch>,
    bytes: usize,
    max_bytes: usize,
}

/// What [`SendBuffer::push`] had to drop to make room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub deltas: u64,
}

impl SendBuffer {
    pub fn new(max_bytes: usize) -> Self {
        SendBuffer {
            batches: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub fn push(&mut self, batch: EncodedBatch) -> Dropped {
        let mut dropped = Dropped::default();
        self.bytes += batch.payload.len();
        self.batches.push_back(batch);
        while self.bytes > self.max_bytes && self.batches.len() > 1 {
            let oldest = self.batches.pop_front().expect("len > 1");
            self.bytes -= oldest.payload.len();
            dropped.batches += 1;
            dropped.deltas += oldest.deltas as u64;
        }
        dropped
    }

    pub fn front(&self) -> Option<&EncodedBatch> {
        self.batches.front()
    }

    pub fn pop_front(&mut self) -> Option<EncodedBatch> {
        let batch = self.batches.pop_front()?;
        self.bytes -= batch.payload.len();
        Some(batch)
    }

    /// Puts back a batch that failed to send: it stays first in line (and, being the oldest,
    /// is the first to go if the buffer overflows).
    pub fn push_front(&mut self, batch: EncodedBatch) {
        self.bytes += batch.payload.len();
        self.batches.push_front(batch);
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Sends one batch and waits for the broker's acknowledgement. librdkafka retries internally
/// (idempotently, so a retry is never stored twice) until `timeout`.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    node: &str,
    batch: &EncodedBatch,
    timeout: Duration,
) -> Result<(), rdkafka::error::KafkaError> {
    let headers = OwnedHeaders::new().insert(Header {
        key: SCHEMA_HEADER,
        value: Some(Schema::RawV1.tag()),
    });
    let record = FutureRecord::to(topic)
        .key(node)
        .payload(&batch.payload)
        .headers(headers);
    producer
        .send(record, Timeout::After(timeout))
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{ConntrackEntry, Counters, Tuple};
    use crate::delta::ConntrackDelta;
    use std::time::UNIX_EPOCH;

    fn interval(n: usize) -> Interval {
        let a = |s: &str| s.parse().unwrap();
        let delta = |i: usize| ConntrackDelta {
            entry: ConntrackEntry {
                protocol: 17,
                original: Tuple {
                    src: a("10.0.0.1"),
                    dst: a("10.0.0.2"),
                    src_port: i as u16,
                    dst_port: 53,
                },
                reply: Tuple {
                    src: a("10.0.0.2"),
                    dst: a("10.0.0.1"),
                    src_port: 53,
                    dst_port: i as u16,
                },
                id: i as u32,
                zone: 0,
                mark: 0,
                status: 0,
                counters: None,
            },
            delta: Counters {
                orig_bytes: 100,
                orig_packets: 1,
                reply_bytes: 0,
                reply_packets: 0,
            },
            new: false,
            destroyed: false,
            node_endpoint: false,
        };
        Interval {
            start: UNIX_EPOCH,
            end: SystemTime::now(),
            deltas: (0..n).map(delta).collect(),
            last_part: true,
        }
    }

    #[test]
    fn batches_respect_the_size_limit_and_number_consecutively() {
        let mut next = 7;
        let batches = encode_batches(&interval(1000), "node-a", "i1", &mut next, 4096);
        assert!(batches.len() > 1);
        assert_eq!(next, 7 + batches.len() as u64);
        let mut total = 0;
        for (i, b) in batches.iter().enumerate() {
            assert!(
                b.payload.len() <= 4096,
                "batch {i} is {} bytes",
                b.payload.len()
            );
            let decoded = netmeter_proto::decode_batch(&b.payload).unwrap();
            assert_eq!(decoded.sequence, 7 + i as u64);
            assert_eq!(decoded.deltas.len(), b.deltas);
            total += decoded.deltas.len();
        }
        assert_eq!(total, 1000);
        let completing: Vec<_> = batches
            .iter()
            .map(|b| b.completes_interval_at.is_some())
            .collect();
        assert_eq!(completing.iter().filter(|c| **c).count(), 1);
        assert!(
            completing[completing.len() - 1],
            "only the last batch completes the interval"
        );
    }

    #[test]
    fn an_empty_interval_is_still_published() {
        let mut next = 1;
        let batches = encode_batches(&interval(0), "node-a", "i1", &mut next, 4096);
        assert_eq!((batches.len(), batches[0].deltas, next), (1, 0, 2));
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_exactly() {
        let batch = |sequence, deltas| EncodedBatch {
            sequence,
            deltas,
            payload: vec![0; 100],
            completes_interval_at: None,
        };
        let mut buffer = SendBuffer::new(250);
        assert_eq!(buffer.push(batch(1, 10)), Dropped::default());
        assert_eq!(buffer.push(batch(2, 20)), Dropped::default());
        assert_eq!(
            buffer.push(batch(3, 30)),
            Dropped {
                batches: 1,
                deltas: 10
            }
        );
        assert_eq!(
            (
                buffer.len(),
                buffer.bytes(),
                buffer.front().unwrap().sequence
            ),
            (2, 200, 2)
        );
    }
}
