//! Cloud provider IP ranges: which cloud, region and service an address belongs to, by
//! longest-prefix match over the providers' published files (AWS `ip-ranges.json`, GCP
//! `cloud.json`, Azure `ServiceTags_Public`), IPv4 and IPv6.
//!
//! When the same prefix is published several times the most specific label wins:
//! - AWS lists one prefix under several services: S3 beats every other service, any named
//!   service beats `AMAZON`, and `AMAZON` beats `EC2` (the catch-all for instance addresses).
//! - Azure lists one prefix in many tags: a tag with a system service and a region (e.g.
//!   `Storage.KoreaCentral`) beats one with only a service or only a region (`AzureCloud.*`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }
}

/// What a matching prefix says about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudLabel {
    pub cloud: Cloud,
    pub region: String,
    pub service: String,
    pub prefix: IpNet,
}

#[derive(Debug, thiserror::Error)]
pub enum RangeFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {cloud} range file: {source}")]
    Parse {
        path: String,
        cloud: &'static str,
        source: serde_json::Error,
    },
}

/// Longest-prefix match table: per prefix length, the network address -> label.
#[derive(Default)]
pub struct CloudRanges {
    by_length: HashMap<u8, HashMap<IpNet, (u8, CloudLabel)>>,
    /// Prefix lengths present, longest first (IPv4 and IPv6 together: a lookup only matches
    /// networks of its own family).
    lengths: Vec<u8>,
}

impl CloudRanges {
    /// Adds a prefix; of two labels for the same prefix the higher `priority` is kept.
    fn add(&mut self, prefix: IpNet, priority: u8, label: CloudLabel) {
        let prefix = prefix.trunc();
        let table = self.by_length.entry(prefix.prefix_len()).or_default();
        match table.get(&prefix) {
            Some((existing, _)) if *existing >= priority => {}
            _ => {
                table.insert(prefix, (priority, CloudLabel { prefix, ..label }));
            }
        }
        if !self.lengths.contains(&prefix.prefix_len()) {
            self.lengths.push(prefix.prefix_len());
            self.lengths.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.by_length.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most specific published prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&CloudLabel> {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        self.lengths
            .iter()
            .filter(|len| **len <= max)
            .find_map(|len| {
                let network = IpNet::new(ip, *len).ok()?.trunc();
                self.by_length
                    .get(len)?
                    .get(&network)
                    .map(|(_, label)| label)
            })
    }

    /// Loads AWS's `ip-ranges.json`.
    pub fn add_aws(&mut self, path: &Path) -> Result<(), RangeFileError> {
        #[derive(Deserialize)]
        struct File {
            prefixes: Vec<V4>,
            ipv6_prefixes: Vec<V6>,
        }
        #[derive(Deserialize)]
        struct V4 {
            ip_prefix: IpNet,
            region: String,
            service: String,
        }
        #[derive(Deserialize)]
        struct V6 {
            ipv6_prefix: IpNet,
            region: String,
            service: String,
        }
        let file: File = read(path, "AWS")?;
        let entries = file
            .prefixes
            .into_iter()
            .map(|p| (p.ip_prefix, p.region, p.service))
            .chain(
                file.ipv6_prefixes
                    .into_iter()
                    .map(|p| (p.ipv6_prefix, p.region, p.service)),
            );
        for (prefix, region, service) in entries {
            let priority = match service.as_str() {
                "S3" => 3,
                "AMAZON" => 1,
                "EC2" => 0,
                _ => 2,
            };
            self.add(
                prefix,
                priority,
                CloudLabel {
                    cloud: Cloud::Aws,
                    region,
                    service,
                    prefix,
                },
            );
        }
        Ok(())
    }

    /// Loads Google Cloud's `cloud.json` (scope = region).
    pub fn add_gcp(&mut self, path: &Path) -> Result<(), RangeFileError> {
        #[derive(Deserialize)]
        struct File {
            prefixes: Vec<Entry>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            ipv4_prefix: Option<IpNet>,
            ipv6_prefix: Option<IpNet>,
            service: String,
            scope: String,
        }
        let file: File = read(path, "GCP")?;
        for entry in file.prefixes {
            if let Some(prefix) = entry.ipv4_prefix.or(entry.ipv6_prefix) {
                let label = CloudLabel {
                    cloud: Cloud::Gcp,
                    region: entry.scope,
                    service: entry.service,
                    prefix,
                };
                self.add(prefix, 0, label);
            }
        }
        Ok(())
    }

    /// Loads Azure's `ServiceTags_Public_*.json`.
    pub fn add_azure(&mut self, path: &Path) -> Result<(), RangeFileError> {
        #[derive(Deserialize)]
        struct File {
            values: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            properties: Properties,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Properties {
            #[serde(default)]
            region: String,
            #[serde(default)]
            system_service: String,
            address_prefixes: Vec<IpNet>,
        }
        let file: File = read(path, "Azure")?;
        for tag in file.values {
            let p = tag.properties;
            let priority =
                2 * u8::from(!p.system_service.is_empty()) + u8::from(!p.region.is_empty());
            for prefix in p.address_prefixes {
                let label = CloudLabel {
                    cloud: Cloud::Azure,
                    region: p.region.clone(),
                    service: p.system_service.clone(),
                    prefix,
                };
                self.add(prefix, priority, label);
            }
        }
        Ok(())
    }
}

fn read<T: serde::de::DeserializeOwned>(
    path: &Path,
    cloud: &'static str,
) -> Result<T, RangeFileError> {
    let text = std::fs::read(path).map_err(|source| RangeFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|source| RangeFileError::Parse {
        path: path.display().to_string(),
        cloud,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// The real snapshots in ../shared/data (July 2025), loaded once for all tests.
    fn ranges() -> &'static CloudRanges {
        static RANGES: OnceLock<CloudRanges> = OnceLock::new();
        RANGES.get_or_init(|| {
            let dir = range_files_dir();
            let mut ranges = CloudRanges::default();
            ranges.add_aws(&dir.join("aws-ip-ranges.json")).unwrap();
            ranges.add_gcp(&dir.join("gcp-cloud.json")).unwrap();
            ranges
                .add_azure(&dir.join("azure-service-tags.json"))
                .unwrap();
            ranges
        })
    }

    /// `$NETMETER_CLOUD_RANGES_DIR`, else `shared/data/cloud-ip-ranges` beside the checkout
    /// (where CI and the development machines have it).
    fn range_files_dir() -> std::path::PathBuf {
        if let Some(dir) = std::env::var_os("NETMETER_CLOUD_RANGES_DIR") {
            return dir.into();
        }
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|a| a.join("shared/data/cloud-ip-ranges"))
            .find(|d| d.is_dir())
            .expect("shared/data/cloud-ip-ranges beside the checkout, or NETMETER_CLOUD_RANGES_DIR")
    }

    fn label(ip: &str) -> (Cloud, &str, &str, String) {
        let l = ranges()
            .lookup(ip.parse().unwrap())
            .unwrap_or_else(|| panic!("{ip} not found"));
        (
            l.cloud,
            l.region.as_str(),
            l.service.as_str(),
            l.prefix.to_string(),
        )
    }

    #[test]
    fn s3_in_ap_northeast_2_beats_amazon_and_ec2_for_the_same_prefix() {
        assert_eq!(
            label("3.5.140.7"),
            (Cloud::Aws, "ap-northeast-2", "S3", "3.5.140.0/22".into())
        );
    }

    #[test]
    fn gcp_africa_south1() {
        assert_eq!(
            label("34.35.1.2"),
            (
                Cloud::Gcp,
                "africa-south1",
                "Google Cloud",
                "34.35.0.0/16".into()
            )
        );
    }

    #[test]
    fn azure_storage_tag_beats_the_regional_and_global_tags() {
        assert_eq!(
            label("20.33.154.10"),
            (
                Cloud::Azure,
                "koreacentral",
                "AzureStorage",
                "20.33.154.0/24".into()
            )
        );
    }

    #[test]
    fn ipv6_prefixes_match() {
        assert_eq!(
            label("2a05:d07a:a000::1"),
            (Cloud::Aws, "eu-south-1", "S3", "2a05:d07a:a000::/40".into())
        );
        assert_eq!(label("2600:1900:8000::5").0, Cloud::Gcp);
    }

    #[test]
    fn longest_prefix_wins_and_private_addresses_are_not_cloud() {
        let mut ranges = CloudRanges::default();
        let label = |service: &str, prefix: &str| CloudLabel {
            cloud: Cloud::Aws,
            region: "r".into(),
            service: service.into(),
            prefix: prefix.parse().unwrap(),
        };
        ranges.add(
            "10.0.0.0/8".parse().unwrap(),
            0,
            label("wide", "10.0.0.0/8"),
        );
        ranges.add(
            "10.1.2.0/24".parse().unwrap(),
            0,
            label("narrow", "10.1.2.0/24"),
        );
        assert_eq!(
            ranges.lookup("10.1.2.3".parse().unwrap()).unwrap().service,
            "narrow"
        );
        assert_eq!(
            ranges.lookup("10.9.9.9".parse().unwrap()).unwrap().service,
            "wide"
        );
        assert_eq!(ranges.lookup("192.168.1.1".parse().unwrap()), None);
        assert_eq!(
            super::tests::ranges().lookup("10.1.2.3".parse().unwrap()),
            None
        );
        assert_eq!(
            super::tests::ranges().lookup("fd00::1".parse().unwrap()),
            None
        );
    }

    #[test]
    fn a_missing_or_broken_file_says_which_and_why() {
        let mut ranges = CloudRanges::default();
        let err = ranges
            .add_aws(Path::new("/nonexistent/ip-ranges.json"))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/ip-ranges.json"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("cloud.json");
        std::fs::write(&bad, b"{\"prefixes\": 3}").unwrap();
        let err = ranges.add_gcp(&bad).unwrap_err();
        assert!(
            err.to_string().contains("is not a valid GCP range file"),
            "{err}"
        );
    }
}
