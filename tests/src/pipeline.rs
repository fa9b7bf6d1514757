//! The whole netmeter pipeline on a [`MiniCluster`]: one collector per node (reading its node
//! namespace's conntrack), attributor replicas watching the cluster's API server, and the sink,
//! against a broker and a ClickHouse. The demo and the end-to-end tests start it the same way;
//! the tests also kill, stop and restart its parts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::Stack;
use crate::kernel::KernelCounters;
use crate::minicluster::{CLOUD, MiniCluster, NODES, REGION};
use crate::service::RunningService;
use crate::stack::Endpoints;
use crate::workspace_bin;

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--cluster` of the attributors: every record carries it.
    pub cluster: String,
    /// The collectors' `--interval`.
    pub interval: Duration,
    /// The sink's `--batch-age`.
    pub batch_age: Duration,
    pub attributors: usize,
}

impl Default for Settings {
    /// Short intervals, so a run takes seconds: 1 s collector intervals, 1 s sink batches.
    fn default() -> Self {
        Settings {
            cluster: "minicluster".into(),
            interval: Duration::from_secs(1),
            batch_age: Duration::from_secs(1),
            attributors: 2,
        }
    }
}

/// The ClickHouse database the sink writes (its default).
pub const DATABASE: &str = "netmeter";

/// How long a service may take to become ready (the first start of ClickHouse is slower).
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// The Kafka consumer settings of the attributors and the sink: a replica that is gone hands
/// its partitions over after 6 s instead of 45 s.
const GROUP_OPTIONS: [&str; 2] = ["session.timeout.ms=6000", "heartbeat.interval.ms=500"];

/// How long after a SIGKILL a replacement waits before it joins its group, as Kubernetes'
/// restart back-off does: tansu gives a member that joins while a dead one still holds
/// partitions an empty assignment (see the README's broker notes).
pub const REJOIN_AFTER_KILL: Duration = Duration::from_secs(8);

/// How to start each part of the pipeline (also again, after a fault).
pub struct Launcher {
    dir: PathBuf,
    endpoints: Endpoints,
    settings: Settings,
    kubeconfig: PathBuf,
    /// The attributors' `--rules` ([`crate::minicluster::RULES`]).
    rules: PathBuf,
    node_namespaces: BTreeMap<String, PathBuf>,
}

/// The running pipeline.
pub struct Pipeline {
    pub launcher: Launcher,
    pub collectors: BTreeMap<String, RunningService>,
    pub attributors: Vec<RunningService>,
    pub sink: RunningService,
}

impl Pipeline {
    /// Starts the sink (which migrates the schema), the attributors (which wait for the API
    /// server's first list) and the collectors (which take their baseline), each ready before
    /// the next; `progress` hears what is being waited for. Logs and state go under `dir`.
    pub fn start(
        endpoints: &Endpoints,
        cluster: &MiniCluster,
        dir: &Path,
        settings: Settings,
        progress: &mut dyn FnMut(&str),
    ) -> anyhow::Result<Pipeline> {
        std::fs::create_dir_all(dir.join("logs"))?;
        let rules = dir.join("rules.yaml");
        std::fs::write(&rules, crate::minicluster::RULES)?;
        let launcher = Launcher {
            rules,
            dir: dir.to_path_buf(),
            endpoints: endpoints.clone(),
            kubeconfig: cluster.api().write_kubeconfig(dir)?,
            node_namespaces: NODES
                .iter()
                .map(|n| (n.name.to_string(), cluster.node_ns_path(n.name)))
                .collect(),
            settings,
        };
        progress("sink: migrating the ClickHouse schema");
        let sink = launcher.start_sink()?;
        let mut attributors = Vec::new();
        for replica in 0..launcher.settings.attributors {
            progress(&format!(
                "attributor {replica}: loading cloud ranges, inventory and the Kubernetes index"
            ));
            attributors.push(launcher.start_attributor(replica)?);
        }
        let mut collectors = BTreeMap::new();
        for node in NODES {
            progress(&format!("collector on {}: taking its baseline", node.name));
            collectors.insert(node.name.to_string(), launcher.start_collector(node.name)?);
        }
        Ok(Pipeline {
            launcher,
            collectors,
            attributors,
            sink,
        })
    }

    /// Stops every service with SIGTERM (collectors first, so their last dump is published).
    pub fn stop(mut self) {
        for collector in self.collectors.values_mut() {
            collector.sigterm();
        }
        for attributor in &mut self.attributors {
            attributor.sigterm();
        }
        self.sink.sigterm();
    }
}

impl Launcher {
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Where the services' logs are.
    pub fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// A ClickHouse client bound to the sink's database.
    pub fn clickhouse(&self) -> clickhouse::Client {
        self.endpoints.clickhouse_client().with_database(DATABASE)
    }

    fn launch(
        &self,
        bin: &str,
        log_name: &str,
        args: &[String],
        env: &[(&str, &str)],
    ) -> anyhow::Result<RunningService> {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.log_dir().join(format!("{log_name}.log"));
        let mut service = RunningService::launch(
            &workspace_bin(bin)?,
            &self.endpoints,
            &args,
            env,
            Some(&log),
        )?;
        service
            .wait_ready(READY_TIMEOUT)
            .with_context(|| format!("{log_name} did not become ready (log {})", log.display()))?;
        Ok(service)
    }

    fn group_options() -> Vec<String> {
        GROUP_OPTIONS
            .iter()
            .flat_map(|o| ["--kafka-option".to_string(), o.to_string()])
            .collect()
    }

    /// Starts the sink and waits until it is ready.
    pub fn start_sink(&self) -> anyhow::Result<RunningService> {
        let mut args = vec![
            "--batch-age".to_string(),
            humantime::format_duration(self.settings.batch_age).to_string(),
        ];
        args.extend(Self::group_options());
        self.launch("netmeter-sink", "sink", &args, &[])
    }

    /// The attribution flags the service and `replay` share.
    pub fn attribution_args(&self) -> Vec<String> {
        [
            "--cluster",
            &self.settings.cluster,
            "--cloud",
            CLOUD,
            "--region",
            REGION,
            "--rules",
            &self.rules.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Starts attributor replica `replica` and waits until it is ready.
    pub fn start_attributor(&self, replica: usize) -> anyhow::Result<RunningService> {
        let mut args = self.attribution_args();
        args.extend(Self::group_options());
        // The internet host is in Germany: egress there is "unexpected" to the alert.
        args.extend(["--allowed-egress-countries".into(), "US".into()]);
        let kubeconfig = self.kubeconfig.display().to_string();
        self.launch(
            "netmeter-attributor",
            &format!("attributor-{replica}"),
            &args,
            &[("KUBECONFIG", kubeconfig.as_str())],
        )
    }

    /// Where the collector of `node` keeps its restart state.
    pub fn state_dir(&self, node: &str) -> PathBuf {
        self.dir.join("state").join(node)
    }

    /// Starts the collector of `node` and waits until it has taken its baseline.
    pub fn start_collector(&self, node: &str) -> anyhow::Result<RunningService> {
        let netns = self
            .node_namespaces
            .get(node)
            .with_context(|| format!("no node {node}"))?;
        let args = vec![
            "--node-name".to_string(),
            node.to_string(),
            "--netns".to_string(),
            netns.display().to_string(),
            "--interval".to_string(),
            humantime::format_duration(self.settings.interval).to_string(),
        ];
        let state = self.state_dir(node).display().to_string();
        self.launch(
            "netmeter-collector",
            &format!("collector-{node}"),
            &args,
            &[("NETMETER_STATE_DIR", state.as_str())],
        )
    }

    /// Runs `netmeter-attributor replay` over `[from_ms, to_ms)` with generation `generation`
    /// and returns its summary.
    pub fn replay(
        &self,
        from_ms: u64,
        to_ms: u64,
        generation: u64,
    ) -> anyhow::Result<serde_json::Value> {
        let output = std::process::Command::new(workspace_bin("netmeter-attributor")?)
            .arg("replay")
            .args(self.attribution_args())
            .args(["--kafka-brokers", &self.endpoints.kafka_bootstrap])
            .args(["--log-format", "pretty"])
            .args(["--from", &from_ms.to_string(), "--to", &to_ms.to_string()])
            .args(["--generation", &generation.to_string()])
            .output()
            .context("cannot run netmeter-attributor replay")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        anyhow::ensure!(
            output.status.success(),
            "replay failed ({}): {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).with_context(|| format!("replay printed {stdout:?}"))
    }
}

/// What every end-to-end test starts from: a private stack, the mini-cluster, the kernel's
/// counters of its nodes, and the pipeline writing records of `cluster_name`.
pub struct Metered {
    pub stack: Stack,
    pub cluster: MiniCluster,
    pub kernel: KernelCounters,
    pub pipeline: Pipeline,
}

/// Drives `rounds` of the traffic matrix through `cluster` and waits until `pipeline`'s
/// ClickHouse holds, line by line, exactly what `kernel` counted for `cluster_name`'s records.
/// The end-to-end tests' common first act; an error says where the services' logs are.
pub async fn meter_matrix(
    cluster_name: &str,
    rounds: usize,
    (cluster, kernel, pipeline): (&MiniCluster, &KernelCounters, &Pipeline),
) -> anyhow::Result<(crate::traffic::Traffic, crate::ledger::Verified)> {
    let mut traffic = crate::traffic::Traffic::start(cluster)?;
    for _ in 0..rounds {
        traffic.run(cluster, &crate::traffic::matrix(), |_| {})?;
    }
    let errors = traffic.server_errors();
    anyhow::ensure!(
        errors.is_empty(),
        "the traffic's servers failed: {errors:?}"
    );
    tokio::task::block_in_place(|| kernel.wait_tcp_ended())?; // the last connections end
    let verified = crate::ledger::verify(
        &pipeline.launcher.clickhouse(),
        DATABASE,
        cluster_name,
        0,
        (cluster, &traffic, kernel),
        Duration::from_secs(90),
    )
    .await
    .with_context(|| format!("logs in {}", pipeline.launcher.log_dir().display()))?;
    Ok((traffic, verified))
}

impl Metered {
    /// Starts it all; logs, state and the kernel's event files go under `dir`.
    pub async fn start(cluster_name: &str, dir: &Path) -> anyhow::Result<Metered> {
        let stack = Stack::start().await?;
        let cluster = MiniCluster::create()?;
        let kernel = KernelCounters::start(&cluster.node_namespaces(), dir)?;
        let settings = Settings {
            cluster: cluster_name.into(),
            ..Settings::default()
        };
        let pipeline = Pipeline::start(&stack.endpoints(), &cluster, dir, settings, &mut |s| {
            eprintln!("{s}")
        })?;
        Ok(Metered {
            stack,
            cluster,
            kernel,
            pipeline,
        })
    }
}
