//! The `# HELP` line of every metric the sink's `/metrics` serves (Prometheus's linter,
//! `promtool check metrics`, wants one per metric), in one list so a new metric is described
//! where its neighbours are.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Registers the descriptions with the process's recorder; call once at start.
pub fn describe() {
    describe_gauge!(
        "netmeter_build_info",
        "Always 1; the labels say which service and version runs."
    );
    describe_counter!(
        "netmeter_sink_rows_inserted_total",
        "Rows ClickHouse acknowledged."
    );
    describe_counter!(
        "netmeter_sink_batches_total",
        "Batches inserted into ClickHouse."
    );
    describe_histogram!(
        "netmeter_sink_insert_seconds",
        "Time of one insert into ClickHouse, retries excluded."
    );
    describe_counter!(
        "netmeter_sink_insert_retries_total",
        "Inserts tried again after ClickHouse failed or refused them."
    );
    describe_gauge!(
        "netmeter_sink_batch_age_seconds",
        "Age of the last inserted batch when it was flushed."
    );
    describe_gauge!(
        "netmeter_sink_consumer_lag_messages",
        "Flow messages behind the end of the assigned partitions, after the last insert."
    );
    describe_counter!(
        "netmeter_sink_dead_letters_total",
        "Messages or rows sent to the dead-letter topic, by reason."
    );
    describe_counter!(
        "netmeter_sink_consume_errors_total",
        "Errors reading the flows topic (the client reconnects by itself)."
    );
    describe_counter!(
        "netmeter_sink_pause_errors_total",
        "Failed pauses or resumes of the assigned partitions (retried)."
    );
    describe_counter!(
        "netmeter_sink_rebalances_total",
        "Consumer group rebalances of this replica, by event (assigned, revoked)."
    );
    describe_counter!(
        "netmeter_sink_publish_errors_total",
        "Failed deliveries of dead letters (each is retried)."
    );
    describe_counter!(
        "netmeter_sink_publish_retries_total",
        "Dead letters sent again after a failed delivery."
    );
    describe_counter!(
        "netmeter_sink_producer_rebuilds_total",
        "Kafka producers replaced after failed deliveries."
    );
}
