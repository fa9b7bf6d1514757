//! Publishing intervals to the raw topic: batches of at most `max_message_bytes`, keyed by
//! node, sent one at a time and in order by an idempotent producer. While the broker is
//! unreachable, batches wait in a bounded buffer; when it is full the oldest batch is dropped
//! and counted (its sequence number becomes a visible gap downstream). Nothing is lost silently.
//!
//! The logic is plain: [`encode_batches`] and the [`SendBuffer`]. [`RawPublisher`] drives it:
//! intervals in from the collection, batches out through the shared
//! [`Publisher`](netmeter_common::publish::Publisher) (which sends a failed batch again with a
//! fresh producer and capped backoff); at shutdown it drains within a deadline and keeps what
//! is still unsent for the next process ([`crate::state`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use netmeter_common::publish::{Outgoing, Publisher};
use netmeter_proto::{SCHEMA_HEADER, Schema, raw};
use prost::Message;
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::collect::Collection;
use crate::config::Config;
use crate::metric_list::{
    BATCHES_PUBLISHED, BUFFER_BATCHES, BUFFER_BYTES, DROPPED_BATCHES, DROPPED_DELTAS, PUBLISH,
};
use crate::output::{Interval, wire_delta, wire_interval};
use crate::state::{self, StateDir};

/// How long librdkafka retries a delivery (idempotently: a retry is never stored twice) before
/// failing it; then the shared publisher rebuilds the producer and sends again. Short, so an
/// outage shows in the logs and metrics within seconds and a broker that restarted (which may
/// refuse the old producer's retries for good) gets a new producer soon.
const MESSAGE_TIMEOUT_MS: &str = "10000";

/// Room above `--max-message-bytes` for what librdkafka adds to a message (key, header, record
/// framing), so that a batch of the maximum size is never refused by the producer itself.
const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;

/// Of `--shutdown-timeout`, the share for publishing the final dump and what is buffered; the
/// rest is for saving what is still unsent and stopping the collection threads.
const DRAIN_SHARE: f32 = 0.75;

/// The raw topic's producer: idempotent, compressed as configured.
pub fn producer(config: &Config) -> Result<Publisher, KafkaError> {
    let mut client = config.kafka.client_config("netmeter-collector");
    client
        .set("enable.idempotence", "true")
        .set("compression.type", config.compression.librdkafka())
        .set(
            "message.max.bytes",
            (config.max_message_bytes + MESSAGE_OVERHEAD_BYTES).to_string(),
        )
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    Publisher::new(client, PUBLISH)
}

/// Publishes the collection's intervals to the raw topic, one batch at a time and in order.
pub struct RawPublisher {
    publisher: Arc<Publisher>,
    topic: String,
    node_name: String,
    /// This process's id in every batch; with the sequence, what downstream deduplicates by.
    instance_id: String,
    next_sequence: u64,
    max_message_bytes: usize,
    buffer: SendBuffer,
    state: Option<StateDir>,
    /// Whether the last write of the published-interval marker failed (logged once a series).
    marker_failing: bool,
    drain: Duration,
}

/// A batch's send, until the broker acknowledged it.
type Sending = Pin<Box<dyn Future<Output = ()> + Send>>;

impl RawPublisher {
    /// `unsent`: what the previous process could not publish; it goes first, unchanged.
    pub fn new(
        publisher: Publisher,
        config: &Config,
        state: Option<StateDir>,
        unsent: Vec<EncodedBatch>,
    ) -> RawPublisher {
        let mut raw = RawPublisher {
            publisher: Arc::new(publisher),
            topic: Schema::RawV1.topic(&config.kafka.topic_prefix),
            node_name: config.node_name.clone(),
            instance_id: uuid::Uuid::new_v4().to_string(),
            next_sequence: 1,
            max_message_bytes: config.max_message_bytes,
            buffer: SendBuffer::new(config.buffer_bytes),
            state,
            marker_failing: false,
            drain: config.service.shutdown_timeout.mul_f32(DRAIN_SHARE),
        };
        raw.queue(unsent);
        raw
    }

    /// Publishes what the collection hands on until `shutdown`; then asks it for the final
    /// dump, publishes that and the buffer until the drain deadline, and keeps what is left.
    pub async fn run(
        mut self,
        collection: &Collection,
        mut intervals: mpsc::Receiver<Interval>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        tracing::info!(topic = %self.topic, instance_id = %self.instance_id, "publishing to Kafka");
        let mut in_flight: Option<(EncodedBatch, Sending)> = None;
        // Until the final dump's intervals are all in (the channel closes after them).
        let mut collecting = true;
        let mut draining_until = None;
        loop {
            if in_flight.is_none()
                && let Some(batch) = self.buffer.pop_front()
            {
                let sending = self.send(&batch);
                in_flight = Some((batch, sending));
            }
            metrics::gauge!(BUFFER_BATCHES.name).set(self.buffer.len() as f64);
            metrics::gauge!(BUFFER_BYTES.name).set(self.buffer.bytes() as f64);
            if draining_until.is_some() && !collecting && in_flight.is_none() {
                break;
            }
            tokio::select! {
                interval = intervals.recv(), if collecting => {
                    let Some(interval) = interval else {
                        collecting = false;
                        if draining_until.is_none() {
                            break; // the collection ended by itself
                        }
                        continue;
                    };
                    self.encode(&interval);
                }
                () = async { in_flight.as_mut().expect("guarded").1.as_mut().await }, if in_flight.is_some() => {
                    let (batch, _) = in_flight.take().expect("guarded");
                    self.acknowledged(&batch);
                }
                _ = shutdown.cancelled(), if draining_until.is_none() => {
                    collection.request_final_dump();
                    draining_until = Some(Instant::now() + self.drain);
                }
                () = until(draining_until) => break,
            }
        }
        // What the collection handed on but the broker did not acknowledge, in order. (An
        // abandoned send may still arrive: then the next process sends it again, same instance
        // and sequence, and downstream dedup holds.)
        intervals.close();
        while let Ok(interval) = intervals.try_recv() {
            self.encode(&interval);
        }
        let unsent: Vec<EncodedBatch> = in_flight
            .map(|(batch, _)| batch)
            .into_iter()
            .chain(std::iter::from_fn(|| self.buffer.pop_front()))
            .collect();
        keep_unsent(self.state, unsent).await
    }

    /// Sends `batch` until the broker acknowledges it: the shared publisher sends it again after
    /// a failure, with a fresh producer and capped backoff.
    fn send(&self, batch: &EncodedBatch) -> Sending {
        let publisher = self.publisher.clone();
        let message = Outgoing {
            topic: self.topic.clone(),
            key: self.node_name.as_bytes().to_vec(),
            payload: batch.payload.clone(),
            headers: vec![(SCHEMA_HEADER, Schema::RawV1.tag().as_bytes().to_vec())],
        };
        Box::pin(async move {
            // Never cancelled: only the drain deadline ends a send, by dropping this future
            // (its batch is then kept as unsent).
            let never = CancellationToken::new();
            let _acknowledged = publisher.send(message, &never).await;
        })
    }

    /// Splits an interval into batches and queues them.
    fn encode(&mut self, interval: &Interval) {
        let batches = encode_batches(
            interval,
            &self.node_name,
            &self.instance_id,
            &mut self.next_sequence,
            self.max_message_bytes,
        );
        self.queue(batches);
    }

    /// Queues batches for sending; a full buffer drops the oldest (counted).
    fn queue(&mut self, batches: impl IntoIterator<Item = EncodedBatch>) {
        for batch in batches {
            let dropped = self.buffer.push(batch);
            count_dropped(dropped.batches, dropped.deltas, "buffer full");
        }
    }

    /// The broker acknowledged `batch`: counted, and if it completes an interval, everything up
    /// to the interval's end is published (the marker).
    fn acknowledged(&mut self, batch: &EncodedBatch) {
        metrics::counter!(BATCHES_PUBLISHED.name).increment(1);
        if let (Some(state), Some(end)) = (&self.state, batch.completes_interval_at) {
            self.marker_failing = save_marker(state, end, self.marker_failing);
        }
    }
}

/// Completes at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// At shutdown: batches the broker did not acknowledge are saved for the next process to send
/// first, or, without a usable state directory, dropped and counted.
async fn keep_unsent(state: Option<StateDir>, unsent: Vec<EncodedBatch>) -> anyhow::Result<()> {
    if unsent.is_empty() {
        return Ok(());
    }
    let (batches, deltas) = (
        unsent.len() as u64,
        unsent.iter().map(|b| b.deltas as u64).sum(),
    );
    let saved = match state {
        Some(state) => tokio::task::spawn_blocking(move || state.save_batches(&unsent)).await?,
        None => false,
    };
    if !saved {
        count_dropped(batches, deltas, "shutdown before the broker acknowledged");
    }
    Ok(())
}

/// Records that everything up to `end` is published; logs the first failure of a series (the
/// marker only dates a gap after a kill) and counts each. Returns whether it failed.
fn save_marker(state: &StateDir, end: SystemTime, was_failing: bool) -> bool {
    match state.save_marker(end) {
        Ok(()) => {
            if was_failing {
                tracing::info!("the published-interval marker is written again");
            }
            false
        }
        Err(error) => {
            let path = state.path(state::FileKind::Marker);
            state::report_error(
                "save_marker",
                &format!("cannot write {}", path.display()),
                &error,
                "after a kill, the next collector cannot say how long the gap was",
                !was_failing,
            );
            true
        }
    }
}

/// Every dropped batch is counted and logged with why.
fn count_dropped(batches: u64, deltas: u64, reason: &'static str) {
    if batches == 0 {
        return;
    }
    metrics::counter!(DROPPED_BATCHES.name, "reason" => reason).increment(batches);
    metrics::counter!(DROPPED_DELTAS.name, "reason" => reason).increment(deltas);
    tracing::warn!(batches, deltas, reason, "dropped batches");
}

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
