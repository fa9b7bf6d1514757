//! The attributor: consumes raw deltas, attributes them to workloads, zones and clouds as of
//! the flow's time, classifies and prices them, and publishes flow records.
//!
//! Reading order: [`delta`] (a raw batch as the attributor reads it), [`enrich`] (one delta ->
//! records: the rules), [`classify`] (classes and prices), [`inventory`] (who held an address
//! when), [`kubernetes`] (where tenures come from), [`inventory_topic`] (where they are
//! persisted), [`cloud`] and [`rules`] (remote labels), [`pipeline`] (Kafka in and out),
//! [`usage`] (metrics for people: bytes and dollars per workload, the zone matrix), [`replay`]
//! and [`explain`] (the subcommands).
//!
//! The service: [`Config`] (checked flags) -> [`build`] -> [`Service::run`] until shutdown.

pub mod classify;
pub mod cloud;
pub mod config;
pub mod delta;
pub mod enrich;
pub mod explain;
pub mod geo;
pub mod inventory;
pub mod inventory_topic;
pub mod kubernetes;
pub mod metric_list;
pub mod pipeline;
pub mod prefix;
pub mod prices;
pub mod replay;
pub mod rules;
pub mod usage;

pub use config::{Args, Command, Config};

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use netmeter_common::ServiceContext;
use netmeter_common::consume::GroupConsumer;
use netmeter_common::dead_letter::DeadLetters;
use netmeter_common::kafka::{KafkaArgs, wait_for_topics};
use netmeter_common::publish::Publisher;
use netmeter_proto::Schema;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::cloud::SharedCloudRanges;
use crate::config::{AttributionArgs, KubernetesSource, OutputArgs};
use crate::inventory::IpOwnerHistory;
use crate::inventory_topic::InventoryReader;
use crate::pipeline::Attributor;

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

/// Flow messages of one raw batch are produced back to back: waiting this long lets
/// librdkafka put them into one request per partition.
const LINGER_MS: &str = "20";
/// Room above `--max-message-bytes` for what librdkafka adds to a message (headers, key,
/// record framing), so a message of the maximum size is never refused by the producer itself.
const MESSAGE_OVERHEAD_BYTES: usize = 64 * 1024;
/// How long librdkafka retries a delivery before it fails it; then `Publisher::confirm`
/// rebuilds the producer and sends again, so this only bounds one attempt.
const MESSAGE_TIMEOUT_MS: &str = "15000";

/// The producer of flow records, inventory records and dead letters.
pub fn publisher(kafka: &KafkaArgs, max_message_bytes: usize) -> anyhow::Result<Arc<Publisher>> {
    let mut config = kafka.client_config("netmeter-attributor");
    config
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", LINGER_MS)
        .set(
            "message.max.bytes",
            (max_message_bytes + MESSAGE_OVERHEAD_BYTES).to_string(),
        )
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    Ok(Arc::new(Publisher::new(config, metric_list::PUBLISH)?))
}

/// Loads the cloud ranges, the rules and the persisted inventory: everything attribution
/// needs before the first raw message.
pub async fn build_attribution(
    kafka: &KafkaArgs,
    args: &AttributionArgs,
    output: &OutputArgs,
    settings: config::AttributionSettings,
) -> anyhow::Result<(Arc<Attributor>, InventoryReader)> {
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
    let attribution = Attributor {
        enricher: settings.enricher(),
        history,
        cloud: SharedCloudRanges::new(ranges),
        format: output.output_format,
        max_message_bytes: output.max_message_bytes,
        flows_topic: kafka.topic(Schema::FlowsV1.tag()),
    };
    Ok((Arc::new(attribution), reader))
}

/// Of `--shutdown-timeout`, the share for confirming what is in flight and committing; the
/// rest is for leaving the consumer group and stopping the background tasks.
const DRAIN_SHARE: f32 = 0.6;

/// Runs the attributor service until `ctx.shutdown` is cancelled: [`build`], ready,
/// [`Service::run`].
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let Some(service) = build(config, &ctx.shutdown).await? else {
        return Ok(()); // shut down before the topics existed
    };
    ctx.health.set_ready(true);
    service.run(ctx.shutdown).await
}

/// The attributor, ready to consume: attribution loaded, its background tasks (inventory,
/// cloud ranges, Kubernetes) running until shutdown.
pub struct Service {
    attributor: Arc<Attributor>,
    consumer: GroupConsumer,
    raw_topic: String,
    publisher: Arc<Publisher>,
    dead_letters: DeadLetters,
    drain: Duration,
}

/// Waits for the topics, loads what attribution needs, starts the background tasks (they stop
/// at `shutdown`) and creates the consumer. `None` if `shutdown` came first.
pub async fn build(
    config: Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Service>> {
    let kafka = &config.kafka;
    tracing::info!(cluster = %config.attribution.cluster, group = %config.group_id, "attributor configured");
    netmeter_common::metric::declare(metric_list::ALL);
    usage::UsageMetrics::global().set_max_workloads(config.metrics_max_workloads);
    for country in &config.allowed_egress_countries {
        metrics::gauge!(metric_list::EGRESS_COUNTRY_ALLOWED.name, "country" => country.clone())
            .set(1.0);
    }
    if !wait_for_topics(kafka, topics(kafka), shutdown).await? {
        return Ok(None);
    }
    let (attribution, reader) =
        build_attribution(kafka, &config.attribution, &config.output, config.settings).await?;
    let publisher = publisher(kafka, config.output.max_message_bytes)?;
    {
        let (history, shutdown) = (attribution.history.clone(), shutdown.clone());
        tokio::task::spawn_blocking(move || reader.follow(history, shutdown));
    }
    tokio::spawn(cloud::refresh_loop(
        config.attribution.cloud_ranges.clone(),
        attribution.cloud.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(cloud::age_loop(attribution.cloud.clone(), shutdown.clone()));
    tokio::spawn(prune_loop(
        attribution.history.clone(),
        config.attribution.inventory_retention,
        shutdown.clone(),
    ));
    if let Some(source) = &config.kubernetes {
        start_kubernetes(source, kafka, &attribution, &publisher, shutdown).await?;
    }
    let consumer = GroupConsumer::new(
        kafka
            .client_config("netmeter-attributor")
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest"),
        metric_list::CONSUMER,
    )?;
    Ok(Some(Service {
        attributor: attribution,
        consumer,
        raw_topic: kafka.topic(Schema::RawV1.tag()),
        publisher,
        dead_letters: DeadLetters::new(kafka, "attributor", metric_list::DEAD_LETTERS),
        drain: config.service.shutdown_timeout.mul_f32(DRAIN_SHARE),
    }))
}

impl Service {
    /// Consumes the raw topic until `shutdown`, then drains ([`pipeline::run`]).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        pipeline::run(
            self.attributor,
            Arc::new(self.consumer),
            self.raw_topic,
            self.publisher,
            self.dead_letters,
            shutdown,
            self.drain,
        )
        .await
    }
}

/// Starts the Kubernetes index and waits (bounded) for its first full list.
async fn start_kubernetes(
    source: &KubernetesSource,
    kafka: &KafkaArgs,
    attribution: &Arc<Attributor>,
    publisher: &Arc<Publisher>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let client = kubernetes_client(source.kubeconfig.as_deref()).await?;
    let (tenures_tx, tenures_rx) = mpsc::channel(64);
    let (synced_tx, mut synced) = watch::channel(false);
    tokio::spawn(inventory_topic::publish(
        publisher.clone(),
        kafka.topic(Schema::InventoryV1.tag()),
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
    let waited = tokio::time::timeout(source.sync_timeout, synced.wait_for(|s| *s)).await;
    if waited.is_err() {
        tracing::warn!(timeout = ?source.sync_timeout, "Kubernetes API not in sync yet; attributing with the persisted inventory until it is");
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

/// How often tenures older than `--inventory-retention` are forgotten: retention is days, so
/// a few minutes late costs nothing, and each prune write-locks the inventory.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Forgets, every [`PRUNE_EVERY`], the tenures that ended longer ago than `retention`.
async fn prune_loop(
    history: Arc<RwLock<IpOwnerHistory>>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {}
        }
        let cutoff = kubernetes::now_ms().saturating_sub(retention.as_millis() as u64);
        let pruned = history.write().expect("history lock").prune(cutoff);
        if pruned > 0 {
            tracing::info!(pruned, "forgot tenures older than the inventory retention");
        }
    }
}
