//! Collector flags and env vars, validated into a [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser;
use netmeter_common::kafka::KafkaArgs;
use netmeter_common::{ConfigError, ServiceArgs};

use crate::conntrack::{DumpMode, EntryFilter, MarkFilter};

/// Where deltas go.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Protobuf batches to the raw topic.
    Kafka,
    /// One JSON object per connection delta on stdout (debugging, laptops).
    Stdout,
}

/// Reads conntrack on one node and publishes per-connection byte/packet deltas.
#[derive(Parser, Debug)]
#[command(name = "netmeter-collector", version, about)]
pub struct Args {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Name of this node (on Kubernetes: spec.nodeName from the downward API); the host name when unset.
    #[arg(long, env = "NETMETER_NODE_NAME")]
    pub node_name: Option<String>,
    /// How often conntrack is read and deltas are published (1s to 1h).
    #[arg(long, env = "NETMETER_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Read conntrack inside this network namespace (e.g. /run/netns/node-a) instead of our own.
    #[arg(long, env = "NETMETER_NETNS")]
    pub netns: Option<PathBuf>,
    #[arg(long, env = "NETMETER_OUTPUT", value_enum, default_value = "kafka")]
    pub output: Output,
    /// Zero the kernel's counters on every read (GET_CTRZERO) instead of keeping per-connection
    /// state. Saves ~40 B per connection but breaks every other conntrack reader on the node.
    #[arg(long, env = "NETMETER_ZERO_COUNTERS")]
    pub zero_counters: bool,
    /// Set net.netfilter.nf_conntrack_acct=1 (in --netns) if it is off, instead of exiting.
    #[arg(long, env = "NETMETER_ENABLE_ACCT")]
    pub enable_acct: bool,
    /// Only connections in this conntrack zone.
    #[arg(long, env = "NETMETER_ZONE")]
    pub zone: Option<u16>,
    /// Only connections whose conntrack mark matches, as VALUE or VALUE/MASK (hex with 0x).
    #[arg(long, env = "NETMETER_MARK", value_parser = parse_mark)]
    pub mark: Option<MarkFilter>,
    /// Largest Kafka message; an interval with more deltas is split over several batches.
    #[arg(long, env = "NETMETER_MAX_MESSAGE_BYTES", default_value_t = 1_000_000)]
    pub max_message_bytes: usize,
    /// Batches kept while the broker is unreachable; beyond it the oldest are dropped (counted).
    #[arg(long, env = "NETMETER_BUFFER_BYTES", default_value_t = 64 << 20)]
    pub buffer_bytes: usize,
    #[arg(long, env = "NETMETER_COMPRESSION", value_enum, default_value = "zstd")]
    pub compression: Compression,
    /// Where the counter state is kept across restarts (on Kubernetes: a hostPath); created if
    /// missing. `none`: keep none, every start is a baseline. Used with --output kafka.
    #[arg(
        long,
        env = "NETMETER_STATE_DIR",
        default_value = "/var/lib/netmeter/collector",
        value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from)
    )]
    pub state_dir: PathBuf,
    /// A saved state older than this is not continued (a baseline is taken and the gap
    /// reported): the first interval after a restore spans the whole pause (1s to 1d).
    #[arg(long, env = "NETMETER_STATE_MAX_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub state_max_age: Duration,
}

/// Kafka compression codec (snappy is not offered: not every broker handles it).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Zstd,
    Lz4,
    None,
}

impl Compression {
    pub fn librdkafka(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
}

/// A configuration the collector can run with.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceArgs,
    pub kafka: KafkaArgs,
    pub node_name: String,
    pub interval: Duration,
    pub netns: Option<PathBuf>,
    pub output: Output,
    pub dump_mode: DumpMode,
    pub max_message_bytes: usize,
    pub buffer_bytes: usize,
    pub compression: Compression,
    pub enable_acct: bool,
    pub filter: EntryFilter,
    /// None: no state is kept.
    pub state_dir: Option<PathBuf>,
    pub state_max_age: Duration,
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        self.kafka.validate()?;
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.interval) {
            return Err(ConfigError::invalid(
                "--interval",
                "NETMETER_INTERVAL",
                format!("{:?} is outside 1s..1h", self.interval),
            ));
        }
        if let Some(netns) = &self.netns
            && !netns.exists()
        {
            return Err(ConfigError::invalid(
                "--netns",
                "NETMETER_NETNS",
                format!("{} does not exist", netns.display()),
            ));
        }
        if !(1024..=100_000_000).contains(&self.max_message_bytes) {
            return Err(ConfigError::invalid(
                "--max-message-bytes",
                "NETMETER_MAX_MESSAGE_BYTES",
                "must be 1024..=100000000",
            ));
        }
        if self.buffer_bytes < self.max_message_bytes {
            return Err(ConfigError::invalid(
                "--buffer-bytes",
                "NETMETER_BUFFER_BYTES",
                "must hold at least one message (--max-message-bytes)",
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.state_max_age) {
            return Err(ConfigError::invalid(
                "--state-max-age",
                "NETMETER_STATE_MAX_AGE",
                format!("{:?} is outside 1s..1d", self.state_max_age),
            ));
        }
        let node_name = match self.node_name {
            Some(name) if !name.trim().is_empty() => name,
            Some(_) => {
                return Err(ConfigError::invalid(
                    "--node-name",
                    "NETMETER_NODE_NAME",
                    "is empty",
                ));
            }
            None => host_name().ok_or_else(|| {
                ConfigError::invalid(
                    "--node-name",
                    "NETMETER_NODE_NAME",
                    "not set and the host name is unknown",
                )
            })?,
        };
        Ok(Config {
            service: self.service,
            kafka: self.kafka,
            node_name,
            interval: self.interval,
            netns: self.netns,
            output: self.output,
            dump_mode: if self.zero_counters {
                DumpMode::Zero
            } else {
                DumpMode::Read
            },
            max_message_bytes: self.max_message_bytes,
            buffer_bytes: self.buffer_bytes,
            compression: self.compression,
            enable_acct: self.enable_acct,
            filter: EntryFilter {
                zone: self.zone,
                mark: self.mark,
            },
            state_dir: Some(self.state_dir)
                .filter(|d| !d.as_os_str().is_empty() && d.as_os_str() != "none"),
            state_max_age: self.state_max_age,
        })
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn parse_number(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a 32-bit number"))
}

fn parse_mark(s: &str) -> Result<MarkFilter, String> {
    let (value, mask) = match s.split_once('/') {
        Some((value, mask)) => (parse_number(value)?, parse_number(mask)?),
        None => (parse_number(s)?, u32::MAX),
    };
    Ok(MarkFilter { value, mask })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["netmeter-collector", "--node-name=node-a"];
        all.extend_from_slice(args);
        Args::try_parse_from(all).unwrap().validate().unwrap()
    }

    #[test]
    fn state_is_kept_in_var_lib_unless_turned_off() {
        let dir = |args: &[&str]| config(args).state_dir;
        assert_eq!(dir(&[]), Some(PathBuf::from("/var/lib/netmeter/collector")));
        assert_eq!(
            dir(&["--state-dir=/data/nm"]),
            Some(PathBuf::from("/data/nm"))
        );
        assert_eq!(dir(&["--state-dir=none"]), None);
        assert_eq!(dir(&["--state-dir="]), None);
        assert_eq!(config(&[]).state_max_age, Duration::from_secs(600));
        let too_long = Args::try_parse_from(["x", "--node-name=a", "--state-max-age=2d"]);
        assert!(too_long.unwrap().validate().is_err());
    }
}
