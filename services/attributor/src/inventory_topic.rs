//! The inventory topic: where every replica persists the tenures its Kubernetes index learns,
//! and from where every replica (and every replay) reads them all back. This is what makes
//! attribution time-correct after a restart: a pod deleted an hour ago is still known here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use netmeter_common::consume::{Detached, ReadFrom, TopicToEnd};
use netmeter_common::kafka::{KafkaArgs, header};
use netmeter_common::publish::{Outgoing, Publisher};
use netmeter_proto::{SCHEMA_HEADER, Schema};
use prost::Message as _;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::inventory::{IpOwnerHistory, Tenure};
use crate::kubernetes::record_all;
use crate::metric_list::{INVENTORY_PUBLISHED, INVENTORY_REJECTED};

/// A reader of the whole inventory topic (all partitions, from the beginning, no group).
pub struct InventoryReader {
    consumer: Detached<BaseConsumer>,
    topic: String,
}

impl InventoryReader {
    pub fn new(kafka: &KafkaArgs) -> anyhow::Result<InventoryReader> {
        let topic = kafka.topic(Schema::InventoryV1.tag());
        let consumer: BaseConsumer = kafka
            .client_config("netmeter-attributor-inventory")
            .set("group.id", "netmeter-attributor-inventory")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(InventoryReader {
            consumer: Detached::new(consumer),
            topic,
        })
    }

    /// Reads everything up to the end the topic has now into `history`; blocking.
    pub fn catch_up(&self, history: &RwLock<IpOwnerHistory>) -> anyhow::Result<usize> {
        let messages = TopicToEnd::assign(
            &self.consumer,
            &self.topic,
            ReadFrom::Beginning,
            Duration::from_secs(10),
        )?;
        let mut read = 0;
        let mut batch = Vec::new();
        for message in messages {
            read += 1;
            if let Some(tenure) = decode(&message) {
                batch.push(tenure);
            }
        }
        record_all(history, batch);
        Ok(read)
    }

    /// After [`catch_up`](Self::catch_up): keeps applying what other replicas publish.
    /// Blocking; returns at shutdown.
    pub fn follow(self, history: Arc<RwLock<IpOwnerHistory>>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let mut batch = Vec::new();
            while let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(200)) {
                if let Some(tenure) = decode(&message) {
                    batch.push(tenure);
                }
                if batch.len() >= 1000 {
                    break;
                }
            }
            if !batch.is_empty() {
                record_all(&history, batch);
            }
        }
    }
}

fn decode(message: &rdkafka::message::BorrowedMessage) -> Option<Tenure> {
    let schema = header(message, SCHEMA_HEADER);
    let decoded = Schema::InventoryV1
        .check_header(schema)
        .and_then(|_| netmeter_proto::decode_tenure(message.payload().unwrap_or_default()))
        .map_err(anyhow::Error::from)
        .and_then(|wire| Tenure::from_wire(wire).map_err(anyhow::Error::from));
    match decoded {
        Ok(tenure) => Some(tenure),
        Err(err) => {
            metrics::counter!(INVENTORY_REJECTED.name).increment(1);
            tracing::warn!(partition = message.partition(), offset = message.offset(), error = %err, "skipping an unreadable inventory record");
            None
        }
    }
}

/// Publishes tenures from the Kubernetes index until the channel closes or shutdown.
pub async fn publish(
    publisher: Arc<Publisher>,
    topic: String,
    mut tenures: mpsc::Receiver<Vec<Tenure>>,
    shutdown: CancellationToken,
) {
    while let Some(batch) = tenures.recv().await {
        let mut pending = Vec::with_capacity(batch.len());
        for tenure in &batch {
            let message = Outgoing {
                topic: topic.clone(),
                key: tenure.key().into_bytes(),
                payload: tenure.to_wire().encode_to_vec(),
                headers: vec![(SCHEMA_HEADER, Schema::InventoryV1.tag().as_bytes().to_vec())],
            };
            pending.push(publisher.enqueue(Arc::new(message)).await);
        }
        for p in pending {
            if publisher.confirm(p, &shutdown).await.is_err() {
                return;
            }
        }
        metrics::counter!(INVENTORY_PUBLISHED.name).increment(batch.len() as u64);
    }
}
