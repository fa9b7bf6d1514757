//! Reading Kafka, written once for every service:
//!
//! - [`GroupConsumer`]: a member of a consumer group (the attributor's raw topic, the sink's
//!   flows topic) that counts and logs its rebalances and its consume errors, and
//!   [leaves](GroupConsumer::leave) the group with a deadline at shutdown.
//! - [`TopicToEnd`]: reads every partition of a topic up to the end it had when reading began
//!   (the attributor's inventory at start-up, a replay's range of the raw topic).
//! - [`Detached`]: how every librdkafka client here is destroyed, on a thread of its own:
//!   destroying a consumer can block forever against some brokers (tansu 0.6), and no service,
//!   subcommand or test should hang on that at exit.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::kafka::{TopicError, partitions};
use crate::metric::Metric;

/// The counters of a [`GroupConsumer`], declared in its service's metric list.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerMetrics {
    /// Errors reading the topic (librdkafka reconnects by itself).
    pub consume_errors: Metric,
    /// Rebalances of this member, by `event` (`assigned`, `revoked`).
    pub rebalances: Metric,
}

/// Consumer context for group members: logs and counts every rebalance, so an operator can
/// see which replica reads which partitions.
pub struct GroupContext {
    rebalances: Metric,
}

impl rdkafka::client::ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (event, partitions) = match rebalance {
            Rebalance::Assign(list) => ("assigned", list),
            Rebalance::Revoke(list) => ("revoked", list),
            Rebalance::Error(err) => {
                tracing::warn!(error = %err, "consumer group rebalance failed");
                return;
            }
        };
        let partitions: Vec<String> = partitions
            .elements()
            .iter()
            .map(|e| format!("{}/{}", e.topic(), e.partition()))
            .collect();
        metrics::counter!(self.rebalances.name, "event" => event).increment(1);
        tracing::info!(event, ?partitions, "consumer group rebalance");
    }
}

/// How long [`GroupConsumer::leave`] keeps polling so librdkafka can revoke and send
/// LeaveGroup.
const LEAVE_GROUP_WAIT: Duration = Duration::from_millis(500);

/// A member of a consumer group. It derefs to the librdkafka consumer for subscribing,
/// committing, pausing; [`recv`](Self::recv) is its own.
pub struct GroupConsumer {
    consumer: Detached<StreamConsumer<GroupContext>>,
    counters: ConsumerMetrics,
    errors: AtomicU64,
}

impl GroupConsumer {
    /// `config` is the complete consumer configuration (`group.id` included).
    pub fn new(config: &ClientConfig, counters: ConsumerMetrics) -> Result<Self, KafkaError> {
        let consumer = config.create_with_context(GroupContext {
            rebalances: counters.rebalances,
        })?;
        Ok(GroupConsumer {
            consumer: Detached::new(consumer),
            counters,
            errors: AtomicU64::new(0),
        })
    }

    /// The next message. librdkafka reports transient broker states as errors and reconnects
    /// by itself: each is counted, the first and then every power of two logged, and reading
    /// goes on after a short pause. Cancel-safe.
    pub async fn recv(&self) -> BorrowedMessage<'_> {
        loop {
            match self.consumer.recv().await {
                Ok(message) => return message,
                Err(err) => {
                    let errors = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
                    metrics::counter!(self.counters.consume_errors.name).increment(1);
                    if errors.is_power_of_two() {
                        tracing::warn!(error = %err, count = errors, "Kafka consumer error");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Leaves the consumer group at shutdown, so the partitions move to the other replicas (or
    /// to this replica's successor) at once instead of after the session timeout. librdkafka
    /// sends LeaveGroup only once the revocation has been served, which needs the consumer
    /// polled: so it is polled here for at most [`LEAVE_GROUP_WAIT`], and what arrives
    /// meanwhile is dropped uncommitted (the next owner reads it again). Commit before.
    pub async fn leave(&self) {
        self.consumer.unsubscribe();
        let deadline = tokio::time::Instant::now() + LEAVE_GROUP_WAIT;
        while tokio::time::timeout_at(deadline, self.consumer.recv())
            .await
            .is_ok()
        {}
    }
}

impl Deref for GroupConsumer {
    type Target = StreamConsumer<GroupContext>;

    fn deref(&self) -> &Self::Target {
        &self.consumer
    }
}

/// Where [`TopicToEnd`] starts reading each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFrom {
    Beginning,
    /// The first message with a timestamp at or after this Unix time in milliseconds.
    Time(u64),
}

/// Reads every partition of a topic, without a group, up to the end each had when reading
/// began; what is produced meanwhile may come too. Blocking: use it on a blocking thread.
pub struct TopicToEnd<'c> {
    consumer: &'c BaseConsumer,
    topic: String,
    /// The partitions not read to their end yet, and where that end is.
    ends: Vec<(i32, i64)>,
}

impl<'c> TopicToEnd<'c> {
    /// Assigns every partition of `topic` to `consumer` from `from`, and notes where each ends
    /// now. A partition with nothing to read is assigned at its end, so the consumer can go on
    /// following the topic afterwards (as the attributor's inventory does).
    pub fn assign(
        consumer: &'c BaseConsumer,
        topic: &str,
        from: ReadFrom,
        timeout: Duration,
    ) -> Result<TopicToEnd<'c>, TopicError> {
        let read = |source| TopicError::Read {
            topic: topic.to_string(),
            source,
        };
        let partitions = partitions(consumer.client(), topic, timeout)?;
        let mut starts = TopicPartitionList::new();
        for &partition in &partitions {
            let start = match from {
                ReadFrom::Beginning => Offset::Beginning,
                ReadFrom::Time(unix_ms) => Offset::Offset(unix_ms as i64),
            };
            starts
                .add_partition_offset(topic, partition, start)
                .map_err(read)?;
        }
        if matches!(from, ReadFrom::Time(_)) {
            starts = consumer.offsets_for_times(starts, timeout).map_err(read)?;
        }
        let mut assignment = TopicPartitionList::new();
        let mut ends = Vec::new();
        for element in starts.elements() {
            let partition = element.partition();
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, timeout)
                .map_err(read)?;
            let start = match element.offset() {
                Offset::Beginning if high > low => Some(Offset::Beginning),
                Offset::Offset(start) if start < high => Some(Offset::Offset(start)),
                // Empty, or nothing at or after the time.
                _ => None,
            };
            if start.is_some() {
                ends.push((partition, high));
            }
            assignment
                .add_partition_offset(topic, partition, start.unwrap_or(Offset::End))
                .map_err(read)?;
        }
        consumer.assign(&assignment).map_err(read)?;
        Ok(TopicToEnd {
            consumer,
            topic: topic.to_string(),
            ends,
        })
    }
}

impl<'c> Iterator for TopicToEnd<'c> {
    type Item = BorrowedMessage<'c>;

    /// The next message; `None` once every partition was read to its end. Errors are
    /// transient (librdkafka reconnects by itself): logged at debug, and reading goes on.
    fn next(&mut self) -> Option<BorrowedMessage<'c>> {
        while !self.ends.is_empty() {
            let message = match self.consumer.poll(Duration::from_millis(500)) {
                None => continue,
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, topic = %self.topic, "transient error reading a topic to its end");
                    continue;
                }
            };
            let (partition, next) = (message.partition(), message.offset() + 1);
            self.ends
                .retain(|(p, high)| !(*p == partition && next >= *high));
            return Some(message);
        }
        None
    }
}

/// A librdkafka client destroyed on a thread of its own when dropped: destroying a consumer
/// can block forever against some brokers (tansu 0.6), so the caller never waits for it.
/// Against a broker that answers, the client is freed as usual; one that hangs is left to the
/// process exit, like a client that was never destroyed. Derefs to the client.
pub struct Detached<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Detached<T> {
    pub fn new(client: T) -> Detached<T> {
        Detached(Some(client))
    }
}

impl<T: Send + 'static> Deref for Detached<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> DerefMut for Detached<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for Detached<T> {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        // If no thread can be started, the client is leaked rather than destroyed here.
        let client = std::mem::ManuallyDrop::new(client);
        let _ = std::thread::Builder::new()
            .name("kafka-destroy".into())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(client)));
    }
}
