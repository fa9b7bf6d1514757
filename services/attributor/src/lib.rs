//! The attributor: consumes raw deltas, attributes them to workloads, zones and clouds as of
//! the flow's time, classifies and prices them, and publishes flow records.
//!
//! Reading order: [`enrich`] (one delta -> records: the rules), [`classify`] (classes and
//! prices), [`inventory`] (who held an address when), [`kubernetes`] (where tenures come from),
//! [`inventory_topic`] (where they are persisted), [`cloud`] and [`rules`] (remote labels),
//! [`pipeline`] (Kafka in and out), [`usage`] (metrics for people: bytes and dollars per
//! workload, the zone matrix), [`replay`] and [`explain`] (the subcommands).

pub mod classify;
pub mod cloud;
pub mod config;
pub mod enrich;
pub mod explain;
pub mod inventory;
pub mod inventory_topic;
pub mod kubernetes;
pub mod metric_descriptions;
pub mod pipeline;
pub mod prefix;
pub mod replay;
pub mod rules;
pub mod usage;

pub use config::{Args, Command};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use netmeter_common::ServiceContext;
use netmeter_common::dead_letter::DeadLetters;
use netmeter_common::kafka::{GroupContext, KafkaArgs, wait_for_topics};
use netmeter_common::publish::Publisher;
use netmeter_proto::Schema;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cloud::SharedCloudRanges;
use crate::config::{AttributionArgs, OutputArgs};
use crate::enrich::Enricher;
use crate::inventory::IpOwnerHistory;
use crate::inventory_topic::InventoryReader;
use crate::pipeline::Attribution;

/// The topics the attributor reads and writes.
pub fn topics(kafka: &KafkaArgs) -> Vec<String> {
    [
        Schema::RawV1,
        Schema::FlowsV1,
        Schema::InventoryV1,
        Schema::DeadLetterV1,
    ]
    .iter()
    .map(|s| kafka.topic(s.tag()))
    .collect()
}

/// The producer of flow records, inventory records and dead letters.
pub fn publisher(kafka: &KafkaArgs, max_message_bytes: usize) -> anyhow::Result<Arc<Publisher>> {
    let mut config = kafka.client_config("netmeter-attributor");
    config
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "20")
        .set(
            "message.max.bytes",
            (max_message_bytes + 64 * 1024).to_string(),
        )
        // librdkafka retries for this long; then `Publisher::confirm` rebuilds and resends.
        .set("message.timeout.ms", "15000");
    Ok(Arc::new(Publisher::new(config, "attributor")?))
}

/// Loads the cloud ranges, the rules and the persisted inventory: everything attribution
/// needs before the first raw message.
pub async fn build_attribution(
    kafka: &KafkaArgs,
    args: &AttributionArgs,
    output: &OutputArgs,
    settings: config::Attribution,
) -> anyhow::Result<(Arc<Attribution>, InventoryReader)> {
    let ranges = {
        let dir = args.cloud_ranges.dir.clone();
        tokio::task::spawn_blocking(move || cloud::load(dir.as_deref())).await??
    };
    cloud::RangesLoaded { loaded: &ranges }.emit();
    let history = Arc::new(RwLock::new(IpOwnerHistory::new(
        args.ip_grace.as_millis() as u64
    )));
    let reader = InventoryReader::new(kafka)?;
    let (reader, read) = {
        let history = history.clone();
        tokio::task::spawn_blocking(move || reader.catch_up(&history).map(|n| (reader, n)))
            .await?
            .context("reading the inventory topic")?
    };
    let pruned = history
        .write()
        .expect("history lock")
        .prune(kubernetes::now_ms().saturating_sub(args.inventory_retention.as_millis() as u64));
    tracing::info!(
        records = read,
        pruned,
        tenures = history.read().expect("history lock").len(),
        "inventory loaded"
    );
    let attribution = Attribution {
        enricher: Enricher::new(settings.place, settings.rules),
        history,
        cloud: SharedCloudRanges::new(ranges),
        format: output.output_format,
        max_message_bytes: output.max_message_bytes,
        flows_topic: kafka.topic(Schema::FlowsV1.tag()),
    };
    Ok((Arc::new(attribution), reader))
}

/// Runs the attributor service until `ctx.shutdown` is cancelled.
pub async fn run(
    args: Args,
    settings: config::Attribution,
    ctx: ServiceContext,
) -> anyhow::Result<()> {
    let kafka = &args.kafka;
    tracing::info!(cluster = %args.attribution.cluster, group = %args.group_id, "attributor configured");
    metric_descriptions::describe();
    usage::UsageMetrics::global().set_max_workloads(args.metrics_max_workloads);
    if !wait_for_topics(kafka, topics(kafka), &ctx.shutdown).await? {
        return Ok(());
    }
    let (attribution, reader) =
        build_attribution(kafka, &args.attribution, &args.output, settings).await?;
    let publisher = publisher(kafka, args.output.max_message_bytes)?;
    {
        let (history, shutdown) = (attribution.history.clone(), ctx.shutdown.clone());
        tokio::task::spawn_blocking(move || reader.follow(history, shutdown));
    }
    tokio::spawn(cloud::refresh_loop(
        args.attribution.cloud_ranges.clone(),
        attribution.cloud.clone(),
        ctx.shutdown.clone(),
    ));
    tokio::spawn(cloud::age_loop(
        attribution.cloud.clone(),
        ctx.shutdown.clone(),
    ));
    tokio::spawn(prune_loop(
        attribution.history.clone(),
        args.attribution.inventory_retention,
        ctx.shutdown.clone(),
    ));
    if args.kubernetes {
        start_kubernetes(&args, &attribution, &publisher, &ctx.shutdown).await?;
    }
    let consumer: rdkafka::consumer::StreamConsumer<GroupContext> = kafka
        .client_config("netmeter-attributor")
        .set("group.id", &args.group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create_with_context(GroupContext {
            service: "attributor",
        })?;
    let consumer = Arc::new(consumer);
    ctx.health.set_ready(true);
    let result = pipeline::run(
        attribution,
        consumer.clone(),
        kafka.topic(Schema::RawV1.tag()),
        publisher,
        DeadLetters::new(kafka, "attributor"),
        ctx.shutdown.clone(),
        args.service.shutdown_timeout.mul_f32(0.6),
    )
    .await;
    // Destroying a librdkafka consumer can block forever against some brokers (tansu); the
    // offsets are committed, so leaving it to the process exit loses nothing.
    std::mem::forget(consumer);
    result
}

/// Starts the Kubernetes index and waits (bounded) for its first full list.
async fn start_kubernetes(
    args: &Args,
    attribution: &Arc<Attribution>,
    publisher: &Arc<Publisher>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = kubernetes_client(args.kubeconfig.as_deref()).await?;
    let (tenures_tx, tenures_rx) = mpsc::channel(64);
    let (synced_tx, mut synced) = watch::channel(false);
    tokio::spawn(inventory_topic::publish(
        publisher.clone(),
        args.kafka.topic(Schema::InventoryV1.tag()),
        tenures_rx,
        shutdown.clone(),
    ));
    tokio::spawn(kubernetes::maintain(
        client,
        attribution.history.clone(),
        tenures_tx,
        synced_tx,
        shutdown.clone(),
    ));
    let waited = tokio::time::timeout(args.kubernetes_sync_timeout, synced.wait_for(|s| *s)).await;
    if waited.is_err() {
        tracing::warn!(timeout = ?args.kubernetes_sync_timeout, "Kubernetes API not in sync yet; attributing with the persisted inventory until it is");
    }
    Ok(())
}

/// A client from `kubeconfig`, else the in-cluster configuration or $KUBECONFIG.
async fn kubernetes_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read --kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("--kubeconfig {} has no usable context", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration (in-cluster or $KUBECONFIG); use --kubernetes=false for static hosts only",
        )?,
    };
    Ok(kube::Client::try_from(config)?)
}

async fn prune_loop(
    history: Arc<RwLock<IpOwnerHistory>>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
        let cutoff = kubernetes::now_ms().saturating_sub(retention.as_millis() as u64);
        let pruned = history.write().expect("history lock").prune(cutoff);
        if pruned > 0 {
            tracing::info!(pruned, "forgot tenures older than the inventory retention");
        }
    }
}
