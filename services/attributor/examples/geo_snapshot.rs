//! Writes the attributor's built-in geo snapshot (`data/geo/geo.bin.zst`) from the four CSV
//! files of the `@ip-location-db` npm packages; `scripts/refresh-geo-data` fetches them and
//! runs this.
//!
//! ```text
//! cargo run --release -p netmeter-attributor --example geo_snapshot -- \
//!     CSV_DIR OUT_FILE @ip-location-db/geo-whois-asn-country@VERSION @ip-location-db/asn@VERSION
//! ```
//!
//! The data's date is the one the version names: `2.3.2026061719` was built 2026-06-17 19:00
//! UTC.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use netmeter_attributor::geo::{GeoPart, GeoSource, snapshot};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, out, country, network] = args.as_slice() else {
        bail!(
            "usage: geo_snapshot CSV_DIR OUT_FILE @ip-location-db/geo-whois-asn-country@VERSION \
             @ip-location-db/asn@VERSION"
        );
    };
    let (dir, out) = (PathBuf::from(dir), PathBuf::from(out));
    let country = source(country)?;
    let network = source(network)?;
    let started = std::time::Instant::now();
    let bytes = snapshot::build(&dir, &country, &network)?;
    std::fs::write(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    let loaded = snapshot::decode_snapshot(&bytes).map_err(anyhow::Error::msg)?;
    println!(
        "{}: {} bytes in {:.1?}",
        out.display(),
        bytes.len(),
        started.elapsed()
    );
    for (part, loaded) in GeoPart::ALL.iter().zip(&loaded.parts) {
        let GeoSource::Snapshot { package } = &loaded.source else {
            unreachable!("a decoded snapshot's parts come from the snapshot");
        };
        println!(
            "  {:<13} {:>8} ranges  {package} ({})",
            part.name(),
            loaded.ranges,
            humantime::format_rfc3339_seconds(loaded.published)
        );
    }
    println!("  {:?}", loaded.table);
    Ok(())
}

/// `@scope/name@2.3.2026061719` and the time its version names (`YYYYMMDDHH`, UTC).
fn source(package: &str) -> anyhow::Result<snapshot::SnapshotSource> {
    let (_, version) = package
        .rsplit_once('@')
        .filter(|(name, _)| !name.is_empty())
        .with_context(|| format!("`{package}` is not NAME@VERSION"))?;
    let stamp = version.rsplit('.').next().unwrap_or_default();
    let published = (stamp.len() == 10 && stamp.bytes().all(|b| b.is_ascii_digit()))
        .then(|| {
            let at = format!(
                "{}-{}-{}T{}:00:00Z",
                &stamp[..4],
                &stamp[4..6],
                &stamp[6..8],
                &stamp[8..]
            );
            humantime::parse_rfc3339(&at).ok()
        })
        .flatten()
        .with_context(|| format!("the version of `{package}` does not end in a date YYYYMMDDHH"))?;
    Ok(snapshot::SnapshotSource {
        package: package.to_string(),
        published: published.max(SystemTime::UNIX_EPOCH),
    })
}
