//! The ClickHouse of the local stack and of tests: the real ClickHouse 26.7 engine from libchdb,
//! serving its HTTP and native listeners from a launcher process of ours
//! (`netmeter-stack clickhouse-server`). It is clickhouse-local with listeners: production
//! targets a normal ClickHouse server, and nothing in the services depends on this launcher.

use std::ffi::{CString, c_char, c_int, c_void};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::Duration;

use anyhow::Context;

/// First start of libchdb maps 566 MB; later starts take < 1 s.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The query the launcher runs: start the listeners, then hold them open "forever" (~3 years).
const SERVE_QUERY: &str = "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; \
    SELECT sleepEachRow(1) FROM numbers(100000000) \
    SETTINGS function_sleep_max_microseconds_per_block = 0, max_block_size = 1 FORMAT Null";

/// The `netmeter-stack` binary, which hosts the launcher (`$NETMETER_STACK_BIN` overrides).
pub fn launcher() -> anyhow::Result<PathBuf> {
    match std::env::var_os("NETMETER_STACK_BIN") {
        Some(path) => Ok(PathBuf::from(path)),
        None => crate::workspace_bin("netmeter-stack"),
    }
}

/// The command that runs ClickHouse on 127.0.0.1 with data in `data_dir`.
pub fn command(
    launcher: &Path,
    lib: &Path,
    data_dir: &Path,
    http_port: u16,
    tcp_port: u16,
) -> Command {
    let mut command = Command::new(launcher);
    command
        .arg("clickhouse-server")
        .arg("--lib")
        .arg(lib)
        .arg("--path")
        .arg(data_dir)
        .args([
            "--http-port",
            &http_port.to_string(),
            "--tcp-port",
            &tcp_port.to_string(),
        ]);
    command
}

/// True once the HTTP interface answers `/ping` with `Ok.`.
pub fn is_ready(http_port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &([127, 0, 0, 1], http_port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut response = String::new();
    stream.write_all(b"GET /ping HTTP/1.0\r\n\r\n").is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.ends_with("Ok.\n")
}

/// Runs ClickHouse in this process until it is killed; returns only on failure.
/// Relative format-schema paths and `config.xml` resolve against `data_dir`.
pub fn serve(lib: &Path, data_dir: &Path, http_port: u16, tcp_port: u16) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    std::env::set_current_dir(data_dir)?;
    let args = [
        "clickhouse".to_string(),
        format!("--path={}/", data_dir.display()),
        "--listen_host=127.0.0.1".to_string(),
        format!("--http_port={http_port}"),
        format!("--tcp_port={tcp_port}"),
        "--multiquery".to_string(),
        "--query".to_string(),
        SERVE_QUERY.to_string(),
    ];
    let args: Vec<CString> = args
        .into_iter()
        .map(|a| CString::new(a).expect("no NUL in args"))
        .collect();
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    // SAFETY: libchdb's C API; `argv` outlives the call, which only returns when ClickHouse stops.
    unsafe {
        let library =
            libloading::Library::new(lib).with_context(|| format!("loading {}", lib.display()))?;
        let query_cmdline: libloading::Symbol<
            unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut c_void,
        > = library.get(b"chdb_query_cmdline")?;
        query_cmdline(argv.len() as c_int, argv.as_mut_ptr());
    }
    anyhow::bail!("ClickHouse stopped serving (see the messages above)")
}

/// A `config.xml` that makes a server one node of `cluster`: every shard one replica at
/// 127.0.0.1:<tcp port> (`tcp_ports`, in shard order), and this node's `{shard}` and
/// `{replica}` macros, then `extra` (more top-level elements). The launcher reads it from the
/// data directory. No Keeper: replicated tables and `ON CLUSTER` DDL do not work
/// (clickhouse-local has no interserver HTTP either).
pub fn cluster_config(cluster: &str, tcp_ports: &[u16], shard: usize, extra: &str) -> String {
    let shards: String = tcp_ports
        .iter()
        .map(|port| {
            format!(
                "      <shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>\n"
            )
        })
        .collect();
    format!(
        "<clickhouse>\n  <remote_servers>\n    <{cluster}>\n{shards}    </{cluster}>\n  \
         </remote_servers>\n  <macros>\n    <cluster>{cluster}</cluster>\n    \
         <shard>{shard}</shard>\n    <replica>node-{shard}</replica>\n  </macros>\n{extra}</clickhouse>\n"
    )
}
