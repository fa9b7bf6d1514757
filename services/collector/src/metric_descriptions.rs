//! The `# HELP` line of every metric the collector's `/metrics` serves (Prometheus's linter,
//! `promtool check metrics`, wants one per metric), in one list so a new metric is described
//! where its neighbours are.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// Registers the descriptions with the process's recorder; call once at start.
pub fn describe() {
    describe_gauge!(
        "netmeter_build_info",
        "Always 1; the labels say which service and version runs."
    );
    describe_gauge!(
        "netmeter_collector_conntrack_accounting",
        "1 while conntrack accounting (nf_conntrack_acct) is on; at 0 there are no byte counters and the collector waits, not ready."
    );
    describe_gauge!(
        "netmeter_collector_conntrack_entries",
        "Conntrack entries in the last dump."
    );
    describe_gauge!(
        "netmeter_collector_conntrack_table_entries",
        "Entries in the kernel's conntrack table (nf_conntrack_count)."
    );
    describe_gauge!(
        "netmeter_collector_conntrack_table_max",
        "Size limit of the kernel's conntrack table (nf_conntrack_max)."
    );
    describe_gauge!(
        "netmeter_collector_tracked_connections",
        "Connections whose last counters the collector remembers."
    );
    describe_histogram!(
        "netmeter_collector_dump_duration_seconds",
        "Time to dump the conntrack table and compute the deltas."
    );
    describe_gauge!(
        "netmeter_collector_last_dump_timestamp_seconds",
        "Unix time of the last finished dump."
    );
    describe_counter!(
        "netmeter_collector_deltas_total",
        "Per-connection deltas emitted."
    );
    describe_counter!(
        "netmeter_collector_bytes_total",
        "Bytes in the emitted deltas, by conntrack direction (original, reply)."
    );
    describe_counter!(
        "netmeter_collector_packets_total",
        "Packets in the emitted deltas, by conntrack direction (original, reply)."
    );
    describe_counter!(
        "netmeter_collector_events_total",
        "Conntrack DESTROY events received: final counters of connections that ended."
    );
    describe_counter!(
        "netmeter_collector_event_overruns_total",
        "Times the kernel dropped conntrack events (ENOBUFS): the final bytes of some ended connections are lost."
    );
    describe_counter!(
        "netmeter_collector_dump_errors_total",
        "Failed conntrack dumps (retried the next interval)."
    );
    describe_counter!(
        "netmeter_collector_dump_interrupted_total",
        "Dumps the kernel flagged as interrupted by concurrent table changes."
    );
    describe_counter!(
        "netmeter_collector_malformed_entries_total",
        "Conntrack entries that could not be read (skipped)."
    );
    describe_gauge!(
        "netmeter_collector_buffer_batches",
        "Batches waiting to be published (bounded by --buffer-bytes)."
    );
    describe_gauge!(
        "netmeter_collector_buffer_bytes",
        "Bytes of the batches waiting to be published (bounded by --buffer-bytes)."
    );
    describe_counter!(
        "netmeter_collector_batches_published_total",
        "Batches the broker acknowledged."
    );
    describe_counter!(
        "netmeter_collector_publish_errors_total",
        "Failed publish attempts (the batch stays buffered and is sent again)."
    );
    describe_counter!(
        "netmeter_collector_dropped_batches_total",
        "Batches dropped unpublished, by reason (consumers see the gap in the sequence)."
    );
    describe_counter!(
        "netmeter_collector_dropped_deltas_total",
        "Deltas in the dropped batches, by reason."
    );
    describe_counter!(
        "netmeter_collector_state_restores_total",
        "Starts that continued from the state the previous collector saved at shutdown."
    );
    describe_counter!(
        "netmeter_collector_state_ignored_total",
        "Saved state files ignored at start, by file and reason."
    );
    describe_counter!(
        "netmeter_collector_state_errors_total",
        "Failures of the state directory, by operation (the collector runs on)."
    );
    describe_counter!(
        "netmeter_collector_saved_batches_total",
        "Batches unacknowledged at the shutdown deadline, saved for the next collector."
    );
    describe_counter!(
        "netmeter_collector_restored_batches_total",
        "Saved batches the next collector sent first."
    );
    describe_counter!(
        "netmeter_collector_restart_gaps_total",
        "Starts without a usable state: a gap whose bytes are not counted, by reason."
    );
    describe_counter!(
        "netmeter_collector_restart_gap_seconds_total",
        "Seconds of those gaps, rounded up."
    );
    describe_counter!(
        "netmeter_collector_restart_ended_connections_total",
        "Restored connections that ended while no collector ran (their last bytes are not counted)."
    );
}
