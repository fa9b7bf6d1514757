//! The node collector: reads conntrack and publishes per-connection deltas.
//!
//! - [`conntrack`]: netlink dumps and DESTROY events, decoded into plain entries.
//! - [`delta`]: successive readings -> exact per-connection deltas, non-destructively,
//!   with per-connection state in a compact [`table`].
//! - [`collect`]: the threads that read conntrack every interval and on every DESTROY event.
//! - [`output`]: JSON lines for `--output stdout`, and the raw topic's wire form.
//! - [`publish`]: batches to the raw topic, in order, through a bounded buffer; the publishing
//!   loop, on the shared producer's rebuild and backoff.
//! - [`state`]: what survives a restart (counters, unsent batches, the last published
//!   interval), so a restart loses nothing, or says what it lost.
//!
//! The service: [`Config`] (checked flags) -> [`build`] -> [`Service::run`] until shutdown.

pub mod collect;
pub mod config;
pub mod conntrack;
pub mod delta;
pub mod metric_list;
pub mod output;
pub mod publish;
pub mod state;
pub mod table;

pub use config::{Args, Config, Output};

use std::time::{Duration, SystemTime};

use netmeter_common::ServiceContext;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::collect::{Beginning, Collection};
use crate::output::Interval;
use crate::publish::RawPublisher;
use crate::state::{StateDir, TableIdentity};

/// Runs the collector until `ctx.shutdown` is cancelled: [`build`], ready, [`Service::run`].
pub async fn run(config: Config, ctx: ServiceContext) -> anyhow::Result<()> {
    let Some(service) = build(config, &ctx.shutdown).await? else {
        return Ok(()); // shut down while conntrack accounting was off
    };
    ctx.health.set_ready(true);
    service.run(ctx.shutdown).await
}

/// The collector, collecting: the threads read conntrack (the baseline is taken, or the saved
/// state continued), and their intervals wait for [`Service::run`] to hand them on.
pub struct Service {
    collection: Collection,
    intervals: mpsc::Receiver<Interval>,
    output: Destination,
}

/// Where intervals go.
enum Destination {
    /// JSON lines (`--output stdout`).
    Stdout,
    Kafka(Box<RawPublisher>),
}

/// Waits for conntrack accounting, then starts collecting: for Kafka from the state the
/// previous process saved, if any; for stdout from a baseline. `None` if `shutdown` came first.
pub async fn build(
    config: Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Service>> {
    tracing::info!(node = %config.node_name, interval = ?config.interval, output = ?config.output, mode = ?config.dump_mode, "collector configured");
    netmeter_common::metric::declare(metric_list::ALL);
    if !wait_for_accounting(&config, shutdown).await? {
        return Ok(None);
    }
    let service = match config.output {
        Output::Stdout => {
            // No state: --output stdout is for looking, not for billing.
            let (collection, intervals) =
                start_collection(&config, Beginning::Baseline, None).await?;
            Service {
                collection,
                intervals,
                output: Destination::Stdout,
            }
        }
        Output::Kafka => {
            let producer = publish::producer(&config)?;
            let state = open_state_dir(&config).await?;
            let previous = match state.clone() {
                Some(state) => {
                    tokio::task::spawn_blocking(move || state.take_previous(SystemTime::now()))
                        .await?
                }
                None => state::Previous::default(),
            };
            let beginning = match previous.restored {
                Some((tracker, since)) => Beginning::Restored { tracker, since },
                None => Beginning::Baseline,
            };
            let (collection, intervals) =
                start_collection(&config, beginning, state.clone()).await?;
            if let Some(gap) = &previous.gap {
                gap.report(collection.counting_since());
            }
            let publisher = RawPublisher::new(producer, &config, state, previous.batches);
            Service {
                collection,
                intervals,
                output: Destination::Kafka(Box::new(publisher)),
            }
        }
    };
    Ok(Some(service))
}

impl Service {
    /// Hands the intervals on until `shutdown` (the publisher drains within its deadline), then
    /// stops the collection.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Service {
            collection,
            intervals,
            output,
        } = self;
        let handed_on = match output {
            Destination::Stdout => write_stdout(intervals, shutdown).await,
            Destination::Kafka(publisher) => publisher.run(&collection, intervals, shutdown).await,
        };
        // Stopping joins the collection threads: not on an async worker.
        tokio::task::spawn_blocking(move || drop(collection)).await?;
        handed_on
    }
}

/// How often accounting is checked again while it is off.
const ACCOUNTING_RECHECK: Duration = Duration::from_secs(5);

/// Conntrack without accounting (`nf_conntrack_acct=0`) has no byte counters. Rather than exit
/// (and crash-loop), the collector waits, not ready, with
/// `netmeter_collector_conntrack_accounting` at 0 and one log line saying how to fix it, and
/// starts as soon as accounting is on (`--enable-acct` switches it on itself). False if
/// shutdown came first.
async fn wait_for_accounting(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut waiting = false;
    loop {
        let (netns, enable) = (config.netns.clone(), config.enable_acct);
        let checked = tokio::task::spawn_blocking(move || {
            conntrack::netlink::ensure_accounting(netns.as_deref(), enable)
        })
        .await?;
        match checked {
            Ok(()) => {
                metrics::gauge!(metric_list::CONNTRACK_ACCOUNTING.name).set(1.0);
                if waiting {
                    tracing::info!("conntrack accounting is on now; starting");
                }
                return Ok(true);
            }
            Err(error @ conntrack::netlink::NetlinkError::AccountingOff(_)) => {
                metrics::gauge!(metric_list::CONNTRACK_ACCOUNTING.name).set(0.0);
                if !waiting {
                    tracing::error!(%error, recheck = ?ACCOUNTING_RECHECK, "not ready until conntrack accounting is on");
                    waiting = true;
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(ACCOUNTING_RECHECK) => {}
        }
    }
}

/// Intervals (parts of at most 10,000 deltas) between the collection threads and the output: a
/// few absorb a slow write; beyond them the collection waits. Outages are the publisher's
/// bounded buffer's to absorb, not this channel's.
const INTERVALS_QUEUED: usize = 4;

/// Starts the collection threads; intervals arrive on the returned channel.
async fn start_collection(
    config: &Config,
    beginning: Beginning,
    state: Option<StateDir>,
) -> anyhow::Result<(Collection, mpsc::Receiver<Interval>)> {
    let (tx, intervals) = mpsc::channel(INTERVALS_QUEUED);
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

/// Writes every interval as JSON lines on stdout until `shutdown`.
async fn write_stdout(
    mut intervals: mpsc::Receiver<Interval>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            interval = intervals.recv() => {
                let Some(interval) = interval else { break };
                tokio::task::spawn_blocking(move || output::write_json_lines(&interval, &mut std::io::stdout().lock())).await??;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    Ok(())
}
