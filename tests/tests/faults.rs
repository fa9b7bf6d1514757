//! Faults on the whole pipeline (mini-cluster, three collectors, two attributors, the sink, the
//! real broker and ClickHouse), one after another on the same run. After each, ClickHouse
//! holds exactly what the kernel counted for every connection so far — per node, workload pair,
//! direction and class — and no record id twice ([`ledger::verify`]):
//!
//! 1. SIGKILL of an attributor mid-traffic; its replacement then carries all the traffic alone;
//! 2. SIGKILL of the sink mid-traffic, and its replacement;
//! 3. the broker stopped for 30 s while traffic flows;
//! 4. ClickHouse stopped for 30 s while traffic flows;
//! 5. garbage and wrong-version messages on the raw and the flows topics (dead-lettered and
//!    counted, the pipeline goes on);
//! 6. a pod deleted and its IP reused by a pod of another workload (each side attributed to its
//!    holder at the time);
//! 7. every collector restarted as a DaemonSet upgrade does (SIGTERM, then a new process);
//! 8. a replay of the last minute (totals unchanged).
//!
//! Needs root. Takes about four minutes, most of it the two 30 s outages and the consumer
//! group's session timeouts.

use std::time::{Duration, Instant};

use netmeter_proto::{DEAD_LETTER_REASON_HEADER, Schema};
use netmeter_tests::kernel::KernelCounters;
use netmeter_tests::minicluster::{
    self, CHECKOUT, DB, FRONTEND, MiniCluster, NODES, SEARCH, Workload,
};
use netmeter_tests::pipeline::{self, Metered, Pipeline, REJOIN_AFTER_KILL};
use netmeter_tests::records::{TestProducer, TopicReader, batch, delta, now_ms};
use netmeter_tests::stack::PARTITIONS;
use netmeter_tests::traffic::{self, Flow, Load, Source, Target, Traffic};
use netmeter_tests::{Stack, ledger};

const CLUSTER: &str = "faults";
const OUTAGE: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(120);

struct Run {
    stack: Stack,
    cluster: MiniCluster,
    kernel: KernelCounters,
    pipeline: Pipeline,
    traffic: Traffic,
    started: Instant,
    /// Logs and state; kept when the test fails, removed when it passes.
    dir: std::path::PathBuf,
}

impl Run {
    fn say(&self, what: &str) {
        println!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// One round of `flows`.
    fn drive(&mut self, flows: &[Flow]) {
        self.traffic.run(&self.cluster, flows, |_| {}).unwrap();
    }

    /// Runs `flows` on a thread of its own, calls `during` meanwhile, and waits for both.
    fn drive_while(&mut self, flows: &[Flow], during: impl FnOnce(&mut Pipeline, &mut Stack)) {
        let (cluster, traffic) = (&self.cluster, &mut self.traffic);
        let (pipeline, stack) = (&mut self.pipeline, &mut self.stack);
        std::thread::scope(|scope| {
            let driver = scope.spawn(|| traffic.run(cluster, flows, |_| {}));
            // Pacing: the fault lands while the traffic is under way, not before it starts.
            std::thread::sleep(Duration::from_millis(200));
            during(pipeline, stack);
            driver.join().unwrap().unwrap();
        });
    }

    /// The end-to-end promise after a fault: exact totals, no duplicate ids.
    async fn exact(&self, after: &str) {
        tokio::task::block_in_place(|| self.kernel.wait_tcp_ended()).unwrap(); // the last connections end
        let verified = ledger::verify(
            &self.pipeline.launcher.clickhouse(),
            pipeline::DATABASE,
            CLUSTER,
            0,
            (&self.cluster, &self.traffic, &self.kernel),
            SETTLE,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "after {after}: {e:#}\nlogs in {}",
                self.pipeline.launcher.log_dir().display()
            )
        });
        self.say(&format!(
            "after {after}: exact, {} connections, {} bytes in {} lines, {:.1} s to settle",
            self.traffic.log.len(),
            ledger::total_bytes(&verified.expected),
            verified.expected.len(),
            verified.waited.as_secs_f64()
        ));
    }

    fn metric_total(services: &[&netmeter_tests::service::RunningService], name: &str) -> f64 {
        services
            .iter()
            .map(|s| {
                s.metric_total(name)
                    .unwrap_or_else(|| panic!("{name} unreadable"))
            })
            .sum()
    }
}

fn flow(label: &'static str, from: Source, to: Target, bytes: u64) -> Flow {
    Flow {
        label,
        from,
        to,
        load: Load::Tcp {
            connections: 2,
            bytes,
        },
    }
}

/// frontend -> `holder` and `holder` -> db: the traffic around the reused address.
fn around(holder: Workload, labels: [&'static str; 2]) -> [Flow; 2] {
    [
        flow(
            labels[0],
            Source::Workload(FRONTEND),
            Target::Pod(holder, 0),
            256 << 10,
        ),
        flow(
            labels[1],
            Source::Workload(holder),
            Target::Pod(DB, 0),
            512 << 10,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e_every_fault_ends_with_exact_totals_and_no_duplicate_record_ids() {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("netmeter-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let Metered {
        stack,
        cluster,
        kernel,
        pipeline,
    } = Metered::start(CLUSTER, &dir).await.unwrap();
    let traffic = Traffic::start(&cluster).unwrap();
    let mut run = Run {
        stack,
        cluster,
        kernel,
        pipeline,
        traffic,
        started,
        dir,
    };
    let matrix = traffic::matrix();
    run.drive(&matrix);
    run.exact("a clean round").await;

    // 1. The attributor that carries traffic killed mid-traffic, and restarted as Kubernetes
    // would. (Kafka moves a dead member's partitions to the others after the session timeout;
    // tansu 0.6 only when another member joins, see the README's broker notes.)
    let records = |service: &netmeter_tests::service::RunningService| {
        service
            .metric_total("netmeter_attributor_records_total")
            .unwrap()
    };
    let attributors = &run.pipeline.attributors;
    let victim = usize::from(records(&attributors[1]) > records(&attributors[0]));
    let other = 1 - victim;
    assert!(records(&attributors[victim]) > 0.0);
    run.drive_while(&matrix, |pipeline, _| {
        pipeline.attributors[victim].process.kill();
    });
    run.say(&format!("attributor {victim} killed mid-traffic"));
    // Kubernetes' restart back-off, which tansu needs (see REJOIN_AFTER_KILL): the behaviour.
    tokio::time::sleep(REJOIN_AFTER_KILL).await;
    run.pipeline.attributors[victim] = run.pipeline.launcher.start_attributor(victim).unwrap();
    run.exact("SIGKILL of an attributor and its restart").await;
    // The other one leaves: every row must now go through the restarted one.
    run.pipeline.attributors[other].sigterm();
    run.say(&format!(
        "attributor {victim} restarted, attributor {other} stopped"
    ));
    run.drive(&matrix);
    run.exact("the restarted attributor alone").await;
    assert!(
        records(&run.pipeline.attributors[victim]) > 0.0,
        "the restarted attributor attributed nothing"
    );
    run.pipeline.attributors[other] = run.pipeline.launcher.start_attributor(other).unwrap();
    run.say(&format!("attributor {other} started again"));

    // 2. The sink killed mid-traffic, restarted after the session timeout.
    run.drive_while(&matrix, |pipeline, _| {
        pipeline.sink.process.kill();
    });
    run.say("sink killed mid-traffic");
    // Kubernetes' restart back-off, which tansu needs (see REJOIN_AFTER_KILL): the behaviour.
    tokio::time::sleep(REJOIN_AFTER_KILL).await;
    run.pipeline.sink = run.pipeline.launcher.start_sink().unwrap();
    run.drive(&matrix);
    run.exact("SIGKILL of the sink and its restart").await;
    let rows = run
        .pipeline
        .sink
        .metric_total("netmeter_sink_rows_inserted_total")
        .unwrap();
    assert!(rows > 0.0, "the restarted sink inserted nothing");

    // 3. The broker stopped for 30 s while traffic flows: collectors buffer, consumers wait.
    let outage = Instant::now();
    run.drive_while(&matrix, |_, stack| stack.stop_broker());
    run.say("broker stopped");
    // The outage under test lasts OUTAGE.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    run.stack.start_broker().unwrap();
    run.say("broker started again");
    run.drive(&matrix);
    run.exact("30 s without the broker").await;

    // 4. ClickHouse stopped for 30 s while traffic flows: the sink retries, then pauses.
    let outage = Instant::now();
    run.drive_while(&matrix, |_, stack| stack.stop_clickhouse());
    run.say("ClickHouse stopped");
    // The outage under test lasts OUTAGE.
    tokio::time::sleep(OUTAGE.saturating_sub(outage.elapsed())).await;
    run.stack.start_clickhouse().unwrap();
    run.say("ClickHouse started again");
    run.drive(&matrix);
    run.exact("30 s without ClickHouse").await;

    // 5. Garbage and wrong-version messages on both topics.
    let attributor_dead = |run: &Run| {
        Run::metric_total(
            &run.pipeline.attributors.iter().collect::<Vec<_>>(),
            "netmeter_attributor_dead_letters_total",
        )
    };
    let sink_dead =
        |run: &Run| Run::metric_total(&[&run.pipeline.sink], "netmeter_sink_dead_letters_total");
    let (attributor_before, sink_before) = (attributor_dead(&run), sink_dead(&run));
    let bootstrap = run.stack.kafka_bootstrap();
    let producer = TestProducer::new(&bootstrap).unwrap();
    let topic = |s: Schema| s.topic(netmeter_proto::DEFAULT_TOPIC_PREFIX);
    let valid_raw = netmeter_proto::encode_batch(&batch(
        "node-x",
        "garbage-test",
        1,
        now_ms(),
        now_ms() + 1000,
        vec![delta("10.244.1.10", 1, "10.244.3.10", 2, (100, 1), (0, 0))],
    ));
    let sends: [(Schema, &[u8], &str); 4] = [
        (Schema::RawV1, b"\x08\x96\x01 not a batch", "raw.v1"),
        (Schema::RawV1, &valid_raw, "raw.v9"),
        (Schema::FlowsV1, b"\xff\xff\xff\xff garbage", "flows.v1"),
        (Schema::FlowsV1, b"\x02\x08\x01", "flows.v9"),
    ];
    for (schema, payload, header) in sends {
        producer
            .send(&topic(schema), "node-x", payload, Some(header))
            .await
            .unwrap();
    }
    run.say("4 bad messages sent to the raw and flows topics");
    run.drive(&matrix);
    run.exact("garbage on both topics").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (
        attributor_dead(&run) - attributor_before,
        sink_dead(&run) - sink_before,
    ) != (2.0, 2.0)
    {
        assert!(
            Instant::now() < deadline,
            "dead letters counted: attributors {}, sink {} (expected 2 and 2)",
            attributor_dead(&run) - attributor_before,
            sink_dead(&run) - sink_before
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut dead_letters =
        TopicReader::new(&bootstrap, &topic(Schema::DeadLetterV1), PARTITIONS).unwrap();
    let arrived = dead_letters
        .read_until(Duration::from_secs(30), |m| {
            m.iter().filter(|m| m.key == b"node-x").count() >= 4
        })
        .await;
    assert!(arrived, "{:#?}", dead_letters.messages);
    for m in dead_letters.messages.iter().filter(|m| m.key == b"node-x") {
        assert!(
            m.header(DEAD_LETTER_REASON_HEADER)
                .is_some_and(|r| !r.is_empty()),
            "{m:?}"
        );
    }

    // 6. checkout's pod is deleted and its IP reused by a pod of another workload.
    let before = around(
        CHECKOUT,
        [
            "frontend -> checkout (before reuse)",
            "checkout -> db (before reuse)",
        ],
    );
    run.drive(&before);
    let tenures = |run: &Run| -> Vec<f64> {
        (run.pipeline.attributors.iter())
            .map(|a| a.metric_total("netmeter_attributor_inventory_tenures"))
            .map(|n| n.unwrap_or(0.0))
            .collect()
    };
    let tenures_before = tenures(&run);
    run.cluster
        .replace_pod(
            "checkout-6d8f9b-y1k4d",
            minicluster::search_pod(),
            Duration::from_secs(3),
        )
        .unwrap();
    run.traffic
        .serve_pod(&run.cluster, minicluster::search_pod().name)
        .unwrap();
    run.say("checkout's pod deleted, its IP now held by search");
    // Every attributor knows search's addresses (IPv4 and IPv6) before search sends.
    let learned = netmeter_tests::wait_until(Duration::from_secs(30), || {
        let now = tenures(&run);
        (now.iter().zip(&tenures_before)).all(|(now, was)| *now >= was + 2.0)
    });
    assert!(
        learned,
        "the attributors' tenures went from {tenures_before:?} to {:?}, not 2 more each",
        tenures(&run)
    );
    // Attribution is as of a record's interval: search's first connections must fall in
    // collector intervals that start after the reuse (1 s intervals; 2 s leaves a margin), or
    // their first seconds rightly belong to checkout, the holder then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = around(
        SEARCH,
        [
            "frontend -> search (the reused IP)",
            "search -> db (the reused IP)",
        ],
    );
    run.drive(&after);
    run.exact("an IP reused by another workload").await;

    // 7. A DaemonSet upgrade: every collector restarted (SIGTERM, then a new process) while
    // traffic flows; each continues from its predecessor's saved state.
    let steady: Vec<Flow> = traffic::matrix()
        .into_iter()
        .filter(|f| {
            f.from != Source::Workload(CHECKOUT)
                && !matches!(f.to, Target::Pod(CHECKOUT, _) | Target::PodV6(CHECKOUT))
        })
        .collect();
    run.drive_while(&steady, |pipeline, _| {
        for node in NODES {
            pipeline.collectors.get_mut(node.name).unwrap().sigterm();
            let replacement = pipeline.launcher.start_collector(node.name).unwrap();
            pipeline
                .collectors
                .insert(node.name.to_string(), replacement);
        }
    });
    run.say("every collector restarted");
    run.drive(&steady);
    run.exact("a rolling restart of the collectors").await;

    // 8. Replay the last minute: the same record ids, a higher generation, the same totals.
    let to = now_ms();
    let generation = to;
    let summary = run
        .pipeline
        .launcher
        .replay(to - 60_000, to, generation)
        .unwrap();
    let records = summary["records"].as_u64().unwrap();
    run.say(&format!("replayed the last minute: {summary}"));
    assert!(records > 0, "{summary}");
    let client = run.pipeline.launcher.clickhouse();
    let count_sql = format!(
        "SELECT count() FROM flows FINAL WHERE cluster = '{CLUSTER}' AND generation = {generation}"
    );
    let deadline = Instant::now() + SETTLE;
    loop {
        let stored =
            netmeter_tests::clickhouse::query_text(&client, &count_sql, "TabSeparated").await;
        if stored.trim().parse::<u64>().unwrap() == records {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {records} replayed records stored"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    run.exact("a replay of the last minute").await;
    run.pipeline.stop();
    let _ = std::fs::remove_dir_all(&run.dir);
}
