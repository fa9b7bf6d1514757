//! The label mapping, the per-batch tally, the cap and the text `/metrics` serves.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use netmeter_proto::FlowView;
use netmeter_proto::raw::ConntrackBatch;
use netmeter_tests::records::{batch, delta};

use super::*;
use crate::classify::{Class, Direction};
use crate::cloud::CloudRanges;
use crate::delta::DeltaBatch;
use crate::enrich::{ClusterPlace, Enricher, Inputs};
use crate::inventory::{IpOwnerHistory, Owner, OwnerKind, Tenure};
use crate::rules::Rules;

const GIB: f64 = (1u64 << 30) as f64;

fn endpoint<'a>(namespace: &'a str, kind: &'a str, name: &'a str) -> EndpointView<'a> {
    EndpointView {
        cloud: "aws",
        region: "us-east-1",
        zone: "us-east-1a",
        node: "node-1",
        namespace,
        pod: "",
        workload_kind: kind,
        workload_name: name,
        app: "",
        ip: IpAddr::from([10, 0, 0, 1]),
        port: 0,
        host_network: false,
    }
}

fn labels(namespace: &str, kind: &str, name: &str) -> WorkloadLabels {
    WorkloadLabels {
        namespace: namespace.into(),
        kind: kind.into(),
        name: name.into(),
    }
}

#[test]
fn the_local_workload_names_the_series_and_endpoints_without_one_are_bounded() {
    let pod = endpoint("shop", "Deployment", "checkout");
    assert_eq!(workload_of(&pod), ("shop", "Deployment", "checkout"));
    // A node process or a hostNetwork pod: the node's address, no workload. One series for
    // every node: node names would be a label per node.
    let node = EndpointView {
        host_network: true,
        ..endpoint("", "", "")
    };
    assert_eq!(workload_of(&node), ("", "Node", "__node__"));
    // A static host without workload_name keeps its namespace; an unknown address has none.
    assert_eq!(
        workload_of(&endpoint("billing", "", "")),
        ("billing", "", "__none__")
    );
    assert_eq!(workload_of(&endpoint("", "", "")), ("", "", "__none__"));
    assert_eq!(zone_label("us-east-1a"), "us-east-1a");
    assert_eq!(zone_label(""), "none");
}

/// A record of `local` -> a remote in `remote_zone`.
fn flow<'a>(
    local: EndpointView<'a>,
    remote_zone: &'a str,
    class: Class,
    direction: Direction,
    bytes: u64,
    cost_usd: f64,
) -> FlowView<'a> {
    FlowView {
        record_id: "",
        generation: 0,
        interval_start_unix_ms: 0,
        interval_seconds: 10,
        cluster: "test",
        direction: direction.name(),
        protocol: "tcp",
        class: class.name(),
        path: "",
        local,
        local_initiated: true,
        local_instance_type: "",
        remote: EndpointView {
            zone: remote_zone,
            ..endpoint("", "", "")
        },
        remote_service: "",
        remote_network: "",
        remote_geo: Default::default(),
        bytes,
        packets: 1,
        cost_usd,
        processing_cost_usd: 0.0,
    }
}

#[test]
fn a_batch_is_summed_per_series_and_equal_labels_in_other_strings_merge() {
    // Two pods of one Deployment: equal labels, separate strings (as two inventory owners).
    let (ns_a, kind_a, name_a) = (
        String::from("shop"),
        String::from("Deployment"),
        String::from("cart"),
    );
    let (ns_b, kind_b, name_b) = (
        String::from("shop"),
        String::from("Deployment"),
        String::from("cart"),
    );
    let pod_a = endpoint(&ns_a, &kind_a, &name_a);
    let pod_b = endpoint(&ns_b, &kind_b, &name_b);
    let mut tally = Tally::default();
    tally.add(&flow(
        pod_a,
        "us-east-1b",
        Class::InterZone,
        Direction::Out,
        1_000,
        1e-6,
    ));
    tally.add(&flow(
        pod_a,
        "us-east-1b",
        Class::InterZone,
        Direction::In,
        500,
        5e-7,
    ));
    tally.add(&flow(
        pod_b,
        "us-east-1b",
        Class::InterZone,
        Direction::Out,
        2_000,
        2e-6,
    ));
    tally.add(&flow(pod_b, "", Class::Internet, Direction::Out, 7, 0.0));
    assert_eq!(tally.records(), 4);
    assert_eq!(
        tally.workloads().len(),
        2,
        "one sum per place the local strings live"
    );
    assert_eq!(tally.pairs().len(), 2, "zones are compared by content");
    let mut series = Series::new(10);
    let added = series.add(&tally);
    assert_eq!(
        added,
        Added {
            new_workloads: 1,
            ..Added::default()
        }
    );
    let mut text = String::new();
    series.render(&mut text);
    let cart = "namespace=\"shop\",workload_kind=\"Deployment\",workload=\"cart\"";
    let expected = format!(
        "\
# HELP netmeter_workload_bytes_total Bytes of the flow records by the local endpoint's workload, class and direction (counted at least once per record; ClickHouse is exact).
# TYPE netmeter_workload_bytes_total counter
netmeter_workload_bytes_total{{{cart},class=\"INTER_ZONE\",direction=\"out\"}} 3000
netmeter_workload_bytes_total{{{cart},class=\"INTER_ZONE\",direction=\"in\"}} 500
netmeter_workload_bytes_total{{{cart},class=\"INTERNET\",direction=\"out\"}} 7

# HELP netmeter_workload_cost_dollars_total Cost in US dollars of the flow records by the local endpoint's workload, class and direction (counted at least once per record; ClickHouse is exact).
# TYPE netmeter_workload_cost_dollars_total counter
netmeter_workload_cost_dollars_total{{{cart},class=\"INTER_ZONE\",direction=\"out\"}} {}
netmeter_workload_cost_dollars_total{{{cart},class=\"INTER_ZONE\",direction=\"in\"}} 0.0000005
netmeter_workload_cost_dollars_total{{{cart},class=\"INTERNET\",direction=\"out\"}} 0

# HELP netmeter_zone_pair_bytes_total Bytes of the flow records by the local and the remote endpoint's zone (\"none\": no zone) and direction (counted at least once per record; ClickHouse is exact).
# TYPE netmeter_zone_pair_bytes_total counter
netmeter_zone_pair_bytes_total{{zone=\"us-east-1a\",remote_zone=\"none\",direction=\"out\"}} 7
netmeter_zone_pair_bytes_total{{zone=\"us-east-1a\",remote_zone=\"us-east-1b\",direction=\"out\"}} 3000
netmeter_zone_pair_bytes_total{{zone=\"us-east-1a\",remote_zone=\"us-east-1b\",direction=\"in\"}} 500

# HELP netmeter_internet_egress_bytes_total Bytes sent to public addresses outside the cluster's cloud (classes INTERNET and INTER_CLOUD) by the destination's country (ISO 3166-1 alpha-2; \"unknown\": not in the country data); no workload label: bounded by the number of countries.
# TYPE netmeter_internet_egress_bytes_total counter
netmeter_internet_egress_bytes_total{{country=\"unknown\"}} 7

",
        1e-6 + 2e-6
    );
    assert_eq!(text, expected);
    // Counters only grow: a second batch adds to the same series.
    series.add(&tally);
    let mut again = String::new();
    series.render(&mut again);
    assert!(again.contains(&format!(
        "netmeter_workload_bytes_total{{{cart},class=\"INTER_ZONE\",direction=\"out\"}} 6000\n"
    )));
}

fn one_record(namespace: &str, name: &str) -> Tally {
    let mut tally = Tally::default();
    tally.add(&flow(
        endpoint(namespace, "Deployment", name),
        "us-east-1a",
        Class::IntraZone,
        Direction::Out,
        100,
        0.0,
    ));
    tally
}

#[test]
fn beyond_the_cap_workloads_are_counted_under_other_and_the_overflow_is_reported() {
    let mut series = Series::new(2);
    assert_eq!(series.add(&one_record("a", "one")).new_workloads, 1);
    assert_eq!(series.add(&one_record("a", "two")).new_workloads, 1);
    let mut batch = one_record("b", "three");
    batch.add(&flow(
        endpoint("b", "Deployment", "three"),
        "us-east-1a",
        Class::IntraZone,
        Direction::In,
        50,
        0.0,
    ));
    batch.add(&flow(
        endpoint("a", "Deployment", "one"),
        "us-east-1a",
        Class::IntraZone,
        Direction::Out,
        1,
        0.0,
    ));
    let added = series.add(&batch);
    assert_eq!(
        added,
        Added {
            new_workloads: 0,
            overflow_records: 2,
            first_overflow: Some(labels("b", "Deployment", "three")),
        }
    );
    // A workload that has series keeps them; every newcomer goes to __other__.
    let added = series.add(&one_record("c", "four"));
    assert_eq!(added.overflow_records, 1);
    assert_eq!(series.workloads(), 2);
    let mut text = String::new();
    series.render(&mut text);
    let sample = |labels: &str, class_dir: &str| {
        format!("netmeter_workload_bytes_total{{{labels},{class_dir}}}")
    };
    let value = |line: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.strip_prefix(' ')?.parse().ok())
    };
    let out = "class=\"INTRA_ZONE\",direction=\"out\"";
    let other = "namespace=\"__other__\",workload_kind=\"__other__\",workload=\"__other__\"";
    assert_eq!(
        value(&sample(
            "namespace=\"a\",workload_kind=\"Deployment\",workload=\"one\"",
            out
        )),
        Some(101)
    );
    assert_eq!(value(&sample(other, out)), Some(200));
    assert_eq!(
        value(&sample(other, "class=\"INTRA_ZONE\",direction=\"in\"")),
        Some(50)
    );
    assert!(!text.contains("workload=\"three\""), "{text}");
    // Every byte is in the zone matrix, whatever the cap.
    assert!(text.contains(
        "netmeter_zone_pair_bytes_total{zone=\"us-east-1a\",remote_zone=\"us-east-1a\",direction=\"out\"} 401\n"
    ));

    // Raising the cap lets newcomers in again; lowering it keeps the series there are.
    series.set_max_workloads(3);
    assert_eq!(series.add(&one_record("d", "five")).new_workloads, 1);
    series.set_max_workloads(1);
    assert_eq!(series.add(&one_record("a", "one")).overflow_records, 0);
    assert_eq!(series.workloads(), 3);
}

#[test]
fn a_cap_of_zero_counts_every_workload_under_other() {
    let mut series = Series::new(0);
    let added = series.add(&one_record("a", "one"));
    assert_eq!(added.overflow_records, 1);
    assert_eq!(series.workloads(), 0);
    let mut text = String::new();
    series.render(&mut text);
    assert!(text.contains("workload=\"__other__\""));
    assert!(!text.contains("workload=\"one\""));
}

#[test]
fn nothing_counted_renders_nothing_and_label_values_are_escaped() {
    let mut text = String::new();
    Series::new(10).render(&mut text);
    assert_eq!(text, "");
    let mut series = Series::new(10);
    series.add(&one_record("odd\"ns\\", "line\nbreak"));
    series.render(&mut text);
    assert!(
        text.contains(r#"namespace="odd\"ns\\",workload_kind="Deployment",workload="line\nbreak""#),
        "{text}"
    );
}

fn cloud() -> &'static CloudRanges {
    static RANGES: OnceLock<CloudRanges> = OnceLock::new();
    RANGES.get_or_init(|| crate::cloud::load(None).unwrap().table)
}

fn hold(history: &mut IpOwnerHistory, ip: &str, owner: Owner) {
    history.record(Tenure {
        ip: ip.parse().unwrap(),
        uid: format!("uid-{}", owner.name),
        start_ms: 0,
        end_ms: None,
        owner: Arc::new(owner),
    });
}

fn pod(name: &str, workload: &str, node: &str, zone: &str) -> Owner {
    Owner {
        namespace: "shop".into(),
        node: node.into(),
        zone: zone.into(),
        region: "us-east-1".into(),
        cloud: "aws".into(),
        workload_kind: "Deployment".into(),
        workload_name: workload.into(),
        ..Owner::new(OwnerKind::Pod, name)
    }
}

fn node(name: &str, zone: &str) -> Owner {
    Owner {
        node: name.into(),
        zone: zone.into(),
        region: "us-east-1".into(),
        cloud: "aws".into(),
        host_network: true,
        ..Owner::new(OwnerKind::Node, name)
    }
}

/// What the pipeline does with a batch: enrich, tally every record, add the tally.
fn count(series: &mut Series, history: &IpOwnerHistory, batch: &ConntrackBatch) -> f64 {
    let place = ClusterPlace {
        cluster: "test".into(),
        cloud: "aws".into(),
        region: "us-east-1".into(),
    };
    let enricher = Enricher::new(place, Rules::default());
    let inputs = Inputs {
        history,
        cloud: cloud(),
    };
    let mut tally = Tally::default();
    let mut dollars = 0.0;
    let batch = DeltaBatch::from_wire(batch).unwrap();
    enricher.enrich(&batch, &inputs, 0, |f, _| {
        dollars += f.cost_usd;
        tally.add(f);
    });
    series.add(&tally);
    dollars
}

#[test]
fn enriched_records_by_workload_node_and_zone_pair() {
    let mut history = IpOwnerHistory::new(0);
    hold(&mut history, "10.1.0.11", node("node-a", "us-east-1a"));
    hold(&mut history, "10.1.0.12", node("node-b", "us-east-1b"));
    hold(
        &mut history,
        "10.244.1.5",
        pod("web-1", "web", "node-a", "us-east-1a"),
    );
    hold(
        &mut history,
        "10.244.1.6",
        pod("web-2", "web", "node-a", "us-east-1a"),
    );
    hold(
        &mut history,
        "10.244.2.5",
        pod("db-1", "db", "node-b", "us-east-1b"),
    );
    // node-a's view: both web pods call db across zones; a node process sends to db; web-1
    // downloads from the internet.
    let b = batch(
        "node-a",
        "collector-1",
        1,
        1_000,
        11_000,
        vec![
            delta(
                "10.244.1.5",
                40000,
                "10.244.2.5",
                5432,
                (1 << 20, 10),
                (1 << 10, 5),
            ),
            delta(
                "10.244.1.6",
                40001,
                "10.244.2.5",
                5432,
                (2 << 20, 10),
                (2 << 10, 5),
            ),
            delta("10.1.0.11", 40002, "10.244.2.5", 5432, (3 << 10, 3), (0, 0)),
            delta(
                "10.244.1.5",
                40003,
                "203.0.113.9",
                443,
                (100, 2),
                (5 << 20, 40),
            ),
        ],
    );
    let mut series = Series::new(10);
    let dollars = count(&mut series, &history, &b);
    let mut text = String::new();
    series.render(&mut text);
    let value = |sample: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
    };
    let web = "namespace=\"shop\",workload_kind=\"Deployment\",workload=\"web\"";
    let inter_out = "class=\"INTER_ZONE\",direction=\"out\"";
    assert_eq!(
        value(&format!(
            "netmeter_workload_bytes_total{{{web},{inter_out}}}"
        )),
        (3 << 20) as f64
    );
    assert_eq!(
        value(&format!(
            "netmeter_workload_cost_dollars_total{{{web},{inter_out}}}"
        )),
        (1 << 20) as f64 / GIB * 0.01 + (2 << 20) as f64 / GIB * 0.01
    );
    assert_eq!(
        value(&format!(
            "netmeter_workload_bytes_total{{namespace=\"\",workload_kind=\"Node\",workload=\"__node__\",{inter_out}}}"
        )),
        (3 << 10) as f64
    );
    assert_eq!(
        value(&format!(
            "netmeter_workload_bytes_total{{{web},class=\"INTERNET\",direction=\"in\"}}"
        )),
        (5 << 20) as f64
    );
    assert_eq!(
        value(
            "netmeter_zone_pair_bytes_total{zone=\"us-east-1a\",remote_zone=\"us-east-1b\",direction=\"out\"}"
        ),
        ((3 << 20) + (3 << 10)) as f64
    );
    assert_eq!(
        value(
            "netmeter_zone_pair_bytes_total{zone=\"us-east-1a\",remote_zone=\"none\",direction=\"in\"}"
        ),
        (5 << 20) as f64
    );
    // The dollars of every series add up to the records' dollars.
    let rendered: f64 = text
        .lines()
        .filter(|l| l.starts_with("netmeter_workload_cost_dollars_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert!(
        (rendered - dollars).abs() <= 1e-15,
        "{rendered} vs {dollars}"
    );
    assert!(!text.contains("pod") && !text.contains("node-a") && !text.contains("10.244"));
}

#[test]
fn internet_egress_is_counted_by_country_out_only() {
    let local = endpoint("shop", "Deployment", "cart");
    let mut tally = Tally::default();
    let place = |country| netmeter_proto::GeoView {
        country,
        asn: 1,
        as_name: "x",
    };
    for (class, direction, bytes, country) in [
        (Class::Internet, Direction::Out, 100, "DE"),
        (Class::Internet, Direction::In, 5_000, "DE"),
        (Class::Internet, Direction::Out, 20, "DE"),
        (Class::InterCloud, Direction::Out, 7, "US"),
        (Class::Internet, Direction::Out, 3, ""),
        (Class::IntraRegion, Direction::Out, 900, "US"),
    ] {
        let f = FlowView {
            remote_geo: place(country),
            ..flow(local, "", class, direction, bytes, 0.0)
        };
        tally.add(&f);
    }
    let mut series = Series::new(10);
    series.add(&tally);
    let mut text = String::new();
    series.render(&mut text);
    let countries: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("netmeter_internet_egress_bytes_total{"))
        .collect();
    assert_eq!(
        countries,
        [
            "netmeter_internet_egress_bytes_total{country=\"DE\"} 120",
            "netmeter_internet_egress_bytes_total{country=\"US\"} 7",
            "netmeter_internet_egress_bytes_total{country=\"unknown\"} 3",
        ]
    );
}
