//! `netmeter-attributor replay --from T1 --to T2`: re-attributes the raw batches whose interval
//! starts in `[T1, T2)` with the current rules and the persisted inventory as of flow time,
//! and publishes the records again with the same record ids and a higher `generation`. The
//! sink keeps the highest generation per record id, so totals after a replay equal a single
//! pass. Malformed raw messages were dead-lettered by the live pass and are only counted here.

use std::process::ExitCode;
use std::time::Duration;

use netmeter_common::consume::{Detached, ReadFrom, TopicToEnd};
use netmeter_common::kafka::header;
use netmeter_proto::Schema;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AttributionSettings as Settings, ReplayArgs};

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
    // A replay does not follow the inventory topic: its reader goes once it is read.
    let (attribution, _) =
        crate::build_attribution(kafka, &args.attribution, &args.output, settings).await?;
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
    let consumer = Detached::new(consumer);
    // Every partition from the first message at or after `from`, up to where it ends now.
    let mut messages = tokio::task::block_in_place(|| {
        TopicToEnd::assign(
            &consumer,
            &raw_topic,
            ReadFrom::Time(args.from),
            Duration::from_secs(10),
        )
    })?;
    let never = CancellationToken::new();
    let mut pending = Vec::new();
    while let Some(message) = tokio::task::block_in_place(|| messages.next()) {
        summary.messages_read += 1;
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
    tracing::info!(?summary, "replay done");
    Ok(summary)
}
