//! How every service starts and stops: logging -> metrics -> HTTP endpoint -> the service's own
//! work -> wait for SIGTERM/SIGINT -> drain with a deadline -> exit code.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::{self, Health};
use crate::telemetry::LogArgs;

/// Flags every service has.
#[derive(clap::Args, Clone, Debug)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub log: LogArgs,
    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(
        long = "http-addr",
        env = "NETMETER_HTTP_ADDR",
        default_value = "0.0.0.0:9090"
    )]
    pub http_addr: SocketAddr,
    /// On SIGTERM, how long in-flight work may take before the process exits anyway.
    #[arg(long = "shutdown-timeout", env = "NETMETER_SHUTDOWN_TIMEOUT", default_value = "4s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Check the flags, env vars and files (rules, CA) as at start, print `configuration ok`
    /// and exit 0 (invalid: exit 2); connects to nothing.
    // A flag only, without an env var: a variable left set would keep the service from running.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

impl ServiceArgs {
    /// With `--check-config`, after the service validated its configuration: checks what
    /// [`run_service`] would check before connecting (the log filter), prints one line and
    /// returns the exit code; `None` when the service should run.
    pub fn check_config_exit(&self) -> Option<ExitCode> {
        if !self.check_config {
            return None;
        }
        if let Err(err) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            crate::ConfigError::invalid("--log-level", "NETMETER_LOG", err).exit();
        }
        println!("configuration ok");
        Some(ExitCode::SUCCESS)
    }
}

/// What a running service gets from its host: when to stop, and where to report readiness.
#[derive(Clone, Debug, Default)]
pub struct ServiceContext {
    pub shutdown: CancellationToken,
    pub health: Health,
}

/// Runs a service to completion and returns the process exit code: 0 after a clean shutdown,
/// 1 if the service failed or did not drain in time, 2 for configuration errors.
pub fn run_service<F, Fut>(name: &'static str, args: ServiceArgs, service: F) -> ExitCode
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if let Err(err) = args.log.init() {
        err.exit();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(supervise(name, args, service));
    // Do not wait for blocking tasks (a netlink read, a Kafka flush) beyond the deadline.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => {
            tracing::info!(service = name, "stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!(service = name, error = format!("{err:#}"), "failed");
            ExitCode::FAILURE
        }
    }
}

async fn supervise<F, Fut>(name: &'static str, args: ServiceArgs, service: F) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let context = ServiceContext::default();
    http::prometheus(); // install the recorder before the first metric is touched
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {}: {e}", args.http_addr))?;
    metrics::gauge!(crate::metric::BUILD_INFO.name, "service" => name, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    tracing::info!(service = name, http_addr = %args.http_addr, "starting");
    let http = tokio::spawn(http::serve(
        listener,
        context.health.clone(),
        context.shutdown.clone(),
    ));
    tokio::spawn(cancel_on_signal(context.shutdown.clone()));

    let mut work = tokio::spawn(service(context.clone()));
    let result = tokio::select! {
        finished = &mut work => finished?,
        _ = context.shutdown.cancelled() => {
            tracing::info!(service = name, deadline = ?args.shutdown_timeout, "shutting down");
            match tokio::time::timeout(args.shutdown_timeout, &mut work).await {
                Ok(finished) => finished?,
                Err(_) => {
                    work.abort();
                    Err(anyhow::anyhow!("did not finish within --shutdown-timeout {:?}", args.shutdown_timeout))
                }
            }
        }
    };
    context.health.set_ready(false);
    context.shutdown.cancel();
    let _ = http.await;
    result
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}
