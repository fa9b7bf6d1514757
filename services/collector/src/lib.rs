//! The node collector: reads conntrack and publishes per-connection deltas.
//!
//! - [`conntrack`]: netlink dumps and DESTROY events, decoded into plain entries.
//! - [`delta`]: successive readings -> exact per-connection deltas, non-destructively,
//!   with per-connection state in a compact [`table`].
//! - [`collect`]: the threads that read conntrack every interval and on every DESTROY event.
//! - [`output`]: JSON lines for `--output stdout`, and the raw topic's wire form.
//! - [`publish`]: batches to the raw topic, in order, through a bounded buffer.

pub mod collect;
pub mod config;
pub mod conntrack;
pub mod delta;
pub mod output;
pub mod publish;
pub mod table;

pub use config::{Args, Config, Output};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use netmeter_common::ServiceContext;
use netmeter_proto::Schema;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;

use crate::output::Interval;
use crate::publish::{EncodedBatch, SendBuffer, encode_batches};

/// Runs the collector until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    tracing::info!(node = %config.node_name, interval = ?config.interval, output = ?config.output, mode = ?config.dump_mode, "collector configured");
    match config.output {
        Output::Stdout => write_stdout(config, ctx).await,
        Output::Kafka => publish_to_kafka(config, ctx).await,
    }
}

/// Starts the collection threads; intervals arrive on the returned channel.
async fn start_collection(
    config: &Config,
) -> anyhow::Result<(collect::Collection, mpsc::Receiver<Interval>)> {
    let (tx, intervals) = mpsc::channel(4);
    let settings = collect::CollectSettings {
        netns: config.netns.clone(),
        interval: config.interval,
        mode: config.dump_mode,
        enable_acct: config.enable_acct,
        filter: config.filter,
    };
    let collection = tokio::task::spawn_blocking(move || collect::start(settings, tx)).await??;
    Ok((collection, intervals))
}

type Sending = Pin<Box<dyn Future<Output = (EncodedBatch, Result<(), KafkaError>)> + Send>>;

async fn publish_to_kafka(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let topic = Schema::RawV1.topic(&config.kafka.topic_prefix);
    let new_producer = || -> Result<FutureProducer, KafkaError> {
        config
            .kafka
            .client_config("netmeter-collector")
            .set("enable.idempotence", "true")
            .set("compression.type", config.compression.librdkafka())
            .set(
                "message.max.bytes",
                (config.max_message_bytes + 64 * 1024).to_string(),
            )
            // librdkafka retries (idempotently) for this long before handing the batch back.
            .set("message.timeout.ms", "10000")
            .create()
    };
    let mut producer = new_producer()?;
    let (collection, mut intervals) = start_collection(&config).await?;
    ctx.health.set_ready(true);
    let instance_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(%topic, %instance_id, "publishing to Kafka");
    let mut next_sequence = 1;
    let mut buffer = SendBuffer::new(config.buffer_bytes);
    let mut in_flight: Option<Sending> = None;
    let mut failing = false;
    let start_send = |producer: &FutureProducer, batch: EncodedBatch| -> Sending {
        let (producer, topic, node) = (producer.clone(), topic.clone(), config.node_name.clone());
        Box::pin(async move {
            let result =
                publish::send(&producer, &topic, &node, &batch, Duration::from_secs(60)).await;
            (batch, result)
        })
    };
    let mut draining_until = None;
    loop {
        if in_flight.is_none()
            && let Some(batch) = buffer.pop_front()
        {
            in_flight = Some(start_send(&producer, batch));
        }
        metrics::gauge!("netmeter_collector_buffer_batches").set(buffer.len() as f64);
        metrics::gauge!("netmeter_collector_buffer_bytes").set(buffer.bytes() as f64);
        if draining_until.is_some() && in_flight.is_none() {
            break;
        }
        let deadline = draining_until
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            interval = intervals.recv(), if draining_until.is_none() => {
                let Some(interval) = interval else { break };
                for batch in encode_batches(&interval, &config.node_name, &instance_id, &mut next_sequence, config.max_message_bytes) {
                    let dropped = buffer.push(batch);
                    count_dropped(dropped.batches, dropped.deltas, "buffer full");
                }
            }
            (batch, result) = async { in_flight.as_mut().expect("guarded").await }, if in_flight.is_some() => {
                in_flight = None;
                match result {
                    Ok(()) => {
                        metrics::counter!("netmeter_collector_batches_published_total").increment(1);
                        if failing {
                            tracing::info!(sequence = batch.sequence, "Kafka reachable again; sending the buffered batches in order");
                            failing = false;
                        }
                    }
                    Err(err) => {
                        metrics::counter!("netmeter_collector_publish_errors_total").increment(1);
                        if !failing {
                            tracing::warn!(error = %err, %topic, "cannot publish to Kafka; buffering (bounded by --buffer-bytes) and retrying");
                            failing = true;
                        }
                        buffer.push_front(batch);
                        // A broker that restarted may not know this producer's id and refuse
                        // its retries for good (tansu does); a new producer starts clean.
                        producer = new_producer()?;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            _ = ctx.shutdown.cancelled(), if draining_until.is_none() => {
                // Leave time inside the shutdown deadline to flush what is buffered.
                draining_until = Some(tokio::time::Instant::now() + config.service.shutdown_timeout.mul_f32(0.75));
            }
            _ = tokio::time::sleep_until(deadline), if draining_until.is_some() => break,
        }
    }
    let unsent: Vec<EncodedBatch> = std::iter::from_fn(|| buffer.pop_front()).collect();
    let in_flight_lost = u64::from(in_flight.is_some());
    count_dropped(
        unsent.len() as u64 + in_flight_lost,
        unsent.iter().map(|b| b.deltas as u64).sum(),
        "shutdown before the broker acknowledged",
    );
    tokio::task::spawn_blocking(move || drop(collection)).await?;
    Ok(())
}

/// Every dropped batch is counted and logged with why.
fn count_dropped(batches: u64, deltas: u64, reason: &'static str) {
    if batches == 0 {
        return;
    }
    metrics::counter!("netmeter_collector_dropped_batches_total", "reason" => reason)
        .increment(batches);
    metrics::counter!("netmeter_collector_dropped_deltas_total", "reason" => reason)
        .increment(deltas);
    tracing::warn!(batches, deltas, reason, "dropped batches");
}

async fn write_stdout(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let (collection, mut intervals) = start_collection(&config).await?;
    ctx.health.set_ready(true);
    loop {
        tokio::select! {
            interval = intervals.recv() => {
                let Some(interval) = interval else { break };
                tokio::task::spawn_blocking(move || output::write_json_lines(&interval, &mut std::io::stdout().lock())).await??;
            }
            _ = ctx.shutdown.cancelled() => break,
        }
    }
    tokio::task::spawn_blocking(move || drop(collection)).await?;
    Ok(())
}
