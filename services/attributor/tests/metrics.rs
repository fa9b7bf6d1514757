//! The attributor binary's `/metrics` for people: bytes and dollars per local workload and per
//! zone pair, the cap on workloads (`NETMETER_METRICS_MAX_WORKLOADS`) with its overflow counted
//! and logged once, and the whole body clean for Prometheus's linter (`promtool check
//! metrics`). Two machines outside Kubernetes, from a rules file: frontend (us-east-1a, its own
//! collector `frontend-vm`) calls cart (us-east-1b, collector `cart-vm`); each collector
//! reports its side of the same connection.

use std::path::Path;
use std::time::Duration;

use netmeter_proto::Schema;
use netmeter_tests::Stack;
use netmeter_tests::records::{TestProducer, batch, delta, now_ms};
use netmeter_tests::service::RunningService;

const BIN: &str = env!("CARGO_BIN_EXE_netmeter-attributor");
const WAIT: Duration = Duration::from_secs(60);
const GIB: f64 = (1u64 << 30) as f64;

const RULES: &str = "\
hosts:
  - name: frontend
    cidrs: [10.20.1.10/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1a
    node: frontend-vm
    namespace: shop
    workload_kind: VM
    workload_name: frontend
  - name: cart
    cidrs: [10.20.2.20/32]
    cloud: aws
    region: us-east-1
    zone: us-east-1b
    node: cart-vm
    namespace: shop
    workload_kind: VM
    workload_name: cart
";

/// One connection frontend:41000 -> cart:8080, 3,000 bytes sent and 700 back, as the collector
/// on `node` reports it.
fn seen_from(node: &str) -> netmeter_proto::raw::ConntrackBatch {
    let start_ms = now_ms() - 60_000;
    batch(
        node,
        &format!("collector-{node}"),
        1,
        start_ms,
        start_ms + 10_000,
        vec![delta(
            "10.20.1.10",
            41_000,
            "10.20.2.20",
            8080,
            (3_000, 5),
            (700, 4),
        )],
    )
}

fn value(attributor: &RunningService, sample: &str) -> Option<f64> {
    attributor.metric(sample)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_and_zone_pair_counters_with_the_cap_and_a_clean_lint() {
    let stack = Stack::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let mut attributor = RunningService::start_with_env(
        Path::new(BIN),
        &stack,
        &[
            "--cluster",
            "test",
            "--cloud",
            "aws",
            "--region",
            "us-east-1",
            "--kubernetes",
            "false",
            "--rules",
            rules.to_str().unwrap(),
        ],
        &[("NETMETER_METRICS_MAX_WORKLOADS", "1")],
    )
    .unwrap();
    attributor
        .wait_ready(WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", attributor.process.log_tail()));
    let producer = TestProducer::new(&stack.kafka_bootstrap()).unwrap();
    let raw = Schema::RawV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    let records = |n: f64| {
        let counted = netmeter_tests::wait_until(WAIT, || {
            value(&attributor, "netmeter_attributor_records_total") == Some(n)
        });
        assert!(counted, "{n} records\n{}", attributor.process.log_tail());
    };

    // frontend's side first: the first workload, under the cap of 1.
    producer
        .send_raw(&raw, &[seen_from("frontend-vm")])
        .await
        .unwrap();
    records(2.0);
    let frontend = "namespace=\"shop\",workload_kind=\"VM\",workload=\"frontend\"";
    let other = "namespace=\"__other__\",workload_kind=\"__other__\",workload=\"__other__\"";
    let out = "class=\"INTER_ZONE\",direction=\"out\"";
    let inbound = "class=\"INTER_ZONE\",direction=\"in\"";
    let bytes = |labels: &str, class_direction: &str| {
        value(
            &attributor,
            &format!("netmeter_workload_bytes_total{{{labels},{class_direction}}}"),
        )
    };
    let dollars = |labels: &str, class_direction: &str| {
        value(
            &attributor,
            &format!("netmeter_workload_cost_dollars_total{{{labels},{class_direction}}}"),
        )
    };
    assert_eq!(bytes(frontend, out), Some(3_000.0));
    assert_eq!(bytes(frontend, inbound), Some(700.0));
    assert_eq!(dollars(frontend, out), Some(3_000.0 / GIB * 0.01));
    assert_eq!(dollars(frontend, inbound), Some(700.0 / GIB * 0.01));
    assert_eq!(
        value(&attributor, "netmeter_attributor_metrics_workloads"),
        Some(1.0)
    );
    assert_eq!(bytes(other, out), None);

    // cart's side: a second workload, beyond the cap: under __other__, counted and logged.
    producer
        .send_raw(&raw, &[seen_from("cart-vm")])
        .await
        .unwrap();
    records(4.0);
    assert_eq!(bytes(other, out), Some(700.0));
    assert_eq!(bytes(other, inbound), Some(3_000.0));
    assert_eq!(
        value(
            &attributor,
            "netmeter_attributor_metrics_overflow_records_total"
        ),
        Some(2.0)
    );
    let (_, body) = attributor.get("/metrics").unwrap();
    assert!(!body.contains("workload=\"cart\""), "{body}");
    // The zone matrix has every byte, whatever the cap.
    for (zone, remote_zone, direction, expected) in [
        ("us-east-1a", "us-east-1b", "out", 3_000.0),
        ("us-east-1a", "us-east-1b", "in", 700.0),
        ("us-east-1b", "us-east-1a", "out", 700.0),
        ("us-east-1b", "us-east-1a", "in", 3_000.0),
    ] {
        let sample = format!(
            "netmeter_zone_pair_bytes_total{{zone=\"{zone}\",remote_zone=\"{remote_zone}\",direction=\"{direction}\"}}"
        );
        assert_eq!(value(&attributor, &sample), Some(expected), "{sample}");
    }
    let log = std::fs::read_to_string(&attributor.log).unwrap();
    let warnings = log
        .lines()
        .filter(|l| l.contains("more workloads than --metrics-max-workloads"))
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("workload=cart"), "{}", warnings[0]);

    // A third batch over the cap: counted, not logged again.
    let mut again = seen_from("cart-vm");
    again.sequence = 2;
    producer.send_raw(&raw, &[again]).await.unwrap();
    records(6.0);
    assert_eq!(bytes(other, out), Some(1_400.0));
    let log = std::fs::read_to_string(&attributor.log).unwrap();
    assert_eq!(
        log.matches("more workloads than --metrics-max-workloads")
            .count(),
        1
    );

    // Prometheus's linter finds nothing to say about the whole body.
    let (_, body) = attributor.get("/metrics").unwrap();
    let problems = netmeter_tests::prometheus::check_metrics(&body).unwrap();
    assert!(problems.is_empty(), "{problems:#?}\n{body}");
    let (exit, _) = attributor.sigterm();
    assert!(exit.success());
}
