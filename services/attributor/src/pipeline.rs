//! The Kafka side of the attributor: raw batches in, flow records out, offsets stored only
//! after everything produced from a raw message (its records, or its dead letter) is
//! acknowledged by the broker. At-least-once: after a crash or a rebalance a raw message may
//! be attributed again, and its records carry the same ids.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use netmeter_common::consume::GroupConsumer;
use netmeter_common::dead_letter::{DeadLetters, Rejected};
use netmeter_common::kafka::header;
use netmeter_common::publish::{Outgoing, Pending, Publisher};
use netmeter_proto::raw::ConntrackBatch;
use netmeter_proto::{ENCODING_HEADER, FlowView, JSON_ENCODING, SCHEMA_HEADER, Schema};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cloud::SharedCloudRanges;
use crate::config::OutputFormat;
use crate::delta::{DeltaBatch, DeltaError};
use crate::enrich::{Enricher, Inputs};
use crate::inventory::IpOwnerHistory;
use crate::metric_list::{DELTAS, FLOW_BYTES, RECORDS};
use crate::usage::{Tally, UsageMetrics};

/// Turns raw batches into flow messages: converts each at the edge ([`DeltaBatch`]), enriches
/// it against the current inventory and cloud ranges, and encodes the records.
pub struct Attributor {
    pub enricher: Enricher,
    pub history: Arc<RwLock<IpOwnerHistory>>,
    pub cloud: SharedCloudRanges,
    pub format: OutputFormat,
    pub max_message_bytes: usize,
    pub flows_topic: String,
}

/// The flow messages of one raw batch.
pub struct Attributed {
    pub messages: Vec<Outgoing>,
    pub records: usize,
}

impl Attributor {
    /// Enriches one raw batch into messages of at most `max_message_bytes`, keyed by node. All
    /// or nothing: a malformed delta fails the batch before anything is produced.
    pub fn attribute(
        &self,
        batch: &ConntrackBatch,
        generation: u64,
    ) -> Result<Attributed, DeltaError> {
        let batch = DeltaBatch::from_wire(batch)?;
        let cloud = self.cloud.current();
        let history = self.history.read().expect("history lock");
        let inputs = Inputs {
            history: &history,
            cloud: &cloud,
        };
        let mut payloads = vec![Vec::new()];
        let mut usage = Tally::default();
        let enriched =
            self.enricher
                .enrich(&batch, &inputs, generation, |flow: &FlowView, endpoints| {
                    usage.add(flow);
                    let full = payloads
                        .last()
                        .is_some_and(|p| p.len() >= self.max_message_bytes);
                    if full {
                        payloads.push(Vec::with_capacity(self.max_message_bytes + 1024));
                    }
                    let current = payloads.last_mut().expect("never empty");
                    match self.format {
                        OutputFormat::Protobuf => {
                            flow.encode_length_delimited_using(endpoints, current)
                        }
                        OutputFormat::Json => {
                            serde_json::to_writer(&mut *current, flow).expect("writing to a Vec");
                            current.push(b'\n');
                        }
                    }
                });
        drop(history);
        UsageMetrics::global().add(&usage);
        for (class, by_direction) in crate::classify::Class::ALL.iter().zip(enriched.bytes) {
            for (direction, bytes) in ["out", "in"].into_iter().zip(by_direction) {
                if bytes > 0 {
                    metrics::counter!(FLOW_BYTES.name, "class" => class.name(), "direction" => direction)
                        .increment(bytes);
                }
            }
        }
        let mut headers = vec![(SCHEMA_HEADER, Schema::FlowsV1.tag().as_bytes().to_vec())];
        if self.format == OutputFormat::Json {
            headers.push((ENCODING_HEADER, JSON_ENCODING.to_vec()));
        }
        let messages = payloads
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|payload| Outgoing {
                topic: self.flows_topic.clone(),
                key: batch.node_name.as_bytes().to_vec(),
                payload,
                headers: headers.clone(),
            })
            .collect();
        Ok(Attributed {
            messages,
            records: enriched.records,
        })
    }

    /// Attributes one raw Kafka message, or explains why it goes to the dead-letter topic.
    pub fn process(
        &self,
        message: &BorrowedMessage,
        generation: u64,
        dead_letters: &DeadLetters,
    ) -> (Vec<Outgoing>, Option<ConntrackBatch>) {
        let schema = header(message, SCHEMA_HEADER);
        let payload = message.payload().unwrap_or_default();
        let rejected = |reason: &dyn std::fmt::Display, label| {
            let rejected = Rejected {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
                key: message.key(),
                schema,
                payload,
            };
            (vec![dead_letters.letter(&rejected, reason, label)], None)
        };
        let batch = match Schema::RawV1
            .check_header(schema)
            .and_then(|_| netmeter_proto::decode_batch(payload))
        {
            Ok(batch) => batch,
            Err(err) => return rejected(&err, err.metric_label()),
        };
        match self.attribute(&batch, generation) {
            Ok(attributed) => {
                metrics::counter!(DELTAS.name).increment(batch.deltas.len() as u64);
                metrics::counter!(RECORDS.name).increment(attributed.records as u64);
                (attributed.messages, Some(batch))
            }
            Err(err) => rejected(&err, err.metric_label()),
        }
    }
}

/// Everything produced from one raw message, and the offset to store once it is confirmed.
struct InFlight {
    partition: i32,
    offset: i64,
    pending: Vec<Pending>,
}

/// Raw messages whose output is awaiting acknowledgement; bounds memory.
const MAX_IN_FLIGHT: usize = 256;

/// The live service loop: consume the raw topic in the group until shutdown, then confirm
/// what is in flight (within `drain`) and commit.
pub async fn run(
    attribution: Arc<Attributor>,
    consumer: Arc<GroupConsumer>,
    raw_topic: String,
    publisher: Arc<Publisher>,
    dead_letters: DeadLetters,
    shutdown: CancellationToken,
    drain: Duration,
) -> anyhow::Result<()> {
    consumer.subscribe(&[&raw_topic])?;
    let confirmed_until = CancellationToken::new();
    let (in_flight, mut acks) = mpsc::channel::<InFlight>(MAX_IN_FLIGHT);
    let acker = {
        let (consumer, publisher, topic, stop) = (
            consumer.clone(),
            publisher.clone(),
            raw_topic.clone(),
            confirmed_until.clone(),
        );
        tokio::spawn(async move {
            while let Some(entry) = acks.recv().await {
                for pending in entry.pending {
                    if publisher.confirm(pending, &stop).await.is_err() {
                        return;
                    }
                }
                let mut offsets = TopicPartitionList::new();
                let stored = offsets
                    .add_partition_offset(&topic, entry.partition, Offset::Offset(entry.offset + 1))
                    .and_then(|_| consumer.store_offsets(&offsets));
                if let Err(err) = stored {
                    // The partition was revoked meanwhile; its new owner re-reads it.
                    tracing::debug!(partition = entry.partition, error = %err, "offset not stored");
                }
            }
        })
    };
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            message = consumer.recv() => message,
        };
        let (messages, _) = attribution.process(&message, 0, &dead_letters);
        let mut pending = Vec::with_capacity(messages.len());
        for outgoing in messages {
            pending.push(publisher.enqueue(Arc::new(outgoing)).await);
        }
        let entry = InFlight {
            partition: message.partition(),
            offset: message.offset(),
            pending,
        };
        drop(message);
        if in_flight.send(entry).await.is_err() {
            break;
        }
    }
    // Drain: confirm what is in flight (bounded), then commit what was stored.
    drop(in_flight);
    let stopper = confirmed_until.clone();
    let deadline = tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        stopper.cancel();
    });
    let _ = acker.await;
    deadline.abort();
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(err) => {
            tracing::warn!(error = %err, "final offset commit failed; the next owner re-reads from the last commit")
        }
    }
    consumer.leave().await;
    Ok(())
}
