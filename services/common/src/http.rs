//! The HTTP endpoint of every service: `/metrics` (Prometheus text), `/healthz` (the process
//! runs) and `/readyz` (it can do its job: brokers and stores reachable).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Readiness as the service reports it; cloned freely, all clones share one flag.
#[derive(Clone, Default, Debug)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// The process-wide Prometheus recorder, installed on first use. Several services in one test
/// process share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    ],
                )
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Writes metric families in the Prometheus text format (`# HELP`, `# TYPE`, samples).
type Renderer = Box<dyn Fn(&mut String) + Send + Sync>;

static RENDERERS: Mutex<Vec<Renderer>> = Mutex::new(Vec::new());

/// Appends what `render` writes to every `/metrics` answer, after the recorder's metrics: for
/// metrics the `metrics` recorder cannot hold (its counters are integers; the attributor's
/// dollars are not). `render` writes whole families, with names no recorder metric uses.
pub fn render_also(render: impl Fn(&mut String) + Send + Sync + 'static) {
    RENDERERS
        .lock()
        .expect("renderers lock")
        .push(Box::new(render));
}

/// Everything `/metrics` serves: the recorder's metrics, then those of [`render_also`], then
/// the `# HELP` and `# TYPE` lines of the declared metrics without samples yet
/// ([`crate::metric::declare`]).
fn render(handle: &PrometheusHandle) -> String {
    let mut body = handle.render();
    for render in RENDERERS.lock().expect("renderers lock").iter() {
        render(&mut body);
    }
    crate::metric::render_unsampled(&mut body);
    body
}

#[derive(Clone)]
struct Endpoint {
    health: Health,
    metrics: PrometheusHandle,
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let endpoint = Endpoint {
        health,
        metrics: prometheus(),
    };
    let upkeep = endpoint.metrics.clone();
    let upkeep_stop = shutdown.clone();
    tokio::spawn(async move {
        // Histograms and summaries drain their buffers only on upkeep.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => upkeep.run_upkeep(),
                _ = upkeep_stop.cancelled() => return,
            }
        }
    });
    let router = Router::new()
        .route(
            "/metrics",
            get(|State(e): State<Endpoint>| async move { render(&e.metrics) }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(endpoint);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn readyz(State(endpoint): State<Endpoint>) -> (StatusCode, &'static str) {
    if endpoint.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
