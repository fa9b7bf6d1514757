//! The `# HELP` line of every metric the attributor's `/metrics` serves from the `metrics`
//! recorder (Prometheus's linter, `promtool check metrics`, wants one per metric), in one list
//! so a new metric is described where its neighbours are. The usage families write their own
//! (`usage`).

use metrics::{describe_counter, describe_gauge};

use crate::usage::{OVERFLOW_RECORDS, TRACKED_WORKLOADS};

/// Registers the descriptions with the process's recorder; call once at start.
pub fn describe() {
    describe_gauge!(
        "netmeter_build_info",
        "Always 1; the labels say which service and version runs."
    );
    describe_counter!(
        "netmeter_attributor_deltas_total",
        "Raw conntrack deltas attributed."
    );
    describe_counter!(
        "netmeter_attributor_records_total",
        "Flow records produced (a delta yields one per direction with traffic)."
    );
    describe_counter!(
        "netmeter_attributor_flow_bytes_total",
        "Bytes of the flow records produced, by class and direction."
    );
    describe_counter!(
        "netmeter_attributor_dead_letters_total",
        "Raw messages sent to the dead-letter topic, by reason."
    );
    describe_counter!(
        "netmeter_attributor_consume_errors_total",
        "Errors reading the raw topic (the client reconnects by itself)."
    );
    describe_counter!(
        "netmeter_attributor_publish_errors_total",
        "Failed deliveries of flow, inventory or dead-letter messages (each is retried)."
    );
    describe_counter!(
        "netmeter_attributor_publish_retries_total",
        "Messages sent again after a failed delivery."
    );
    describe_counter!(
        "netmeter_attributor_producer_rebuilds_total",
        "Kafka producers replaced after failed deliveries."
    );
    describe_counter!(
        "netmeter_attributor_rebalances_total",
        "Consumer group rebalances of this replica, by event (assigned, revoked)."
    );
    describe_gauge!(
        "netmeter_attributor_kubernetes_stale",
        "1 while the watch of a Kubernetes resource fails and until the API answers again."
    );
    describe_counter!(
        "netmeter_attributor_kubernetes_watch_errors_total",
        "Failed Kubernetes lists and watches, by resource."
    );
    describe_gauge!(
        "netmeter_attributor_kubernetes_objects",
        "Kubernetes objects in the index, by resource."
    );
    describe_gauge!(
        "netmeter_attributor_inventory_tenures",
        "Address tenures (who held an IP address when) in the inventory."
    );
    describe_counter!(
        "netmeter_attributor_inventory_published_total",
        "Tenures published to the inventory topic."
    );
    describe_counter!(
        "netmeter_attributor_inventory_rejected_total",
        "Unreadable inventory topic records skipped."
    );
    describe_gauge!(
        "netmeter_attributor_cloud_ranges_prefixes",
        "Prefixes in the cloud range table in use."
    );
    describe_gauge!(
        "netmeter_attributor_cloud_ranges_age_seconds",
        "Age of each cloud provider's range table, from its publication time."
    );
    describe_counter!(
        "netmeter_attributor_cloud_ranges_refreshes_total",
        "Cloud range files downloaded and swapped in, by cloud."
    );
    describe_counter!(
        "netmeter_attributor_cloud_ranges_refresh_failures_total",
        "Failed cloud range downloads (the previous table stays), by cloud."
    );
    describe_gauge!(
        TRACKED_WORKLOADS,
        "Workloads with their own series in the workload metrics (at most --metrics-max-workloads)."
    );
    describe_counter!(
        OVERFLOW_RECORDS,
        "Flow records counted under workload=\"__other__\" because their workload did not fit under --metrics-max-workloads."
    );
}
