//! Managed Kafka's settings, proven: the attributor and the sink connect to a broker that
//! requires TLS (a certificate from a private CA) and SASL/SCRAM-SHA-512 — as MSK's and
//! Confluent's SASL_SSL listeners do — with the flags of the README and the credentials only in
//! the environment (where the Helm chart puts them, from a Secret), and move data through it:
//! raw batches in, flow records through the attributor, rows into ClickHouse through the sink.
//! A wrong password is refused: the service never reports ready and says why.
//! See `netmeter_tests::secure_broker` for how the broker does TLS (socat in front of tansu).

use std::path::Path;
use std::time::{Duration, Instant};

use netmeter_proto::Schema;
use netmeter_tests::records::{TestProducer, batch, delta, now_ms};
use netmeter_tests::secure_broker::{PASSWORD, SecureBroker};
use netmeter_tests::service::RunningService;
use netmeter_tests::stack::Endpoints;
use netmeter_tests::{Stack, clickhouse, workspace_bin};

const CLUSTER: &str = "managed";
const DELTAS: u64 = 100;

fn start(
    bin: &str,
    endpoints: &Endpoints,
    broker: &SecureBroker,
    extra: &[&str],
    password: &str,
) -> RunningService {
    let mut args = broker.service_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = SecureBroker::service_env(password);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    RunningService::launch(&workspace_bin(bin).unwrap(), endpoints, &args, &env, None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_move_data_through_sasl_ssl_with_scram_sha_512() {
    let stack = Stack::start().await.unwrap(); // for ClickHouse; its plain broker is not used
    let dir = tempfile::tempdir().unwrap();
    let broker = SecureBroker::start(dir.path()).await.unwrap();
    let endpoints = Endpoints {
        kafka_bootstrap: broker.bootstrap(),
        clickhouse_url: stack.clickhouse_url(),
    };
    let attribution = ["--kubernetes=false", "--cluster", CLUSTER];
    let mut attributor = start(
        "netmeter-attributor",
        &endpoints,
        &broker,
        &attribution,
        PASSWORD,
    );
    attributor
        .wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut sink = start(
        "netmeter-sink",
        &endpoints,
        &broker,
        &["--batch-age", "1s"],
        PASSWORD,
    );
    sink.wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Raw batches in, over TLS with SCRAM credentials.
    let producer = TestProducer::with_config(broker.client_config()).unwrap();
    let start_ms = now_ms() - 10_000;
    let deltas = (0..DELTAS)
        .map(|i| {
            delta(
                "10.0.0.5",
                40_000 + i as u16,
                "10.0.1.10",
                5432,
                (1000 + i, 2),
                (500, 1),
            )
        })
        .collect();
    let raw = Schema::RawV1.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    producer
        .send_raw(
            &raw,
            &[batch("node-a", "c1", 1, start_ms, start_ms + 5000, deltas)],
        )
        .await
        .unwrap();

    // Both directions of every delta come out as rows in ClickHouse, exactly.
    let client = stack.clickhouse_client();
    let sql =
        format!("SELECT count(), sum(bytes) FROM netmeter.flows FINAL WHERE cluster = '{CLUSTER}'");
    let expected = format!(
        "{}\t{}\n",
        2 * DELTAS,
        (0..DELTAS).map(|i| 1000 + i + 500).sum::<u64>()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = clickhouse::query_text_checked(&client, &sql, "TabSeparated").await;
        if stored.as_deref().ok() == Some(expected.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stored {stored:?}, expected {expected:?}\nattributor:\n{}\nsink:\n{}",
            attributor.process.log_tail(),
            sink.process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A wrong password: refused, never ready, and the log says why.
    let mut refused = start(
        "netmeter-attributor",
        &endpoints,
        &broker,
        &attribution,
        "wrong",
    );
    let ready = refused.wait_ready(Duration::from_secs(10));
    assert!(
        ready.is_err(),
        "an attributor with a wrong password became ready"
    );
    let log = std::fs::read_to_string(Path::new(&refused.log)).unwrap();
    assert!(
        log.contains("SASL authentication error"),
        "no authentication error in the log:\n{log}"
    );
    assert!(
        !log.contains("wrong"),
        "the password appears in the log:\n{log}"
    );
}
