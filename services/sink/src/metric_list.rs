//! Every metric the sink's `/metrics` serves, declared once with its `# HELP` text
//! ([`netmeter_common::metric`]). The README's list (the sink's "Metrics") is checked against
//! the running binary's `/metrics`.

use netmeter_common::consume::ConsumerMetrics;
use netmeter_common::publish::PublishMetrics;

netmeter_common::declare_metrics! {
    ROWS_INSERTED = counter(
        "netmeter_sink_rows_inserted_total",
        "Rows ClickHouse acknowledged."
    );
    BATCHES = counter(
        "netmeter_sink_batches_total",
        "Batches inserted into ClickHouse."
    );
    INSERT_SECONDS = histogram(
        "netmeter_sink_insert_seconds",
        "Time of one insert into ClickHouse, retries excluded."
    );
    INSERT_RETRIES = counter(
        "netmeter_sink_insert_retries_total",
        "Inserts tried again after ClickHouse failed or refused them."
    );
    BATCH_AGE = gauge(
        "netmeter_sink_batch_age_seconds",
        "Age of the last inserted batch when it was flushed."
    );
    CONSUMER_LAG = gauge(
        "netmeter_sink_consumer_lag_messages",
        "Flow messages behind the end of the assigned partitions, after the last insert."
    );
    DEAD_LETTERS = counter(
        "netmeter_sink_dead_letters_total",
        "Messages or rows sent to the dead-letter topic, by reason."
    );
    CONSUME_ERRORS = counter(
        "netmeter_sink_consume_errors_total",
        "Errors reading the flows topic (the client reconnects by itself)."
    );
    PAUSE_ERRORS = counter(
        "netmeter_sink_pause_errors_total",
        "Failed pauses or resumes of the assigned partitions (retried)."
    );
    REBALANCES = counter(
        "netmeter_sink_rebalances_total",
        "Consumer group rebalances of this replica, by event (assigned, revoked)."
    );
    PUBLISH_ERRORS = counter(
        "netmeter_sink_publish_errors_total",
        "Failed deliveries of dead letters (each is retried)."
    );
    PUBLISH_RETRIES = counter(
        "netmeter_sink_publish_retries_total",
        "Dead letters sent again after a failed delivery."
    );
    RECORDS_EXPIRED = counter(
        "netmeter_sink_records_expired_total",
        "Records older than --record-ttl-days when read: ClickHouse drops them on arrival, so \
         neither flows nor connection_minutes changes (a replay or backlog older than that)."
    );
    PRODUCER_REBUILDS = counter(
        "netmeter_sink_producer_rebuilds_total",
        "Kafka producers replaced after failed deliveries."
    );
}

/// The counters of the sink's producer (dead letters).
pub const PUBLISH: PublishMetrics = PublishMetrics {
    errors: PUBLISH_ERRORS,
    retries: PUBLISH_RETRIES,
    rebuilds: PRODUCER_REBUILDS,
};

/// The counters of the sink's flows topic consumer.
pub const CONSUMER: ConsumerMetrics = ConsumerMetrics {
    consume_errors: CONSUME_ERRORS,
    rebalances: REBALANCES,
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_follows_the_naming_convention() {
        netmeter_common::metric::check_list(super::ALL).unwrap();
    }
}
