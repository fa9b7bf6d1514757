//! A broker that asks for what managed Kafka (MSK, Confluent Cloud) asks for: TLS with a
//! certificate from a private CA, and SASL/SCRAM-SHA-512 credentials.
//!
//! tansu 0.6 authenticates SCRAM users itself (`--authentication`, users created with `tansu
//! user create`), but its command line cannot enable TLS (`--cert` and `--key` are declared
//! mutually exclusive), so TLS is terminated by `socat` in front of it, with a server
//! certificate for 127.0.0.1 signed by a CA made here with `openssl`. Clients see one listener:
//! TLS on the outside, SASL inside the TLS session, exactly as with MSK's SASL_SSL port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use rdkafka::ClientConfig;

use crate::broker::{PARTITIONS, START_TIMEOUT, default_topics};
use crate::process::{Lifetime, ManagedProcess};
use crate::{broker, free_port, install};

pub const USERNAME: &str = "netmeter";
pub const PASSWORD: &str = "scram-test-password";

pub struct SecureBroker {
    /// TLS + SASL_SSL, what clients connect to.
    pub port: u16,
    /// The CA that signed the broker's certificate (PEM).
    pub ca: PathBuf,
    _tansu: ManagedProcess,
    _tls: ManagedProcess,
}

impl SecureBroker {
    /// Makes the certificates, creates the user and the netmeter topics on a plain broker,
    /// then serves them with authentication required, behind TLS. Data and logs go to `dir`.
    pub async fn start(dir: &Path) -> anyhow::Result<SecureBroker> {
        let tansu = install::require(&install::tansu_bin())?;
        let certificates = make_certificates(dir)?;
        let (inner, port) = (free_port(), free_port());
        let data = dir.join("broker");
        std::fs::create_dir_all(&data)?;

        // 1. Without authentication: the SCRAM user and the topics.
        let mut setup = ManagedProcess::spawn(
            "broker (setup)",
            broker::command(&tansu, &data, inner),
            &dir.join("broker-setup.log"),
            Lifetime::Owned,
        )?;
        setup.wait_ready(START_TIMEOUT, || broker::is_ready(inner))?;
        run(Command::new(&tansu).args([
            "user",
            "create",
            "--broker",
            &format!("tcp://127.0.0.1:{inner}"),
            USERNAME,
            PASSWORD,
            "--mechanism",
            "scram512",
        ]))?;
        broker::create_topics(&format!("127.0.0.1:{inner}"), &default_topics(), PARTITIONS).await?;
        setup.terminate(Duration::from_secs(5));

        // 2. With authentication, advertising the TLS port, with socat terminating TLS there.
        let mut serving = broker::command_advertising(&tansu, &data, inner, port);
        serving.arg("--authentication");
        let mut tansu = ManagedProcess::spawn(
            "broker (SCRAM)",
            serving,
            &dir.join("broker.log"),
            Lifetime::Owned,
        )?;
        tansu.wait_ready(START_TIMEOUT, || broker::is_ready(inner))?;
        let mut socat = Command::new("socat");
        socat.arg(format!(
            "openssl-listen:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
            certificates.cert.display(),
            certificates.key.display()
        ));
        socat.arg(format!("tcp:127.0.0.1:{inner}"));
        let mut tls =
            ManagedProcess::spawn("TLS (socat)", socat, &dir.join("tls.log"), Lifetime::Owned)?;
        tls.wait_ready(START_TIMEOUT, || broker::is_ready(port))?;
        Ok(SecureBroker {
            port,
            ca: certificates.ca,
            _tansu: tansu,
            _tls: tls,
        })
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The flags a netmeter service takes for this broker (the password comes from the
    /// environment, see [`Self::service_env`]).
    pub fn service_args(&self) -> Vec<String> {
        [
            "--kafka-brokers",
            &self.bootstrap(),
            "--kafka-security-protocol",
            "sasl_ssl",
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-ssl-ca-location",
            &self.ca.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The credentials as a Kubernetes Secret would put them in a pod's environment.
    pub fn service_env(password: &str) -> [(&'static str, String); 2] {
        [
            ("NETMETER_KAFKA_SASL_USERNAME", USERNAME.to_string()),
            ("NETMETER_KAFKA_SASL_PASSWORD", password.to_string()),
        ]
    }

    /// A librdkafka client configuration for tests' own producers and readers.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("security.protocol", "sasl_ssl")
            .set("sasl.mechanisms", "SCRAM-SHA-512")
            .set("sasl.username", USERNAME)
            .set("sasl.password", PASSWORD)
            .set("ssl.ca.location", self.ca.display().to_string());
        config
    }
}

struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA, and a certificate for 127.0.0.1 (as its subject alternative name) signed by it.
fn make_certificates(dir: &Path) -> anyhow::Result<Certificates> {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(dir);
        run(&mut command)
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=netmeter-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    std::fs::write(path("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ])?;
    Ok(Certificates {
        ca: path("ca.pem"),
        cert: path("server.pem"),
        key: path("server.key"),
    })
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
