//! Raw batches to feed a pipeline, and the records it wrote, read back: the two ends of every
//! attributor and sink test.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use netmeter_proto::raw::{AddressFamily, ConnectionDelta, ConntrackBatch, Tuple};
use netmeter_proto::{SCHEMA_HEADER, Schema};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// A TCP connection `src:sport -> dst:dport` without NAT that sent `orig` (bytes, packets)
/// and got `reply` back.
pub fn delta(
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    orig: (u64, u64),
    reply: (u64, u64),
) -> ConnectionDelta {
    let (src, dst): (IpAddr, IpAddr) = (src.parse().expect("src"), dst.parse().expect("dst"));
    ConnectionDelta {
        family: if src.is_ipv4() {
            AddressFamily::Ipv4
        } else {
            AddressFamily::Ipv6
        } as i32,
        protocol: 6,
        original: Some(Tuple {
            src: octets(src),
            dst: octets(dst),
            src_port: sport.into(),
            dst_port: dport.into(),
        }),
        reply: Some(Tuple {
            src: octets(dst),
            dst: octets(src),
            src_port: dport.into(),
            dst_port: sport.into(),
        }),
        orig_bytes: orig.0,
        orig_packets: orig.1,
        reply_bytes: reply.0,
        reply_packets: reply.1,
        ..Default::default()
    }
}

pub fn batch(
    node: &str,
    instance: &str,
    sequence: u64,
    start_ms: u64,
    end_ms: u64,
    deltas: Vec<ConnectionDelta>,
) -> ConntrackBatch {
    ConntrackBatch {
        node_name: node.into(),
        collector_instance_id: instance.into(),
        sequence,
        interval_start_unix_ms: start_ms,
        interval_end_unix_ms: end_ms,
        deltas,
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// A producer for tests, acknowledging every message before returning.
pub struct TestProducer(FutureProducer);

impl TestProducer {
    pub fn new(bootstrap: &str) -> anyhow::Result<TestProducer> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        Self::with_config(config)
    }

    /// A producer with the connection settings of `config` (TLS, SASL, ...).
    pub fn with_config(mut config: ClientConfig) -> anyhow::Result<TestProducer> {
        Ok(TestProducer(
            config
                .set("message.timeout.ms", "30000")
                .set("compression.type", "zstd")
                .create()?,
        ))
    }

    /// Sends `payload` with optional schema header.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        schema: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(schema) = schema {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: SCHEMA_HEADER,
                value: Some(schema),
            }));
        }
        self.0
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("producing to {topic}"))?;
        Ok(())
    }

    /// Publishes raw batches as a collector would (keyed by node, `raw.v1` header).
    pub async fn send_raw(&self, topic: &str, batches: &[ConntrackBatch]) -> anyhow::Result<()> {
        for b in batches {
            let payload = netmeter_proto::encode_batch(b);
            self.send(topic, &b.node_name, &payload, Some(Schema::RawV1.tag()))
                .await?;
        }
        Ok(())
    }
}

/// A message read back, with its headers.
#[derive(Debug, Clone)]
pub struct ReadMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl ReadMessage {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Reads a topic from the beginning, across calls. The consumer is leaked on drop: destroying
/// a librdkafka consumer can block forever against tansu.
pub struct TopicReader {
    consumer: Option<StreamConsumer>,
    pub messages: Vec<ReadMessage>,
}

impl TopicReader {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<TopicReader> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "netmeter-tests-topic-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        Ok(TopicReader {
            consumer: Some(consumer),
            messages: Vec::new(),
        })
    }

    /// Reads until `done(all messages so far)` or `timeout`; returns whether `done` held.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[ReadMessage]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let consumer = self.consumer.as_ref().expect("present until drop");
        while !done(&self.messages) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left.min(Duration::from_millis(500)), consumer.recv()).await
            {
                Ok(Ok(m)) => self.messages.push(ReadMessage {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                                .collect()
                        })
                        .unwrap_or_default(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                }),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => {}
            }
        }
        true
    }

    /// Every flow record read so far (protobuf messages only).
    pub fn flows(&self) -> Vec<netmeter_proto::flows::Flow> {
        self.messages
            .iter()
            .filter(|m| m.header(netmeter_proto::ENCODING_HEADER).is_none())
            .flat_map(|m| netmeter_proto::decode_flows(&m.payload).expect("flow messages decode"))
            .collect()
    }
}

impl Drop for TopicReader {
    fn drop(&mut self) {
        std::mem::forget(self.consumer.take());
    }
}
