//! Every metric the attributor's `/metrics` serves, declared once with its `# HELP` text
//! ([`netmeter_common::metric`]): the pipeline's own `netmeter_attributor_*`, then the metrics
//! for people that [`crate::usage`] keeps and renders itself. The README's list ("Attributor
//! metrics") is checked against the running binary's `/metrics`.

use netmeter_common::consume::ConsumerMetrics;
use netmeter_common::publish::PublishMetrics;

netmeter_common::declare_metrics! {
    DELTAS = counter(
        "netmeter_attributor_deltas_total",
        "Raw conntrack deltas attributed."
    );
    RECORDS = counter(
        "netmeter_attributor_records_total",
        "Flow records produced (a delta yields one per direction with traffic)."
    );
    FLOW_BYTES = counter(
        "netmeter_attributor_flow_bytes_total",
        "Bytes of the flow records produced, by class and direction."
    );
    DEAD_LETTERS = counter(
        "netmeter_attributor_dead_letters_total",
        "Raw messages sent to the dead-letter topic, by reason."
    );
    CONSUME_ERRORS = counter(
        "netmeter_attributor_consume_errors_total",
        "Errors reading the raw topic (the client reconnects by itself)."
    );
    PUBLISH_ERRORS = counter(
        "netmeter_attributor_publish_errors_total",
        "Failed deliveries of flow, inventory or dead-letter messages (each is retried)."
    );
    PUBLISH_RETRIES = counter(
        "netmeter_attributor_publish_retries_total",
        "Messages sent again after a failed delivery."
    );
    PRODUCER_REBUILDS = counter(
        "netmeter_attributor_producer_rebuilds_total",
        "Kafka producers replaced after failed deliveries."
    );
    REBALANCES = counter(
        "netmeter_attributor_rebalances_total",
        "Consumer group rebalances of this replica, by event (assigned, revoked)."
    );
    KUBERNETES_STALE = gauge(
        "netmeter_attributor_kubernetes_stale",
        "1 while the watch of a Kubernetes resource fails and until the API answers again."
    );
    KUBERNETES_WATCH_ERRORS = counter(
        "netmeter_attributor_kubernetes_watch_errors_total",
        "Failed Kubernetes lists and watches, by resource."
    );
    KUBERNETES_OBJECTS = gauge(
        "netmeter_attributor_kubernetes_objects",
        "Kubernetes objects in the index, by resource."
    );
    INVENTORY_TENURES = gauge(
        "netmeter_attributor_inventory_tenures",
        "Address tenures (who held an IP address when) in the inventory."
    );
    INVENTORY_PUBLISHED = counter(
        "netmeter_attributor_inventory_published_total",
        "Tenures published to the inventory topic."
    );
    INVENTORY_REJECTED = counter(
        "netmeter_attributor_inventory_rejected_total",
        "Unreadable inventory topic records skipped."
    );
    CLOUD_RANGES_PREFIXES = gauge(
        "netmeter_attributor_cloud_ranges_prefixes",
        "Prefixes in the cloud range table in use."
    );
    CLOUD_RANGES_AGE = gauge(
        "netmeter_attributor_cloud_ranges_age_seconds",
        "Age of each cloud provider's range table, from its publication time."
    );
    CLOUD_RANGES_REFRESHES = counter(
        "netmeter_attributor_cloud_ranges_refreshes_total",
        "Cloud range files downloaded and swapped in, by cloud."
    );
    CLOUD_RANGES_REFRESH_FAILURES = counter(
        "netmeter_attributor_cloud_ranges_refresh_failures_total",
        "Failed cloud range downloads (the previous table stays), by cloud."
    );
    TRACKED_WORKLOADS = gauge(
        "netmeter_attributor_metrics_workloads",
        "Workloads with their own series in the workload metrics (at most --metrics-max-workloads)."
    );
    OVERFLOW_RECORDS = counter(
        "netmeter_attributor_metrics_overflow_records_total",
        "Flow records counted under workload=\"__other__\" because their workload did not fit under --metrics-max-workloads."
    );
    EGRESS_COUNTRY_ALLOWED = gauge(
        "netmeter_egress_country_allowed",
        "1 for each country of --allowed-egress-countries, for the alert on internet egress \
         anywhere else."
    );
    /// Kept and rendered by [`crate::usage`] (float dollars: not the recorder's), like the
    /// next three.
    WORKLOAD_BYTES = counter(
        "netmeter_workload_bytes_total",
        "Bytes of the flow records by the local endpoint's workload, class and direction \
         (counted at least once per record; ClickHouse is exact)."
    );
    WORKLOAD_DOLLARS = counter(
        "netmeter_workload_cost_dollars_total",
        "Cost in US dollars of the flow records by the local endpoint's workload, class \
         and direction (counted at least once per record; ClickHouse is exact)."
    );
    ZONE_PAIR_BYTES = counter(
        "netmeter_zone_pair_bytes_total",
        "Bytes of the flow records by the local and the remote endpoint's zone (\"none\": \
         no zone) and direction (counted at least once per record; ClickHouse is exact)."
    );
    INTERNET_EGRESS_BYTES = counter(
        "netmeter_internet_egress_bytes_total",
        "Bytes sent to public addresses outside the cluster's cloud (classes INTERNET and \
         INTER_CLOUD) by the destination's country (ISO 3166-1 alpha-2; \"unknown\": not in the \
         country data); no workload label: bounded by the number of countries."
    );
}

/// The counters of the attributor's producer (flows, inventory, dead letters).
pub const PUBLISH: PublishMetrics = PublishMetrics {
    errors: PUBLISH_ERRORS,
    retries: PUBLISH_RETRIES,
    rebuilds: PRODUCER_REBUILDS,
};

/// The counters of the attributor's raw topic consumer.
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
