//! The sink's loop: consume flow messages from every assigned partition into one batch, flush
//! it at `--batch-rows` rows or `--batch-age`, insert it with a deterministic
//! `insert_deduplication_token`, and commit the batch's offsets only after ClickHouse
//! acknowledged the insert (and the broker acknowledged its dead letters).
//!
//! While ClickHouse is down the insert is retried with capped backoff and nothing more is
//! consumed, so memory stays bounded by one batch; offsets of unwritten rows are never committed.
//! A retried insert carries the same token, so ClickHouse stores it once; a batch consumed again
//! after a crash may be cut differently, and then the `ReplacingMergeTree` on `record_id`
//! removes the repeats (queries use `FINAL`, rollups read `FINAL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netmeter_common::dead_letter::{DeadLetters, Rejected};
use netmeter_common::kafka::GroupContext;
use netmeter_common::publish::{Pending, Publisher};
use netmeter_proto::{SCHEMA_HEADER, Schema};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::row::FlowRow;

/// When a batch is written.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_age: Duration,
}

/// Rows read since the last flush, and where they came from.
#[derive(Default)]
pub struct Batch {
    pub rows: Vec<FlowRow>,
    /// partition -> (first, last) offset read into this batch.
    offsets: BTreeMap<i32, (i64, i64)>,
    dead_letters: Vec<Pending>,
    started: Option<Instant>,
}

impl Batch {
    pub fn note_offset(&mut self, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        let range = self.offsets.entry(partition).or_insert((offset, offset));
        range.0 = range.0.min(offset);
        range.1 = range.1.max(offset);
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn age(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Same messages -> same token: `topic/partition:first-last` per partition.
    pub fn dedup_token(&self, topic: &str) -> String {
        let ranges: Vec<String> = self
            .offsets
            .iter()
            .map(|(p, (first, last))| format!("{topic}/{p}:{first}-{last}"))
            .collect();
        ranges.join(",")
    }

    /// The offsets to commit: the next one to read, per partition.
    pub fn commit_list(&self, topic: &str) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for (partition, (_, last)) in &self.offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(last + 1))
                .expect("a valid offset");
        }
        list
    }
}

/// Inserts `rows` into `table` as one insert carrying `token`.
pub async fn insert(
    client: &clickhouse::Client,
    table: &str,
    rows: &[FlowRow],
    token: &str,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client
        .insert::<FlowRow>(table)
        .await?
        .with_setting("insert_deduplication_token", token);
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}

pub struct Sink {
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    pub topic: String,
    pub client: clickhouse::Client,
    pub table: String,
    pub publisher: Arc<Publisher>,
    pub dead_letters: DeadLetters,
    pub limits: BatchLimits,
}

impl Sink {
    /// Reads one message into `batch`: its rows, or its dead letter.
    async fn read(&self, message: &BorrowedMessage<'_>, batch: &mut Batch) {
        batch.note_offset(message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let schema = message.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == SCHEMA_HEADER)
                .and_then(|h| h.value)
        });
        let decoded = Schema::FlowsV1
            .check_header(schema)
            .and_then(|_| netmeter_proto::decode_flows(payload))
            .map_err(|e| (e.to_string(), e.metric_label()))
            .and_then(|flows| {
                flows
                    .into_iter()
                    .map(FlowRow::try_from)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| (e.to_string(), e.metric_label()))
            });
        match decoded {
            Ok(rows) => batch.rows.extend(rows),
            Err((reason, label)) => {
                let rejected = Rejected {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key(),
                    schema,
                    payload,
                };
                let letter = self.dead_letters.letter(&rejected, &reason, label);
                batch
                    .dead_letters
                    .push(self.publisher.enqueue(Arc::new(letter)).await);
            }
        }
    }

    /// Writes the batch and commits its offsets; retries until done or `give_up`.
    /// Returns false if it gave up (nothing committed).
    async fn flush(&self, batch: Batch, give_up: &CancellationToken) -> bool {
        let token = batch.dedup_token(&self.topic);
        let rows = batch.rows.len();
        let age = batch.age();
        let mut delay = netmeter_common::retry::FIRST_DELAY;
        let mut failing = false;
        if !batch.rows.is_empty() {
            loop {
                let started = Instant::now();
                match insert(&self.client, &self.table, &batch.rows, &token).await {
                    Ok(()) => {
                        metrics::histogram!("netmeter_sink_insert_seconds")
                            .record(started.elapsed().as_secs_f64());
                        if failing {
                            tracing::info!(
                                rows = batch.rows.len(),
                                "ClickHouse accepts inserts again"
                            );
                        }
                        break;
                    }
                    Err(err) => {
                        metrics::counter!("netmeter_sink_insert_retries_total").increment(1);
                        if !failing {
                            failing = true;
                            tracing::warn!(error = %err, rows = batch.rows.len(), %token, "insert failed; retrying with backoff, consumption paused, offsets not committed");
                        }
                        tokio::select! {
                            _ = give_up.cancelled() => return false,
                            _ = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(netmeter_common::retry::MAX_DELAY);
                    }
                }
            }
        }
        let commits = batch.commit_list(&self.topic);
        for pending in batch.dead_letters {
            if self.publisher.confirm(pending, give_up).await.is_err() {
                return false;
            }
        }
        if let Err(err) = self.consumer.commit(&commits, CommitMode::Sync) {
            // The rows are stored; the next owner of these partitions re-reads them and the
            // table's dedup keeps one copy.
            tracing::warn!(error = %err, "offset commit failed after a successful insert");
        }
        metrics::counter!("netmeter_sink_rows_inserted_total").increment(rows as u64);
        metrics::counter!("netmeter_sink_batches_total").increment(1);
        metrics::gauge!("netmeter_sink_batch_age_seconds").set(age.as_secs_f64());
        self.record_lag(batch.offsets).await;
        true
    }

    /// Consumer lag of the partitions just written: their end minus what was read.
    async fn record_lag(&self, offsets: BTreeMap<i32, (i64, i64)>) {
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let lag = tokio::task::spawn_blocking(move || {
            offsets
                .iter()
                .filter_map(|(partition, (_, last))| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, *partition, Duration::from_secs(1))
                        .ok()?;
                    Some((high - last - 1).max(0))
                })
                .sum::<i64>()
        })
        .await
        .unwrap_or(0);
        metrics::gauge!("netmeter_sink_consumer_lag_messages").set(lag as f64);
    }

    /// Runs until `shutdown`, then writes what was read (within `drain`) and leaves the group.
    pub async fn run(&self, shutdown: CancellationToken, drain: Duration) -> anyhow::Result<()> {
        self.consumer.subscribe(&[&self.topic])?;
        // Writing a batch gives up only once shutdown was asked for and `drain` has passed.
        let give_up = CancellationToken::new();
        let deadline_task = {
            let (shutdown, give_up) = (shutdown.clone(), give_up.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(drain).await;
                give_up.cancel();
            })
        };
        let mut batch = Batch::default();
        let mut errors = 0u64;
        loop {
            let deadline =
                tokio::time::Instant::now() + self.limits.max_age.saturating_sub(batch.age());
            let message = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(deadline), if !batch.is_empty() => None,
                message = self.consumer.recv() => Some(message),
            };
            match message {
                Some(Ok(message)) => {
                    self.read(&message, &mut batch).await;
                    if batch.rows.len() < self.limits.max_rows {
                        continue;
                    }
                }
                Some(Err(err)) => {
                    errors += 1;
                    metrics::counter!("netmeter_sink_consume_errors_total").increment(1);
                    if errors.is_power_of_two() {
                        tracing::warn!(error = %err, count = errors, "Kafka consumer error");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                None => {}
            }
            if !self.flush(std::mem::take(&mut batch), &give_up).await {
                tracing::warn!(
                    "shutdown before the batch was written; its offsets stay uncommitted and it is read again"
                );
                break;
            }
        }
        if !batch.is_empty() && !self.flush(batch, &give_up).await {
            tracing::warn!(
                "shutdown before the last batch was written; its offsets stay uncommitted and it is read again"
            );
        }
        deadline_task.abort();
        self.consumer.unsubscribe();
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_and_commits_follow_the_offsets_read() {
        let mut batch = Batch::default();
        for (p, o) in [(3, 17), (0, 5), (3, 18), (0, 6), (3, 16)] {
            batch.note_offset(p, o);
        }
        assert_eq!(
            batch.dedup_token("netmeter.flows.v1"),
            "netmeter.flows.v1/0:5-6,netmeter.flows.v1/3:16-18"
        );
        let commits: Vec<_> = batch
            .commit_list("t")
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(commits, [(0, Offset::Offset(7)), (3, Offset::Offset(19))]);
    }
}
