//! The README's SQL for the questions users ask runs against the real schema and answers them:
//! every ```sql block of the README's sink section is executed on known rows.

use std::net::Ipv6Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use netmeter_sink::row::FlowRow;
use netmeter_sink::schema::{SchemaSettings, migrate, refresh_rollups_now};
use netmeter_tests::Stack;
use serde_json::{Value, json};

fn readme_queries() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let section = readme.split("## The sink").nth(1).expect("a sink section");
    let section = section.split("\n## ").next().unwrap();
    section
        .split("```sql\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap().to_string())
        .collect()
}

fn row(
    n: u128,
    namespace: &str,
    workload: &str,
    direction: &str,
    class: &str,
    bytes: u64,
    cost_usd: f64,
) -> FlowRow {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    FlowRow {
        record_id: uuid::Uuid::from_u128(n),
        generation: 0,
        interval_start_unix_ms: now_ms - now_ms % 60_000,
        interval_seconds: 10,
        cluster: "prod".into(),
        direction: direction.into(),
        protocol: "tcp".into(),
        class: class.into(),
        path: String::new(),
        local_cloud: "aws".into(),
        local_region: "eu-west-1".into(),
        local_zone: "eu-west-1a".into(),
        local_node: "node-a".into(),
        local_namespace: namespace.into(),
        local_pod: format!("{workload}-0"),
        local_workload_kind: if workload == "collector" {
            "DaemonSet"
        } else {
            "Deployment"
        }
        .into(),
        local_workload_name: workload.into(),
        local_app: workload.into(),
        local_ip: Ipv6Addr::LOCALHOST,
        local_port: 40_000,
        local_host_network: false,
        local_initiated: direction == "out",
        local_instance_type: "m6i.large".into(),
        remote_cloud: String::new(),
        remote_region: String::new(),
        remote_zone: String::new(),
        remote_node: String::new(),
        remote_namespace: String::new(),
        remote_pod: String::new(),
        remote_workload_kind: String::new(),
        remote_workload_name: String::new(),
        remote_app: String::new(),
        remote_ip: Ipv6Addr::LOCALHOST,
        remote_port: 443,
        remote_host_network: false,
        remote_service: String::new(),
        remote_network: String::new(),
        remote_country: String::new(),
        remote_asn: 0,
        remote_as_name: String::new(),
        bytes,
        packets: 1,
        cost_usd,
        processing_cost_usd: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_queries_answer_the_questions() {
    let stack = Stack::start().await.unwrap();
    let settings = SchemaSettings::new("netmeter");
    let client = stack.clickhouse_client();
    migrate(&client, &settings).await.unwrap();
    let to_db = FlowRow {
        remote_namespace: "shop".into(),
        remote_workload_kind: "StatefulSet".into(),
        remote_workload_name: "db".into(),
        remote_zone: "eu-west-1b".into(),
        ..row(1, "shop", "web", "out", "INTER_ZONE", 1000, 0.25)
    };
    let from_db = FlowRow {
        record_id: uuid::Uuid::from_u128(2),
        direction: "in".into(),
        bytes: 400,
        cost_usd: 0.125,
        ..to_db.clone()
    };
    let to_s3 = FlowRow {
        remote_cloud: "aws".into(),
        remote_region: "eu-west-1".into(),
        remote_service: "S3".into(),
        ..row(3, "shop", "web", "out", "INTRA_REGION", 5000, 0.0)
    };
    let internet = row(4, "shop", "web", "out", "INTERNET", 2000, 0.5);
    let collector_in = row(5, "obs", "collector", "in", "INTRA_ZONE", 3000, 0.0);
    let collector_out = row(6, "obs", "collector", "out", "INTRA_ZONE", 10, 0.0);
    let rows = [to_db, from_db, to_s3, internet, collector_in, collector_out];
    netmeter_sink::pipeline::insert(
        &client.clone().with_database("netmeter"),
        "flows",
        netmeter_sink::native::NativeBlock::encode(&rows),
        "readme-queries",
    )
    .await
    .unwrap();
    refresh_rollups_now(&client, &settings).await.unwrap();

    let queries = readme_queries();
    assert_eq!(
        queries.len(),
        4,
        "the README's sink section has four queries"
    );
    let mut answers = Vec::new();
    for sql in &queries {
        let sql = sql.trim().trim_end_matches(';');
        let output = netmeter_tests::clickhouse::query_text(&client, sql, "JSONEachRow").await;
        let rows: Vec<Value> = output
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        answers.push(rows);
    }
    let today = &answers[2][0]["day"];
    assert_eq!(
        answers,
        vec![
            vec![
                json!({"local_namespace": "shop", "local_workload_name": "web", "remote_namespace": "shop", "remote_workload_name": "db", "bytes_sent": 1000, "cost_usd": 0.25})
            ],
            vec![
                json!({"local_namespace": "shop", "local_workload_name": "web", "remote_region": "eu-west-1", "bytes_sent": 5000})
            ],
            vec![
                json!({"day": today, "local_namespace": "shop", "cost_usd": 0.875}),
                json!({"day": today, "local_namespace": "obs", "cost_usd": 0}),
            ],
            vec![
                json!({"local_namespace": "obs", "local_workload_kind": "DaemonSet", "local_workload_name": "collector", "received": 3000, "sent": 10})
            ],
        ]
    );
}
