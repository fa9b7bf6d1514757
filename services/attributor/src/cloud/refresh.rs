//! Where the range files come from at run time: the flags, the handle the enrichment reads the
//! current table through, and the optional loop that downloads fresh files from the providers.
//!
//! Without a directory the built-in snapshot is the table. With one, the directory is the
//! source of truth for every provider whose file it holds (the snapshot for the others): a
//! refresh downloads a file, checks that it parses and is not empty, replaces the file in the
//! directory (write a temporary file, then rename), and only then rebuilds the table from the
//! directory and swaps it in. A restart therefore starts from the last good download, and a
//! failed download changes nothing. Since each round rebuilds from the directory, a file put
//! there by other means is picked up too (Azure's, whose URL changes weekly, can be copied in
//! by a job).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use netmeter_common::ConfigError;
use tokio_util::sync::CancellationToken;

use super::{
    Cloud, CloudRanges, LoadedRanges, ProviderRanges, RangeFileError, RangeSource, RangesLoaded,
    load,
};

pub const AWS_RANGES_URL: &str = "https://ip-ranges.amazonaws.com/ip-ranges.json";
pub const GCP_RANGES_URL: &str = "https://www.gstatic.com/ipranges/cloud.json";

/// Providers publish new ranges a few times a day at most; more often only adds load.
const MIN_REFRESH: Duration = Duration::from_secs(60);
/// Whole-request deadline, so a stalled download cannot hold up the next round (or shutdown).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Azure's file is ~4 MB, AWS's ~2 MB; anything far larger is not a range file.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// Where newer cloud range files are, and whether to keep them current.
#[derive(clap::Args, Clone, Debug)]
#[command(next_help_heading = "Cloud IP ranges")]
pub struct CloudRangesArgs {
    /// Directory with newer range files than the built-in July 2025 snapshot: each of
    /// aws-ip-ranges.json, gcp-cloud.json and azure-service-tags.json found there replaces that
    /// provider's snapshot. Unset: the snapshot. Must be writable when --cloud-ranges-refresh
    /// is on.
    #[arg(
        long = "cloud-ranges-dir",
        env = "NETMETER_CLOUD_RANGES_DIR",
        value_name = "DIR"
    )]
    pub dir: Option<PathBuf>,
    /// How often to download the files from the URLs below into --cloud-ranges-dir and reload
    /// it; 0s (the default) never does, for clusters without egress. At least 1m when on.
    #[arg(
        long = "cloud-ranges-refresh",
        env = "NETMETER_CLOUD_RANGES_REFRESH",
        default_value = "0s",
        value_name = "DURATION",
        value_parser = humantime::parse_duration
    )]
    pub refresh: Duration,
    /// Where AWS publishes ip-ranges.json; empty never refreshes the AWS file.
    #[arg(
        long = "aws-ranges-url",
        env = "NETMETER_AWS_RANGES_URL",
        default_value = AWS_RANGES_URL,
        value_name = "URL"
    )]
    pub aws_url: String,
    /// Where Google publishes cloud.json; empty never refreshes the GCP file.
    #[arg(
        long = "gcp-ranges-url",
        env = "NETMETER_GCP_RANGES_URL",
        default_value = GCP_RANGES_URL,
        value_name = "URL"
    )]
    pub gcp_url: String,
    /// Azure publishes its service tags under a new URL every week
    /// (ServiceTags_Public_YYYYMMDD.json, linked from
    /// <https://www.microsoft.com/download/details.aspx?id=56519>), so there is no stable default:
    /// empty (the default) never downloads it. Point it at a copy you keep current, or copy the
    /// file into --cloud-ranges-dir: every refresh round reloads the directory.
    #[arg(
        long = "azure-ranges-url",
        env = "NETMETER_AZURE_RANGES_URL",
        default_value = "",
        value_name = "URL"
    )]
    pub azure_url: String,
}

impl CloudRangesArgs {
    /// Rejects a directory that is not there, and values that would only fail at the first
    /// refresh.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dir_error = |message: String| {
            ConfigError::invalid("--cloud-ranges-dir", "NETMETER_CLOUD_RANGES_DIR", message)
        };
        match &self.dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(dir_error(
                    "is empty (leave it unset for the built-in snapshot)".into(),
                ));
            }
            Some(dir) if !dir.is_dir() => {
                let error = RangeFileError::NoDirectory {
                    path: dir.display().to_string(),
                };
                return Err(dir_error(error.to_string()));
            }
            Some(_) => {}
            None if !self.refresh.is_zero() => {
                return Err(ConfigError::invalid(
                    "--cloud-ranges-refresh",
                    "NETMETER_CLOUD_RANGES_REFRESH",
                    "needs --cloud-ranges-dir (NETMETER_CLOUD_RANGES_DIR): a writable directory \
                     to keep the downloaded files in",
                ));
            }
            None => {}
        }
        if !self.refresh.is_zero() && self.refresh < MIN_REFRESH {
            return Err(ConfigError::invalid(
                "--cloud-ranges-refresh",
                "NETMETER_CLOUD_RANGES_REFRESH",
                format!(
                    "{} is too often: use 0s (off) or at least {}",
                    humantime::format_duration(self.refresh),
                    humantime::format_duration(MIN_REFRESH)
                ),
            ));
        }
        for (flag, env, url) in [
            ("--aws-ranges-url", "NETMETER_AWS_RANGES_URL", &self.aws_url),
            ("--gcp-ranges-url", "NETMETER_GCP_RANGES_URL", &self.gcp_url),
            (
                "--azure-ranges-url",
                "NETMETER_AZURE_RANGES_URL",
                &self.azure_url,
            ),
        ] {
            let off_or_http =
                url.is_empty() || url.starts_with("https://") || url.starts_with("http://");
            if !off_or_http {
                return Err(ConfigError::invalid(
                    flag,
                    env,
                    format!("`{url}` is not an http:// or https:// URL (empty turns it off)"),
                ));
            }
        }
        Ok(())
    }

    /// The providers to refresh, with their URLs.
    fn sources(&self) -> Vec<(Cloud, &str)> {
        [
            (Cloud::Aws, self.aws_url.as_str()),
            (Cloud::Gcp, self.gcp_url.as_str()),
            (Cloud::Azure, self.azure_url.as_str()),
        ]
        .into_iter()
        .filter(|(_, url)| !url.is_empty())
        .collect()
    }
}

/// The current cloud table, shared between the enrichment, the refresh loop and the age
/// gauge. Clones are cheap and see the same table; a refresh swaps in a new one without
/// blocking readers.
#[derive(Clone)]
pub struct SharedCloudRanges {
    current: Arc<RwLock<Current>>,
}

struct Current {
    table: Arc<CloudRanges>,
    providers: Arc<[ProviderRanges]>,
}

impl SharedCloudRanges {
    pub fn new(loaded: LoadedRanges) -> Self {
        SharedCloudRanges {
            current: Arc::new(RwLock::new(Current::from(loaded))),
        }
    }

    /// The table as of now. Take it once per batch, not per lookup: it stays valid (and
    /// unchanged) for as long as it is held, even across a refresh.
    pub fn current(&self) -> Arc<CloudRanges> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .table
            .clone()
    }

    /// Where each provider's part of the current table came from, and when it was published.
    pub fn providers(&self) -> Arc<[ProviderRanges]> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .providers
            .clone()
    }

    /// Makes `loaded` the table every later [`current`](Self::current) returns.
    pub fn replace(&self, loaded: LoadedRanges) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Current::from(loaded);
    }
}

impl From<LoadedRanges> for Current {
    fn from(loaded: LoadedRanges) -> Self {
        Current {
            table: Arc::new(loaded.table),
            providers: loaded.providers.into(),
        }
    }
}

impl std::fmt::Debug for SharedCloudRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedCloudRanges")
            .field(&self.current())
            .finish()
    }
}

/// Until `shutdown`, every `args.refresh` (the first time right away) downloads the files whose
/// URL is set, rebuilds the table from the directory and swaps it in if it changed. Returns at
/// once when refresh is off (`0s`). Failures are logged and counted; the previous table stays.
pub async fn refresh_loop(
    args: CloudRangesArgs,
    ranges: SharedCloudRanges,
    shutdown: CancellationToken,
) {
    let Some(dir) = args.dir.as_ref().filter(|_| !args.refresh.is_zero()) else {
        tracing::info!(dir = ?args.dir, "cloud range refresh is off");
        return;
    };
    tracing::info!(
        dir = %dir.display(),
        every = %humantime::format_duration(args.refresh),
        urls = ?args.sources(),
        "cloud range refresh is on"
    );
    run_refresh_loop(http_agent(), args, ranges, shutdown).await;
}

/// [`refresh_loop`] once it is on, with the HTTP client given (tests use one without proxies).
async fn run_refresh_loop(
    agent: ureq::Agent,
    args: CloudRangesArgs,
    ranges: SharedCloudRanges,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(args.refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = refresh_once(&agent, &args, &ranges) => {}
        }
    }
}

/// What one round did, for tests.
#[derive(Debug, Default, PartialEq, Eq)]
struct RoundOutcome {
    /// Providers whose file was downloaded and checked (changed or not) and is in the table.
    refreshed: Vec<Cloud>,
    failed: Vec<Cloud>,
    /// Whether a different table was swapped in.
    swapped: bool,
}

/// One round: downloads every configured file into the directory, then rebuilds the table
/// from the directory (so files put there by other means, such as Azure's weekly file copied
/// in by a job, are picked up too) and swaps it in if it differs. The providers' sources and
/// publication times follow the files even when the prefixes did not change.
async fn refresh_once(
    agent: &ureq::Agent,
    args: &CloudRangesArgs,
    ranges: &SharedCloudRanges,
) -> RoundOutcome {
    let mut outcome = RoundOutcome::default();
    // Validation refuses refresh without a directory.
    let Some(dir) = args.dir.clone() else {
        return outcome;
    };
    for (cloud, url) in args.sources() {
        let (agent, url_owned, dir) = (agent.clone(), url.to_string(), dir.clone());
        let Some(result) = blocking(move || update_file(&agent, cloud, &url_owned, &dir)).await
        else {
            return outcome;
        };
        match result {
            Ok(()) => outcome.refreshed.push(cloud),
            Err(error) => {
                RefreshFailed {
                    cloud,
                    source: url,
                    error: &error,
                }
                .emit();
                outcome.failed.push(cloud);
            }
        }
    }
    let rebuild_from = dir.clone();
    let Some(rebuilt) = blocking(move || load(Some(&rebuild_from))).await else {
        return outcome;
    };
    match rebuilt {
        Ok(mut new) => {
            for provider in &mut new.providers {
                let downloaded = args.sources().into_iter().find(|(cloud, _)| {
                    *cloud == provider.cloud && outcome.refreshed.contains(cloud)
                });
                if let Some((_, url)) = downloaded {
                    provider.source = RangeSource::Url(url.to_string());
                }
            }
            if new.table != *ranges.current() {
                RangesSwapped {
                    dir: &dir,
                    loaded: &new,
                }
                .emit();
                outcome.swapped = true;
            }
            ranges.replace(new);
        }
        Err(error) => {
            // A file in the directory went bad (or the directory away) since the last load.
            let clouds = error
                .cloud()
                .map_or(Cloud::ALL.to_vec(), |cloud| vec![cloud]);
            for &cloud in &clouds {
                RefreshFailed {
                    cloud,
                    source: &dir.display().to_string(),
                    error: &RefreshError::Rebuild(error.to_string()),
                }
                .emit();
            }
            outcome.refreshed.clear();
            for cloud in clouds {
                if !outcome.failed.contains(&cloud) {
                    outcome.failed.push(cloud);
                }
            }
            return outcome;
        }
    }
    for cloud in &outcome.refreshed {
        metrics::counter!(crate::metric_list::CLOUD_RANGES_REFRESHES.name, "cloud" => cloud.name())
            .increment(1);
    }
    outcome
}

/// Runs `work` on the blocking pool. `None` when the runtime is shutting down; a panic in
/// `work` is a bug and continues here.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => Some(value),
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_cancelled) => None,
        },
    }
}

/// Downloads `url`, checks it is a non-empty `cloud` range file, and replaces the file in
/// `dir` with it (unless it is the same).
fn update_file(
    agent: &ureq::Agent,
    cloud: Cloud,
    url: &str,
    dir: &Path,
) -> Result<(), RefreshError> {
    let body = download(agent, url)?;
    let file = super::parse(cloud, &body, url).map_err(RefreshError::Invalid)?;
    if file.labels.is_empty() {
        return Err(RefreshError::Empty);
    }
    let path = dir.join(cloud.file_name());
    if std::fs::read(&path).is_ok_and(|old| old == body) {
        return Ok(());
    }
    write_atomically(&path, &body).map_err(|source| RefreshError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// The HTTP client for the downloads: the system's TLS (OpenSSL) and trust store, so a
/// cluster's own CA bundle and TLS-inspecting egress proxies work; HTTPS_PROXY/NO_PROXY are
/// honoured.
fn http_agent() -> ureq::Agent {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::NativeTls)
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .timeout_global(Some(DOWNLOAD_TIMEOUT))
        .user_agent(concat!("netmeter-attributor/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn download(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, RefreshError> {
    let mut response = agent.get(url).call()?;
    Ok(response
        .body_mut()
        .with_config()
        .limit(MAX_FILE_BYTES)
        .read_to_vec()?)
}

/// Replaces `path` so that readers see the old file or the new one, never a partial one.
fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.download"));
    let written = std::fs::File::create(&temporary).and_then(|mut file| {
        file.write_all(content)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temporary, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    renamed
}

#[derive(Debug, thiserror::Error)]
enum RefreshError {
    #[error("download failed: {0}")]
    Download(#[from] ureq::Error),
    #[error(transparent)]
    Invalid(RangeFileError),
    #[error("the file lists no prefixes")]
    Empty,
    #[error("cannot write {path}: {source} (refresh needs a writable --cloud-ranges-dir)")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot rebuild the table: {0}")]
    Rebuild(String),
}

/// A refresh of one provider's file failed; the previous table stays.
struct RefreshFailed<'a> {
    cloud: Cloud,
    /// The URL, or the directory when the rebuild failed.
    source: &'a str,
    error: &'a RefreshError,
}

impl RefreshFailed<'_> {
    fn emit(&self) {
        tracing::warn!(
            cloud = self.cloud.name(),
            source = self.source,
            error = %self.error,
            "cloud range refresh failed; keeping the previous table"
        );
        metrics::counter!(crate::metric_list::CLOUD_RANGES_REFRESH_FAILURES.name, "cloud" => self.cloud.name())
            .increment(1);
    }
}

/// A refreshed table is in use.
struct RangesSwapped<'a> {
    dir: &'a Path,
    loaded: &'a LoadedRanges,
}

impl RangesSwapped<'_> {
    fn emit(&self) {
        let prefixes = self.loaded.table.len();
        tracing::info!(dir = %self.dir.display(), prefixes, "cloud ranges refreshed");
        RangesLoaded {
            loaded: self.loaded,
        }
        .emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{IpAddr, TcpListener};
    use std::sync::Mutex;

    /// An AWS `ip-ranges.json` with one IPv4 prefix.
    fn aws_file(prefix: &str, region: &str, service: &str) -> String {
        format!(
            r#"{{"syncToken": "1", "prefixes": [{{"ip_prefix": "{prefix}", "region": "{region}",
            "service": "{service}", "network_border_group": "{region}"}}], "ipv6_prefixes": []}}"#
        )
    }

    /// A range directory with one small file per provider.
    fn range_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let write = |cloud: Cloud, json: &str| {
            std::fs::write(dir.path().join(cloud.file_name()), json).unwrap();
        };
        write(Cloud::Aws, &aws_file("198.51.100.0/24", "eu-west-1", "EC2"));
        write(
            Cloud::Gcp,
            r#"{"prefixes": [{"ipv4Prefix": "34.35.0.0/16", "service": "Google Cloud",
                "scope": "africa-south1"}]}"#,
        );
        write(
            Cloud::Azure,
            r#"{"values": [{"name": "Storage.KoreaCentral", "properties": {
                "region": "koreacentral", "systemService": "AzureStorage",
                "addressPrefixes": ["20.33.154.0/24"]}}]}"#,
        );
        dir
    }

    /// Serves whatever `content` holds (404 for `None`) on 127.0.0.1, one request per
    /// connection, like a provider's download URL.
    struct FileServer {
        url: String,
        content: Arc<Mutex<Option<String>>>,
    }

    impl FileServer {
        fn start(content: Option<String>) -> FileServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/ip-ranges.json", listener.local_addr().unwrap());
            let content = Arc::new(Mutex::new(content));
            let serving = content.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut request = BufReader::new(&stream);
                    let mut line = String::new();
                    while request.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        line.clear();
                    }
                    let response = match serving.lock().unwrap().as_deref() {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\
                                 Connection: close\r\n\r\n"
                            .to_string(),
                    };
                    let _ = stream.write_all(response.as_bytes());
                }
            });
            FileServer { url, content }
        }

        fn serve(&self, content: Option<String>) {
            *self.content.lock().unwrap() = content;
        }
    }

    fn args(dir: &Path, aws_url: &str) -> CloudRangesArgs {
        CloudRangesArgs {
            dir: Some(dir.to_path_buf()),
            refresh: Duration::from_secs(3600),
            aws_url: aws_url.to_string(),
            gcp_url: String::new(),
            azure_url: String::new(),
        }
    }

    /// The agent without proxies from the environment: the server is on loopback.
    fn local_agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into()
    }

    fn service_of(ranges: &SharedCloudRanges, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.parse().unwrap();
        ranges.current().lookup(ip).map(|l| l.service.clone())
    }

    #[tokio::test]
    async fn a_downloaded_file_replaces_the_table_and_a_broken_one_keeps_it() {
        let dir = range_dir();
        let ranges = SharedCloudRanges::new(load(Some(dir.path())).unwrap());
        let held_before = ranges.current();
        assert_eq!(service_of(&ranges, "198.51.100.7").as_deref(), Some("EC2"));
        assert_eq!(service_of(&ranges, "203.0.113.5"), None);

        let new_file = aws_file("203.0.113.0/24", "us-east-1", "S3");
        let server = FileServer::start(Some(new_file.clone()));
        let (agent, args) = (local_agent(), args(dir.path(), &server.url));
        let outcome = refresh_once(&agent, &args, &ranges).await;
        assert_eq!(
            outcome,
            RoundOutcome {
                refreshed: vec![Cloud::Aws],
                failed: vec![],
                swapped: true
            }
        );
        assert_eq!(service_of(&ranges, "203.0.113.5").as_deref(), Some("S3"));
        assert_eq!(service_of(&ranges, "198.51.100.7"), None);
        assert_eq!(
            service_of(&ranges, "34.35.1.2").as_deref(),
            Some("Google Cloud")
        );
        let sources: Vec<RangeSource> = ranges
            .providers()
            .iter()
            .map(|p| p.source.clone())
            .collect();
        assert_eq!(
            sources,
            [
                RangeSource::Url(server.url.clone()),
                RangeSource::Dir(dir.path().join("gcp-cloud.json")),
                RangeSource::Dir(dir.path().join("azure-service-tags.json")),
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("aws-ip-ranges.json")).unwrap(),
            new_file,
            "the download is written to the directory, for the next start"
        );
        assert!(
            held_before
                .lookup("198.51.100.7".parse().unwrap())
                .is_some(),
            "a table already taken stays as it was"
        );

        // The same file again: nothing to rebuild.
        let outcome = refresh_once(&agent, &args, &ranges).await;
        assert_eq!(
            (outcome.refreshed, outcome.swapped),
            (vec![Cloud::Aws], false)
        );

        // The same prefixes, published again: the table stays, its age follows the file.
        let republished = new_file.replacen(
            r#""syncToken": "1","#,
            r#""syncToken": "1", "createDate": "2026-01-02-03-04-05","#,
            1,
        );
        server.serve(Some(republished.clone()));
        let outcome = refresh_once(&agent, &args, &ranges).await;
        assert_eq!(
            (outcome.refreshed, outcome.swapped),
            (vec![Cloud::Aws], false)
        );
        assert_eq!(
            ranges.providers()[0].published,
            humantime::parse_rfc3339("2026-01-02T03:04:05Z").unwrap()
        );
        let new_file = republished;

        for broken in [
            Some(r#"{"prefixes": [{"ip_prefix": "#.to_string()),
            Some(r#"{"prefixes": [], "ipv6_prefixes": []}"#.to_string()),
            Some("<html>Service Unavailable</html>".to_string()),
            None,
        ] {
            server.serve(broken.clone());
            let outcome = refresh_once(&agent, &args, &ranges).await;
            assert_eq!(
                outcome,
                RoundOutcome {
                    refreshed: vec![],
                    failed: vec![Cloud::Aws],
                    swapped: false
                },
                "{broken:?}"
            );
            assert_eq!(service_of(&ranges, "203.0.113.5").as_deref(), Some("S3"));
            assert_eq!(
                std::fs::read_to_string(dir.path().join("aws-ip-ranges.json")).unwrap(),
                new_file
            );
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_file_copied_into_the_directory_is_picked_up_and_a_broken_one_is_not() {
        let dir = range_dir();
        let ranges = SharedCloudRanges::new(load(Some(dir.path())).unwrap());
        let no_downloads = args(dir.path(), "");
        let azure = dir.path().join(Cloud::Azure.file_name());

        std::fs::write(&azure, r#"{"values": ["#).unwrap();
        let outcome = refresh_once(&local_agent(), &no_downloads, &ranges).await;
        assert_eq!(
            outcome,
            RoundOutcome {
                refreshed: vec![],
                failed: vec![Cloud::Azure],
                swapped: false
            }
        );
        assert_eq!(
            service_of(&ranges, "20.33.154.10").as_deref(),
            Some("AzureStorage")
        );

        std::fs::write(
            &azure,
            r#"{"values": [{"name": "AzureCosmosDB.WestEurope", "properties": {
                "region": "westeurope", "systemService": "AzureCosmosDB",
                "addressPrefixes": ["20.44.0.0/16"]}}]}"#,
        )
        .unwrap();
        let outcome = refresh_once(&local_agent(), &no_downloads, &ranges).await;
        assert!(outcome.swapped, "{outcome:?}");
        assert_eq!(
            service_of(&ranges, "20.44.1.1").as_deref(),
            Some("AzureCosmosDB")
        );
        assert_eq!(service_of(&ranges, "20.33.154.10"), None);
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_a_failure_that_keeps_the_table() {
        let dir = range_dir();
        let ranges = SharedCloudRanges::new(load(Some(dir.path())).unwrap());
        let server = FileServer::start(Some(aws_file("203.0.113.0/24", "us-east-1", "S3")));
        let mut args = args(dir.path(), &server.url);
        args.dir = Some(dir.path().join("not-there"));
        let outcome = refresh_once(&local_agent(), &args, &ranges).await;
        // The download cannot be written, and no provider's table can be rebuilt.
        assert_eq!(outcome.failed, Cloud::ALL);
        assert_eq!(service_of(&ranges, "198.51.100.7").as_deref(), Some("EC2"));
    }

    #[tokio::test]
    async fn the_loop_refreshes_right_away_and_stops_on_shutdown() {
        let dir = range_dir();
        let ranges = SharedCloudRanges::new(load(Some(dir.path())).unwrap());
        let server = FileServer::start(Some(aws_file("203.0.113.0/24", "us-east-1", "S3")));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(run_refresh_loop(
            local_agent(),
            args(dir.path(), &server.url),
            ranges.clone(),
            shutdown.clone(),
        ));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while service_of(&ranges, "203.0.113.5").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no refresh within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the loop stops on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn the_loop_returns_at_once_when_refresh_is_off() {
        let dir = range_dir();
        let ranges = SharedCloudRanges::new(load(Some(dir.path())).unwrap());
        let mut args = args(dir.path(), AWS_RANGES_URL);
        args.refresh = Duration::ZERO;
        tokio::time::timeout(
            Duration::from_secs(5),
            refresh_loop(args, ranges, CancellationToken::new()),
        )
        .await
        .expect("returns without waiting for shutdown");
    }

    /// No egress in tests, but the production client's TLS set-up (OpenSSL, the system trust
    /// store) must at least be usable: a handshake with a server that hangs up is an error,
    /// not a panic over a TLS provider that is not compiled in.
    #[test]
    fn the_production_client_attempts_tls_with_the_system_trust_store() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/ip-ranges.json", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
            }
        });
        let error =
            update_file(&http_agent(), Cloud::Aws, &url, Path::new("/nonexistent")).unwrap_err();
        assert!(matches!(error, RefreshError::Download(_)), "{error}");
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        ranges: CloudRangesArgs,
    }

    #[test]
    fn flags_default_to_no_refresh_and_no_azure_url() {
        use clap::CommandFactory;
        let command = Flags::command();
        let default = |long: &str| {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap_or_else(|| panic!("--{long}"));
            arg.get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<String>()
        };
        assert_eq!(
            default("cloud-ranges-dir"),
            "",
            "unset: the built-in snapshot"
        );
        assert_eq!(default("cloud-ranges-refresh"), "0s");
        assert_eq!(default("aws-ranges-url"), AWS_RANGES_URL);
        assert_eq!(default("gcp-ranges-url"), GCP_RANGES_URL);
        assert_eq!(default("azure-ranges-url"), "");
        let flags = <Flags as clap::Parser>::try_parse_from([
            "x",
            "--cloud-ranges-dir",
            "/data/ranges",
            "--cloud-ranges-refresh",
            "6h",
        ])
        .unwrap();
        assert_eq!(flags.ranges.refresh, Duration::from_secs(6 * 3600));
        assert_eq!(flags.ranges.dir.as_deref(), Some(Path::new("/data/ranges")));
    }

    #[test]
    fn validation_rejects_a_missing_directory_and_refresh_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let with_dir = args(dir.path(), AWS_RANGES_URL);
        assert!(with_dir.validate().is_ok());
        let snapshot_only = CloudRangesArgs {
            dir: None,
            refresh: Duration::ZERO,
            ..with_dir.clone()
        };
        assert!(snapshot_only.validate().is_ok());
        let err = CloudRangesArgs {
            dir: Some(dir.path().join("missing")),
            ..with_dir.clone()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            format!(
                "--cloud-ranges-dir (env NETMETER_CLOUD_RANGES_DIR): {}/missing is not a \
                 directory: point it at a directory holding newer range files \
                 (aws-ip-ranges.json, gcp-cloud.json, azure-service-tags.json; any of them), or \
                 leave it unset for the built-in July 2025 snapshot",
                dir.path().display()
            )
        );
        let err = CloudRangesArgs {
            dir: None,
            ..with_dir
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "--cloud-ranges-refresh (env NETMETER_CLOUD_RANGES_REFRESH): needs \
             --cloud-ranges-dir (NETMETER_CLOUD_RANGES_DIR): a writable directory to keep the \
             downloaded files in"
        );
    }

    #[test]
    fn validation_rejects_a_hammering_interval_and_non_http_urls() {
        let dir = tempfile::tempdir().unwrap();
        let ok = args(dir.path(), AWS_RANGES_URL);
        assert!(ok.validate().is_ok());
        let off = CloudRangesArgs {
            refresh: Duration::ZERO,
            ..ok.clone()
        };
        assert!(off.validate().is_ok());
        let hammering = CloudRangesArgs {
            refresh: Duration::from_secs(5),
            ..ok.clone()
        };
        let err = hammering.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            "--cloud-ranges-refresh (env NETMETER_CLOUD_RANGES_REFRESH): 5s is too often: use 0s \
             (off) or at least 1m"
        );
        let ftp = CloudRangesArgs {
            azure_url: "ftp://mirror/ServiceTags.json".into(),
            ..ok
        };
        let err = ftp.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("--azure-ranges-url (env NETMETER_AZURE_RANGES_URL): `ftp://"),
            "{err}"
        );
    }
}
