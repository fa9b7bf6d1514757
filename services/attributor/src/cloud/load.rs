//! The one loader of the service, replay and explain: for each provider, its file in the range
//! directory (`--cloud-ranges-dir`) if the directory has one, else the snapshot built into the
//! binary; and, per provider, where its part of the table came from and when the provider
//! published it, so that a stale table shows (`age.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::{Cloud, CloudRanges, CloudRangesBuilder, RangeFileError, read_file, snapshot};

/// Where one provider's part of the table came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeSource {
    /// The July 2025 snapshot built into the binary.
    Embedded,
    /// A file in the range directory.
    Dir(PathBuf),
    /// Downloaded from this URL by the last refresh round (and kept in the directory).
    Url(String),
}

impl RangeSource {
    /// `embedded`, `dir` or `url`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RangeSource::Embedded => "embedded",
            RangeSource::Dir(_) => "dir",
            RangeSource::Url(_) => "url",
        }
    }
}

impl std::fmt::Display for RangeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RangeSource::Embedded => f.write_str("the built-in July 2025 snapshot"),
            RangeSource::Dir(path) => write!(f, "{}", path.display()),
            RangeSource::Url(url) => f.write_str(url),
        }
    }
}

/// One provider's part of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRanges {
    pub cloud: Cloud,
    pub source: RangeSource,
    /// When the provider published the file: the date the file states (AWS `createDate`, GCP
    /// `creationTime`), else, for Azure's file, which states none, the file's modification
    /// time (on disk) or the day the snapshot was copied (embedded).
    pub published: SystemTime,
    /// Distinct prefixes in the file.
    pub prefixes: usize,
}

impl ProviderRanges {
    /// How long before `now` the provider published the table (zero if in the future).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.published).unwrap_or_default()
    }
}

/// The table, and where each provider's part of it came from (in [`Cloud::ALL`] order).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedRanges {
    pub table: CloudRanges,
    pub providers: Vec<ProviderRanges>,
}

/// Loads every provider's ranges: the file in `dir` when `dir` is given and has one (see
/// [`Cloud::file_name`]), else the built-in snapshot. A file that is there but unreadable or
/// broken is an error, not a reason to fall back; so is a `dir` that is not a directory.
pub fn load(dir: Option<&Path>) -> Result<LoadedRanges, RangeFileError> {
    if let Some(dir) = dir.filter(|dir| !dir.is_dir()) {
        return Err(RangeFileError::NoDirectory {
            path: dir.display().to_string(),
        });
    }
    let mut builder = CloudRangesBuilder::new();
    let mut providers = Vec::with_capacity(Cloud::ALL.len());
    for cloud in Cloud::ALL {
        let on_disk = match dir.map(|dir| dir.join(cloud.file_name())) {
            Some(path) => match read_file(cloud, &path) {
                Ok(file) => Some((file, RangeSource::Dir(path))),
                Err(RangeFileError::Missing { .. }) => None,
                Err(error) => return Err(error),
            },
            None => None,
        };
        let (file, source) =
            on_disk.unwrap_or_else(|| (snapshot::read(cloud), RangeSource::Embedded));
        let mut prefixes: Vec<IpNet> = file.labels.iter().map(|l| l.prefix.trunc()).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        providers.push(ProviderRanges {
            cloud,
            source,
            // Only a file whose modification time the platform does not keep lacks one.
            published: file.published.unwrap_or(SystemTime::UNIX_EPOCH),
            prefixes: prefixes.len(),
        });
        builder.extend(file.labels);
    }
    Ok(LoadedRanges {
        table: builder.build(),
        providers,
    })
}

/// A table was loaded (at start, or by a refresh round that changed it).
pub struct RangesLoaded<'a> {
    pub loaded: &'a LoadedRanges,
}

impl RangesLoaded<'_> {
    pub fn emit(&self) {
        let now = SystemTime::now();
        for provider in &self.loaded.providers {
            tracing::info!(
                cloud = provider.cloud.name(),
                source = provider.source.kind(),
                from = %provider.source,
                published = %humantime::format_rfc3339_seconds(provider.published),
                age_days = provider.age(now).as_secs() / 86_400,
                prefixes = provider.prefixes,
                "cloud ranges loaded"
            );
        }
        metrics::gauge!(crate::metric_list::CLOUD_RANGES_PREFIXES.name)
            .set(self.loaded.table.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// Distinct prefixes in the snapshot's files (from 8,971 + 4,373 AWS entries, 782 GCP
    /// entries, 90,493 Azure tag prefixes); no prefix is listed by two providers.
    const AWS_PREFIXES: usize = 9_066;
    const GCP_PREFIXES: usize = 782;
    const AZURE_PREFIXES: usize = 50_887;
    const ALL_PREFIXES: usize = 60_735;

    /// The built-in snapshot, loaded once for these tests.
    fn embedded() -> &'static LoadedRanges {
        static LOADED: OnceLock<LoadedRanges> = OnceLock::new();
        LOADED.get_or_init(|| load(None).unwrap())
    }

    fn unix_ms(time: SystemTime) -> u128 {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    }

    fn lookup(table: &CloudRanges, ip: &str) -> Option<(Cloud, String, String)> {
        table
            .lookup(ip.parse().unwrap())
            .map(|l| (l.cloud, l.region.clone(), l.service.clone()))
    }

    #[test]
    fn without_a_directory_every_provider_comes_from_the_snapshot() {
        let loaded = embedded();
        let summary: Vec<_> = loaded
            .providers
            .iter()
            .map(|p| (p.cloud, p.source.clone(), p.prefixes, unix_ms(p.published)))
            .collect();
        assert_eq!(
            summary,
            [
                // createDate 2025-07-24-20-23-14
                (
                    Cloud::Aws,
                    RangeSource::Embedded,
                    AWS_PREFIXES,
                    1_753_388_594_000
                ),
                // creationTime 2025-07-24T19:16:28.780563
                (
                    Cloud::Gcp,
                    RangeSource::Embedded,
                    GCP_PREFIXES,
                    1_753_384_588_780
                ),
                // no date in the file: the day it was copied, 2025-07-25
                (
                    Cloud::Azure,
                    RangeSource::Embedded,
                    AZURE_PREFIXES,
                    1_753_401_600_000
                ),
            ]
        );
        assert_eq!(loaded.table.len(), ALL_PREFIXES);
        assert_eq!(
            lookup(&loaded.table, "3.5.140.7"),
            Some((Cloud::Aws, "ap-northeast-2".into(), "S3".into()))
        );
        assert_eq!(
            lookup(&loaded.table, "34.35.1.2"),
            Some((Cloud::Gcp, "africa-south1".into(), "Google Cloud".into()))
        );
    }

    #[test]
    fn the_snapshot_written_to_a_directory_loads_as_the_same_table() {
        let dir = tempfile::tempdir().unwrap();
        snapshot::write_to(dir.path()).unwrap();
        let before_writing_azure = SystemTime::now();
        let from_dir = load(Some(dir.path())).unwrap();
        assert!(from_dir.table == embedded().table);
        for (on_disk, built_in) in from_dir.providers.iter().zip(&embedded().providers) {
            let path = dir.path().join(on_disk.cloud.file_name());
            assert_eq!(on_disk.source, RangeSource::Dir(path));
            assert_eq!(on_disk.prefixes, built_in.prefixes);
            if on_disk.cloud == Cloud::Azure {
                // Azure's file states no date: a file on disk is as old as its mtime.
                assert!(on_disk.published <= before_writing_azure);
                assert!(on_disk.age(SystemTime::now()) < Duration::from_secs(600));
            } else {
                assert_eq!(on_disk.published, built_in.published, "{:?}", on_disk.cloud);
            }
        }
    }

    #[test]
    fn a_file_in_the_directory_replaces_only_its_provider() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join("aws-ip-ranges.json");
        std::fs::write(
            &aws,
            r#"{"createDate": "2026-11-30-08-00-00", "prefixes": [{"ip_prefix": "198.51.100.0/24",
                "region": "eu-west-1", "service": "EC2"}], "ipv6_prefixes": []}"#,
        )
        .unwrap();
        let azure = dir.path().join("azure-service-tags.json");
        std::fs::write(
            &azure,
            r#"{"changeNumber": 400, "values": [{"name": "AzureCosmosDB.WestEurope",
                "properties": {"region": "westeurope", "systemService": "AzureCosmosDB",
                "addressPrefixes": ["20.44.0.0/16", "20.44.0.0/16"]}}]}"#,
        )
        .unwrap();
        let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        std::fs::File::options()
            .write(true)
            .open(&azure)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let loaded = load(Some(dir.path())).unwrap();
        assert_eq!(
            loaded.providers,
            [
                ProviderRanges {
                    cloud: Cloud::Aws,
                    source: RangeSource::Dir(aws),
                    published: humantime::parse_rfc3339("2026-11-30T08:00:00Z").unwrap(),
                    prefixes: 1,
                },
                ProviderRanges {
                    source: RangeSource::Embedded,
                    ..embedded().providers[1].clone()
                },
                ProviderRanges {
                    cloud: Cloud::Azure,
                    source: RangeSource::Dir(azure),
                    published: modified,
                    prefixes: 1,
                },
            ]
        );
        assert_eq!(
            lookup(&loaded.table, "198.51.100.7"),
            Some((Cloud::Aws, "eu-west-1".into(), "EC2".into()))
        );
        assert_eq!(
            lookup(&loaded.table, "3.5.140.7"),
            None,
            "AWS's snapshot is replaced"
        );
        assert_eq!(
            lookup(&loaded.table, "34.35.1.2"),
            Some((Cloud::Gcp, "africa-south1".into(), "Google Cloud".into())),
            "GCP's is not"
        );
        assert_eq!(lookup(&loaded.table, "20.33.154.10"), None);
        assert_eq!(loaded.table.len(), GCP_PREFIXES + 2);
    }

    #[test]
    fn a_missing_directory_or_a_broken_file_is_an_error_not_a_fallback() {
        let err = load(Some(Path::new("/nonexistent/ranges"))).unwrap_err();
        assert_eq!(err.cloud(), None);
        assert!(
            err.to_string()
                .starts_with("/nonexistent/ranges is not a directory: point it at a directory"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let gcp = dir.path().join("gcp-cloud.json");
        std::fs::write(&gcp, "<html>Service Unavailable</html>").unwrap();
        let err = load(Some(dir.path())).unwrap_err();
        assert_eq!(err.cloud(), Some(Cloud::Gcp));
        assert!(
            err.to_string()
                .starts_with(&format!("{} is not a valid GCP range file", gcp.display())),
            "{err}"
        );
    }
}
