//! The sink's loop: consume flow messages from every assigned partition into one batch, flush
//! it at `--batch-rows` rows or `--batch-age`, insert it as one `Native` block with a
//! deterministic `insert_deduplication_token`, and commit the batch's offsets only after
//! ClickHouse acknowledged the insert (and the broker acknowledged its dead letters).
//!
//! One insert is in flight while the next batch is read, so ClickHouse parses and writes batch
//! k while batch k+1 is decoded; k+1 is written only after k is committed, so commits stay in
//! order. While ClickHouse is down the insert is retried with capped backoff; once the next
//! batch is full too, the assigned partitions are paused and polled without delivering, so
//! memory stays bounded by two batches, the group keeps the sink, and offsets of unwritten rows
//! are never committed. A retried insert carries the same token, so ClickHouse stores it once;
//! a batch consumed again after a crash may be cut differently, and then the
//! `ReplacingMergeTree` on `record_id` removes the repeats (queries use `FINAL`, rollups read
//! `FINAL`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netmeter_common::consume::GroupConsumer;
use netmeter_common::dead_letter::{DeadLetters, Rejected};
use netmeter_common::kafka::header;
use netmeter_common::publish::{Pending, Publisher};
use netmeter_proto::{ENCODING_HEADER, JSON_ENCODING, SCHEMA_HEADER, Schema};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metric_list::{
    BATCH_AGE, BATCHES, CONSUMER_LAG, INSERT_RETRIES, INSERT_SECONDS, PAUSE_ERRORS,
    RECORDS_EXPIRED, ROWS_INSERTED,
};
use crate::native::{self, NativeBlock, NativeEncoder};
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
    /// The rows encoded by the reader, before the batch goes to be written (or while the
    /// previous one still is); reading more rows drops it.
    block: Option<NativeBlock>,
}

impl Batch {
    pub fn note_offset(&mut self, partition: i32, offset: i64) {
        self.started.get_or_insert_with(Instant::now);
        self.block = None;
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

    /// Encodes the rows, unless done already, on a blocking thread (50,000 rows take tens of
    /// milliseconds) with `encoder`, which keeps its buffers for the next batch.
    async fn encode(&mut self, encoder: &mut NativeEncoder) {
        if self.block.is_some() || self.rows.is_empty() {
            return;
        }
        let (rows, mut owned) = (std::mem::take(&mut self.rows), std::mem::take(encoder));
        let (rows, owned, block) = tokio::task::spawn_blocking(move || {
            let block = owned.encode(&rows);
            (rows, owned, block)
        })
        .await
        .expect("encoding a batch does not panic");
        (self.rows, *encoder, self.block) = (rows, owned, Some(block));
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

/// Inserts `block` into `table` as one insert carrying `token`.
pub async fn insert(
    client: &clickhouse::Client,
    table: &str,
    block: NativeBlock,
    token: &str,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client
        .insert_formatted_with(native::insert_statement(table))
        .with_setting("insert_deduplication_token", token);
    for frame in block.frames {
        insert.send_compressed(frame).await?;
    }
    insert.end().await
}

/// Consecutive rejections (ClickHouse answered with an error, it was not unreachable) after
/// which a batch is searched for poison rows.
const REJECTIONS_BEFORE_ISOLATING: u32 = 3;
/// More poison rows than this in one batch is not poison: the schema or server is wrong, and
/// the batch keeps being retried whole instead of being dead-lettered.
const MAX_POISON_ROWS: usize = 10;

/// Finds the rows ClickHouse rejects on their own by inserting halves: a rejected range is
/// split until single rows remain. Returns the poison rows' indexes once everything else is
/// stored, or `None` when the failure is not a few rows (unreachable server, more than
/// [`MAX_POISON_ROWS`] rejected) — then nothing is dead-lettered and the batch is retried.
/// `insert(range, path)` inserts `rows[range]`; `path` is unique per range for its dedup token.
pub async fn isolate_poison<F, Fut>(len: usize, mut insert: F) -> Option<Vec<usize>>
where
    F: FnMut(std::ops::Range<usize>, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
{
    let mut poison = Vec::new();
    let mut ranges = vec![(0..len, String::new())];
    while let Some((range, path)) = ranges.pop() {
        match insert(range.clone(), path.clone()).await {
            Ok(()) => {}
            Err(clickhouse::error::Error::BadResponse(_)) if range.len() == 1 => {
                poison.push(range.start);
                if poison.len() > MAX_POISON_ROWS {
                    return None;
                }
            }
            Err(clickhouse::error::Error::BadResponse(_)) => {
                let mid = range.start + range.len() / 2;
                ranges.push((mid..range.end, format!("{path}1")));
                ranges.push((range.start..mid, format!("{path}0")));
            }
            Err(_) => return None,
        }
    }
    poison.sort_unstable();
    Some(poison)
}

/// Whether a spawned [`Sink::flush`] wrote its batch; a panic in it is logged and counts as not.
fn finished(joined: Result<bool, tokio::task::JoinError>) -> bool {
    joined.unwrap_or_else(|err| {
        tracing::error!(error = %err, "writing a batch failed unexpectedly; its offsets stay uncommitted");
        false
    })
}

/// Whether the assigned partitions are paused: the batch is full and the previous one is still
/// being written (or retried while ClickHouse is down).
#[derive(Default)]
struct Consumption {
    paused: bool,
    failures: u64,
}

impl Consumption {
    fn pause(&mut self, consumer: &GroupConsumer) {
        if self.paused {
            return;
        }
        match consumer.assignment().and_then(|list| consumer.pause(&list)) {
            Ok(()) => self.paused = true,
            Err(err) => self.failed("pause", err),
        }
    }

    fn resume(&mut self, consumer: &GroupConsumer) {
        if !self.paused {
            return;
        }
        match consumer
            .assignment()
            .and_then(|list| consumer.resume(&list))
        {
            Ok(()) => self.paused = false,
            Err(err) => self.failed("resume", err),
        }
    }

    /// Without a pause the loop stops polling while the batch is full (the group may expel
    /// the sink after `max.poll.interval.ms`, and it rejoins); a failed resume is retried on
    /// the next pass of the loop.
    fn failed(&mut self, what: &str, err: rdkafka::error::KafkaError) {
        self.failures += 1;
        metrics::counter!(PAUSE_ERRORS.name).increment(1);
        if self.failures.is_power_of_two() {
            tracing::warn!(error = %err, count = self.failures, "could not {what} the assigned partitions");
        }
    }
}

/// Records older than `flows` keeps (`--record-ttl-days`): ClickHouse drops them on arrival (the
/// table's TTL), so a replay or a backlog of older data changes nothing. They are inserted all
/// the same (the table decides), counted, and logged the first time and whenever their count
/// doubles.
pub struct Expiry {
    keep: Duration,
    seen: AtomicU64,
}

impl Expiry {
    pub fn new(record_ttl_days: u32) -> Expiry {
        Expiry {
            keep: Duration::from_secs(u64::from(record_ttl_days) * 86_400),
            seen: AtomicU64::new(0),
        }
    }

    /// Counts the rows of one message that are too old for `flows`; returns how many.
    fn check(&self, rows: &[FlowRow], message: (i32, i64)) -> u64 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let oldest_kept = now_ms.saturating_sub(self.keep.as_millis() as u64);
        let expired = rows
            .iter()
            .filter(|r| r.interval_start_unix_ms < oldest_kept)
            .count() as u64;
        if expired == 0 {
            return 0;
        }
        metrics::counter!(RECORDS_EXPIRED.name).increment(expired);
        let before = self.seen.fetch_add(expired, Ordering::Relaxed);
        let total = before + expired;
        if before == 0 || before.ilog2() != total.ilog2() {
            tracing::warn!(
                records = expired,
                total,
                partition = message.0,
                offset = message.1,
                record_ttl_days = self.keep.as_secs() / 86_400,
                "records older than --record-ttl-days arrived: flows expires them on arrival and \
                 connection_minutes and the rollups are not recomputed for them"
            );
        }
        expired
    }
}

pub struct Sink {
    pub consumer: Arc<GroupConsumer>,
    pub topic: String,
    pub client: clickhouse::Client,
    pub table: String,
    pub publisher: Arc<Publisher>,
    pub dead_letters: DeadLetters,
    pub limits: BatchLimits,
    pub expiry: Expiry,
}

impl Sink {
    /// Reads one message into `batch`: its rows, or its dead letter.
    async fn read(&self, message: &BorrowedMessage<'_>, batch: &mut Batch) {
        batch.note_offset(message.partition(), message.offset());
        let payload = message.payload().unwrap_or_default();
        let schema = header(message, SCHEMA_HEADER);
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
            Ok(rows) => {
                self.expiry
                    .check(&rows, (message.partition(), message.offset()));
                batch.rows.extend(rows);
            }
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
    async fn flush(&self, mut batch: Batch, give_up: &CancellationToken) -> bool {
        let token = batch.dedup_token(&self.topic);
        let rows = batch.rows.len();
        let age = batch.age();
        let mut delay = netmeter_common::retry::FIRST_DELAY;
        let mut failing = false;
        let mut rejections = 0;
        let mut dead_letters = std::mem::take(&mut batch.dead_letters);
        if !batch.rows.is_empty() {
            // Encoded ahead by the reader; an insert spends its block, a retry encodes again.
            let mut ahead = batch.block.take();
            loop {
                let block = ahead
                    .take()
                    .unwrap_or_else(|| NativeBlock::encode(&batch.rows));
                let started = Instant::now();
                let err = match insert(&self.client, &self.table, block, &token).await {
                    Ok(()) => {
                        metrics::histogram!(INSERT_SECONDS.name)
                            .record(started.elapsed().as_secs_f64());
                        if failing {
                            tracing::info!(rows, "ClickHouse accepts inserts again");
                        }
                        break;
                    }
                    Err(err) => err,
                };
                metrics::counter!(INSERT_RETRIES.name).increment(1);
                if !failing {
                    failing = true;
                    tracing::warn!(error = %err, rows, %token, "insert failed; retrying with backoff, consumption paused, offsets not committed");
                }
                rejections = match err {
                    clickhouse::error::Error::BadResponse(_) => rejections + 1,
                    _ => 0,
                };
                if rejections >= REJECTIONS_BEFORE_ISOLATING {
                    let found = isolate_poison(batch.rows.len(), |range, path| {
                        let token = format!("{token}#{path}");
                        let block = NativeBlock::encode(&batch.rows[range]);
                        async move { insert(&self.client, &self.table, block, &token).await }
                    })
                    .await;
                    if let Some(poison) = found {
                        for index in poison {
                            dead_letters.push(self.poison_letter(&batch.rows[index]).await);
                        }
                        break;
                    }
                    rejections = 0;
                }
                tokio::select! {
                    _ = give_up.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(netmeter_common::retry::MAX_DELAY);
            }
        }
        let commits = batch.commit_list(&self.topic);
        for pending in dead_letters {
            if self.publisher.confirm(pending, give_up).await.is_err() {
                return false;
            }
        }
        if let Err(err) = self.consumer.commit(&commits, CommitMode::Sync) {
            // The rows are stored; the next owner of these partitions re-reads them and the
            // table's dedup keeps one copy.
            tracing::warn!(error = %err, "offset commit failed after a successful insert");
        }
        metrics::counter!(ROWS_INSERTED.name).increment(rows as u64);
        metrics::counter!(BATCHES.name).increment(1);
        metrics::gauge!(BATCH_AGE.name).set(age.as_secs_f64());
        self.record_lag(batch.offsets).await;
        true
    }

    /// A row ClickHouse refuses on its own goes to the dead-letter topic as JSON.
    async fn poison_letter(&self, row: &FlowRow) -> Pending {
        let payload = serde_json::to_vec(row).expect("a row serializes");
        let rejected = Rejected {
            topic: &self.topic,
            partition: -1,
            offset: -1,
            key: None,
            schema: None,
            payload: &payload,
        };
        let mut letter = self.dead_letters.letter(
            &rejected,
            &format!("ClickHouse rejected row {}", row.record_id),
            "insert_rejected",
        );
        letter
            .headers
            .push((ENCODING_HEADER, JSON_ENCODING.to_vec()));
        self.publisher.enqueue(Arc::new(letter)).await
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
        metrics::gauge!(CONSUMER_LAG.name).set(lag as f64);
    }

    /// Runs until `shutdown`, then writes what was read (within `drain`) and leaves the group.
    pub async fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> anyhow::Result<()> {
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
        // The batch being written, in its own task, while the next one is read: at most one,
        // so memory holds two batches and batches are written and committed in order.
        let mut writing: Option<JoinHandle<bool>> = None;
        let mut consumption = Consumption::default();
        let mut encoder = NativeEncoder::default();
        let mut written = true;
        loop {
            let full = batch.rows.len() >= self.limits.max_rows;
            let due = full || (!batch.is_empty() && batch.age() >= self.limits.max_age);
            if due && writing.is_none() {
                batch.encode(&mut encoder).await;
                writing = Some(self.spawn_flush(std::mem::take(&mut batch), &give_up));
                continue;
            }
            if full {
                // Encoded now, so the insert starts the moment the previous one is committed.
                batch.encode(&mut encoder).await;
                // Polling goes on (a consumer that stops polling is expelled from the group
                // after `max.poll.interval.ms`); paused partitions deliver nothing.
                consumption.pause(&self.consumer);
            } else {
                consumption.resume(&self.consumer);
            }
            let deadline =
                tokio::time::Instant::now() + self.limits.max_age.saturating_sub(batch.age());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = async { writing.as_mut().expect("checked").await }, if writing.is_some() => {
                    writing = None;
                    written = finished(done);
                    if !written {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline), if !batch.is_empty() && writing.is_none() => {}
                message = self.consumer.recv(), if !full || consumption.paused => {
                    // Only a rebalance (which assigns partitions unpaused) lets a message
                    // through a pause: it is kept, and the new assignment paused too.
                    consumption.paused = false;
                    self.read(&message, &mut batch).await;
                }
            }
        }
        if let Some(writing) = writing {
            written = finished(writing.await);
        }
        if written && !batch.is_empty() {
            written = self.flush(batch, &give_up).await;
        }
        if !written {
            tracing::warn!(
                "shutdown before every batch read was written; the unwritten ones keep their offsets uncommitted and are read again"
            );
        }
        deadline_task.abort();
        self.consumer.leave().await;
        Ok(())
    }

    /// Writes `batch` in a task of its own (see [`Sink::flush`]).
    fn spawn_flush(
        self: &Arc<Self>,
        batch: Batch,
        give_up: &CancellationToken,
    ) -> JoinHandle<bool> {
        let (sink, give_up) = (self.clone(), give_up.clone());
        tokio::spawn(async move { sink.flush(batch, &give_up).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_older_than_flows_keeps_are_counted() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let row = |id: u128, age_days: u64| {
            FlowRow::try_from(netmeter_proto::flows::Flow {
                record_id: uuid::Uuid::from_u128(id).to_string(),
                interval_start_unix_ms: now_ms - age_days * 86_400_000,
                local_ip: "10.0.0.1".into(),
                remote_ip: "10.0.0.2".into(),
                ..netmeter_proto::flows::Flow::default()
            })
            .unwrap()
        };
        let expiry = Expiry::new(7);
        assert_eq!(expiry.check(&[row(1, 1), row(2, 6)], (0, 1)), 0);
        assert_eq!(expiry.check(&[row(3, 8), row(4, 1), row(5, 30)], (0, 2)), 2);
        assert_eq!(expiry.check(&[row(6, 9)], (1, 7)), 1);
        assert_eq!(expiry.seen.load(Ordering::Relaxed), 3);
    }

    fn rejected() -> clickhouse::error::Error {
        clickhouse::error::Error::BadResponse("Code: 6. DB::Exception: cannot parse".into())
    }

    /// Inserts that reject any range containing one of `poison`; records what was stored.
    async fn find(len: usize, poison: &[usize], down: bool) -> (Option<Vec<usize>>, Vec<usize>) {
        let stored = std::sync::Mutex::new(Vec::new());
        let found = isolate_poison(len, |range, _path| {
            let result = if down {
                Err(clickhouse::error::Error::Network(
                    "connection refused".into(),
                ))
            } else if poison.iter().any(|p| range.contains(p)) {
                Err(rejected())
            } else {
                stored.lock().unwrap().extend(range);
                Ok(())
            };
            async move { result }
        })
        .await;
        let mut stored = stored.into_inner().unwrap();
        stored.sort_unstable();
        (found, stored)
    }

    #[tokio::test]
    async fn poison_rows_are_found_and_everything_else_is_stored_once() {
        let (found, stored) = find(1000, &[17, 18, 999], false).await;
        assert_eq!(found, Some(vec![17, 18, 999]));
        let expected: Vec<usize> = (0..1000).filter(|i| ![17, 18, 999].contains(i)).collect();
        assert_eq!(stored, expected);
    }

    #[tokio::test]
    async fn many_rejected_rows_or_an_unreachable_server_are_not_poison() {
        let (found, _) = find(100, &(0..20).collect::<Vec<_>>(), false).await;
        assert_eq!(found, None);
        let (found, stored) = find(100, &[], true).await;
        assert_eq!((found, stored), (None, vec![]));
    }

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
