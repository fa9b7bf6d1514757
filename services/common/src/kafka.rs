//! Kafka client settings shared by every service: brokers, topic prefix, TLS and SASL
//! (PLAIN, SCRAM-SHA-256/512) for managed Kafka (MSK, Confluent), plus raw librdkafka overrides.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::Client;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::cli::ConfigError;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[value(name = "plaintext")]
    Plaintext,
    #[value(name = "ssl")]
    Ssl,
    #[value(name = "sasl_plaintext")]
    SaslPlaintext,
    #[value(name = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    fn librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Connection settings for the Kafka cluster, identical for every service.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma-separated host:port.
    #[arg(
        long = "kafka-brokers",
        env = "NETMETER_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Prefix of every topic name (`<prefix>raw.v1`, `<prefix>flows.v1`, ...).
    #[arg(
        long = "kafka-topic-prefix",
        env = "NETMETER_KAFKA_TOPIC_PREFIX",
        default_value = "netmeter."
    )]
    pub topic_prefix: String,
    #[arg(
        long = "kafka-security-protocol",
        env = "NETMETER_KAFKA_SECURITY_PROTOCOL",
        value_enum,
        default_value = "plaintext"
    )]
    pub security_protocol: SecurityProtocol,
    /// Required with the sasl_* security protocols.
    #[arg(
        long = "kafka-sasl-mechanism",
        env = "NETMETER_KAFKA_SASL_MECHANISM",
        value_enum
    )]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[arg(long = "kafka-sasl-username", env = "NETMETER_KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// Prefer the env var: flags are visible in the process list.
    #[arg(
        long = "kafka-sasl-password",
        env = "NETMETER_KAFKA_SASL_PASSWORD",
        hide_env_values = true
    )]
    pub sasl_password: Option<String>,
    /// CA bundle (PEM) to verify the brokers; the system store when unset.
    #[arg(long = "kafka-ssl-ca-location", env = "NETMETER_KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --kafka-ssl-key-location.
    #[arg(
        long = "kafka-ssl-certificate-location",
        env = "NETMETER_KAFKA_SSL_CERTIFICATE_LOCATION"
    )]
    pub ssl_certificate_location: Option<PathBuf>,
    #[arg(
        long = "kafka-ssl-key-location",
        env = "NETMETER_KAFKA_SSL_KEY_LOCATION"
    )]
    pub ssl_key_location: Option<PathBuf>,
    #[arg(
        long = "kafka-ssl-key-password",
        env = "NETMETER_KAFKA_SSL_KEY_PASSWORD",
        hide_env_values = true
    )]
    pub ssl_key_password: Option<String>,
    /// Extra librdkafka property KEY=VALUE, repeatable; applied last, so it overrides ours.
    #[arg(long = "kafka-option", env = "NETMETER_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value)]
    pub options: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

impl KafkaArgs {
    /// Rejects combinations librdkafka would only fail on later, at connect time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "--kafka-brokers",
                "NETMETER_KAFKA_BROKERS",
                "must name at least one broker",
            ));
        }
        if self.security_protocol.uses_sasl() {
            let needs = |flag: &str, env: &str| {
                ConfigError::invalid(
                    flag,
                    env,
                    format!(
                        "required with --kafka-security-protocol {}",
                        self.security_protocol.librdkafka()
                    ),
                )
            };
            if self.sasl_mechanism.is_none() {
                return Err(needs(
                    "--kafka-sasl-mechanism",
                    "NETMETER_KAFKA_SASL_MECHANISM",
                ));
            }
            if self.sasl_username.is_none() {
                return Err(needs(
                    "--kafka-sasl-username",
                    "NETMETER_KAFKA_SASL_USERNAME",
                ));
            }
            if self.sasl_password.is_none() {
                return Err(needs(
                    "--kafka-sasl-password",
                    "NETMETER_KAFKA_SASL_PASSWORD",
                ));
            }
        } else if self.sasl_mechanism.is_some() {
            return Err(ConfigError::invalid(
                "--kafka-sasl-mechanism",
                "NETMETER_KAFKA_SASL_MECHANISM",
                "needs --kafka-security-protocol sasl_plaintext or sasl_ssl",
            ));
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(ConfigError::invalid(
                "--kafka-ssl-key-location",
                "NETMETER_KAFKA_SSL_KEY_LOCATION",
                "a client certificate and its key go together",
            ));
        }
        for (flag, env, path) in [
            (
                "--kafka-ssl-ca-location",
                "NETMETER_KAFKA_SSL_CA_LOCATION",
                &self.ssl_ca_location,
            ),
            (
                "--kafka-ssl-certificate-location",
                "NETMETER_KAFKA_SSL_CERTIFICATE_LOCATION",
                &self.ssl_certificate_location,
            ),
            (
                "--kafka-ssl-key-location",
                "NETMETER_KAFKA_SSL_KEY_LOCATION",
                &self.ssl_key_location,
            ),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(ConfigError::invalid(
                    flag,
                    env,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(())
    }

    /// The full name of a versioned topic under the configured prefix.
    pub fn topic(&self, tag: &str) -> String {
        format!("{}{tag}", self.topic_prefix)
    }

    /// librdkafka settings common to producers and consumers; callers add their own.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("security.protocol", self.security_protocol.librdkafka());
        if let Some(mechanism) = self.sasl_mechanism {
            config.set("sasl.mechanisms", mechanism.librdkafka());
        }
        let optional = [
            ("sasl.username", self.sasl_username.clone()),
            ("sasl.password", self.sasl_password.clone()),
            ("ssl.ca.location", path_string(&self.ssl_ca_location)),
            (
                "ssl.certificate.location",
                path_string(&self.ssl_certificate_location),
            ),
            ("ssl.key.location", path_string(&self.ssl_key_location)),
            ("ssl.key.password", self.ssl_key_password.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

fn path_string(path: &Option<PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.display().to_string())
}

/// The value of header `key` of a consumed message.
pub fn header<'a, M: rdkafka::message::Message>(message: &'a M, key: &str) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == key).and_then(|h| h.value))
}

/// Why a topic check failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot fetch metadata from the Kafka brokers: {0}")]
    Metadata(#[from] rdkafka::error::KafkaError),
    #[error("topic `{0}` does not exist: create it (the local stack does; see README 'Topics')")]
    Missing(String),
    /// Assigning or positioning a reader failed (the cause is the source).
    #[error("cannot read topic `{topic}` from the Kafka brokers")]
    Read {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
}

/// Checks that every topic exists; blocking, so call it from `spawn_blocking`.
pub fn check_topics<C: rdkafka::client::ClientContext>(
    client: &Client<C>,
    topics: &[String],
    timeout: Duration,
) -> Result<(), TopicError> {
    for topic in topics {
        partitions(client, topic, timeout)?;
    }
    Ok(())
}

/// The partition ids of `topic`; blocking. A missing topic is an error that names it.
pub fn partitions<C: rdkafka::client::ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, TopicError> {
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TopicError::Missing(topic.to_string()));
    }
    Ok(partitions)
}

/// Waits until the brokers answer and every topic exists, logging each failed attempt.
/// Returns false if shutdown was requested first.
pub async fn wait_for_topics(
    kafka: &KafkaArgs,
    topics: Vec<String>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let consumer: BaseConsumer = kafka.client_config("netmeter-topic-check").create()?;
    let consumer = std::sync::Arc::new(consumer);
    let ready = crate::retry::until_ok("Kafka", shutdown, || {
        let (consumer, topics) = (consumer.clone(), topics.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let checked = check_topics(consumer.client(), &topics, Duration::from_secs(5));
                // Serves librdkafka's queued logs and errors, so why the brokers did not
                // answer (e.g. "SASL authentication error: ... invalid-proof") is logged too.
                let _ = consumer.poll(Duration::ZERO);
                checked
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|checked| checked.map_err(anyhow::Error::from))
        }
    })
    .await;
    Ok(ready.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn parse(args: &[&str]) -> KafkaArgs {
        Args::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .kafka
    }

    #[test]
    fn sasl_scram_over_tls_sets_librdkafka_properties() {
        let kafka = parse(&[
            "--kafka-brokers=b-1.msk:9096,b-2.msk:9096",
            "--kafka-security-protocol=sasl_ssl",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-sasl-username=netmeter",
            "--kafka-sasl-password=secret",
            "--kafka-option=socket.keepalive.enable=true",
        ]);
        kafka.validate().unwrap();
        let config = kafka.client_config("netmeter-test");
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("b-1.msk:9096,b-2.msk:9096")
        );
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("netmeter"));
        assert_eq!(config.get("sasl.password"), Some("secret"));
        assert_eq!(config.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(kafka.topic("raw.v1"), "netmeter.raw.v1");
    }

    #[test]
    fn sasl_without_credentials_names_the_missing_flag() {
        let kafka = parse(&[
            "--kafka-security-protocol=sasl_ssl",
            "--kafka-sasl-mechanism=PLAIN",
        ]);
        let err = kafka.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "--kafka-sasl-username (env NETMETER_KAFKA_SASL_USERNAME): required with --kafka-security-protocol sasl_ssl"
        );
    }

    #[test]
    fn mechanism_without_sasl_protocol_is_rejected() {
        let kafka = parse(&["--kafka-sasl-mechanism=PLAIN"]);
        assert!(
            kafka
                .validate()
                .unwrap_err()
                .to_string()
                .starts_with("--kafka-sasl-mechanism")
        );
    }

    #[test]
    fn missing_ca_file_is_rejected() {
        let kafka = parse(&[
            "--kafka-security-protocol=ssl",
            "--kafka-ssl-ca-location=/nonexistent/ca.pem",
        ]);
        let err = kafka.validate().unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem is not a readable file"),
            "{err}"
        );
    }
}
