//! Every metric the collector's `/metrics` serves, declared once with its `# HELP` text
//! ([`netmeter_common::metric`]). The README's list ("Collector metrics") is checked against
//! the running binary's `/metrics`.

use netmeter_common::publish::PublishMetrics;

netmeter_common::declare_metrics! {
    CONNTRACK_ACCOUNTING = gauge(
        "netmeter_collector_conntrack_accounting",
        "1 while conntrack accounting (nf_conntrack_acct) is on; at 0 there are no byte counters and the collector waits, not ready."
    );
    CONNTRACK_ENTRIES = gauge(
        "netmeter_collector_conntrack_entries",
        "Conntrack entries in the last dump."
    );
    CONNTRACK_TABLE_ENTRIES = gauge(
        "netmeter_collector_conntrack_table_entries",
        "Entries in the kernel's conntrack table (nf_conntrack_count)."
    );
    CONNTRACK_TABLE_MAX = gauge(
        "netmeter_collector_conntrack_table_max",
        "Size limit of the kernel's conntrack table (nf_conntrack_max)."
    );
    TRACKED_CONNECTIONS = gauge(
        "netmeter_collector_tracked_connections",
        "Connections whose last counters the collector remembers."
    );
    DUMP_DURATION = histogram(
        "netmeter_collector_dump_duration_seconds",
        "Time to dump the conntrack table and compute the deltas."
    );
    LAST_DUMP_TIMESTAMP = gauge(
        "netmeter_collector_last_dump_timestamp_seconds",
        "Unix time of the last finished dump."
    );
    DELTAS = counter(
        "netmeter_collector_deltas_total",
        "Per-connection deltas emitted."
    );
    BYTES = counter(
        "netmeter_collector_bytes_total",
        "Bytes in the emitted deltas, by conntrack direction (original, reply)."
    );
    PACKETS = counter(
        "netmeter_collector_packets_total",
        "Packets in the emitted deltas, by conntrack direction (original, reply)."
    );
    EVENTS = counter(
        "netmeter_collector_events_total",
        "Conntrack DESTROY events received: final counters of connections that ended."
    );
    EVENT_OVERRUNS = counter(
        "netmeter_collector_event_overruns_total",
        "Times the kernel dropped conntrack events (ENOBUFS): the final bytes of some ended connections are lost."
    );
    DUMP_ERRORS = counter(
        "netmeter_collector_dump_errors_total",
        "Failed conntrack dumps (retried the next interval)."
    );
    DUMP_INTERRUPTED = counter(
        "netmeter_collector_dump_interrupted_total",
        "Dumps the kernel flagged as interrupted by concurrent table changes."
    );
    MALFORMED_ENTRIES = counter(
        "netmeter_collector_malformed_entries_total",
        "Conntrack entries that could not be read (skipped)."
    );
    BUFFER_BATCHES = gauge(
        "netmeter_collector_buffer_batches",
        "Batches waiting to be published (bounded by --buffer-bytes)."
    );
    BUFFER_BYTES = gauge(
        "netmeter_collector_buffer_bytes",
        "Bytes of the batches waiting to be published (bounded by --buffer-bytes)."
    );
    BATCHES_PUBLISHED = counter(
        "netmeter_collector_batches_published_total",
        "Batches the broker acknowledged."
    );
    PUBLISH_ERRORS = counter(
        "netmeter_collector_publish_errors_total",
        "Failed deliveries of a batch (it is kept and sent again)."
    );
    PUBLISH_RETRIES = counter(
        "netmeter_collector_publish_retries_total",
        "Batches sent again after a failed delivery."
    );
    PRODUCER_REBUILDS = counter(
        "netmeter_collector_producer_rebuilds_total",
        "Kafka producers replaced after failed deliveries."
    );
    DROPPED_BATCHES = counter(
        "netmeter_collector_dropped_batches_total",
        "Batches dropped unpublished, by reason (consumers see the gap in the sequence)."
    );
    DROPPED_DELTAS = counter(
        "netmeter_collector_dropped_deltas_total",
        "Deltas in the dropped batches, by reason."
    );
    STATE_RESTORES = counter(
        "netmeter_collector_state_restores_total",
        "Starts that continued from the state the previous collector saved at shutdown."
    );
    STATE_IGNORED = counter(
        "netmeter_collector_state_ignored_total",
        "Saved state files ignored at start, by file and reason."
    );
    STATE_ERRORS = counter(
        "netmeter_collector_state_errors_total",
        "Failures of the state directory, by operation (the collector runs on)."
    );
    SAVED_BATCHES = counter(
        "netmeter_collector_saved_batches_total",
        "Batches unacknowledged at the shutdown deadline, saved for the next collector."
    );
    RESTORED_BATCHES = counter(
        "netmeter_collector_restored_batches_total",
        "Saved batches the next collector sent first."
    );
    RESTART_GAPS = counter(
        "netmeter_collector_restart_gaps_total",
        "Starts without a usable state: a gap whose bytes are not counted, by reason."
    );
    RESTART_GAP_SECONDS = counter(
        "netmeter_collector_restart_gap_seconds_total",
        "Seconds of those gaps, rounded up."
    );
    RESTART_ENDED_CONNECTIONS = counter(
        "netmeter_collector_restart_ended_connections_total",
        "Restored connections that ended while no collector ran (their last bytes are not counted)."
    );
}

/// The counters of the raw topic's producer.
pub const PUBLISH: PublishMetrics = PublishMetrics {
    errors: PUBLISH_ERRORS,
    retries: PUBLISH_RETRIES,
    rebuilds: PRODUCER_REBUILDS,
};

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_follows_the_naming_convention() {
        netmeter_common::metric::check_list(super::ALL).unwrap();
    }
}
