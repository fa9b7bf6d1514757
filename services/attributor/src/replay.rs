//! `netmeter-attributor replay --from T1 --to T2`: re-attributes the raw batches whose interval
//! starts in `[T1, T2)` with the current rules and the persisted inventory as of flow time,
//! and publishes the records again with the same record ids and a higher `generation`. The
//! sink keeps the highest generation per record id, so totals after a replay equal a single
//! pass. Malformed raw messages were dead-lettered by the live pass and are only counted here.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use netmeter_common::kafka::{header, partitions};
use netmeter_proto::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Attribution as Settings, ReplayArgs};

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    pub from_unix_ms: u64,
    pub to_unix_ms: u64,
    pub generation: u64,
    /// Raw messages read (inside and outside the range).
    pub messages_read: u64,
    pub batches_replayed: u64,
    pub deltas: u64,
    pub records: u64,
    /// Raw messages that could not be decoded or attributed (skipped).
    pub invalid: u64,
}

pub fn main(args: ReplayArgs) -> ExitCode {
    if let Err(err) = args.log.init() {
        err.exit();
    }
    let settings = args.validate().unwrap_or_else(|e| e.exit());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = runtime.block_on(replay(&args, settings));
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(summary) => {
            println!("{}", serde_json::to_string(&summary).expect("serializable"));
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "replay failed");
            ExitCode::FAILURE
        }
    }
}

pub async fn replay(args: &ReplayArgs, settings: Settings) -> anyhow::Result<ReplaySummary> {
    let kafka = &args.kafka;
    let (attribution, reader) =
        crate::build_attribution(kafka, &args.attribution, &args.output, settings).await?;
    std::mem::forget(reader); // see InventoryReader::follow
    let publisher = crate::publisher(kafka, args.output.max_message_bytes)?;
    let generation = args.generation.unwrap_or_else(crate::kubernetes::now_ms);
    let mut summary = ReplaySummary {
        from_unix_ms: args.from,
        to_unix_ms: args.to,
        generation,
        ..Default::default()
    };
    let raw_topic = kafka.topic(Schema::RawV1.tag());
    let consumer: BaseConsumer = kafka
        .client_config("netmeter-attributor-replay")
        .set("group.id", "netmeter-attributor-replay")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ends = Vec::new();
    let assignment = {
        let consumer = &consumer;
        let raw_topic = &raw_topic;
        let ends = &mut ends;
        let from = args.from;
        tokio::task::block_in_place(move || seek(consumer, raw_topic, from, ends))?
    };
    consumer.assign(&assignment)?;
    let never = CancellationToken::new();
    let mut pending = Vec::new();
    while !ends.is_empty() {
        let message = tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(500)));
        let Some(message) = message else { continue };
        let message = match message {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(error = %err, "transient error reading the raw topic");
                continue;
            }
        };
        summary.messages_read += 1;
        let (partition, next) = (message.partition(), message.offset() + 1);
        ends.retain(|(p, high)| !(*p == partition && next >= *high));
        let batch = match Schema::RawV1
            .check_header(header(&message, netmeter_proto::SCHEMA_HEADER))
            .and_then(|_| netmeter_proto::decode_batch(message.payload().unwrap_or_default()))
        {
            Ok(batch) => batch,
            Err(_) => {
                summary.invalid += 1;
                continue;
            }
        };
        if !(args.from..args.to).contains(&batch.interval_start_unix_ms) {
            continue;
        }
        match attribution.attribute(&batch, generation) {
            Ok(attributed) => {
                summary.batches_replayed += 1;
                summary.deltas += batch.deltas.len() as u64;
                summary.records += attributed.records as u64;
                for outgoing in attributed.messages {
                    pending.push(publisher.enqueue(std::sync::Arc::new(outgoing)).await);
                }
            }
            Err(_) => summary.invalid += 1,
        }
    }
    for p in pending {
        publisher.confirm(p, &never).await.ok();
    }
    std::mem::forget(consumer);
    tracing::info!(?summary, "replay done");
    Ok(summary)
}

/// Positions every partition of the raw topic at the first message at or after `from_ms`, and
/// records where each partition ends now (replay reads up to there).
fn seek(
    consumer: &BaseConsumer,
    topic: &str,
    from_ms: u64,
    ends: &mut Vec<(i32, i64)>,
) -> anyhow::Result<TopicPartitionList> {
    let timeout = Duration::from_secs(10);
    let partitions = partitions(consumer.client(), topic, timeout)?;
    let mut by_time = TopicPartitionList::new();
    for &partition in &partitions {
        by_time.add_partition_offset(topic, partition, Offset::Offset(from_ms as i64))?;
    }
    let found = consumer
        .offsets_for_times(by_time, timeout)
        .context("looking up raw topic offsets by time")?;
    let mut assignment = TopicPartitionList::new();
    for element in found.elements() {
        let (_, high) = consumer.fetch_watermarks(topic, element.partition(), timeout)?;
        match element.offset() {
            Offset::Offset(start) if start < high => {
                assignment.add_partition_offset(
                    topic,
                    element.partition(),
                    Offset::Offset(start),
                )?;
                ends.push((element.partition(), high));
            }
            // Nothing at or after `from` in this partition.
            _ => {}
        }
    }
    Ok(assignment)
}
