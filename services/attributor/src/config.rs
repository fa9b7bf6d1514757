//! Attributor flags and env vars, validated into a [`Config`].
//!
//! `netmeter-attributor` runs the service; `replay` re-attributes a time range; `explain`
//! labels addresses the way the service would. All three share the attribution flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use netmeter_common::kafka::KafkaArgs;
use netmeter_common::{ConfigError, ServiceArgs};

use crate::cloud::{Cloud, CloudRangesArgs};
use crate::enrich::{ClusterPlace, Enricher};
use crate::rules::Rules;

/// Attributes raw conntrack deltas to workloads, zones, clouds and prices; republishes them.
#[derive(Parser, Debug)]
#[command(name = "netmeter-attributor", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Consumer group shared by all replicas.
    #[arg(long, env = "NETMETER_GROUP_ID", default_value = "netmeter-attributor")]
    pub group_id: String,
    /// Watch the Kubernetes API (in-cluster config or $KUBECONFIG). Off: static hosts only.
    #[arg(long, env = "NETMETER_KUBERNETES", default_value_t = true, action = clap::ArgAction::Set)]
    pub kubernetes: bool,
    /// A kubeconfig file to reach the API server with (its current context), instead of the
    /// in-cluster configuration or $KUBECONFIG.
    #[arg(long, env = "NETMETER_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait at start for the first full Kubernetes list before attributing with
    /// the persisted inventory alone (marked stale).
    #[arg(long, env = "NETMETER_KUBERNETES_SYNC_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub kubernetes_sync_timeout: Duration,
    /// Workloads (namespace, kind, name) with their own series in the workload metrics of this
    /// replica; the records of any other are counted under `__other__` (0: all of them are).
    #[arg(long, env = "NETMETER_METRICS_MAX_WORKLOADS", default_value_t = crate::usage::DEFAULT_MAX_WORKLOADS)]
    pub metrics_max_workloads: usize,
    /// Countries (ISO 3166-1 alpha-2, comma-separated) internet egress is expected to go to,
    /// exported as `netmeter_egress_country_allowed{country}` for the alert on egress anywhere
    /// else (NetmeterEgressToUnexpectedCountry). Empty: no allow-list, no alert.
    #[arg(long, env = "NETMETER_ALLOWED_EGRESS_COUNTRIES", value_delimiter = ',')]
    pub allowed_egress_countries: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Re-attribute the raw deltas of a time range with the current rules and the inventory
    /// as of flow time; writes records with the same ids and a higher generation.
    Replay(Box<ReplayArgs>),
    /// Print how addresses are labelled and classified, one JSON object per address.
    Explain(Box<ExplainArgs>),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub log: netmeter_common::telemetry::LogArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub attribution: AttributionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Start of the range: RFC 3339 time or Unix milliseconds. Batches whose interval starts
    /// at or after it are replayed.
    #[arg(long, value_parser = parse_time)]
    pub from: u64,
    /// End of the range (exclusive), same formats.
    #[arg(long, value_parser = parse_time)]
    pub to: u64,
    /// Generation written into the records; must exceed that of the records it replaces.
    /// Default: the current Unix time in milliseconds.
    #[arg(long)]
    pub generation: Option<u64>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub attribution: AttributionArgs,
    /// The zone of the node the traffic leaves from (chooses the egress path of the rules
    /// file's `paths`); default: none.
    #[arg(long, default_value = "")]
    pub from_zone: String,
    /// The address of the local endpoint (a pod or node address; chooses paths by `subnets`).
    #[arg(long)]
    pub from_ip: Option<std::net::IpAddr>,
    /// Addresses to explain.
    #[arg(required = true, value_name = "ADDR")]
    pub addresses: Vec<std::net::IpAddr>,
}

/// What attribution needs, shared by the service, replay and explain.
#[derive(clap::Args, Debug, Clone)]
pub struct AttributionArgs {
    /// Name of this cluster, written into every flow record.
    #[arg(long, env = "NETMETER_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// Cloud the cluster runs in (aws, gcp, azure), for nodes whose provider id does not say.
    #[arg(long, env = "NETMETER_CLOUD")]
    pub cloud: Option<String>,
    /// Region the cluster runs in, for nodes without a topology.kubernetes.io/region label.
    #[arg(long, env = "NETMETER_REGION", default_value = "")]
    pub region: String,
    /// Rules file (YAML): network CIDR rules, static hosts, price overrides. See README.
    #[arg(long, env = "NETMETER_RULES")]
    pub rules: Option<PathBuf>,
    /// How far an address's tenure reaches beyond its recorded start and end.
    #[arg(long, env = "NETMETER_IP_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ip_grace: Duration,
    /// Tenures that ended longer ago than this are forgotten (keep >= the raw topic retention).
    #[arg(long, env = "NETMETER_INVENTORY_RETENTION", default_value = "7days", value_parser = humantime::parse_duration)]
    pub inventory_retention: Duration,
    #[command(flatten)]
    pub cloud_ranges: CloudRangesArgs,
    /// Directory of newer country and network files, as the `@ip-location-db` npm packages
    /// ship them (geo-whois-asn-country-ipv4.csv, ...-ipv6.csv, asn-ipv4.csv, asn-ipv6.csv; any
    /// of them); each file absent from it comes from the built-in snapshot. Read at start.
    #[arg(long, env = "NETMETER_GEO_DIR")]
    pub geo_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct OutputArgs {
    /// Encoding of the flow records: protobuf (read by the sink and ClickHouse's Kafka
    /// engine) or json (newline-delimited, header `netmeter-encoding: json`).
    #[arg(long, env = "NETMETER_OUTPUT_FORMAT", value_enum, default_value_t = OutputFormat::Protobuf)]
    pub output_format: OutputFormat,
    /// Largest flow message written (many records per message).
    #[arg(long, env = "NETMETER_MAX_MESSAGE_BYTES", default_value_t = 900_000)]
    pub max_message_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Protobuf,
    Json,
}

/// The validated attribution settings: where the cluster is, the rules file and the country
/// and network tables, loaded.
pub struct AttributionSettings {
    pub place: ClusterPlace,
    pub rules: Rules,
    pub geo: crate::geo::LoadedGeo,
}

impl AttributionSettings {
    /// The enricher these settings describe (logging where its country and network data
    /// came from).
    pub fn enricher(self) -> Enricher {
        crate::geo::GeoLoaded { loaded: &self.geo }.emit();
        Enricher::with_geo(self.place, self.rules, self.geo.table)
    }
}

impl AttributionArgs {
    pub fn validate(&self) -> Result<AttributionSettings, ConfigError> {
        if self.cluster.trim().is_empty() {
            return Err(ConfigError::invalid(
                "--cluster",
                "NETMETER_CLUSTER",
                "is empty",
            ));
        }
        self.cloud_ranges.validate()?;
        let cloud = match self.cloud.as_deref().filter(|c| !c.is_empty()) {
            Some(name) => Cloud::parse(name)
                .map_err(|e| ConfigError::invalid("--cloud", "NETMETER_CLOUD", e))?
                .name()
                .to_string(),
            None => String::new(),
        };
        let rules = match &self.rules {
            Some(path) => Rules::load(path)
                .map_err(|e| ConfigError::invalid("--rules", "NETMETER_RULES", e))?,
            None => Rules::default(),
        };
        let geo = crate::geo::GeoTable::load(self.geo_dir.as_deref())
            .map_err(|e| ConfigError::invalid("--geo-dir", "NETMETER_GEO_DIR", e))?;
        Ok(AttributionSettings {
            place: ClusterPlace {
                cluster: self.cluster.clone(),
                cloud,
                region: self.region.clone(),
            },
            rules,
            geo,
        })
    }
}

/// `2026-11-24T08:00:00Z` or Unix milliseconds.
fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("{text:?} is neither RFC 3339 time nor Unix milliseconds: {e}"))?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("{text:?} is before 1970"))
}

/// A configuration the attributor service can run with.
pub struct Config {
    pub service: ServiceArgs,
    pub kafka: KafkaArgs,
    pub attribution: AttributionArgs,
    /// `attribution`, validated (the rules file loaded).
    pub settings: AttributionSettings,
    pub output: OutputArgs,
    pub group_id: String,
    /// None: static hosts only (`--kubernetes=false`).
    pub kubernetes: Option<KubernetesSource>,
    pub metrics_max_workloads: usize,
    /// Upper-case ISO codes.
    pub allowed_egress_countries: Vec<String>,
}

/// Where the Kubernetes inventory comes from, and how long the first list may take.
#[derive(Clone, Debug)]
pub struct KubernetesSource {
    /// None: the in-cluster configuration or $KUBECONFIG.
    pub kubeconfig: Option<PathBuf>,
    pub sync_timeout: Duration,
}

impl Args {
    /// The service's configuration (`explain` and `replay` validate their own arguments).
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.kafka.validate()?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "--group-id",
                "NETMETER_GROUP_ID",
                "is empty",
            ));
        }
        if self.output.max_message_bytes < 1024 {
            return Err(ConfigError::invalid(
                "--max-message-bytes",
                "NETMETER_MAX_MESSAGE_BYTES",
                "must be at least 1024",
            ));
        }
        let settings = self.attribution.validate()?;
        let mut allowed_egress_countries = Vec::new();
        for code in &self.allowed_egress_countries {
            let code = code.trim().to_ascii_uppercase();
            if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(ConfigError::invalid(
                    "--allowed-egress-countries",
                    "NETMETER_ALLOWED_EGRESS_COUNTRIES",
                    format!("{code:?} is not a two-letter ISO 3166-1 country code"),
                ));
            }
            allowed_egress_countries.push(code);
        }
        Ok(Config {
            service: self.service,
            kafka: self.kafka,
            attribution: self.attribution,
            settings,
            output: self.output,
            group_id: self.group_id,
            kubernetes: self.kubernetes.then_some(KubernetesSource {
                kubeconfig: self.kubeconfig,
                sync_timeout: self.kubernetes_sync_timeout,
            }),
            metrics_max_workloads: self.metrics_max_workloads,
            allowed_egress_countries,
        })
    }
}

impl ReplayArgs {
    pub fn validate(&self) -> Result<AttributionSettings, ConfigError> {
        self.kafka.validate()?;
        if self.from >= self.to {
            return Err(ConfigError::invalid("--to", "", "must be after --from"));
        }
        self.attribution.validate()
    }
}
