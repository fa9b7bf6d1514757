//! Cloud provider IP ranges: which cloud, region and service an address belongs to, by
//! longest-prefix match over the providers' published files (AWS `ip-ranges.json`, GCP
//! `cloud.json`, Azure `ServiceTags_Public`), IPv4 and IPv6.
//!
//! - `snapshot.rs`: the three files as of July 2025, built into the binary: the default.
//! - `load.rs`: [`load`], the one loader of the service, replay and explain: per provider the
//!   file in `--cloud-ranges-dir` if there is one, else the snapshot; and where each provider's
//!   part came from and when the provider published it.
//! - `age.rs`: how old each provider's table is, as a gauge and a warning past [`MAX_AGE`].
//! - `files.rs`: the three file formats, and which label wins when a prefix is listed twice.
//! - `table.rs`: the lookup structure, sorted disjoint intervals found by a /16 index and a
//!   binary search: ~30 ns per lookup on the full tables, ~40x faster than probing a hash map
//!   per prefix length.
//! - `refresh.rs`: the flags, the shared handle the enrichment reads, and the optional periodic
//!   download from the providers' URLs.
//!
//! The result of loading, a [`CloudRanges`] (built by [`load`], or a [`CloudRangesBuilder`] for
//! anything else), is immutable and answers [`CloudRanges::lookup`].

mod age;
mod files;
mod load;
mod refresh;
pub mod snapshot;
pub(crate) mod table;
#[cfg(test)]
mod tests;

pub use age::{MAX_AGE, age_loop};
pub use load::{LoadedRanges, ProviderRanges, RangeSource, RangesLoaded, load};
pub use refresh::{
    AWS_RANGES_URL, CloudRangesArgs, GCP_RANGES_URL, SharedCloudRanges, refresh_loop,
};

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;

use files::RangeFile;
use table::IntervalTable;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Azure];

    /// Lower-case name, as in metric labels and flow records.
    pub fn name(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }

    /// `aws`, `gcp` or `azure`, in any case.
    pub fn parse(name: &str) -> Result<Cloud, UnknownCloud> {
        Cloud::ALL
            .into_iter()
            .find(|cloud| cloud.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| UnknownCloud(name.to_string()))
    }

    /// The file's name in a range directory (see [`load`]).
    pub fn file_name(self) -> &'static str {
        match self {
            Cloud::Aws => "aws-ip-ranges.json",
            Cloud::Gcp => "gcp-cloud.json",
            Cloud::Azure => "azure-service-tags.json",
        }
    }

    /// How the provider writes its own name, for messages.
    fn title(self) -> &'static str {
        match self {
            Cloud::Aws => "AWS",
            Cloud::Gcp => "GCP",
            Cloud::Azure => "Azure",
        }
    }

    /// Where to get the file by hand.
    fn download_hint(self) -> String {
        match self {
            Cloud::Aws => format!("download {AWS_RANGES_URL} to that path"),
            Cloud::Gcp => format!("download {GCP_RANGES_URL} to that path"),
            Cloud::Azure => "download the ServiceTags_Public_*.json linked from \
                 https://www.microsoft.com/download/details.aspx?id=56519 to that path"
                .to_string(),
        }
    }
}

impl std::fmt::Display for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cloud {
    type Err = UnknownCloud;

    fn from_str(name: &str) -> Result<Cloud, UnknownCloud> {
        Cloud::parse(name)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown cloud `{0}`: expected aws, gcp or azure")]
pub struct UnknownCloud(pub String);

/// What a matching prefix says about an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudLabel {
    pub cloud: Cloud,
    pub region: String,
    pub service: String,
    /// The published prefix that matched (its network address, host bits cleared).
    pub prefix: IpNet,
}

#[derive(Debug, thiserror::Error)]
pub enum RangeFileError {
    #[error("cannot read {path}: no such file; {}", .cloud.download_hint())]
    Missing { cloud: Cloud, path: String },
    #[error(
        "{path} is not a directory: point it at a directory holding newer range files \
         ({}, {}, {}; any of them), or leave it unset for the built-in July 2025 snapshot",
        Cloud::Aws.file_name(), Cloud::Gcp.file_name(), Cloud::Azure.file_name()
    )]
    NoDirectory { path: String },
    #[error("cannot read {path}: {source}")]
    Read {
        cloud: Cloud,
        path: String,
        source: std::io::Error,
    },
    /// `origin` is the file's path, or the URL it was downloaded from.
    #[error("{origin} is not a valid {} range file: {source}", .cloud.title())]
    Parse {
        cloud: Cloud,
        origin: String,
        source: serde_json::Error,
    },
}

impl RangeFileError {
    /// Whose file it was; `None` for a directory.
    pub fn cloud(&self) -> Option<Cloud> {
        match self {
            RangeFileError::Missing { cloud, .. }
            | RangeFileError::Read { cloud, .. }
            | RangeFileError::Parse { cloud, .. } => Some(*cloud),
            RangeFileError::NoDirectory { .. } => None,
        }
    }
}

/// The longest-prefix-match table over every loaded prefix. Immutable: build it with
/// [`load`] or a [`CloudRangesBuilder`]; the `add_*` methods rebuild it whole.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CloudRanges {
    /// One label per distinct published prefix (the winner among duplicates), sorted by prefix.
    labels: Vec<CloudLabel>,
    v4: IntervalTable<u32>,
    v6: IntervalTable<u128>,
}

impl CloudRanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// A table from one provider's file content, for tests and tools.
    pub fn from_json(cloud: Cloud, json: &str) -> Result<Self, RangeFileError> {
        let mut builder = CloudRangesBuilder::new();
        builder.add_json(cloud, json)?;
        Ok(builder.build())
    }

    /// The most specific published prefix containing `ip`.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&CloudLabel> {
        let index = match ip {
            IpAddr::V4(v4) => self.v4.get(u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(u128::from(v6)),
        }?;
        self.labels.get(index as usize)
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Loads AWS's `ip-ranges.json` into this table (rebuilding it).
    pub fn add_aws(&mut self, path: &Path) -> Result<(), RangeFileError> {
        self.add_file(Cloud::Aws, path)
    }

    /// Loads Google Cloud's `cloud.json` into this table (rebuilding it).
    pub fn add_gcp(&mut self, path: &Path) -> Result<(), RangeFileError> {
        self.add_file(Cloud::Gcp, path)
    }

    /// Loads Azure's `ServiceTags_Public_*.json` into this table (rebuilding it).
    pub fn add_azure(&mut self, path: &Path) -> Result<(), RangeFileError> {
        self.add_file(Cloud::Azure, path)
    }

    /// Loads one provider's file into this table; on a tie the prefixes already here win.
    pub fn add_file(&mut self, cloud: Cloud, path: &Path) -> Result<(), RangeFileError> {
        let labels = read_file(cloud, path)?.labels;
        let mut builder = CloudRangesBuilder::from(std::mem::take(self));
        builder.extend(labels);
        *self = builder.build();
        Ok(())
    }
}

impl std::fmt::Debug for CloudRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudRanges")
            .field("prefixes", &self.labels.len())
            .field("v4_intervals", &self.v4.len())
            .field("v6_intervals", &self.v6.len())
            .finish()
    }
}

impl FromIterator<CloudLabel> for CloudRanges {
    fn from_iter<I: IntoIterator<Item = CloudLabel>>(labels: I) -> Self {
        let mut builder = CloudRangesBuilder::new();
        builder.extend(labels);
        builder.build()
    }
}

/// Collects prefixes from any number of files, in any order, keeping one label per prefix
/// (the rules are in `files.rs`, `priority`); [`build`](Self::build) makes the lookup table.
#[derive(Clone, Debug, Default)]
pub struct CloudRangesBuilder {
    by_prefix: HashMap<IpNet, CloudLabel>,
}

impl CloudRangesBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one prefix; of two labels for the same prefix the more specific one is kept, the
    /// first one on a tie.
    pub fn add(&mut self, label: CloudLabel) -> &mut Self {
        let prefix = label.prefix.trunc();
        let label = CloudLabel { prefix, ..label };
        match self.by_prefix.entry(prefix) {
            Entry::Vacant(entry) => {
                entry.insert(label);
            }
            Entry::Occupied(mut entry) => {
                if files::priority(&label) > files::priority(entry.get()) {
                    entry.insert(label);
                }
            }
        }
        self
    }

    /// Adds every prefix of a provider's file.
    pub fn add_file(&mut self, cloud: Cloud, path: &Path) -> Result<&mut Self, RangeFileError> {
        let labels = read_file(cloud, path)?.labels;
        self.extend(labels);
        Ok(self)
    }

    /// Adds every prefix of a provider's file content, for tests and tools.
    pub fn add_json(&mut self, cloud: Cloud, json: &str) -> Result<&mut Self, RangeFileError> {
        let labels = parse(cloud, json.as_bytes(), "inline JSON")?.labels;
        self.extend(labels);
        Ok(self)
    }

    /// Number of distinct prefixes so far.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    pub fn build(self) -> CloudRanges {
        let mut labels: Vec<CloudLabel> = self.by_prefix.into_values().collect();
        labels.sort_unstable_by_key(|label| label.prefix);
        let index = |i: usize| u32::try_from(i).expect("fewer than 4 billion prefixes");
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, label) in labels.iter().enumerate() {
            match label.prefix {
                IpNet::V4(net) => v4.push((
                    u32::from(net.network()),
                    u32::from(net.broadcast()),
                    index(i),
                )),
                IpNet::V6(net) => v6.push((
                    u128::from(net.network()),
                    u128::from(net.broadcast()),
                    index(i),
                )),
            }
        }
        CloudRanges {
            labels,
            v4: IntervalTable::build(v4),
            v6: IntervalTable::build(v6),
        }
    }
}

impl Extend<CloudLabel> for CloudRangesBuilder {
    fn extend<I: IntoIterator<Item = CloudLabel>>(&mut self, labels: I) {
        for label in labels {
            self.add(label);
        }
    }
}

/// Back to a builder, to add more files to a table.
impl From<CloudRanges> for CloudRangesBuilder {
    fn from(ranges: CloudRanges) -> Self {
        CloudRangesBuilder {
            by_prefix: ranges
                .labels
                .into_iter()
                .map(|label| (label.prefix, label))
                .collect(),
        }
    }
}

/// A provider's file at `path`; one that states no publication time (Azure's) is taken to be
/// as old as the file's modification time.
fn read_file(cloud: Cloud, path: &Path) -> Result<RangeFile, RangeFileError> {
    let error = |source: std::io::Error| {
        let path = path.display().to_string();
        if source.kind() == std::io::ErrorKind::NotFound {
            RangeFileError::Missing { cloud, path }
        } else {
            RangeFileError::Read {
                cloud,
                path,
                source,
            }
        }
    };
    let mut file = std::fs::File::open(path).map_err(error)?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    let mut json = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut json).map_err(error)?;
    let mut parsed = parse(cloud, &json, &path.display().to_string())?;
    parsed.published = parsed.published.or(modified);
    Ok(parsed)
}

/// A provider's file content; `origin` names it in the error.
fn parse(cloud: Cloud, json: &[u8], origin: &str) -> Result<RangeFile, RangeFileError> {
    files::parse(cloud, json).map_err(|source| RangeFileError::Parse {
        cloud,
        origin: origin.to_string(),
        source,
    })
}
