//! Opens a page in headless Chromium (Debian's `chromium`, installed by scripts/install-deps --tests)
//! and returns what a person would get: the DOM after the page's scripts ran, what the page wrote
//! to the console (messages and uncaught errors), and every network request the page made.
//!
//! Chromium 156 logs every console message, whatever its level, and every uncaught error as
//! `[...:INFO:CONSOLE:<line>] "<text>", source: <url> (<line>)` on stderr with
//! `--enable-logging=stderr --v=0`; the level is not in the line, so a page under test must write
//! nothing to the console at all. Requests come from the net log (`--log-net-log`), where the
//! page's own requests have an origin as initiator and the browser's background requests have
//! "not an origin"; the host resolver maps every name to nothing, so none leaves the machine.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where CI's Debian package puts it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A run longer than this is stuck (a page normally takes 1-3 s with the virtual time budget).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What one page load showed.
pub struct PageRun {
    /// The serialized DOM once the virtual time budget ran out.
    pub dom: String,
    /// Console messages and uncaught errors, as Chromium logged them.
    pub console: Vec<String>,
    /// The http(s) URLs the page requested.
    pub requests: Vec<String>,
}

/// Loads `page` (a local file) with `--dump-dom`; `work` keeps the profile, logs and net log.
pub fn open(page: &Path, work: &Path) -> PageRun {
    let net_log = work.join("net-log.json");
    let stdout = work.join("dom.html");
    let stderr = work.join("chromium.log");
    run(
        work,
        &[
            "--dump-dom".to_string(),
            format!("--log-net-log={}", net_log.display()),
            url(page),
        ],
        &stdout,
        &stderr,
    );
    let log = std::fs::read_to_string(&stderr).expect("chromium's log");
    PageRun {
        dom: std::fs::read_to_string(&stdout).expect("the dumped DOM"),
        console: log
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_string)
            .collect(),
        requests: page_requests(&net_log),
    }
}

/// Saves a screenshot of `page` at `width` x `height` CSS pixels to `png`.
pub fn screenshot(page: &Path, work: &Path, png: &Path, width: u32, height: u32) {
    let _ = std::fs::remove_file(png);
    run(
        work,
        &[
            format!("--screenshot={}", png.display()),
            format!("--window-size={width},{height}"),
            url(page),
        ],
        &work.join("screenshot.out"),
        &work.join("screenshot.log"),
    );
    let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "chromium wrote no screenshot to {} (see {})",
        png.display(),
        work.join("screenshot.log").display()
    );
}

fn url(page: &Path) -> String {
    let page = page.canonicalize().expect("the page exists");
    format!("file://{}", page.display())
}

/// Runs Chromium headless with a fresh profile in `work`, quiet background services, no name
/// resolution, and the page's timers run to the end of a 10 s virtual budget.
fn run(work: &Path, args: &[String], stdout: &Path, stderr: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the HTML report is tested in headless Chromium; install it with \
         scripts/install-deps --tests (Debian package `chromium`)"
    );
    let profile = work.join("profile");
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(stdout).expect("an output file"))
        .stderr(File::create(stderr).expect("a log file"));
    let child = Running(command.spawn().expect("chromium starts"));
    let status = child.wait(RUN_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "chromium ran longer than {RUN_TIMEOUT:?}: {command:?} (log: {})",
            stderr.display()
        )
    });
    assert!(
        status.success(),
        "chromium failed ({status}): {command:?}; log: {}",
        std::fs::read_to_string(stderr).unwrap_or_default()
    );
}

/// Our Chromium process, killed (by its PID) if the test gives up on it.
struct Running(Child);

impl Running {
    fn wait(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().expect("waiting for chromium") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The http(s) URLs the page requested, from the net log: requests whose initiator is an origin
/// (a `file://` page's is "null"), not the browser's own ("not an origin").
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).expect("chromium's net log");
    let log: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not complete JSON: {e}", net_log.display()));
    let mut urls: Vec<String> = log["events"]
        .as_array()
        .expect("net log events")
        .iter()
        .filter_map(|event| {
            let params = &event["params"];
            let url = params["url"].as_str()?;
            let initiator = params["initiator"].as_str()?;
            let web = url.starts_with("http://") || url.starts_with("https://");
            (web && initiator != "not an origin").then(|| url.to_string())
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

/// A fresh directory for one run's files.
pub fn work_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a work directory");
    dir
}
