//! Publishing with confirmation: messages are handed to librdkafka without waiting, and
//! [`Publisher::confirm`] waits for the broker's acknowledgement, sending again (with a fresh
//! producer and capped backoff) until it comes. Consumers store a source offset only after
//! everything produced from it is confirmed, which makes a pipeline stage at-least-once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::metric::Metric;
use crate::retry::{FIRST_DELAY, MAX_DELAY};

/// A message kept until the broker acknowledged it, so it can be sent again.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// A message handed to librdkafka, not yet acknowledged.
pub struct Pending {
    message: Arc<Outgoing>,
    delivery: DeliveryFuture,
    producer_generation: u64,
}

/// Why [`Publisher::confirm`] gave up: only shutdown stops it.
#[derive(Debug, thiserror::Error)]
#[error("shutdown before the broker acknowledged the message")]
pub struct ShutdownBeforeAck;

/// The counters of a [`Publisher`], declared in its service's metric list.
#[derive(Clone, Copy, Debug)]
pub struct PublishMetrics {
    /// Failed deliveries (each is retried).
    pub errors: Metric,
    /// Messages sent again after a failed delivery.
    pub retries: Metric,
    /// Producers replaced after failed deliveries.
    pub rebuilds: Metric,
}

pub struct Publisher {
    config: ClientConfig,
    producer: Mutex<(u64, FutureProducer)>,
    generation: AtomicU64,
    failing: AtomicBool,
    counters: PublishMetrics,
}

impl Publisher {
    /// `config` is the complete producer configuration; `counters` are the service's.
    pub fn new(config: ClientConfig, counters: PublishMetrics) -> Result<Publisher, KafkaError> {
        let producer = config.create()?;
        Ok(Publisher {
            config,
            producer: Mutex::new((0, producer)),
            generation: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            counters,
        })
    }

    fn current(&self) -> (u64, FutureProducer) {
        let guard = self.producer.lock().expect("producer lock");
        (guard.0, guard.1.clone())
    }

    /// Hands `message` to librdkafka, waiting while its local queue is full.
    pub async fn enqueue(&self, message: Arc<Outgoing>) -> Pending {
        loop {
            let (generation, producer) = self.current();
            let mut record = FutureRecord::to(&message.topic)
                .key(&message.key)
                .payload(&message.payload);
            if !message.headers.is_empty() {
                let mut headers = OwnedHeaders::new();
                for (key, value) in &message.headers {
                    headers = headers.insert(Header {
                        key,
                        value: Some(value),
                    });
                }
                record = record.headers(headers);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    return Pending {
                        message,
                        delivery,
                        producer_generation: generation,
                    };
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((err, _)) => {
                    // Not retriable by waiting (e.g. message too large for the producer's
                    // settings): count it and keep trying through `confirm`'s slow path, which
                    // logs and backs off.
                    self.note_failure(&err, &message.topic);
                    tokio::time::sleep(FIRST_DELAY).await;
                }
            }
        }
    }

    /// Waits until the broker acknowledged `pending`, re-sending as long as it takes.
    pub async fn confirm(
        &self,
        mut pending: Pending,
        shutdown: &CancellationToken,
    ) -> Result<(), ShutdownBeforeAck> {
        let mut delay = FIRST_DELAY;
        loop {
            let result = tokio::select! {
                result = &mut pending.delivery => result,
                _ = shutdown.cancelled() => return Err(ShutdownBeforeAck),
            };
            let err = match result {
                Ok(Ok(_)) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(topic = %pending.message.topic, "broker acknowledges again");
                    }
                    return Ok(());
                }
                Ok(Err((err, _))) => err,
                Err(_canceled) => KafkaError::Canceled,
            };
            self.note_failure(&err, &pending.message.topic);
            self.rebuild_if_current(pending.producer_generation);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return Err(ShutdownBeforeAck),
            }
            delay = (delay * 2).min(MAX_DELAY);
            metrics::counter!(self.counters.retries.name).increment(1);
            pending = self.enqueue(pending.message).await;
        }
    }

    /// Sends one message and waits for its acknowledgement.
    pub async fn send(
        &self,
        message: Outgoing,
        shutdown: &CancellationToken,
    ) -> Result<(), ShutdownBeforeAck> {
        let pending = self.enqueue(Arc::new(message)).await;
        self.confirm(pending, shutdown).await
    }

    fn note_failure(&self, err: &KafkaError, topic: &str) {
        metrics::counter!(self.counters.errors.name).increment(1);
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, topic, "cannot publish to Kafka; retrying with backoff until the broker acknowledges");
        }
    }

    /// A broker that restarted may not know this producer's id and refuse its retries for
    /// good (tansu does); a new producer starts clean. Only the first failure of a producer
    /// generation rebuilds it.
    fn rebuild_if_current(&self, failed_generation: u64) {
        let mut guard = self.producer.lock().expect("producer lock");
        if guard.0 != failed_generation {
            return;
        }
        match self.config.create::<FutureProducer>() {
            Ok(producer) => {
                let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                *guard = (generation, producer);
                metrics::counter!(self.counters.rebuilds.name).increment(1);
            }
            Err(err) => tracing::warn!(error = %err, "cannot create a new Kafka producer"),
        }
    }
}
