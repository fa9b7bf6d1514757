//! A ClickHouse cluster on this machine, for one test: N real ClickHouse servers (the stack's
//! launcher) on free loopback ports whose `config.xml` names them as the shards of one cluster,
//! one replica each, with `{shard}` and `{replica}` macros. `Distributed` tables work across
//! them. Replication does not: no Keeper runs here (libchdb is built without the embedded one,
//! and clickhouse-local has no interserver HTTP), so neither do `Replicated*MergeTree` nor
//! `ON CLUSTER` DDL. Everything is stopped and deleted on drop.

use std::time::Duration;

use crate::clickhouse;
use crate::process::{Lifetime, ManagedProcess};
use crate::{free_port, install};

/// One server of the cluster.
pub struct Node {
    pub process: ManagedProcess,
    pub http_port: u16,
    pub tcp_port: u16,
}

impl Node {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn client(&self) -> ::clickhouse::Client {
        ::clickhouse::Client::default().with_url(self.url())
    }
}

pub struct ClickHouseCluster {
    /// The cluster's name in `<remote_servers>`.
    pub name: String,
    /// Shard 1 first.
    pub nodes: Vec<Node>,
    // Dropped after the nodes: their data and logs.
    dir: tempfile::TempDir,
}

impl ClickHouseCluster {
    /// Starts `shards` servers, shard `i + 1` on node `i`, as cluster `name`.
    pub fn start(name: &str, shards: usize) -> anyhow::Result<ClickHouseCluster> {
        ClickHouseCluster::start_with(name, shards, |_| String::new())
    }

    /// [`ClickHouseCluster::start`] with more configuration for shard `i` (1-based):
    /// `config(i)` is inserted into its `config.xml` as top-level elements.
    pub fn start_with(
        name: &str,
        shards: usize,
        config: impl Fn(usize) -> String,
    ) -> anyhow::Result<ClickHouseCluster> {
        let lib = install::require(&install::chdb_lib())?;
        let launcher = clickhouse::launcher()?;
        let dir = tempfile::Builder::new()
            .prefix("netmeter-clickhouse-cluster-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..shards).map(|_| (free_port(), free_port())).collect();
        let tcp_ports: Vec<u16> = ports.iter().map(|(_, tcp)| *tcp).collect();
        let mut nodes = Vec::new();
        for (i, (http_port, tcp_port)) in ports.into_iter().enumerate() {
            let data = dir.path().join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&data)?;
            std::fs::write(
                data.join("config.xml"),
                clickhouse::cluster_config(name, &tcp_ports, i + 1, &config(i + 1)),
            )?;
            let process = ManagedProcess::spawn(
                &format!("clickhouse-{}", i + 1),
                clickhouse::command(&launcher, &lib, &data, http_port, tcp_port),
                &dir.path().join(format!("node-{}.log", i + 1)),
                Lifetime::Owned,
            )?;
            nodes.push(Node {
                process,
                http_port,
                tcp_port,
            });
        }
        for node in &mut nodes {
            let port = node.http_port;
            node.process
                .wait_ready(clickhouse::START_TIMEOUT, || clickhouse::is_ready(port))?;
        }
        Ok(ClickHouseCluster {
            name: name.to_string(),
            nodes,
            dir,
        })
    }

    /// Every node's HTTP URL, shard 1 first.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// Where the nodes keep data and logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Stops every node (SIGTERM, then SIGKILL) and deletes their data.
    pub fn stop(mut self) {
        for node in &mut self.nodes {
            node.process.terminate(Duration::from_secs(10));
        }
    }
}
