//! A real broker plus a real ClickHouse on free loopback ports, for one test, with the netmeter
//! topics created. Everything is stopped and deleted on drop. (The demo and `netmeter-stack
//! start` run the same components detached on fixed ports: [`netmeter_stack::local_stack`].)

use std::path::Path;
use std::time::Duration;

use crate::process::{Lifetime, ManagedProcess};
use crate::{broker, clickhouse, free_port, install};

pub use netmeter_stack::Endpoints;
pub use netmeter_stack::broker::{PARTITIONS, default_topics};

pub struct Stack {
    pub broker: ManagedProcess,
    tansu: std::path::PathBuf,
    pub clickhouse: ManagedProcess,
    /// The launcher and libchdb, to start ClickHouse again after a fault.
    clickhouse_launcher: std::path::PathBuf,
    chdb: std::path::PathBuf,
    pub kafka_port: u16,
    pub clickhouse_http_port: u16,
    pub clickhouse_tcp_port: u16,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts both components on free ports in a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Stack> {
        let tansu = install::require(&install::tansu_bin())?;
        let lib = install::require(&install::chdb_lib())?;
        let launcher = clickhouse::launcher()?;
        let dir = tempfile::Builder::new()
            .prefix("netmeter-stack-")
            .tempdir()?;
        let (kafka_port, http_port, tcp_port) = (free_port(), free_port(), free_port());
        let start = |name: &str, command| {
            let data = dir.path().join(name);
            std::fs::create_dir_all(&data)?;
            ManagedProcess::spawn(
                name,
                command,
                &dir.path().join(format!("{name}.log")),
                Lifetime::Owned,
            )
        };
        let mut broker = start(
            "broker",
            broker::command(&tansu, &dir.path().join("broker"), kafka_port),
        )?;
        let mut ch = start(
            "clickhouse",
            clickhouse::command(
                &launcher,
                &lib,
                &dir.path().join("clickhouse"),
                http_port,
                tcp_port,
            ),
        )?;
        broker.wait_ready(broker::START_TIMEOUT, || broker::is_ready(kafka_port))?;
        ch.wait_ready(clickhouse::START_TIMEOUT, || {
            clickhouse::is_ready(http_port)
        })?;
        let stack = Stack {
            broker,
            tansu,
            clickhouse: ch,
            clickhouse_launcher: launcher,
            chdb: lib,
            kafka_port,
            clickhouse_http_port: http_port,
            clickhouse_tcp_port: tcp_port,
            dir,
        };
        broker::create_topics(&stack.kafka_bootstrap(), &default_topics(), PARTITIONS).await?;
        Ok(stack)
    }

    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            kafka_bootstrap: self.kafka_bootstrap(),
            clickhouse_url: self.clickhouse_url(),
        }
    }

    pub fn kafka_bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn clickhouse_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.clickhouse_http_port)
    }

    pub fn clickhouse_client(&self) -> ::clickhouse::Client {
        ::clickhouse::Client::default().with_url(self.clickhouse_url())
    }

    /// Fault injection: stops the broker (SIGTERM); its data stays.
    pub fn stop_broker(&mut self) {
        self.broker.terminate(Duration::from_secs(5));
    }

    /// Fault injection: freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze_broker(&self) {
        netmeter_stack::process::signal(self.broker.pid(), libc::SIGSTOP);
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw_broker(&self) {
        netmeter_stack::process::signal(self.broker.pid(), libc::SIGCONT);
    }

    /// Starts the broker again on the same port with the same data.
    pub fn start_broker(&mut self) -> anyhow::Result<()> {
        let command = broker::command(
            &self.tansu,
            &self.dir.path().join("broker"),
            self.kafka_port,
        );
        let log = self.dir.path().join("broker.log");
        self.broker = ManagedProcess::spawn("broker", command, &log, Lifetime::Owned)?;
        let port = self.kafka_port;
        self.broker
            .wait_ready(broker::START_TIMEOUT, || broker::is_ready(port))
    }

    /// Fault injection: stops ClickHouse (SIGTERM); its data stays.
    pub fn stop_clickhouse(&mut self) {
        self.clickhouse.terminate(Duration::from_secs(10));
    }

    /// Starts ClickHouse again on the same ports with the same data.
    pub fn start_clickhouse(&mut self) -> anyhow::Result<()> {
        let command = clickhouse::command(
            &self.clickhouse_launcher,
            &self.chdb,
            &self.dir.path().join("clickhouse"),
            self.clickhouse_http_port,
            self.clickhouse_tcp_port,
        );
        let log = self.dir.path().join("clickhouse.log");
        self.clickhouse = ManagedProcess::spawn("clickhouse", command, &log, Lifetime::Owned)?;
        let port = self.clickhouse_http_port;
        self.clickhouse
            .wait_ready(clickhouse::START_TIMEOUT, || clickhouse::is_ready(port))
    }

    /// Where this stack keeps data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops both components (SIGTERM, then SIGKILL) and deletes their data.
    pub fn stop(mut self) {
        self.broker.terminate(Duration::from_secs(5));
        self.clickhouse.terminate(Duration::from_secs(10));
    }
}
