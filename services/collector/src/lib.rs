//! The node collector: reads conntrack and publishes per-connection deltas.
//!
//! - [`conntrack`]: netlink dumps and DESTROY events, decoded into plain entries.
//! - [`delta`]: successive readings -> exact per-connection deltas, non-destructively,
//!   with per-connection state in a compact [`table`].
//! - [`collect`]: the threads that read conntrack every interval and on every DESTROY event.
//! - [`output`]: JSON lines for `--output stdout`, and the raw topic's wire form.
//! - [`publish`]: batches to the raw topic, in order, through a bounded buffer.
//! - [`state`]: what survives a restart (counters, unsent batches, the last published
//!   interval), so a restart loses nothing, or says what it lost.

pub mod collect;
pub mod config;
pub mod conntrack;
pub mod delta;
pub mod metric_descriptions;
pub mod output;
pub mod publish;
pub mod state;
pub mod table;

pub use config::{Args, Config, Output};

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use netmeter_common::ServiceContext;
use netmeter_proto::Schema;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::mpsc;

use crate::collect::Beginning;
use crate::output::Interval;
use crate::publish::{EncodedBatch, SendBuffer, encode_batches};
use crate::state::{StateDir, TableIdentity};

/// Runs the collector until `ctx.shutdown` is cancelled.
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    tracing::info!(node = %config.node_name, interval = ?config.interval, output = ?config.output, mode = ?config.dump_mode, "collector configured");
    metric_descriptions::describe();
    if !wait_for_accounting(&config, &ctx).await? {
        return Ok(());
    }
    match config.output {
        Output::Stdout => write_stdout(config, ctx).await,
        Output::Kafka => publish_to_kafka(config, ctx).await,
    }
}

/// How often accounting is checked again while it is off.
const ACCOUNTING_RECHECK: Duration = Duration::from_secs(5);

/// Conntrack without accounting (`nf_conntrack_acct=0`) has no byte counters. Rather than exit
/// (and crash-loop), the collector waits, not ready, with
/// `netmeter_collector_conntrack_accounting` at 0 and one log line saying how to fix it, and
/// starts as soon as accounting is on (`--enable-acct` switches it on itself). False if
/// shutdown came first.
async fn wait_for_accounting(config: &Config, ctx: &ServiceContext) -> anyhow::Result<bool> {
    let mut waiting = false;
    loop {
        let (netns, enable) = (config.netns.clone(), config.enable_acct);
        let checked = tokio::task::spawn_blocking(move || {
            conntrack::netlink::ensure_accounting(netns.as_deref(), enable)
        })
        .await?;
        match checked {
            Ok(()) => {
                metrics::gauge!("netmeter_collector_conntrack_accounting").set(1.0);
                if waiting {
                    tracing::info!("conntrack accounting is on now; starting");
                }
                return Ok(true);
            }
            Err(error @ conntrack::netlink::NetlinkError::AccountingOff(_)) => {
                metrics::gauge!("netmeter_collector_conntrack_accounting").set(0.0);
                if !waiting {
                    tracing::error!(%error, recheck = ?ACCOUNTING_RECHECK, "not ready until conntrack accounting is on");
                    waiting = true;
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(ACCOUNTING_RECHECK) => {}
        }
    }
}

/// Starts the collection threads; intervals arrive on the returned channel.
async fn start_collection(
    config: &Config,
    beginning: Beginning,
    state: Option<StateDir>,
) -> anyhow::Result<(collect::Collection, mpsc::Receiver<Interval>)> {
    let (tx, intervals) = mpsc::channel(4);
    let settings = collect::CollectSettings {
        netns: config.netns.clone(),
        interval: config.interval,
        mode: config.dump_mode,
        enable_acct: config.enable_acct,
        filter: config.filter,
        state,
    };
    let collection =
        tokio::task::spawn_blocking(move || collect::start(settings, beginning, tx)).await??;
    Ok((collection, intervals))
}

/// `--state-dir`, if set and usable (an unusable one is logged and counted: we run without).
async fn open_state_dir(config: &Config) -> anyhow::Result<Option<StateDir>> {
    let Some(dir) = config.state_dir.clone() else {
        return Ok(None);
    };
    let (netns, node, mode, max_age) = (
        config.netns.clone(),
        config.node_name.clone(),
        config.dump_mode,
        config.state_max_age,
    );
    Ok(tokio::task::spawn_blocking(move || {
        match TableIdentity::read(netns.as_deref(), &node, mode) {
            Ok(here) => StateDir::open(&dir, here, max_age),
            Err(error) => {
                state::report_error(
                    "open",
                    "cannot identify the conntrack table (boot id, network namespace)",
                    &error,
                    "the collector runs without --state-dir, every restart starts from a baseline",
                    true,
                );
                None
            }
        }
    })
    .await?)
}

type Sending = Pin<Box<dyn Future<Output = Result<(), KafkaError>> + Send>>;

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
    let state = open_state_dir(&config).await?;
    let previous = match state.clone() {
        Some(state) => {
            tokio::task::spawn_blocking(move || state.take_previous(SystemTime::now())).await?
        }
        None => state::Previous::default(),
    };
    let beginning = match previous.restored {
        Some((tracker, since)) => Beginning::Restored { tracker, since },
        None => Beginning::Baseline,
    };
    let (collection, mut intervals) = start_collection(&config, beginning, state.clone()).await?;
    if let Some(gap) = &previous.gap {
        gap.report(collection.counting_since());
    }
    ctx.health.set_ready(true);
    let instance_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(%topic, %instance_id, "publishing to Kafka");
    let mut next_sequence = 1;
    let mut buffer = SendBuffer::new(config.buffer_bytes);
    // What the previous process could not publish goes first, unchanged.
    queue(&mut buffer, previous.batches);
    let mut in_flight: Option<(EncodedBatch, Sending)> = None;
    let mut failing = false;
    let mut marker_failing = false;
    let start_send = |producer: &FutureProducer, batch: EncodedBatch| -> Sending {
        let (producer, topic, node) = (producer.clone(), topic.clone(), config.node_name.clone());
        Box::pin(async move {
            publish::send(&producer, &topic, &node, &batch, Duration::from_secs(60)).await
        })
    };
    // Until the final dump's intervals are all in (the channel closes after them).
    let mut collecting = true;
    let mut draining_until = None;
    loop {
        if in_flight.is_none()
            && let Some(batch) = buffer.pop_front()
        {
            in_flight = Some((batch.clone(), start_send(&producer, batch)));
        }
        metrics::gauge!("netmeter_collector_buffer_batches").set(buffer.len() as f64);
        metrics::gauge!("netmeter_collector_buffer_bytes").set(buffer.bytes() as f64);
        if draining_until.is_some() && !collecting && in_flight.is_none() {
            break;
        }
        let deadline = draining_until
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            interval = intervals.recv(), if collecting => {
                let Some(interval) = interval else {
                    collecting = false;
                    if draining_until.is_none() {
                        break; // the collection ended by itself
                    }
                    continue;
                };
                queue(&mut buffer, encode_batches(&interval, &config.node_name, &instance_id, &mut next_sequence, config.max_message_bytes));
            }
            result = async { in_flight.as_mut().expect("guarded").1.as_mut().await }, if in_flight.is_some() => {
                let (batch, _) = in_flight.take().expect("guarded");
                match result {
                    Ok(()) => {
                        metrics::counter!("netmeter_collector_batches_published_total").increment(1);
                        if failing {
                            tracing::info!(sequence = batch.sequence, "Kafka reachable again; sending the buffered batches in order");
                            failing = false;
                        }
                        if let (Some(state), Some(end)) = (&state, batch.completes_interval_at) {
                            marker_failing = save_marker(state, end, marker_failing);
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
                collection.request_final_dump();
                // Leave time inside the shutdown deadline to flush what is buffered.
                draining_until = Some(tokio::time::Instant::now() + config.service.shutdown_timeout.mul_f32(0.75));
            }
            _ = tokio::time::sleep_until(deadline), if draining_until.is_some() => break,
        }
    }
    // What the collection handed on but the broker did not acknowledge, in order. (An
    // abandoned send may still arrive: then the next process sends it again, same instance and
    // sequence, and downstream dedup holds.)
    intervals.close();
    while let Ok(interval) = intervals.try_recv() {
        let batches = encode_batches(
            &interval,
            &config.node_name,
            &instance_id,
            &mut next_sequence,
            config.max_message_bytes,
        );
        queue(&mut buffer, batches);
    }
    let unsent: Vec<EncodedBatch> = in_flight
        .map(|(batch, _)| batch)
        .into_iter()
        .chain(std::iter::from_fn(|| buffer.pop_front()))
        .collect();
    keep_unsent(state, unsent).await?;
    tokio::task::spawn_blocking(move || drop(collection)).await?;
    Ok(())
}

/// Queues batches for sending; a full buffer drops the oldest (counted).
fn queue(buffer: &mut SendBuffer, batches: impl IntoIterator<Item = EncodedBatch>) {
    for batch in batches {
        let dropped = buffer.push(batch);
        count_dropped(dropped.batches, dropped.deltas, "buffer full");
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
    metrics::counter!("netmeter_collector_dropped_batches_total", "reason" => reason)
        .increment(batches);
    metrics::counter!("netmeter_collector_dropped_deltas_total", "reason" => reason)
        .increment(deltas);
    tracing::warn!(batches, deltas, reason, "dropped batches");
}

async fn write_stdout(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    // No state: --output stdout is for looking, not for billing.
    let (collection, mut intervals) = start_collection(&config, Beginning::Baseline, None).await?;
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
